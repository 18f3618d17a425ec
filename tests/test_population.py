"""Populations (jaxkd.run.population): members equal the same configs trained alone; a population
stopped by SIGTERM resumes to the bitwise state of an uninterrupted one."""

import copy
import os
import signal

import jax
import numpy as np
import pytest
from conftest import npz_with_teacher, toy_config

from jaxkd.run import population
from jaxkd.run import train
from jaxkd.errors import JaxkdError
from jaxkd.jobs.export import export
from jaxkd.run.metrics import read_metrics
from jaxkd.run.signals import Stopped
from jaxkd.run.saved import load_run
from jaxkd.engine.sharding import make_mesh


@pytest.fixture(scope="module")
def data_and_teacher(tmp_path_factory):
  root = tmp_path_factory.mktemp("population")
  npz_with_teacher(root, teacher_steps=30)
  return root


def _member(root, seed=0, temperature=4.0, weight=0.5, learning_rate=0.1, steps=12,
            weight_decay=0.0, label_smoothing=0.0, mixup_alpha=0.0, dropout=0.2):
  config = toy_config(num_steps=steps, log_every_steps=4, checkpoint_every_steps=4,
                      eval_every_steps=6)
  config.dataset.path = str(root / "toy.npz")
  config.dataset.mixup_alpha = mixup_alpha
  config.model.dropout = dropout  # Dropout keys must match too.
  config.seed = seed
  config.optimizer.learning_rate = learning_rate
  config.optimizer.weight_decay = weight_decay
  config.distill.teachers = (str(root / "teacher"),)
  config.distill.terms = {"ce": {"weight": 1.0 - weight, "label_smoothing": label_smoothing},
                          "kd": {"weight": weight, "temperature": temperature}}
  return config


def _params(workdir):
  return jax.device_get(load_run(workdir, make_mesh()).variables["params"])


def _assert_close(a, b, **tolerance):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, **tolerance)


@pytest.mark.parametrize("members", [
    [dict(temperature=1.0), dict(temperature=4.0, weight=0.9), dict(learning_rate=0.05)],
    [dict(seed=0), dict(seed=1)],
    [dict(weight_decay=0.05, label_smoothing=0.2), dict(dropout=0.5),
     dict(mixup_alpha=0.4, weight_decay=0.01)],
], ids=["hyperparameters", "seeds", "decay-smoothing-dropout-mixup"])
def test_each_member_equals_its_config_trained_alone(data_and_teacher, tmp_path, members):
  root = data_and_teacher
  configs = [_member(root, **m) for m in members]
  workdirs = [tmp_path / f"member{i}" for i in range(len(configs))]
  results = population.train_population(configs, workdirs, tmp_path / "population")
  export(workdirs[-1], tmp_path / "export", latency_batch_size=8, latency_repeats=1)  # Any member.
  for i, config in enumerate(configs):
    alone = train.train_and_evaluate(copy.deepcopy(config), tmp_path / f"alone{i}")
    _assert_close(_params(workdirs[i]), _params(tmp_path / f"alone{i}"), rtol=2e-5, atol=2e-6)
    assert results[i]["test_errors"] == alone["test_errors"]
    logged = [r for r in read_metrics(workdirs[i]) if r["split"] == "train"]
    reference = [r for r in read_metrics(tmp_path / f"alone{i}") if r["split"] == "train"]
    assert [r["step"] for r in logged] == [r["step"] for r in reference]
    np.testing.assert_allclose([r["loss"] for r in logged], [r["loss"] for r in reference],
                               rtol=1e-5)


def test_one_loop_a_student_alone_and_as_a_population_of_one(data_and_teacher, tmp_path):
  """The one training loop (jaxkd.run.loop.fit) serves a single run and a population: one
  student trained alone and as a population of one logs the same records and ends with
  the same parameters (the vmapped step of one member computes what the plain step does)."""
  config = _member(data_and_teacher)
  alone = train.train_and_evaluate(copy.deepcopy(config), tmp_path / "alone")
  (member,) = population.train_population([copy.deepcopy(config)], [tmp_path / "member"],
                                          tmp_path / "population")
  _assert_close(_params(tmp_path / "member"), _params(tmp_path / "alone"), rtol=1e-6, atol=1e-7)
  assert member["test_errors"] == alone["test_errors"] and member["step"] == alone["step"] == 12
  records = [read_metrics(tmp_path / name) for name in ("alone", "member")]
  assert [(r["step"], r["split"]) for r in records[0]] == [(r["step"], r["split"])
                                                           for r in records[1]]
  for a, b in zip(*records):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)


def test_a_population_stopped_by_sigterm_resumes_bitwise(data_and_teacher, tmp_path,
                                                         monkeypatch):
  root = data_and_teacher
  configs = [_member(root, temperature=t) for t in (2.0, 8.0)]
  whole = [tmp_path / f"whole{i}" for i in range(2)]
  population.train_population(copy.deepcopy(configs), whole, tmp_path / "whole_population")
  real = population.make_population_step

  def stopping(*args, **kwargs):
    step, calls = real(*args, **kwargs), [0]

    def run(*a):
      calls[0] += 1
      if calls[0] == 5:  # Between the checkpoints at steps 4 and 8.
        os.kill(os.getpid(), signal.SIGTERM)
      return step(*a)

    return run

  monkeypatch.setattr(population, "make_population_step", stopping)
  parts = [tmp_path / f"part{i}" for i in range(2)]
  with pytest.raises(Stopped) as stopped:
    population.train_population(copy.deepcopy(configs), parts, tmp_path / "population")
  assert (stopped.value.signal_name, stopped.value.step) == ("SIGTERM", 5)
  monkeypatch.setattr(population, "make_population_step", real)
  population.train_population(copy.deepcopy(configs), parts, tmp_path / "population")
  for a, b in zip(parts, whole):
    for x, y in zip(jax.tree.leaves(_params(a)), jax.tree.leaves(_params(b))):
      np.testing.assert_array_equal(x, y)
    assert ([(r["step"], r["split"]) for r in read_metrics(a)] ==
            [(r["step"], r["split"]) for r in read_metrics(b)])


def test_members_that_differ_in_shape_are_refused(data_and_teacher, tmp_path):
  configs = [_member(data_and_teacher), _member(data_and_teacher)]
  configs[1].model.widths = (16,)
  with pytest.raises(JaxkdError, match=r"differ in \['model.widths'\]"):
    population.train_population(configs, [tmp_path / "a", tmp_path / "b"], tmp_path / "p")


def test_a_member_whose_loss_is_not_finite_stops_the_population_unsaved(data_and_teacher,
                                                                        tmp_path):
  configs = [_member(data_and_teacher), _member(data_and_teacher, learning_rate=1e30)]
  with pytest.raises(JaxkdError, match="of population member 1 became"):
    population.train_population(configs, [tmp_path / "a", tmp_path / "b"], tmp_path / "p")
  assert not list((tmp_path / "p" / "checkpoints").glob("*"))  # No bad state was saved.


@pytest.mark.parametrize("members", [
    [dict(temperature=1.0), dict(temperature=8.0)],
    [dict(seed=0), dict(seed=1, learning_rate=0.05)],
], ids=["shared-batch", "own-batches"])
def test_a_population_split_by_member_equals_one_split_by_batch(data_and_teacher, tmp_path,
                                                               members):
  mesh = make_mesh(jax.devices()[:2])
  params = {}
  for split in ("batch", "member"):
    configs = [_member(data_and_teacher, **m) for m in members]
    for config in configs:
      config.train.population_split = split
    workdirs = [tmp_path / split / f"member{i}" for i in range(len(configs))]
    population.train_population(configs, workdirs, tmp_path / split / "population", mesh)
    params[split] = [_params(w) for w in workdirs]
  for by_batch, by_member in zip(params["batch"], params["member"]):
    _assert_close(by_batch, by_member, rtol=2e-5, atol=2e-6)


def test_a_member_split_needs_whole_members_per_device(data_and_teacher, tmp_path):
  configs = [_member(data_and_teacher, temperature=t) for t in (1.0, 2.0, 4.0)]
  for config in configs:
    config.train.population_split = "member"
  with pytest.raises(JaxkdError, match="multiple of 2 members"):
    population.train_population(configs, [tmp_path / str(i) for i in range(3)], tmp_path / "p",
                                make_mesh(jax.devices()[:2]))
