"""Eight fake CPU devices for every test (set before jax is imported), and toy data."""

import os
import pathlib

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Tests check behaviour, not speed: XLA's optimisation passes cost more compile time
# than the tiny programs they speed up (about half of the suite's time).
jax.config.update("jax_disable_most_optimizations", True)

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxkd.config import base_config  # noqa: E402
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


def load_script(*parts: str):
  """A script of the repository (e.g. 'experiments', 'lm_pretrained', 'run.py') as a module."""
  import importlib.util

  path = pathlib.Path(__file__).resolve().parents[1].joinpath(*parts)
  spec = importlib.util.spec_from_file_location(f"jaxkd_script_{parts[-2]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


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


def npz_with_teacher(root, teacher_steps: int) -> str:
  """Toy data saved as root/toy.npz (read as a named source, as the CLI reads it) and a toy
  MLP teacher trained on it in root/teacher; returns the .npz path."""
  from jaxkd.run import train

  x, y = toy_arrays(256, 0)
  xt, yt = toy_arrays(64, 1)
  np.savez(root / "toy.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
  teacher = toy_config(num_steps=teacher_steps)
  teacher.dataset.path = str(root / "toy.npz")
  train.train_and_evaluate(teacher, root / "teacher")
  return str(root / "toy.npz")


def user_net_configs(tmp_path, teacher_steps: int, **student_train):
  """Toy data saved as .npz, a trained 'test_user_net' teacher (width 8) in
  tmp_path/teacher, and the config of a width-4 student taught by it."""
  from jaxkd.run import train

  x, y = toy_arrays(256, 0)
  path = tmp_path / "toy.npz"
  np.savez(path, x_train=x, y_train=y, x_test=x[:64], y_test=y[:64])
  configs = []
  for width, train_fields in ((8, {"num_steps": teacher_steps}), (4, student_train)):
    config = toy_config(**train_fields)
    config.dataset.path = str(path)
    config.model = ml_collections.ConfigDict({"name": "test_user_net", "width": width})
    configs.append(config)
  train.train_and_evaluate(configs[0], tmp_path / "teacher")
  configs[1].distill.teachers = (str(tmp_path / "teacher"),)
  return configs[1]


def pytest_addoption(parser):
  parser.addoption("--all-configs", action="store_true",
                   help="also run every config's smoke variant (make test-configs)")
  parser.addoption("--ci-configs", action="store_true",
                   help="run only the CI subset of the config smoke runs (make test-configs-ci)")


def pytest_configure(config):
  config.addinivalue_line("markers", "all_configs: a config smoke run left to make test-configs")
  config.addinivalue_line("markers", "ci_configs: a config smoke run in CI's subset")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--all-configs"):
    return
  if config.getoption("--ci-configs"):
    keep = lambda item: "ci_configs" in item.keywords
  else:
    keep = lambda item: "all_configs" not in item.keywords
  config.hook.pytest_deselected(items=[item for item in items if not keep(item)])
  items[:] = [item for item in items if keep(item)]


WORDS = ("the king is dead long live the queen my lord what say you to this "
         "naïve café — fair is foul and foul is fair hover through the fog").split()


def write_corpus(root: pathlib.Path, count: int = 8) -> pathlib.Path:
  """`count` documents play0.txt ... of a few hundred words each (with non-ASCII
  characters) in root: a text corpus for dataset 'text'."""
  rng = np.random.default_rng(0)
  for i in range(count):
    (root / f"play{i}.txt").write_text(" ".join(rng.choice(WORDS, 300 + 40 * i)) + ".\n")
  return root
