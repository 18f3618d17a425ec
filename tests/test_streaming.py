"""imagenet2012 as a stream from tfds (on tfds.testing.mock_data)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import toy_config

from jaxkd.config import base_config
from jaxkd.run import train
from jaxkd.data import StreamDataset, load_split, preprocessing

CONFIG = base_config().dataset
CONFIG.update(name="imagenet2012", image_size=32)


@pytest.fixture
def mock_imagenet():
  with tfds.testing.mock_data(num_examples=10):
    yield


def _indices(batches, start, end):
  return [b["index"].tolist() for b in batches.iterate(start, end)]


def test_stream_batches_are_deterministic_and_resumable(mock_imagenet):
  data = load_split(CONFIG, "train")
  assert isinstance(data, StreamDataset) and len(data) == 10 and data.input_shape == (32, 32, 3)
  batches = data.train_batches(4, seed=0)
  assert batches.steps_per_epoch == 2
  first = next(batches.iterate(0, 1))
  assert first["image"].shape == (4, 32, 32, 3) and first["image"].dtype == np.uint8
  assert first["label"].dtype == np.int32 and (first["label"] < 1000).all()
  run = _indices(batches, 0, 4)
  assert run == _indices(data.train_batches(4, seed=0), 0, 4)  # Same seed, same order.
  assert _indices(batches, 3, 4) == run[3:]  # Resume at step 3.
  epoch0 = sum(run[:2], [])
  assert len(set(epoch0)) == 8 and set(epoch0) <= set(range(10))  # Drop-remainder, no repeats.
  assert run[:2] != run[2:]  # A new order each epoch.
  assert preprocessing(CONFIG, 3)["flip"] and preprocessing(CONFIG, 3)["mean"][0] == 0.485


def test_stream_eval_counts_each_example_once(mock_imagenet):
  data = load_split(CONFIG, "test")
  assert data.split == "validation"
  seen = []
  for batch in data.eval_batches(4):
    assert batch["image"].shape == (4, 32, 32, 3)
    seen.extend(batch["index"][batch["mask"] > 0])
  assert sorted(seen) == list(range(10))


def test_training_on_a_stream(mock_imagenet, tmp_path):
  # One (final) checkpoint: mock_data patches file functions that orbax's background
  # save thread also uses, and a save racing the next step loses its temporary dir.
  config = toy_config(num_steps=2, batch_size=8, eval_batch_size=8, checkpoint_every_steps=100)
  config.dataset.name = "imagenet2012"
  config.dataset.image_size = 16
  result = train.train_and_evaluate(config, tmp_path)
  assert result["step"] == 2 and result["test_count"] == 10


def test_each_process_reads_its_slice_of_every_global_batch(mock_imagenet):
  """Two processes' slices (sliced before decoding) make up the one-process batches, for
  training from the start and resumed mid-epoch, and for evaluation."""
  data = load_split(CONFIG, "train")
  whole = list(data.train_batches(4, seed=0).iterate(1, 4))
  parts = [list(data.train_batches(4, seed=0, process_index=p, process_count=2).iterate(1, 4))
           for p in (0, 1)]
  for step, batch in enumerate(whole):
    for key in ("index", "label", "image"):
      np.testing.assert_array_equal(np.concatenate([parts[0][step][key], parts[1][step][key]]),
                                    batch[key])
  test = load_split(CONFIG, "test")
  seen = []
  for p in (0, 1):
    batches = list(test.eval_batches(4, p, 2))
    assert len(batches) == 3 and all(b["image"].shape == (2, 32, 32, 3) for b in batches)
    seen.extend(i for b in batches for i in b["index"][b["mask"] > 0])
  assert sorted(seen) == list(range(10))
