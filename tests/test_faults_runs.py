"""What goes wrong around a run, through Python (the command line's cases are in
test_faults_cli.py): resumes that would change the result, teachers that changed, caches
that disagree with the teachers, bad user data, damaged files, the Python API's mistakes,
and a sweep stopped inside a population."""

import copy
import json
import os
import signal

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from conftest import npz_with_teacher, toy_arrays, toy_config

import jaxkd
from jaxkd.data import ArrayDataset
from jaxkd.engine.sharding import make_mesh
from jaxkd.errors import JaxkdError
from jaxkd.files import write_text
from jaxkd.jobs.export import load_portable
from jaxkd.jobs.sweep.grid import Sweep
from jaxkd.run import population, train
from jaxkd.run.metrics import read_metrics
from jaxkd.run.signals import Stopped
from jaxkd.run.soft_labels import write_soft_labels

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
  root = tmp_path_factory.mktemp("faults_runs")
  return root, npz_with_teacher(root, teacher_steps=8)


def _config(path, **train_fields):
  config = toy_config(checkpoint_every_steps=4, **train_fields)
  config.dataset.path = path
  return config


def test_a_resume_with_other_settings_is_refused_naming_the_fields(toy, tmp_path):
  _, path = toy
  train.train_and_evaluate(_config(path, num_steps=4), tmp_path / "run")
  changed = _config(path, num_steps=8)
  changed.optimizer.learning_rate = 0.05
  changed.distill.terms.ce.label_smoothing = 0.1
  with pytest.raises(JaxkdError, match=r"started with other settings \(distill.terms.ce."
                                       r"label_smoothing: '<none>' -> 0.1; optimizer."
                                       r"learning_rate: 0.1 -> 0.05\)"):
    train.train_and_evaluate(changed, tmp_path / "run")
  longer = _config(path, num_steps=8, eval_every_steps=2)  # Length and logging may change.
  assert train.train_and_evaluate(longer, tmp_path / "run")["step"] == 8
  cosine = _config(path, num_steps=4)
  cosine.schedule.name = "cosine"
  train.train_and_evaluate(cosine, tmp_path / "cosine")
  cosine.train.num_steps = 8  # The cosine of 4 steps is not the start of one of 8.
  with pytest.raises(JaxkdError, match=r"train.num_steps: 4 -> 8\) \(its length changes a "
                                       r"schedule"):
    train.train_and_evaluate(cosine, tmp_path / "cosine")


def test_a_teacher_trained_further_since_is_refused(toy, tmp_path):
  root, path = toy
  teacher = tmp_path / "teacher"
  train.train_and_evaluate(_config(path, num_steps=8), teacher)
  student = _config(path, num_steps=4)
  student.distill.teachers = (str(teacher),)
  student.distill.terms = {"ce": {"weight": 0.5}, "kd": {"weight": 0.5}}
  train.train_and_evaluate(copy.deepcopy(student), tmp_path / "student")
  pins = json.loads((tmp_path / "student" / "run_info.json").read_text())["teachers"]
  assert [(p["path"], p["step"]) for p in pins] == [(str(teacher.absolute()), 8)]
  assert len(pins[0]["fingerprint"]) == 16
  train.train_and_evaluate(_config(path, num_steps=12), teacher)  # Trained further.
  student.train.num_steps = 8
  with pytest.raises(JaxkdError, match=r"was trained from other teachers \(.*teacher at step 8 "
                                       r".*than this run's \(.*teacher at step 12"):
    train.train_and_evaluate(student, tmp_path / "student")


def test_a_cache_of_another_teacher_beside_distill_teachers_is_refused(toy, tmp_path):
  root, path = toy
  other = tmp_path / "other"
  train.train_and_evaluate(_config(path, num_steps=4), other)
  cache = write_soft_labels(other, tmp_path / "other.npz", "float32", batch_size=64)
  config = _config(path, num_steps=2)
  config.distill.update(teachers=(str(root / "teacher"),), soft_labels=(str(cache),))
  config.distill.terms = {"kd": {"weight": 1.0}}
  with pytest.raises(JaxkdError, match=r"was written by the teacher in .*other, but "
                                       r"distill.teachers names .*teacher"):
    train.train_and_evaluate(config, tmp_path / "student")
  cache.write_bytes(cache.read_bytes()[:200])  # Truncated, as a crash or a full disk leaves it.
  config.distill.teachers = ()
  with pytest.raises(JaxkdError, match=r"soft label cache .*other.npz is damaged or truncated "
                                       r"\(BadZipFile"):
    train.train_and_evaluate(config, tmp_path / "student")


def test_user_data_that_is_not_finite_or_empty_is_refused_naming_split_and_index():
  x, y = toy_arrays(16, 0)
  x = x.astype(np.float32) / 255.0
  bad = x.copy()
  bad[11, 2, 3, 0] = np.nan
  with pytest.raises(JaxkdError, match=r"mine/test: the inputs of example 11 are not finite"):
    ArrayDataset(bad, y, 4, name="mine", split="test")
  features = np.ones((5, 3), np.float32)
  features[2, 1] = np.inf
  with pytest.raises(JaxkdError, match=r"example 2 are not finite"):
    ArrayDataset(features, np.zeros(5, int), 2, kind="numeric")
  with pytest.raises(JaxkdError, match=r"arrays/train has no examples"):
    ArrayDataset(x[:0], y[:0], 4)


def test_a_torn_last_metrics_line_is_what_a_crash_leaves_and_resumes(toy, tmp_path):
  _, path = toy
  train.train_and_evaluate(_config(path, num_steps=4), tmp_path / "run")
  with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "split": "tr')  # A crash in the middle of a write.
  assert train.train_and_evaluate(_config(path, num_steps=8), tmp_path / "run")["step"] == 8
  assert [r["step"] for r in read_metrics(tmp_path / "run") if r["split"] == "train"] == [
      2, 4, 6, 8]
  with open(tmp_path / "run" / "metrics.jsonl", "r+") as f:
    lines = f.readlines()
    f.seek(0)
    f.writelines([lines[0][:10] + "\n", *lines[1:]])  # Damage before the last line is not.
  with pytest.raises(JaxkdError, match=r"metrics.jsonl line 1 is damaged"):
    read_metrics(tmp_path / "run")


def test_a_file_a_user_keeps_is_whole_or_as_it_was(tmp_path, monkeypatch):
  target = tmp_path / "report.json"
  write_text(target, "old")

  def disk_full(fd):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, "fsync", disk_full)
  with pytest.raises(OSError):
    write_text(target, "new, half written")
  assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


class Net(nn.Module):
  classes: int = 4

  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(self.classes)(nn.relu(nn.Dense(16)(x.reshape((x.shape[0], -1)))))


def test_the_python_api_validates_as_the_command_line_does(tmp_path):
  train_set, test_set = toy_arrays(64, 0), toy_arrays(32, 1)
  fit = dict(optimizer=optax.sgd(0.1), epochs=1, batch_size=16)
  with pytest.raises(JaxkdError, match=r"unknown config field 'labelled_fraction' in "
                                       r"config.transfer.*did you mean 'labeled_fraction'"):
    jaxkd.train_student(Net(), train_set, test_set, workdir=tmp_path / "a", **fit,
                        config={"transfer": {"labelled_fraction": 0.1}})
  teacher = jaxkd.train_student(Net(), train_set, test_set, workdir=tmp_path / "t", **fit)
  with pytest.raises(JaxkdError, match=r"gives a Result where its variables belong"):
    jaxkd.train_student(Net(), train_set, test_set, workdir=tmp_path / "b", **fit,
                        teachers=[(Net(), teacher)], terms={"kd": {"weight": 1.0}})
  five = Net(classes=5)
  variables = five.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1), np.float32))
  with pytest.raises(JaxkdError, match=r"a teacher given as an object's output has shape "
                                       r"\(1, 5\).*4 classes"):
    jaxkd.train_student(Net(), train_set, test_set, workdir=tmp_path / "c", **fit,
                        teachers=[(five, variables)], terms={"kd": {"weight": 1.0}})


def test_a_python_api_student_predicts_raw_inputs_and_exports(tmp_path):
  """result.predict takes raw pixels as training got them (it normalises as training did):
  its accuracy is the run's; jaxkd.export(result) writes the student like any run's."""
  (x, y), (xt, yt) = toy_arrays(256, 0), toy_arrays(64, 1)
  result = jaxkd.train_student(Net(), (x, y), (xt, yt), workdir=tmp_path / "run",
                               optimizer=optax.sgd(0.1), epochs=4, batch_size=32)
  logits = result.predict(xt)
  assert np.mean(logits.argmax(-1) == yt) == result.metrics["test_accuracy"]
  raw = np.asarray(Net().apply(result.variables, xt.astype(np.float32), train=False))
  assert not np.allclose(raw, logits)  # The normalisation matters: it is applied.
  info = jaxkd.export(result, tmp_path / "export", latency_batch_size=4, latency_repeats=1)
  assert info["model_class"]["name"] == "Net"
  np.testing.assert_allclose(load_portable(tmp_path / "export")(xt), logits, rtol=1e-5,
                             atol=1e-5)
  assert jaxkd.load_run(tmp_path / "run", make_mesh()).model == Net()  # Its class imports.

  class Local(Net):  # A class that cannot be imported from what the run records.
    pass

  local = jaxkd.train_student(Local(), (x, y), (xt, yt), workdir=tmp_path / "local",
                              optimizer=optax.sgd(0.1), epochs=1, batch_size=32)
  with pytest.raises(JaxkdError, match=r"trained test_faults_runs.*Local, which does not import "
                                       r"here.*model=YourModule"):
    jaxkd.load_run(local.workdir, make_mesh())
  assert jaxkd.load_run(local.workdir, make_mesh(), model=Local()).step == 8


def test_a_sweep_stopped_inside_a_population_resumes_it_bitwise(toy, tmp_path, monkeypatch):
  _, path = toy
  config = _config(path, num_steps=8)
  specs = ["optimizer.learning_rate=0.1,0.05"]
  whole = Sweep(copy.deepcopy(config), tmp_path / "whole", specs, seeds=1)
  whole.run_cells()
  whole.write_report()
  real, calls = population.make_population_step, [0]

  def stopping(*args, **kwargs):
    step = real(*args, **kwargs)

    def run(*a):
      calls[0] += 1
      if calls[0] == 6:  # Between the population's checkpoints at steps 4 and 8.
        os.kill(os.getpid(), signal.SIGTERM)
      return step(*a)

    return run

  monkeypatch.setattr(population, "make_population_step", stopping)
  part = Sweep(copy.deepcopy(config), tmp_path / "part", specs, seeds=1)
  with pytest.raises(Stopped):
    part.run_cells()
  assert [part.state(c) for c in part.cells] == ["-", "-"]  # Not 'started alone'.
  monkeypatch.setattr(population, "make_population_step", real)
  part = Sweep(copy.deepcopy(config), tmp_path / "part", specs, seeds=1)
  part.run_cells()
  part.write_report()
  columns = lambda sweep: (sweep.workdir / "results.csv").read_text()
  assert columns(part) == columns(whole)
  for a, b in zip(part.cells, whole.cells):
    mine, theirs = (jax.device_get(jaxkd.load_run(c.workdir, make_mesh()).variables)
                    for c in (a, b))
    for u, v in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs)):
      np.testing.assert_array_equal(u, v)
