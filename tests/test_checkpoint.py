import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest
from conftest import toy_config

from jaxkd import train
from jaxkd.checkpoint import Checkpointer
from jaxkd.errors import JaxkdError
from jaxkd.metric_writer import read_metrics
from jaxkd.models import create_model
from jaxkd.sharding import make_mesh


def _latest_checkpoint(workdir):
  """The raw tree of the latest checkpoint in `workdir`."""
  ckpt = Checkpointer(workdir, every_steps=1)
  restored = ckpt.manager.restore(ckpt.latest_step())
  ckpt.close()
  return restored


def test_round_trip_restores_every_array(tmp_path, toy_datasets):
  config = toy_config()
  model = create_model(config.model, 4)
  mesh = make_mesh()
  tx = optax.adam(1e-3)
  state = train.init_train_state(model, tx, (8, 8, 1), 0, mesh)
  state = state.replace(step=state.step + 5)
  ckpt = Checkpointer(tmp_path, every_steps=10)
  assert not ckpt.save(5, state)  # Not a multiple of every_steps.
  assert ckpt.save(5, state, force=True)
  ckpt.close()
  fresh = train.init_train_state(model, tx, (8, 8, 1), 1, mesh)
  restored = Checkpointer(tmp_path, every_steps=10).restore(fresh)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, b)
  assert restored.params["dense0"]["kernel"].sharding.is_fully_replicated


def test_restore_without_checkpoint_or_from_another_model_is_a_clear_error(tmp_path):
  config = toy_config()
  mesh = make_mesh()
  tx = optax.sgd(0.1)
  small = train.init_train_state(create_model(config.model, 4), tx, (8, 8, 1), 0, mesh)
  with pytest.raises(JaxkdError, match="no checkpoint in"):
    Checkpointer(tmp_path / "empty", every_steps=1).restore(small)
  ckpt = Checkpointer(tmp_path, every_steps=1)
  ckpt.save(1, small, force=True)
  ckpt.close()
  config.model.widths = (64,)
  big = train.init_train_state(create_model(config.model, 4), tx, (8, 8, 1), 0, mesh)
  with pytest.raises(JaxkdError, match="does not fit this model"):
    Checkpointer(tmp_path, every_steps=1).restore(big)


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, toy_datasets):
  config = toy_config(num_steps=12, checkpoint_every_steps=4, log_every_steps=2, eval_every_steps=4)
  config.model.dropout = 0.2
  config.dataset.crop_padding = 1
  whole = train.train_and_evaluate(config, tmp_path / "whole", datasets=toy_datasets)

  crashed = tmp_path / "crashed"
  train.train_and_evaluate(config, crashed, datasets=toy_datasets)
  for step in (8, 12):  # As if the process died after the checkpoint at step 4.
    shutil.rmtree(crashed / "checkpoints" / str(step))
  resumed = train.train_and_evaluate(config, crashed, datasets=toy_datasets)

  assert resumed["step"] == whole["step"] == 12
  assert resumed["test_accuracy"] == whole["test_accuracy"]
  whole_state, resumed_state = _latest_checkpoint(tmp_path / "whole"), _latest_checkpoint(crashed)
  for x, y in zip(jax.tree.leaves(whole_state), jax.tree.leaves(resumed_state)):
    np.testing.assert_array_equal(x, y)  # Same data order and random state: bitwise equal.
  steps = [(r["step"], r["split"]) for r in read_metrics(crashed)]
  assert steps == [(r["step"], r["split"]) for r in read_metrics(tmp_path / "whole")]
  assert len(steps) == len(set(steps))  # Records after step 4 were replaced, not duplicated.


def test_sigterm_saves_and_the_same_command_resumes(tmp_path):
  """The CLI on real MNIST: SIGTERM mid-run, then the same command finishes the run."""
  workdir = tmp_path / "run"
  command = [sys.executable, "-m", "jaxkd.main", "--config=configs/mnist/teacher.py",
             f"--workdir={workdir}", "--config.model.widths=(16,)", "--config.train.num_steps=1500",
             "--config.train.log_every_steps=5", "--config.train.eval_every_steps=1500",
             "--config.train.checkpoint_every_steps=1000000"]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # One device: faster.
  process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env)
  deadline = time.time() + 120
  while not read_metrics(workdir) and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=120)
  assert process.returncode == 0, output[-2000:]
  assert "stopped by SIGTERM at step" in output, output[-2000:]
  stopped_at = Checkpointer(workdir, every_steps=1).latest_step()
  assert 0 < stopped_at < 1500  # Saved where it stopped, not at a periodic step.

  output = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env).stdout
  assert f"resuming from the checkpoint at step {stopped_at}" in output
  assert "final test accuracy" in output and "at step 1500" in output
  config = json.loads((workdir / "config.json").read_text())
  assert config["train"]["num_steps"] == 1500


def test_half_written_checkpoints_are_removed_at_start(tmp_path):
  config = toy_config()
  state = train.init_train_state(create_model(config.model, 4), optax.sgd(0.1), (8, 8, 1), 0,
                                 make_mesh())
  ckpt = Checkpointer(tmp_path, every_steps=1)
  ckpt.save(3, state, force=True)
  ckpt.close()
  unfinished = tmp_path / "checkpoints" / "7.orbax-checkpoint-tmp"  # A crash mid-save.
  (unfinished / "default").mkdir(parents=True)
  ckpt = Checkpointer(tmp_path, every_steps=1)
  assert not unfinished.exists() and ckpt.latest_step() == 3
  ckpt.close()
