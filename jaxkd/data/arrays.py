"""A split held in memory: images, labels and each example's stable index."""

import dataclasses
import hashlib

import numpy as np

from jaxkd.data.batches import TrainBatches, array_eval_batches
from jaxkd.errors import JaxkdError


@dataclasses.dataclass
class ArrayDataset:
  """One split of a dataset as arrays.

  images: [N, H, W, C] (uint8 pixels, or floats already scaled); labels: [N] ints
  in [0, num_classes). An example's stable index is its position in the split:
  loaders keep the source's fixed order, so cached soft labels and memory banks
  can be keyed by it.
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  name: str = "arrays"
  split: str = "train"

  def __post_init__(self):
    images, labels = np.asarray(self.images), np.asarray(self.labels)
    if images.ndim == 3:  # [N, H, W] grayscale
      images = images[..., None]
    if images.ndim != 4:
      raise JaxkdError(f"{self.name}/{self.split}: images must be [N, H, W, C] or [N, H, W], "
                       f"got shape {images.shape}.")
    if labels.ndim != 1 or len(labels) != len(images):
      raise JaxkdError(f"{self.name}/{self.split}: need one integer label per image, got "
                       f"{len(images)} images and labels of shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
      raise JaxkdError(f"{self.name}/{self.split}: labels must be integers, got {labels.dtype}.")
    if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
      raise JaxkdError(f"{self.name}/{self.split}: labels span [{labels.min()}, {labels.max()}] "
                       f"but num_classes is {self.num_classes}; set dataset.num_classes.")
    self.images, self.labels = images, labels.astype(np.int32)

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.images.shape[1:])

  def fingerprint(self) -> str:
    """A short hash of the labels and size: what a cache keyed by index must match."""
    digest = hashlib.sha256(self.labels.tobytes())
    digest.update(repr((self.name, self.split, self.images.shape)).encode())
    return digest.hexdigest()[:16]

  def train_batches(self, global_batch_size: int, seed: int, process_index: int = 0,
                    process_count: int = 1) -> TrainBatches:
    """Shuffled training batches, addressable by step (the data protocol, data/batches.py)."""
    return TrainBatches(self, global_batch_size, seed, process_index, process_count)

  def eval_batches(self, global_batch_size: int, process_index: int = 0, process_count: int = 1):
    """Every example once, in order, the last batch padded and masked."""
    return array_eval_batches(self, global_batch_size, process_index, process_count)


def load_npz(path: str, split: str, num_classes: int | None) -> ArrayDataset:
  """Reads x_<split>, y_<split> from a .npz file (the Keras naming)."""
  try:
    with np.load(path) as data:
      images, labels = data[f"x_{split}"], data[f"y_{split}"]
  except FileNotFoundError:
    raise JaxkdError(f"dataset file {path} does not exist; set dataset.path to a .npz file "
                     f"with arrays x_train, y_train, x_test, y_test.") from None
  except KeyError as e:
    raise JaxkdError(f"{path} has no array {e}; it needs x_train, y_train, x_test, y_test.") from None
  if num_classes is None:
    num_classes = int(labels.max()) + 1
  return ArrayDataset(images, labels, num_classes, name="npz", split=split)
