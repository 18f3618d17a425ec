import importlib.util
import json

import jax
import ml_collections
import numpy as np
import pytest
from conftest import toy_arrays, toy_config

from jaxkd.run import train
from jaxkd.data import ArrayDataset, Preprocess
from jaxkd.errors import JaxkdError
from jaxkd.jobs.export import export, load_exported, load_portable, make_inference_fn
from jaxkd.engine.sharding import make_mesh
from jaxkd.engine.evaluation import evaluate, make_eval_step


@pytest.fixture(scope="module")
def fitnet_run(tmp_path_factory):
  """A LeNet student with BatchNorm, taught by an MLP through a FitNets connector (aux
  params in its train state), trained a few steps on 16x16 toy images, on one device (the
  fastest to compile)."""
  tmp_path = tmp_path_factory.mktemp("fitnet")
  x, y = toy_arrays(256, 0, size=16)
  xt, yt = toy_arrays(100, 1, size=16)
  np.savez(tmp_path / "toy.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
  teacher = toy_config(num_steps=4)
  teacher.dataset.path = str(tmp_path / "toy.npz")
  mesh = make_mesh(jax.devices()[:1])
  train.train_and_evaluate(teacher, tmp_path / "teacher", mesh=mesh)
  student = toy_config(num_steps=6)
  student.dataset.path = str(tmp_path / "toy.npz")
  student.model = ml_collections.ConfigDict({"name": "lenet", "batch_norm": True})
  student.distill.teachers = (str(tmp_path / "teacher"),)
  student.distill.terms = ml_collections.ConfigDict({
      "ce": {"weight": 1.0},
      "hint": {"term": "fitnet", "weight": 1.0, "student": "dense1", "teacher": "dense0"}})
  result = train.train_and_evaluate(student, tmp_path / "student", mesh=mesh)
  test = ArrayDataset(xt, yt, num_classes=4, name="npz", split="test")
  return tmp_path, result, test


def test_export_holds_the_student_alone_and_reproduces_its_test_accuracy(fitnet_run):
  tmp_path, result, test = fitnet_run
  info = export(tmp_path / "student", tmp_path / "export", latency_batch_size=8,
                latency_repeats=2)
  assert info["left_out"]["aux_params"] > 0 and info["left_out"]["opt_state"] > 0
  assert info["latency_ms"] > 0 and info["params"] > 0
  saved = json.loads((tmp_path / "export" / "run_info.json").read_text())
  assert saved["num_classes"] == 4 and saved["input_shape"] == [16, 16, 1]
  assert saved["preprocessing"]["mean"] == [0.5] and saved["preprocessing"]["std"] == [0.5]
  assert (tmp_path / "export" / "config.json").exists()

  model, variables, loaded_info = load_exported(tmp_path / "export")
  assert set(variables) == {"params", "batch_stats"}  # no aux_params, aux_state, opt_state
  assert "hint" not in variables["params"] and "dense1" in variables["params"]
  assert sum(x.size for x in jax.tree.leaves(variables["params"])) == info["params"]
  assert loaded_info["config"].model.name == "lenet"

  # The reloaded student, evaluated as training evaluates, gives the run's test accuracy.
  mesh = make_mesh(jax.devices()[:1])
  preprocess = Preprocess(tuple(loaded_info["preprocessing"]["mean"]),
                          tuple(loaded_info["preprocessing"]["std"]))
  metrics = evaluate(make_eval_step(model, preprocess, mesh, loaded_info["input_kind"]),
                           jax.device_put(variables, jax.sharding.NamedSharding(
                               mesh, jax.sharding.PartitionSpec())), test, 64, mesh)
  assert metrics["accuracy"] == result["test_accuracy"]
  assert metrics["errors"] == result["test_errors"]
  # And so does the plain inference function, on one device.
  logits = np.asarray(make_inference_fn(model, variables, loaded_info)(test.inputs))
  assert int((logits.argmax(-1) == test.labels).sum()) == test.labels.size - result["test_errors"]

  # A training run is not an export; a second export replaces the first.
  with pytest.raises(JaxkdError, match="is a training run, not an export"):
    load_exported(tmp_path / "student")
  export(tmp_path / "student", tmp_path / "export", latency_batch_size=8, latency_repeats=1)
  with pytest.raises(JaxkdError, match="is not an export"):
    export(tmp_path / "student", tmp_path / "teacher")


def test_portable_artifact_gives_the_jax_logits_without_the_model_code(fitnet_run):
  """jax.export's serialised function (weights inside, batch size free) gives the logits of
  the reloaded student, for uint8 pixels and for floats on [0, 1]."""
  tmp_path, _, test = fitnet_run
  export(tmp_path / "student", tmp_path / "portable", latency_batch_size=8, latency_repeats=1)
  model, variables, info = load_exported(tmp_path / "portable")
  want = np.asarray(make_inference_fn(model, variables, info)(test.inputs[:5]))
  np.testing.assert_allclose(load_portable(tmp_path / "portable")(test.inputs[:5]), want,
                             rtol=1e-5, atol=1e-5)
  floats = test.inputs[:3].astype(np.float32) / 255.0
  np.testing.assert_allclose(load_portable(tmp_path / "portable", "float32")(floats), want[:3],
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(JaxkdError, match="does not exist"):
    load_portable(tmp_path / "student")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="TensorFlow is not installed")
def test_saved_model_gives_the_jax_logits(fitnet_run):
  import tensorflow as tf

  tmp_path, _, test = fitnet_run
  export(tmp_path / "student", tmp_path / "tf_export", saved_model=True, latency_batch_size=8,
         latency_repeats=1)
  model, variables, info = load_exported(tmp_path / "tf_export")
  images = test.inputs[:5]
  expected = np.asarray(make_inference_fn(model, variables, info)(images))
  loaded = tf.saved_model.load(str(tmp_path / "tf_export" / "saved_model"))
  logits = loaded.signatures["serving_default"](images=tf.constant(images))["logits"].numpy()
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
  floats = loaded.serve_float(tf.constant(images.astype(np.float32) / 255.0))["logits"].numpy()
  np.testing.assert_allclose(floats, expected, rtol=1e-4, atol=1e-4)
  assert loaded.serve(tf.constant(test.inputs[:3]))["logits"].shape == (3, 4)  # any batch size
