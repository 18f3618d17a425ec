"""Preemption: a damaged newest checkpoint, SIGTERM and SIGKILL mid-run.

Each interrupted run must end bitwise equal to one uninterrupted run of the same
config: resuming restores the data order and the random state, not just weights.
The CLI runs in subprocesses on one CPU device (faster than conftest's eight), so
the in-process runs compared with them use a one-device mesh too.
"""

import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest
from conftest import toy_arrays, toy_config

from jaxkd.run import train
from jaxkd.run.checkpoint import CORRUPT_SUFFIX, Checkpointer, DamagedCheckpoint
from jaxkd.errors import JaxkdError
from jaxkd.run.metrics import read_metrics
from jaxkd.models import create_model
from jaxkd.engine.sharding import make_mesh
from jaxkd.engine.state import init_train_state

REPO = pathlib.Path(__file__).resolve().parents[1]
# A failed tensorstore read leaves callbacks for orbax's closed event loop ("Event loop is
# closed"): noise from reading damaged files on purpose, not a failure.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")
NUM_STEPS, EVERY = 32, 8  # 16 steps per epoch: the run crosses an epoch (reshuffles).

CONFIG_FILE = """
import os
import sys

sys.path.insert(0, {tests!r})
xla_flags = os.environ.get("XLA_FLAGS", "")
from conftest import toy_config  # noqa: E402  (its import asks for 8 devices; these runs use 1)

os.environ["XLA_FLAGS"] = xla_flags


def get_config():
  config = toy_config(num_steps=1000, checkpoint_every_steps={every}, log_every_steps=2,
                      eval_every_steps={num_steps})  # num_steps: set on the command line
  config.model.dropout = 0.2  # Random state in the step...
  config.dataset.crop_padding = 1  # ...and in the augmentation.
  config.dataset.path = {path!r}
  return config
"""


def _config(path):
  """The config CONFIG_FILE gives the CLI, for runs inside this process."""
  config = toy_config(num_steps=NUM_STEPS, checkpoint_every_steps=EVERY, log_every_steps=2,
                      eval_every_steps=NUM_STEPS)
  config.model.dropout = 0.2
  config.dataset.crop_padding = 1
  config.dataset.path = str(path)
  return config


def _one_device_mesh():
  return make_mesh(jax.devices()[:1])


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
  """Toy .npz data, a config file for it, and how to run the CLI on it in a workdir."""
  root = tmp_path_factory.mktemp("preemption")
  x, y = toy_arrays(512, 0)
  xt, yt = toy_arrays(203, 1)
  np.savez(root / "toy.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
  config_path = root / "config.py"
  config_path.write_text(CONFIG_FILE.format(tests=str(REPO / "tests"), num_steps=NUM_STEPS,
                                            every=EVERY, path=str(root / "toy.npz")))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # One device.

  def command(workdir):
    return [sys.executable, "-m", "jaxkd", "train", f"--config={config_path}", f"--workdir={workdir}",
            f"--config.train.num_steps={NUM_STEPS}"]

  def run(workdir):
    return subprocess.run(command(workdir), capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=env)

  def start(workdir):
    return subprocess.Popen(command(workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=REPO, env=env)

  return {"root": root, "data": root / "toy.npz", "run": run, "start": start}


@pytest.fixture(scope="module")
def reference(cli):
  """The workdir of an uninterrupted run (in this process, on one device, like the CLI's)."""
  workdir = cli["root"] / "uninterrupted"
  result = train.train_and_evaluate(_config(cli["data"]), workdir, mesh=_one_device_mesh())
  assert result["step"] == NUM_STEPS
  return workdir


def _steps(workdir):
  ckpt = Checkpointer(workdir, every_steps=1)
  steps = ckpt.manager.all_steps()
  ckpt.close()
  return sorted(steps)


def _final_state(workdir):
  ckpt = Checkpointer(workdir, every_steps=1)
  step = ckpt.latest_step()
  state = ckpt.manager.restore(step)
  ckpt.close()
  return step, state


def _assert_bitwise_equal(workdir, reference):
  (step, state), (ref_step, ref_state) = _final_state(workdir), _final_state(reference)
  assert step == ref_step == NUM_STEPS
  assert jax.tree.structure(state) == jax.tree.structure(ref_state)
  leaves, ref_leaves = jax.tree.leaves(state), jax.tree.leaves(ref_state)
  assert leaves
  for x, y in zip(leaves, ref_leaves):
    assert np.array_equal(np.asarray(x), np.asarray(y)), "resumed run differs from uninterrupted"


def _damage_arrays(step_dir: pathlib.Path) -> None:
  """Truncates to nothing the OCDBT data files orbax wrote for one step (default/d/<hash>,
  default/ocdbt.process_<i>/d/<hash>): array chunks and their .zarray metadata. Halving them
  is not enough: OCDBT appends, so a file's first half can hold all the values still used."""
  files = [f for f in step_dir.glob("default/**/d/*") if f.is_file()]
  assert files, f"no OCDBT data files under {step_dir}; has orbax's layout changed?"
  for f in files:
    f.write_bytes(b"")


def _wait_for(condition, process, what, timeout=120):
  deadline = time.time() + timeout
  while not condition():
    if process.poll() is not None:
      pytest.fail(f"the run ended before {what}: {process.stdout.read()[-2000:]}")
    if time.time() > deadline:
      process.kill()
      pytest.fail(f"timed out waiting for {what}")
    time.sleep(0.02)


# Damaged checkpoints, at the Checkpointer level: each damage mode falls back.

DAMAGE = {
    "truncated array files": _damage_arrays,
    "deleted array files": lambda d: [f.unlink() for f in d.glob("default/ocdbt.process_*/d/*")],
    "deleted _METADATA": lambda d: (d / "default" / "_METADATA").unlink(),
    "truncated _METADATA": lambda d: (d / "default" / "_METADATA").write_text('{"tree_metadata'),
    "deleted manifest": lambda d: (d / "default" / "manifest.ocdbt").unlink(),
    "emptied step directory": lambda d: shutil.rmtree(d / "default"),
}


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
  """A state, and a workdir with checkpoints of it at steps 1 and 2 (`step` leaves 1 and 2)."""
  workdir = tmp_path_factory.mktemp("two_checkpoints")
  config = toy_config()
  state = init_train_state(create_model(config.model, 4), optax.sgd(0.1, momentum=0.9),
                                 (8, 8, 1), 0, make_mesh())
  ckpt = Checkpointer(workdir, every_steps=1)
  for step in (1, 2):
    ckpt.save(step, state.replace(step=state.step + step))
  ckpt.close()
  return state, workdir


def _copy_checkpoints(two_checkpoints, tmp_path):
  like, workdir = two_checkpoints
  shutil.copytree(workdir / "checkpoints", tmp_path / "checkpoints")
  return like


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_newest_checkpoint_is_skipped_and_moved_aside(two_checkpoints, tmp_path, caplog,
                                                                damage):
  like = _copy_checkpoints(two_checkpoints, tmp_path)
  directory = tmp_path / "checkpoints"
  DAMAGE[damage](directory / "2")
  ckpt = Checkpointer(tmp_path, every_steps=1)
  with caplog.at_level(logging.WARNING):
    restored = ckpt.restore(like)
  assert int(restored.step) == 1
  assert f"checkpoint {directory}/2 is damaged" in caplog.text
  assert (directory / f"2{CORRUPT_SUFFIX}").is_dir() and not (directory / "2").exists()
  assert ckpt.latest_step() == 1 and ckpt.manager.all_steps() == [1]
  assert ckpt.save(2, restored, force=True)  # Step 2 is free again.
  ckpt.close()
  assert _steps(tmp_path) == [1, 2]


def test_every_checkpoint_damaged_or_an_explicit_damaged_step_is_a_clear_error(two_checkpoints,
                                                                              tmp_path):
  like = _copy_checkpoints(two_checkpoints, tmp_path)
  directory = tmp_path / "checkpoints"
  ckpt = Checkpointer(tmp_path, every_steps=1)
  _damage_arrays(directory / "2")
  with pytest.raises(DamagedCheckpoint, match=f"checkpoint {directory}/2 is damaged"):
    ckpt.restore(like, step=2)  # An explicit step never falls back.
  _damage_arrays(directory / "1")
  with pytest.raises(JaxkdError, match=f"every checkpoint in {directory} is damaged"):
    ckpt.restore(like)
  assert sorted(p.name for p in directory.iterdir()) == ["1", "2"]  # Nothing moved aside.
  ckpt.close()


def test_another_model_is_not_mistaken_for_damage(two_checkpoints, tmp_path):
  like = _copy_checkpoints(two_checkpoints, tmp_path)
  _damage_arrays(tmp_path / "checkpoints" / "1")  # An older damaged one is never reached.

  def abstract_state(widths, tx):
    config = toy_config()
    config.model.widths = widths
    return jax.eval_shape(lambda: init_train_state(create_model(config.model, 4), tx,
                                                         (8, 8, 1), 0, make_mesh()))

  ckpt = Checkpointer(tmp_path, every_steps=1)
  with pytest.raises(JaxkdError, match="2 does not fit this model.*dense0.kernel: stored"):
    ckpt.restore(abstract_state((64,), optax.sgd(0.1, momentum=0.9)))
  with pytest.raises(JaxkdError, match="does not fit this model.*opt_state.0.mu"):
    ckpt.restore(abstract_state((32,), optax.adam(1e-3)))
  assert ckpt.latest_step() == 2 and int(ckpt.restore(like).step) == 2
  ckpt.close()


# Whole runs: each must end bitwise equal to the uninterrupted reference.

def test_resume_skips_a_damaged_newest_checkpoint(cli, reference, tmp_path, capsys, caplog):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  directory = workdir / "checkpoints"
  assert _steps(workdir) == [NUM_STEPS - 2 * EVERY, NUM_STEPS - EVERY, NUM_STEPS]
  _damage_arrays(directory / str(NUM_STEPS))
  with caplog.at_level(logging.WARNING):
    result = train.train_and_evaluate(_config(cli["data"]), workdir, mesh=_one_device_mesh())
  assert f"checkpoint {directory}/{NUM_STEPS} is damaged" in caplog.text
  assert f"resuming from the checkpoint at step {NUM_STEPS - EVERY}" in capsys.readouterr().out
  assert result["step"] == NUM_STEPS
  assert (directory / f"{NUM_STEPS}{CORRUPT_SUFFIX}").is_dir()
  _assert_bitwise_equal(workdir, reference)


def test_sigterm_mid_run_then_the_same_command_is_bitwise_an_uninterrupted_run(cli, reference,
                                                                               tmp_path):
  workdir = tmp_path / "run"
  process = cli["start"](workdir)
  # The signal handler is installed once training logs; stop a few steps in, between checkpoints.
  _wait_for(lambda: any(r["step"] >= 2 for r in read_metrics(workdir)), process, "step 2")
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=120)
  assert process.returncode == 0, output[-2000:]
  assert "stopped by SIGTERM at step" in output, output[-2000:]
  stopped_at = _steps(workdir)[-1]
  assert f"stopped by SIGTERM at step {stopped_at}; checkpoint saved" in output
  assert 2 <= stopped_at < NUM_STEPS  # Saved where it stopped, before the end.

  result = cli["run"](workdir)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  assert f"resuming from the checkpoint at step {stopped_at}" in result.stdout
  assert "final test accuracy" in result.stdout and f"at step {NUM_STEPS}" in result.stdout
  steps = [(r["step"], r["split"]) for r in read_metrics(workdir)]
  assert steps == [(r["step"], r["split"]) for r in read_metrics(reference)]  # No duplicates.
  assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == NUM_STEPS
  _assert_bitwise_equal(workdir, reference)


def test_sigkill_resumes_from_the_last_periodic_checkpoint(cli, reference, tmp_path):
  workdir = tmp_path / "run"
  process = cli["start"](workdir)
  first = workdir / "checkpoints" / str(EVERY)  # Orbax renames a step's folder when complete.
  _wait_for(first.is_dir, process, f"the checkpoint at step {EVERY}")
  process.kill()  # SIGKILL: no handler, no final save.
  process.communicate(timeout=60)
  assert process.returncode == -signal.SIGKILL
  periodic = _steps(workdir)[-1]  # (Opening the directory clears half-written checkpoints.)
  assert periodic % EVERY == 0 and EVERY <= periodic < NUM_STEPS

  result = cli["run"](workdir)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  assert f"resuming from the checkpoint at step {periodic} " in result.stdout
  assert f"at step {NUM_STEPS}" in result.stdout
  _assert_bitwise_equal(workdir, reference)
