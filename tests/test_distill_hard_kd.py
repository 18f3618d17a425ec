"""hard_kd against a hand-worked case, and through a config like any registered term."""

import pathlib

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxkd.distill import TermInputs, build_objective


def test_hard_kd_is_cross_entropy_with_the_teachers_argmax():
  student = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
  # Teacher A prefers class 1 then 0; B prefers class 0: their average picks 1, then 2.
  teachers = np.array([[[0.0, 3.0, 0.0], [0.0, 0.0, 2.0]],
                       [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]], np.float32)
  config = ml_collections.ConfigDict({"teacher_combine": "average", "terms": {
      "hard_kd": {"weight": 1.0, "label_smoothing": 0.3}}})
  inputs = TermInputs(jnp.asarray(student), jnp.asarray(teachers), jnp.array([0, 0]),
                      jnp.zeros((2, 3)), jnp.asarray(0))
  total, metrics, _ = build_objective(config, 1, 1)(inputs)
  log_softmax = student - np.log(np.exp(student).sum(-1, keepdims=True))
  smooth = lambda label: np.full(3, 0.1) + 0.7 * np.eye(3)[label]  # 0.3 spread over 3 classes
  expected = -(smooth(1) @ log_softmax[0] + smooth(2) @ log_softmax[1]) / 2
  np.testing.assert_allclose(metrics["loss/hard_kd"], expected, rtol=1e-5)
  np.testing.assert_allclose(total, expected, rtol=1e-5)


def test_the_readme_shows_this_method_file_as_it_is():
  """The README's "Add a method" section shows jaxkd/distill/hard_kd.py complete."""
  root = pathlib.Path(__file__).resolve().parents[1]
  section = (root / "README.md").read_text().split("### Add a method", 1)[1]
  shown = section.split("```python\n", 1)[1].split("```", 1)[0]
  assert shown == (root / "jaxkd" / "distill" / "hard_kd.py").read_text()


def test_the_hard_versus_soft_experiment_runs_small(tmp_path):
  """experiments/hard_vs_soft/run.py end to end, 2 steps per run, 2 seeds: both datasets,
  every arm, the table."""
  import argparse
  import json

  from conftest import load_script

  module = load_script("experiments", "hard_vs_soft", "run.py")
  module.main_with(argparse.Namespace(seeds=2, workdir=tmp_path, steps=2, no_readme=True))
  table = json.loads((tmp_path / "table.json").read_text())
  assert set(table) == {f"{d}/{a}" for d in ("mnist", "digits") for a in module.ARMS}
  assert all(len(errors) == 2 for errors in table.values())
