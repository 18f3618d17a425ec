"""SIGTERM to one of two processes (jax.distributed on CPU, 2 x 2 devices): both stop after the
same step, save it together and exit 0; running both again ends where 1 process x 4 devices
ends without interruption.

jax's preemption sync notices the signal within about a second (its notifier polls), so the
interrupted run is slowed down (a sleep per batch) to be still running then.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from conftest import toy_arrays
from test_multihost import CONFIG, REPO, _finish, _free_port

from jaxkd.run import train
from jaxkd.run.metrics import read_metrics
from jaxkd.run.saved import load_run
from jaxkd.engine.sharding import make_mesh

STEPS, EVERY, BATCH = 96, 32, 16  # 8 steps per epoch

# The CLI, slowed down by STEP_DELAY seconds a batch, recording the steps it saved at.
DRIVER = """
import json, os, sys, time
sys.modules["torch"] = None  # tensorboardX's optional import, unused here: 6 s of start-up.
from jaxkd.run import checkpoint
import jaxkd.cli
from jaxkd.data import batches

delay, saved = float(os.environ.get("STEP_DELAY", "0")), []
load, save = batches.TrainBatches.batch, checkpoint.Checkpointer.save


def batch(self, step):
  time.sleep(delay)
  return load(self, step)


def record(self, step, state, force=False):
  done = save(self, step, state, force)
  if done:
    saved.append(int(step))
  return done


batches.TrainBatches.batch, checkpoint.Checkpointer.save = batch, record
try:
  jaxkd.cli.main([sys.argv[0], "train", *sys.argv[1:]])
finally:
  with open(os.environ["RECORD_FILE"], "w") as f:
    json.dump(saved, f)
"""


def _start_pair(tmp_path, run: str, workdir, **env_extra) -> dict:
  """Processes 0 and 1 of one 2 x 2-device run of the CLI in `workdir`."""
  address = f"--config.distributed.coordinator_address=127.0.0.1:{_free_port()}"
  processes = {}
  for i in (0, 1):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               JAX_DISABLE_MOST_OPTIMIZATIONS="true",  # As conftest: the same numbers in-process.
               # The second run compiles nothing the first one did.
               JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
               RECORD_FILE=str(tmp_path / f"{run}.p{i}.json"),
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]), **env_extra)
    command = [sys.executable, str(tmp_path / "driver.py"), f"--config={tmp_path / 'config.py'}",
               f"--workdir={workdir}", address, "--config.distributed.num_processes=2",
               f"--config.distributed.process_id={i}"]
    processes[f"p{i}"] = subprocess.Popen(command, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
  return processes


def _file_config(tmp_path):
  spec = importlib.util.spec_from_file_location("preemption_config", tmp_path / "config.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _wait_for_a_logged_step(workdir, processes, timeout=120):
  deadline = time.time() + timeout
  while not any(r["step"] >= 2 for r in read_metrics(workdir)):
    ended = [name for name, p in processes.items() if p.poll() is not None]
    if ended or time.time() > deadline:
      _finish(processes, timeout=1)  # Reports how they ended.
      pytest.fail(f"no step logged in {workdir} (ended: {ended})")
    time.sleep(0.02)


@pytest.mark.parametrize("service", ["preemption_sync", "allgather"])
def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path, service):
  x, y = toy_arrays(128, 0)
  np.savez(tmp_path / "toy.npz", x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])
  (tmp_path / "config.py").write_text(CONFIG.format(path=str(tmp_path / "toy.npz"), batch=BATCH,
                                                    steps=STEPS, eval_every=STEPS, every=EVERY))
  (tmp_path / "driver.py").write_text(DRIVER)
  workdir = tmp_path / "two"
  # allgather: jax's preemption service off, so the processes gather their stop flags instead.
  extra = {} if service == "preemption_sync" else {"JAX_ENABLE_PREEMPTION_SERVICE": "false"}
  processes = _start_pair(tmp_path, "first", workdir, STEP_DELAY="0.05", **extra)

  reference = {}
  if service == "preemption_sync":  # Meanwhile, the uninterrupted run: 1 process x 4 devices.
    thread = threading.Thread(target=lambda: reference.update(train.train_and_evaluate(
        _file_config(tmp_path), tmp_path / "one", mesh=make_mesh(jax.devices()[:4]))))
    thread.start()
  _wait_for_a_logged_step(workdir, processes)
  processes["p1"].send_signal(signal.SIGTERM)  # Process 1 only.
  outputs = _finish(processes)

  # Both saved the same steps, ending where they stopped, before the end; process 0 says so.
  saved = [json.loads((tmp_path / f"first.p{i}.json").read_text()) for i in (0, 1)]
  assert saved[0] == saved[1], saved
  stopped_at = saved[0][-1]
  assert 2 <= stopped_at < STEPS, saved
  reason = ("SIGTERM or SIGINT to one of the processes" if service == "preemption_sync" else
            "SIGTERM or SIGINT to another process")
  assert (f"stopped by {reason} at step {stopped_at}; checkpoint saved"
          in outputs["p0"][0]), outputs["p0"][0][-2000:]
  if service == "allgather":
    return  # The same stop; the resumed run below is the same with either mechanism.

  # Both again: they resume there and finish like the uninterrupted run.
  outputs = _finish(_start_pair(tmp_path, "second", workdir))
  p0 = outputs["p0"][0]
  assert f"resuming from the checkpoint at step {stopped_at}" in p0, p0[-2000:]
  assert f"at step {STEPS}" in p0 and "final test accuracy" in p0, p0[-2000:]
  thread.join(timeout=120)
  assert reference.get("step") == STEPS, reference
  records = [(r["step"], r["split"]) for r in read_metrics(workdir)]
  assert records == [(r["step"], r["split"]) for r in read_metrics(tmp_path / "one")]
  mesh = make_mesh(jax.devices()[:1])
  two, one = load_run(workdir, mesh), load_run(tmp_path / "one", mesh)
  assert two.step == one.step == STEPS
  for a, b in zip(jax.tree.leaves(two.variables), jax.tree.leaves(one.variables)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
