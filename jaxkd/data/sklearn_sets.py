"""scikit-learn's bundled datasets, which install offline: handwritten digits as 28x28
images (for transfer from MNIST), breast cancer and wine as tables.

Each has a fixed train/test split: a permutation drawn with seed 0, the first
TEST_FRACTION of it the test split. Tables are standardised with the training split's
mean and standard deviation (the test split never informs them).
"""

import numpy as np

TEST_FRACTION = 0.3
SPLIT_SEED = 0


def _split(count: int, split: str) -> np.ndarray:
  order = np.random.default_rng(SPLIT_SEED).permutation(count)
  test = int(round(TEST_FRACTION * count))
  return np.sort(order[:test] if split == "test" else order[test:])


def digits_as_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
  """The UCI 8x8 digits (1797, values 0..16) as MNIST-like uint8 28x28 images: scaled to
  0..255, upsampled bilinearly to 20x20 and centred in 28x28, as MNIST centres its digits
  in a 20x20 box. Train 1258 / test 539."""
  from scipy import ndimage
  from sklearn.datasets import load_digits

  digits = load_digits()
  index = _split(len(digits.target), split)
  small = digits.images[index].astype(np.float32) * (255.0 / 16.0)
  large = ndimage.zoom(small, (1, 20 / 8, 20 / 8), order=1)
  images = np.zeros((len(index), 28, 28), np.uint8)
  images[:, 4:24, 4:24] = np.clip(np.round(large), 0, 255).astype(np.uint8)
  return images, digits.target[index].astype(np.int32)


def _table(load) -> callable:
  def split_of(split: str) -> tuple[np.ndarray, np.ndarray]:
    data = load()
    train = _split(len(data.target), "train")
    mean, std = data.data[train].mean(0), data.data[train].std(0)
    index = _split(len(data.target), split)
    features = (data.data[index] - mean) / np.where(std > 0, std, 1.0)
    return features.astype(np.float32), data.target[index].astype(np.int32)

  return split_of


def breast_cancer(split: str) -> tuple[np.ndarray, np.ndarray]:
  """569 tumours, 30 features, 2 classes (malignant 0, benign 1); train 398 / test 171."""
  from sklearn.datasets import load_breast_cancer

  return _table(load_breast_cancer)(split)


def wine(split: str) -> tuple[np.ndarray, np.ndarray]:
  """178 wines, 13 features, 3 cultivars; train 125 / test 53."""
  from sklearn.datasets import load_wine

  return _table(load_wine)(split)
