"""What a user or a cluster does wrong, through the real command line (subprocesses, real
signals): each gets one line, `jaxkd: error: ...` (exit 2) or the stop message (exit 0),
and nothing is lost. The cases run through Python are in test_faults_runs.py."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import toy_arrays

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")

CONFIG = """
import os
import sys

sys.path.insert(0, {tests!r})
xla_flags = os.environ.get("XLA_FLAGS", "")
from conftest import toy_config  # noqa: E402  (its import asks for 8 devices; these use 1)

os.environ["XLA_FLAGS"] = xla_flags


def get_config():
  config = toy_config(num_steps=8, checkpoint_every_steps=4, eval_every_steps=8)
  config.dataset.path = {path!r}
  return config
"""

# The command line, with hooks that announce a phase on stdout and wait in it (so that a
# test can send a signal there) or slow every batch down.
DRIVER = """
import os, sys, time
import jaxkd.cli

phase, delay = os.environ.get("WAIT_IN", ""), float(os.environ.get("STEP_DELAY", "0"))


def waiting(module, name):
  real = getattr(module, name)

  def wrapper(*args, **kwargs):
    print(f"PHASE {{phase}}", flush=True)
    time.sleep(60)
    return real(*args, **kwargs)

  setattr(module, name, wrapper)


if phase == "loading":
  from jaxkd.data import catalog
  waiting(catalog, "load_source_split")
elif phase == "soft_labels":
  from jaxkd.jobs import pipeline
  waiting(pipeline, "write_soft_labels")
elif phase == "between_populations":
  from jaxkd.jobs.sweep import grid
  from jaxkd.run import population
  real, calls = population.train_population, []

  def second_waits(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      print("PHASE between_populations", flush=True)
      time.sleep(60)
    return real(*args, **kwargs)

  population.train_population = second_waits
if delay:
  from jaxkd.data import batches
  load = batches.TrainBatches.batch

  def slow(self, step):
    time.sleep(delay)
    return load(self, step)

  batches.TrainBatches.batch = slow
jaxkd.cli.main(["jaxkd", *sys.argv[1:]])
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("faults_cli")
  x, y = toy_arrays(256, 0)
  xt, yt = toy_arrays(64, 1)
  np.savez(root / "toy.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
  (root / "config.py").write_text(CONFIG.format(tests=str(REPO / "tests"),
                                                path=str(root / "toy.npz")))
  (root / "driver.py").write_text(DRIVER.format())
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # One device: faster.
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  return root, env


def _run(setup, *args, timeout=300, **extra):
  root, env = setup
  return subprocess.run([sys.executable, str(root / "driver.py"), *args], capture_output=True,
                        text=True, cwd=REPO, env={**env, **extra}, timeout=timeout)


def _start(setup, *args, **extra):
  root, env = setup
  return subprocess.Popen([sys.executable, str(root / "driver.py"), *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                          env={**env, **extra})


def _error(result) -> str:
  """The one line of a refused command: exit 2, no traceback."""
  assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith("jaxkd: error: "), result.stderr[-3000:]
  return line


def _train(setup, workdir, *overrides, **extra):
  root, _ = setup
  return _run(setup, "train", f"--config={root / 'config.py'}", f"--workdir={workdir}",
              *overrides, **extra)


def test_config_file_mistakes_are_one_line(setup, tmp_path):
  root, _ = setup
  missing = _error(_run(setup, "train", "--config=no_such_config.py", f"--workdir={tmp_path}"))
  assert "config file no_such_config.py does not exist" in missing
  broken = tmp_path / "broken.py"
  broken.write_text("def get_config():\n  raise ValueError('a bad recipe')\n")
  assert "ValueError: a bad recipe" in _error(
      _run(setup, "train", f"--config={broken}", f"--workdir={tmp_path / 'w'}"))
  assert "did you mean 'epochs'" in _error(_train(setup, tmp_path / "w", "--config.train.epoch=2"))
  assert "must not be empty" in _error(_train(setup, ""))
  assert "unexpected arguments ['extra']" in _error(_train(setup, tmp_path / "w", "extra"))
  assert not (tmp_path / "w").exists()  # Nothing written for a refused command.


def test_a_term_and_a_term_option_are_added_from_the_command_line(setup, tmp_path):
  """The README's own override: a term the config does not list, and an option of a listed
  term that the config leaves at its default; a misspelled option or term is one line."""
  teacher = tmp_path / "teacher"
  assert _train(setup, teacher).returncode == 0
  student = tmp_path / "student"
  terms = [f"--config.distill.teachers=('{teacher}',)", "--config.distill.terms.hard_kd.weight=0.5",
           "--config.distill.terms.ce.label_smoothing=0.1"]
  done = _train(setup, student, *terms)
  assert done.returncode == 0, done.stderr[-3000:]
  stored = json.loads((student / "config.json").read_text())["distill"]["terms"]
  assert stored == {"ce": {"weight": 1.0, "label_smoothing": 0.1}, "hard_kd": {"weight": 0.5}}
  assert "objective term 'hard_kd' has no option(s) ['temprature']" in _error(_train(
      setup, tmp_path / "s2", *terms, "--config.distill.terms.hard_kd.temprature=2"))
  assert "unknown objective term 'hard_kdd'. Did you mean 'hard_kd'" in _error(_train(
      setup, tmp_path / "s3", "--config.distill.terms.hard_kdd.weight=1"))


def test_a_workdir_that_is_a_file_or_cannot_be_created(setup, tmp_path):
  file = tmp_path / "a_file"
  file.write_text("keep me")
  assert "is a file, not a directory" in _error(_train(setup, file))
  assert file.read_text() == "keep me"
  assert "cannot be created" in _error(_train(setup, "/proc/jaxkd_workdir"))


def test_two_runs_on_one_workdir_and_a_stale_lock(setup, tmp_path):
  """The second run refuses, naming the first (host, pid); after the first is killed
  (SIGKILL: its lock stays behind), the next run recognises the lock as stale and goes on."""
  workdir = tmp_path / "run"
  first = _start(setup, "train", f"--config={setup[0] / 'config.py'}", f"--workdir={workdir}",
                 STEP_DELAY="3")
  try:
    for _ in range(600):
      if (workdir / ".jaxkd.lock").exists():
        break
      time.sleep(0.1)
    holder = json.loads((workdir / ".jaxkd.lock").read_text())
    assert holder["pid"] == first.pid
    line = _error(_train(setup, workdir))
    assert f"is in use by process {first.pid} on {holder['host']}" in line
  finally:
    first.kill()
    first.wait()
  assert (workdir / ".jaxkd.lock").exists()  # Left by the killed run.
  again = _train(setup, workdir)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "final test accuracy" in again.stdout and not (workdir / ".jaxkd.lock").exists()
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in lines if r["split"] == "train"] == [2, 4, 6, 8]  # One run's lines.


@pytest.mark.parametrize("phase", ["loading", "soft_labels", "between_populations"])
def test_sigterm_outside_the_training_loop(setup, tmp_path, phase):
  """SIGTERM while the data loads, while a pipeline writes its soft labels, or between a
  sweep's populations: the stop message and exit 0, no file left half-written; the same
  command then finishes."""
  root, _ = setup
  if phase == "loading":
    command = ["train", f"--config={root / 'config.py'}", f"--workdir={tmp_path / 'run'}"]
  elif phase == "soft_labels":
    (tmp_path / "pipeline.py").write_text(PIPELINE.format(config=str(root / "config.py")))
    command = ["train", f"--config={tmp_path / 'pipeline.py'}", f"--workdir={tmp_path / 'run'}"]
  else:
    command = ["sweep", f"--config={root / 'config.py'}", f"--workdir={tmp_path / 'run'}",
               "--sweep", "optimizer.learning_rate=0.1,0.05", "--sweep", "model.widths=(8,),(16,)"]
  process = _start(setup, *command, WAIT_IN=phase)
  try:
    for line in process.stdout:
      if line.startswith(f"PHASE {phase}"):
        break
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
  finally:
    process.kill()
  assert process.returncode == 0, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  assert "stopped by SIGTERM; every checkpoint and finished stage is kept. Run the same command " \
         "again to resume." in out
  assert not list((tmp_path / "run").rglob("*.tmp*")) if (tmp_path / "run").exists() else True
  again = _run(setup, *command)
  assert again.returncode == 0, again.stderr[-3000:]


PIPELINE = """
from jaxkd.config import load_config_file, pipeline_config


def get_config():
  config = pipeline_config()
  config.teacher = load_config_file({config!r})
  config.student = load_config_file({config!r})
  config.student.model.widths = (8,)
  config.student.train.num_steps = 4
  config.student.seeds = 2
  config.report.update(latency_batch_size=8, latency_repeats=1)
  return config
"""


def test_a_full_disk_stops_at_the_failed_save(setup, tmp_path):
  """A real full filesystem (a 200 KiB tmpfs, where the machine allows mounting one): the run
  stops at the save that failed with one line naming it, not hundreds of orbax lines, and
  not steps later with nothing saved."""
  disk = tmp_path / "disk"
  disk.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)],
                    capture_output=True).returncode:
    pytest.skip("mounting a small tmpfs is not permitted on this machine")
  try:
    result = _train(setup, disk / "run", "--config.model.widths=(256,)",
                    "--config.train.num_steps=40")
    line = _error(result)
    assert "could not write the checkpoint of step 4 in" in line and (
        "No space left on device" in line)
    assert len(result.stderr.strip().splitlines()) < 10, result.stderr[-3000:]
  finally:
    subprocess.run(["umount", str(disk)], capture_output=True)


def test_export_to_a_mistyped_or_damaged_run_keeps_the_earlier_export(setup, tmp_path):
  run, out = tmp_path / "run", tmp_path / "export"
  assert _train(setup, run).returncode == 0
  exported = _run(setup, "export", f"--workdir={run}", f"--out={out}", "--latency_repeats=1",
                  "--latency_batch_size=4")
  assert exported.returncode == 0, exported.stderr[-3000:]
  before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
  assert "is not a jaxkd run directory" in _error(
      _run(setup, "export", f"--workdir={tmp_path / 'rnu'}", f"--out={out}"))
  (run / "config.json").write_text("{ torn")
  assert "is damaged" in _error(_run(setup, "export", f"--workdir={run}", f"--out={out}"))
  after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
  assert after == before
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]
