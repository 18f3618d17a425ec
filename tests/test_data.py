import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxkd.data import (ArrayDataset, Preprocess, TrainBatches, load_npz, load_split,
                        mnist_offline, preprocessing)
from jaxkd.config import base_config
from jaxkd.data.catalog import choose_source
from jaxkd.errors import JaxkdError


def _dataset(**fields):
  """config.dataset with these fields, the others at their schema defaults."""
  config = base_config().dataset
  config.update(fields)
  return config


def test_offline_mnist_is_the_real_dataset():
  train_images, train_labels = mnist_offline.load("train")
  test_images, test_labels = mnist_offline.load("test")
  assert train_images.shape == (60000, 28, 28, 1) and train_images.dtype == np.uint8
  assert test_images.shape == (10000, 28, 28, 1)
  assert tuple(np.bincount(test_labels)) == mnist_offline.LABEL_COUNTS["test"]
  assert list(train_labels[:8]) == [5, 0, 4, 1, 9, 2, 1, 3]  # The famous first digits.


def test_truncated_idx_file_is_refused(tmp_path):
  path = tmp_path / "broken-idx1-ubyte"
  path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 10]) + bytes(5))
  with pytest.raises(JaxkdError, match="truncated"):
    mnist_offline.read_idx(path)


def test_mnist_config_loads_offline_copy_with_stable_order():
  config = _dataset(name="mnist", source="auto", data_dir="/nonexistent")
  assert choose_source("mnist", config) == "offline"
  test = load_split(config, "test")
  assert len(test) == 10000 and test.num_classes == 10
  again = load_split(config, "test")
  np.testing.assert_array_equal(test.labels, again.labels)


def test_offline_source_for_dataset_without_one_is_an_error():
  config = _dataset(name="cifar10", source="offline")
  with pytest.raises(JaxkdError, match="no offline copy"):
    choose_source("cifar10", config)


def test_cifar10_through_tfds_with_standard_preprocessing():
  config = _dataset(name="cifar10", source="tfds")
  with tfds.testing.mock_data(num_examples=12):
    train = load_split(config, "train")
  assert train.inputs.shape == (12, 32, 32, 3) and train.num_classes == 10
  assert preprocessing(config, 3)["crop_padding"] == 4 and preprocessing(config, 3)["flip"]


def test_user_arrays_and_npz(tmp_path, toy_datasets):
  train, _ = toy_datasets
  path = tmp_path / "data.npz"
  np.savez(path, x_train=train.inputs, y_train=train.labels, x_test=train.inputs[:5],
           y_test=train.labels[:5])
  loaded = load_npz(str(path), "test", None)
  assert len(loaded) == 5 and loaded.num_classes == 4
  with pytest.raises(JaxkdError, match="num_classes"):
    ArrayDataset(train.inputs, train.labels, num_classes=3)
  with pytest.raises(JaxkdError, match="one integer label per image"):
    ArrayDataset(train.inputs, train.labels[:-1], num_classes=4)


def test_train_batches_are_a_deterministic_function_of_seed_and_step(toy_datasets):
  train, _ = toy_datasets
  batches = TrainBatches(train, 64, seed=3)
  assert batches.steps_per_epoch == 8
  epoch0 = np.concatenate([batches.indices(s) for s in range(8)])
  assert sorted(epoch0) == list(range(512))  # Each example once per epoch.
  epoch1 = np.concatenate([batches.indices(s) for s in range(8, 16)])
  assert sorted(epoch1) == list(range(512)) and not np.array_equal(epoch0, epoch1)
  resumed = TrainBatches(train, 64, seed=3)  # A fresh iterator at step 11 (resume).
  np.testing.assert_array_equal(resumed.batch(11)["image"], batches.batch(11)["image"])
  assert not np.array_equal(TrainBatches(train, 64, seed=4).indices(0), batches.indices(0))
  batch = batches.batch(0)
  assert batch["image"].shape == (64, 8, 8, 1) and batch["label"].shape == (64,)
  np.testing.assert_array_equal(batch["label"], train.labels[batch["index"]])


def test_processes_split_the_global_batch(toy_datasets):
  train, _ = toy_datasets
  whole = TrainBatches(train, 64, seed=0).indices(5)
  parts = [TrainBatches(train, 64, seed=0, process_index=p, process_count=4).indices(5)
           for p in range(4)]
  np.testing.assert_array_equal(np.concatenate(parts), whole)
  with pytest.raises(JaxkdError, match="does not divide over 3 processes"):
    TrainBatches(train, 64, seed=0, process_index=0, process_count=3)


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_counts_every_example_exactly_once(toy_datasets, process_count):
  _, test = toy_datasets  # 203 examples: the last batch of 64 is padded.
  seen = []
  for p in range(process_count):
    for batch in test.eval_batches(64, p, process_count):
      assert batch["image"].shape[0] == 64 // process_count
      seen.extend(batch["index"][batch["mask"] > 0])
  assert sorted(seen) == list(range(203))


def test_preprocess_normalises_and_augments_reproducibly():
  images = jax.random.randint(jax.random.PRNGKey(0), (4, 6, 6, 3), 0, 256).astype(np.uint8)
  plain = Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3)
  np.testing.assert_allclose(plain(images), (np.asarray(images) / 255.0 - 0.5) / 0.25, atol=1e-5)
  augment = Preprocess(mean=(0.0,) * 3, std=(1.0,) * 3, crop_padding=2, flip=True)
  key = jax.random.PRNGKey(1)
  out = np.asarray(augment(images, key))
  np.testing.assert_array_equal(out, augment(images, key))  # Same key, same view.
  padded = np.pad(np.asarray(images) / 255.0, ((0, 0), (2, 2), (2, 2), (0, 0)))
  for image, window in zip(out, padded):  # Every output is a (maybe mirrored) window.
    candidates = [window[r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
    candidates += [w[:, ::-1] for w in candidates]
    assert any(np.allclose(image, w, atol=1e-6) for w in candidates)


def test_mixup_mixes_images_and_targets_with_one_ratio():
  from jaxkd.data.augment import mixup

  images = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 1))
  targets = jax.nn.one_hot(np.array([0, 1, 2, 3]), 4)
  mixed_images, mixed_targets = mixup(jax.random.PRNGKey(1), images, targets, alpha=1.0)
  ratio = float(mixed_targets[0, 0])  # Example 0 mixes with example 3 (rolled by one).
  assert 0 < ratio < 1 and float(mixed_targets[0, 3]) == pytest.approx(1 - ratio)
  np.testing.assert_allclose(mixed_images, ratio * images + (1 - ratio) * np.roll(images, 1, 0),
                             rtol=1e-6)
  np.testing.assert_allclose(mixed_targets.sum(-1), 1.0, rtol=1e-6)


def test_a_named_dataset_holds_out_its_validation_split(tmp_path, toy_datasets):
  train, test = toy_datasets
  np.savez(tmp_path / "data.npz", x_train=train.inputs, y_train=train.labels,
           x_test=test.inputs, y_test=test.labels)
  config = _dataset(name="npz", path=str(tmp_path / "data.npz"), num_classes=4,
                    validation_size=100, validation_seed=0)
  kept, held = load_split(config, "train"), load_split(config, "validation")
  assert (len(kept), len(held), held.split) == (412, 100, "validation")
  rows = lambda d: {x.tobytes() for x in d.inputs}
  assert not rows(kept) & rows(held) and len(rows(kept) | rows(held)) == len(rows(train))
  assert len(load_split(config, "test")) == len(test)
  config.validation_size = 0
  assert len(load_split(config, "train")) == 512
  with pytest.raises(JaxkdError, match="no validation split: set dataset.validation_size"):
    load_split(config, "validation")
