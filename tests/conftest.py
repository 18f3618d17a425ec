"""Eight fake CPU devices for every test (set before jax is imported), and toy data."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxkd.config_base import base_config  # noqa: E402
from jaxkd.data import ArrayDataset  # noqa: E402


def toy_arrays(num_examples: int, seed: int, num_classes: int = 4, size: int = 8):
  """Images whose label is the quadrant that is bright: learnable in a few steps."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, num_examples).astype(np.int32)
  images = rng.integers(0, 60, (num_examples, size, size, 1)).astype(np.uint8)
  half = size // 2
  for i, label in enumerate(labels):
    row, col = divmod(int(label), 2)
    images[i, row * half:(row + 1) * half, col * half:(col + 1) * half] += 150
  return images, labels


@pytest.fixture
def toy_datasets():
  train = ArrayDataset(*toy_arrays(512, 0), num_classes=4, name="toy", split="train")
  test = ArrayDataset(*toy_arrays(203, 1), num_classes=4, name="toy", split="test")
  return train, test


def toy_config(**train):
  """A tiny MLP run on toy data (the dataset name only picks preprocessing defaults)."""
  config = base_config()
  config.dataset.name = "npz"
  config.model.name = "mlp"
  config.model.widths = (32,)
  config.optimizer.learning_rate = 0.1
  config.train.batch_size = 32
  config.train.eval_batch_size = 64
  config.train.num_steps = 8
  config.train.log_every_steps = 2
  config.train.update(train)
  return config
