"""model.init_from: a model starting from another run's parameters, a head of another class
count started fresh, the backbone held by train.freeze; inputs of any kind end to end."""

import ml_collections
import numpy as np
import pytest
from conftest import toy_arrays, toy_config

from jaxkd.run import train
from jaxkd.data import ArrayDataset
from jaxkd.data.augment import Preprocess, model_input
from jaxkd.errors import JaxkdError
from jaxkd.jobs.export import export, load_exported, load_portable, make_inference_fn
from jaxkd.run.saved import load_run
from jaxkd.engine.sharding import make_mesh


def test_init_from_loads_what_fits_and_starts_a_new_head_fresh(tmp_path, toy_datasets, capsys):
  source = toy_config(num_steps=20)
  train.train_and_evaluate(source, tmp_path / "source", datasets=toy_datasets)
  # A new domain with 3 classes: the same network, another head.
  x, y = toy_arrays(256, 5)
  three = tuple(ArrayDataset(images, labels % 3, 3, name="three", split=split)
                for images, labels, split in ((x, y, "train"), (x[:64], y[:64], "test")))
  config = toy_config(num_steps=10)
  config.model.init_from = str(tmp_path / "source")
  config.train.freeze = ("params/dense0",)  # Hold the backbone, train the new head.
  train.train_and_evaluate(config, tmp_path / "adapted", datasets=three)
  said = capsys.readouterr().out
  assert "model.init_from" in said and "started fresh: params/head/bias ((3,) here, (4,) there)" in said
  mesh = make_mesh()
  before = load_run(tmp_path / "source", mesh).variables["params"]
  after = load_run(tmp_path / "adapted", mesh).variables["params"]
  np.testing.assert_array_equal(after["dense0"]["kernel"], before["dense0"]["kernel"])
  assert after["head"]["kernel"].shape == (32, 3)
  other = toy_config(num_steps=1)
  other.model = ml_collections.ConfigDict({"name": "mlp", "widths": (16, 16),
                                           "init_from": str(tmp_path / "adapted")})
  with pytest.raises(JaxkdError, match="none of its arrays matches this model"):
    train.train_and_evaluate(other, tmp_path / "mismatch", datasets=toy_datasets)


def test_tabular_features_train_export_and_are_never_scaled_as_pixels(tmp_path):
  """Features [N, D] go to the model as they are (no /255, no normalisation, no crops), through
  training, evaluation and the exported function."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(300, 5)).astype(np.float32)
  y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
  data = tuple(ArrayDataset(x[part], y[part], 2, name="table", split=split, kind="numeric")
               for part, split in ((slice(0, 240), "train"), (slice(240, 300), "test")))
  preprocess = Preprocess((0.5,), (0.5,), crop_padding=2, flip=True)
  np.testing.assert_array_equal(model_input({"numeric": x}, preprocess, key=None), x)
  config = toy_config(num_steps=60, batch_size=40)
  result = train.train_and_evaluate(config, tmp_path / "run", datasets=data)
  assert result["test_accuracy"] > 0.9
  export(tmp_path / "run", tmp_path / "export", latency_batch_size=8, latency_repeats=1)
  model, variables, info = load_exported(tmp_path / "export")
  assert info["input_kind"] == "numeric"
  want = np.asarray(model.apply(variables, x[240:], train=False))  # Raw features, unscaled.
  np.testing.assert_allclose(make_inference_fn(model, variables, info)(x[240:]), want, rtol=1e-5)
  np.testing.assert_allclose(load_portable(tmp_path / "export", "float32")(x[240:]), want,
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(JaxkdError, match="tokens must be integer ids"):
    ArrayDataset(x, y, 2, kind="tokens")
  with pytest.raises(JaxkdError, match="kind='numeric'"):
    ArrayDataset(x, y, 2)
