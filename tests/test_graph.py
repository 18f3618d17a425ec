"""Runs as a graph (jaxkd.jobs.graph): a born-again chain whose generation k is taught by
generation k - 1's final checkpoint of the same seed, each run equal to the same run trained
by hand, a chain stopped in the middle resuming to the same result, the report's errors
those of each run's own last evaluation, and every mistake in a graph refused before any
training."""

import json
import pathlib

import jax
import ml_collections
import numpy as np
import pytest
from conftest import toy_arrays, toy_config

from jaxkd.config import graph_config
from jaxkd.errors import JaxkdError
from jaxkd.jobs import graph
from jaxkd.run.metrics import last_record

KD = {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 2.0}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("graph")
  x, y = toy_arrays(256, 0)
  xt, yt = toy_arrays(64, 1)
  yt[:12] = (yt[:12] + 1) % 4  # Wrong labels: every model makes errors, each its own count.
  np.savez(root / "toy.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
  return str(root / "toy.npz")


def _run(path: str, terms: dict, teachers: tuple = (), width: int = 16, steps: int = 8):
  config = toy_config(num_steps=steps, checkpoint_every_steps=4)
  config.dataset.path = path
  config.model.widths = (width,)
  config.distill.terms = ml_collections.ConfigDict(terms)
  config.distill.teachers = teachers
  return config


def _chain(path: str, ban2_steps: int = 8) -> ml_collections.ConfigDict:
  config = graph_config()
  config.seeds = 2
  config.baseline = "alone"
  config.runs = ml_collections.ConfigDict({
      "teacher": _run(path, {"ce": {"weight": 1.0}}, width=32),
      "alone": _run(path, {"ce": {"weight": 1.0}}),
      "ban1": _run(path, KD, ("teacher",)),
      "ban2": _run(path, KD, ("ban1",), steps=ban2_steps),
      "both": _run(path, KD, ("ban1", "ban2"))})
  return config


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
  """The chain trained without a stop: (its report, its workdir)."""
  workdir = tmp_path_factory.mktemp("straight") / "g"
  return graph.run(_chain(data), workdir), workdir


def _params(workdir):
  from jaxkd.engine.sharding import make_mesh
  from jaxkd.run.saved import load_run

  return jax.tree.leaves(load_run(workdir, make_mesh(jax.devices()[:1])).variables)


def test_a_born_again_chain_is_each_generation_taught_by_the_one_before(data, straight,
                                                                        tmp_path):
  from jaxkd.run import train

  report, root = straight
  assert report["order"] == ["alone", "teacher", "ban1", "ban2", "both"]
  for seed in (0, 1):
    for name, teachers in (("ban1", ["teacher"]), ("ban2", ["ban1"]),
                           ("both", ["ban1", "ban2"])):
      info = json.loads((root / name / f"seed={seed}" / "run_info.json").read_text())
      assert [(pathlib.Path(t["path"]), t["step"]) for t in info["teachers"]] == [
          ((root / t / f"seed={seed}").absolute(), 8) for t in teachers]
  # Generation 2 of seed 1 trained by hand from generation 1's directory: the same model.
  by_hand = _run(data, KD, (str(root / "ban1" / "seed=1"),))
  by_hand.seed = 1
  train.train_and_evaluate(by_hand, tmp_path / "by_hand")
  for a, b in zip(_params(tmp_path / "by_hand"), _params(root / "ban2" / "seed=1")):
    np.testing.assert_array_equal(a, b)
  # The report's errors are each run's own last test evaluation (the training loop's).
  for name in ("teacher", "alone", "ban1", "ban2", "both"):
    errors = [round(64 * (1 - last_record(root / name / f"seed={s}", "test")
                          ["accuracy"])) for s in (0, 1)]
    assert report["runs"][name]["errors"] == errors, name
  assert "ensemble(ban1, ban2)" in report["runs"]
  gain = report["runs"]["ban2"]["gain"]["difference"]
  assert gain == pytest.approx(np.mean(report["runs"]["alone"]["errors"]) -
                               np.mean(report["runs"]["ban2"]["errors"]))
  assert "| ban2 | ban1 |" in (root / "report.md").read_text()


def test_a_chain_stopped_in_the_middle_resumes_to_the_same_models(data, straight, tmp_path):
  stopped = _chain(data, ban2_steps=4)  # Stopped in generation 2; 'both' not begun.
  del stopped.runs["both"]
  graph.run(stopped, tmp_path / "stopped")
  graph.run(_chain(data), tmp_path / "stopped")
  for name in ("ban2", "both"):
    for a, b in zip(_params(straight[1] / name / "seed=0"),
                    _params(tmp_path / "stopped" / name / "seed=0")):
      np.testing.assert_array_equal(a, b)
  # A run finished from a teacher that has trained on since is not silently reused.
  graph.run(_chain(data, ban2_steps=4), tmp_path / "stale")
  with pytest.raises(JaxkdError, match="the teacher changed since"):
    graph.run(_chain(data), tmp_path / "stale")


@pytest.mark.parametrize("change, message", [
    (lambda c: c.runs.ban1.distill.update(teachers=("ban1",)), "names itself"),
    (lambda c: c.runs.teacher.distill.update(terms={"ce": {"weight": 0.5}, **KD},
                                             teachers=("ban2",)), "in a cycle"),
    (lambda c: c.runs.ban2.distill.update(teachers=("ban_1",)), "neither a run of this graph"),
    (lambda c: c.update(baseline="alnoe"), "is not a run of this graph"),
    (lambda c: c.update(seeds=0), "seeds must be a positive number"),
    (lambda c: c.runs.ban1.distill.update(teachers=(), soft_labels=("teacher",)),
     "teach online"),
    (lambda c: c.runs.ban1.train.update(batch_size=0), "runs.ban1: train.batch_size"),
])
def test_graph_mistakes_are_one_line_before_any_training(data, tmp_path, change, message):
  config = _chain(data)
  change(config)
  with pytest.raises(JaxkdError, match=message):
    graph.run(config, tmp_path / "g")
  assert not (tmp_path / "g").exists()


def test_a_cohort_is_refused_as_a_teacher_and_as_a_population_member(data, tmp_path):
  from jaxkd.config.population import check_population

  config = _chain(data)
  config.runs.ban1.distill.update(terms={"ce": {"weight": 1.0}, "dml": {"weight": 1.0}},
                                  teachers=(), cohort=2)
  with pytest.raises(JaxkdError, match="taught by the cohort"):
    graph.run(config, tmp_path / "g")
  members = [graph.seed_config(config, tmp_path, "ban1", i) for i in range(2)]
  with pytest.raises(JaxkdError, match="cohort of 2 students"):
    check_population(members)


def test_the_schemes_graph_orders_its_chains():
  from conftest import load_script

  config = load_script("experiments", "schemes", "run.py").schemes_config(3, 2)
  order = graph.validate(config)
  for teacher, student in (("teacher", "kd"), ("teacher", "assistant"), ("assistant", "takd"),
                           ("alone", "ban1"), ("ban1", "ban2"), ("ban2", "ban3"),
                           ("ban3", "ban_ensemble")):
    assert order.index(teacher) < order.index(student)
  assert config.runs.ban_ensemble.distill.teachers == ("ban1", "ban2", "ban3")
  assert all(run.train.num_steps == 2 for run in config.runs.values())
