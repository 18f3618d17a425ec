"""Transfer sets (jaxkd.data.transfer): labeled subsets, class filters, extra unlabeled data,
label terms over the labeled examples only, refusals, soft labels keyed to the set."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import toy_arrays, toy_config

from jaxkd.run import train
from jaxkd.data import ArrayDataset, load_npz
from jaxkd.distill import TermInputs, build_objective
from jaxkd.errors import JaxkdError
from jaxkd.run.soft_labels import load_soft_labels, write_soft_labels
from jaxkd.config import base_config, validate
from jaxkd.data.transfer import build_transfer_set


def _transfer(**fields) -> ml_collections.ConfigDict:
  config = base_config().transfer
  config.update(fields)
  return config


@pytest.fixture
def data():
  return ArrayDataset(*toy_arrays(40, 0), num_classes=4, name="toy", split="train")


def test_labeled_fraction_keeps_that_many_labels_chosen_by_seed(data):
  half = build_transfer_set(data, _transfer(labeled_fraction=0.25, labeled_seed=3))
  assert len(half) == 40 and half.num_labeled == 10
  kept = half.labels >= 0
  np.testing.assert_array_equal(half.labels[kept], data.labels[kept])  # Labels unchanged.
  np.testing.assert_array_equal(half.inputs, data.inputs)  # Same examples, same order.
  again = build_transfer_set(data, _transfer(labeled_fraction=0.25, labeled_seed=3))
  other = build_transfer_set(data, _transfer(labeled_fraction=0.25, labeled_seed=4))
  np.testing.assert_array_equal(again.labels, half.labels)
  assert not np.array_equal(other.labels, half.labels)
  assert half.fingerprint() != data.fingerprint()  # A cache of the full set does not fit.
  given = build_transfer_set(data, _transfer(labeled_indices=(0, 5, 7)))
  assert np.flatnonzero(given.labels >= 0).tolist() == [0, 5, 7]
  dropped = build_transfer_set(data, _transfer(labeled_indices=(0, 5, 7), unlabeled="drop"))
  np.testing.assert_array_equal(dropped.inputs, data.inputs[[0, 5, 7]])


def test_class_filters_and_extra_unlabeled_data(data):
  no_threes = build_transfer_set(data, _transfer(drop_classes=(3,)))
  assert len(no_threes) == int(np.sum(data.labels != 3)) and 3 not in no_threes.labels
  np.testing.assert_array_equal(no_threes.inputs, data.inputs[data.labels != 3])
  only = build_transfer_set(data, _transfer(keep_classes=(0, 1)))
  assert set(only.labels.tolist()) == {0, 1}
  extra_x, _ = toy_arrays(6, 9)
  load = lambda spec: ArrayDataset(extra_x, np.zeros(6, int), 4, name="pool", split="train")
  spec = _transfer(labeled_fraction=1.0)
  spec.extra.name = "pool"
  grown = build_transfer_set(data, spec, load)
  assert len(grown) == 46 and grown.num_labeled == 40 and (grown.labels[40:] == -1).all()
  np.testing.assert_array_equal(grown.inputs[40:], extra_x)
  with pytest.raises(JaxkdError, match="classes \\[7\\] are not among 4"):
    build_transfer_set(data, _transfer(drop_classes=(7,)))
  both = toy_config()
  both.transfer.update(drop_classes=(1,), keep_classes=(2,))
  with pytest.raises(JaxkdError, match="not both"):
    validate(both)  # Checked with the config, before any data is read.
  with pytest.raises(JaxkdError, match="labeled_indices: \\[99\\]"):
    build_transfer_set(data, _transfer(labeled_indices=(99,)))


def test_ce_averages_over_labeled_examples_only():
  """Hand-worked: the unlabeled rows count neither in the sum nor in the count."""
  logits = np.array([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0], [1.0, 1.0]], np.float32)
  labels = np.array([0, 1, -1, -1])
  config = ml_collections.ConfigDict({"teacher_combine": "average",
                                      "terms": {"ce": {"weight": 1.0}}})
  inputs = TermInputs(jnp.asarray(logits), None, jnp.asarray(labels),
                      jax.nn.one_hot(jnp.asarray(labels), 2), jnp.asarray(0))
  _, metrics, _ = build_objective(config, 1, 1)(inputs)
  expected = (np.log(1 + np.exp(-2.0)) + np.log(1 + np.exp(-1.0))) / 2
  np.testing.assert_allclose(metrics["loss/ce"], expected, rtol=1e-6)


def test_partly_labeled_run_on_one_and_eight_devices_agrees(tmp_path, toy_datasets):
  """ce on the labeled quarter plus kd on all; the masked means are global sums, so the
  run is the same over 1 and 8 devices."""
  teacher = toy_config(num_steps=30)
  train.train_and_evaluate(teacher, tmp_path / "teacher", datasets=toy_datasets)
  results = []
  for name, devices in (("one", jax.devices()[:1]), ("eight", jax.devices())):
    config = toy_config(num_steps=6)
    config.transfer.labeled_fraction = 0.25
    config.distill.teachers = (str(tmp_path / "teacher"),)
    config.distill.terms = {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 2.0}}
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    results.append(train.train_and_evaluate(config, tmp_path / name, datasets=toy_datasets,
                                            mesh=mesh))
  assert results[0]["test_accuracy"] == results[1]["test_accuracy"]
  np.testing.assert_allclose(results[0]["test_loss"], results[1]["test_loss"], rtol=1e-5)


def test_refusals_on_unlabeled_examples(tmp_path, toy_datasets):
  config = toy_config()
  config.transfer.labeled_fraction = 0.5
  config.distill.terms = {"dkd": {"weight": 1.0}}
  config.distill.soft_labels = ("unused.npz",)
  with pytest.raises(JaxkdError, match="need every example's label"):
    train.train_and_evaluate(config, tmp_path / "dkd", datasets=toy_datasets)
  config = toy_config()
  config.transfer.labeled_fraction = 0.0
  with pytest.raises(JaxkdError, match="no labeled example and the objective no teacher term"):
    train.train_and_evaluate(config, tmp_path / "nothing", datasets=toy_datasets)
  config = toy_config()
  config.transfer.labeled_fraction = 0.5
  config.dataset.mixup_alpha = 0.2
  config.distill.terms = {"kd": {"weight": 1.0}}
  config.distill.teachers = ("unused",)
  with pytest.raises(JaxkdError, match="mixup_alpha > 0 with unlabeled examples"):
    train.train_and_evaluate(config, tmp_path / "mixup", datasets=toy_datasets)


def test_soft_labels_written_for_a_transfer_set_are_keyed_to_it(tmp_path, toy_datasets):
  """A cache of the student's transfer set (drop class 3) covers exactly its examples, in
  its order; the teacher's full-set cache is refused for it."""
  path = tmp_path / "toy.npz"
  x, y = toy_datasets[0].inputs, toy_datasets[0].labels
  np.savez(path, x_train=x, y_train=y, x_test=x[:64], y_test=y[:64])
  teacher = toy_config(num_steps=10)
  teacher.dataset.path = str(path)
  train.train_and_evaluate(teacher, tmp_path / "teacher")
  student = toy_config()
  student.dataset.path = str(path)
  student.transfer.drop_classes = (3,)
  from jaxkd.run.assemble import transfer_set_of
  from jaxkd.data import preprocessing
  transfer = transfer_set_of(student)
  fields = preprocessing(student.dataset, 1)
  cache = write_soft_labels(tmp_path / "teacher", tmp_path / "transfer.npz", dtype="float32",
                            batch_size=64, data=transfer)
  logits = load_soft_labels(cache, transfer, fields)
  full = write_soft_labels(tmp_path / "teacher", tmp_path / "full.npz", batch_size=64)
  with pytest.raises(JaxkdError, match="does not match the data"):
    load_soft_labels(full, transfer, fields)
  full_logits = load_soft_labels(full, load_npz(str(path), "train", None), fields)
  np.testing.assert_allclose(logits, full_logits[y != 3], rtol=1e-2, atol=1e-2)  # float16 there
  student.distill.soft_labels = (str(cache),)
  student.distill.terms = {"ce": {"weight": 0.5}, "kd": {"weight": 0.5}}
  result = train.train_and_evaluate(student, tmp_path / "student")
  assert result["step"] == 8


def test_extra_unlabeled_data_from_another_file_joins_the_run(tmp_path, toy_datasets):
  """transfer.extra names another dataset (here an .npz pool); its examples join unlabeled,
  seen by kd only; its labels are never read."""
  teacher = toy_config(num_steps=20)
  train.train_and_evaluate(teacher, tmp_path / "teacher", datasets=toy_datasets)
  pool_x, _ = toy_arrays(96, 7)
  np.savez(tmp_path / "pool.npz", x_train=pool_x, y_train=np.zeros(96, np.int32),
           x_test=pool_x[:4], y_test=np.zeros(4, np.int32))
  config = toy_config(num_steps=4)
  config.transfer.extra.update(name="npz", path=str(tmp_path / "pool.npz"), num_classes=4)
  config.distill.teachers = (str(tmp_path / "teacher"),)
  config.distill.terms = {"ce": {"weight": 0.5}, "kd": {"weight": 0.5}}
  train.train_and_evaluate(config, tmp_path / "student", datasets=toy_datasets)
  from jaxkd.run.metrics import read_metrics
  first = [r for r in read_metrics(tmp_path / "student") if r["split"] == "train"][0]
  assert first["loss/kd"] > 0
  import json
  info = json.loads((tmp_path / "student" / "config.json").read_text())
  assert info["transfer"]["extra"]["name"] == "npz"
  from jaxkd.run.assemble import load_data
  transfer, _, _ = load_data(config, toy_datasets)
  assert len(transfer) == 512 + 96 and transfer.num_labeled == 512
  assert "extra=npz/train:96" in transfer.split
