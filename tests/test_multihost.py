"""Several processes (jax.distributed on CPU, gloo): 2 processes x 2 devices train exactly as
1 process x 4 devices, each process loading only its half of every global batch."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import toy_arrays

from jaxkd.run import distributed
from jaxkd.config import base_config
from jaxkd.errors import JaxkdError
from jaxkd.run.metrics import read_metrics
from jaxkd.run.saved import load_run
from jaxkd.engine.sharding import make_mesh

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS, BATCH = 6, 16

CONFIG = """
from jaxkd.config import base_config


def get_config():
  config = base_config()
  config.dataset.name = "npz"
  config.dataset.path = {path!r}
  config.model.name = "mlp"
  config.model.widths = (16,)
  config.optimizer.learning_rate = 0.1
  config.train.batch_size = {batch}
  config.train.eval_batch_size = 32  # 40 test examples here: the last eval batch is padded.
  config.train.num_steps = {steps}
  config.train.eval_every_steps = {eval_every}
  config.train.log_every_steps = 2
  config.train.checkpoint_every_steps = {every}
  return config
"""

# The CLI itself (python -m jaxkd train), with a record of the stable indices of every training batch
# this process loaded, written at exit.
DRIVER = """
import json, os, sys
import jaxkd.cli
from jaxkd.data import batches

seen = {}
load = batches.TrainBatches.batch


def batch(self, step):
  out = load(self, step)
  seen[int(step)] = out["index"].tolist()
  return out


batches.TrainBatches.batch = batch
try:
  jaxkd.cli.main([sys.argv[0], "train", *sys.argv[1:]])
finally:
  with open(os.environ["SEEN_FILE"], "w") as f:
    json.dump(seen, f)
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(tmp_path, name: str, devices: int, workdir, *flags):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             SEEN_FILE=str(tmp_path / f"{name}.seen.json"),
             PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
  command = [sys.executable, str(tmp_path / "driver.py"), f"--config={tmp_path / 'config.py'}",
             f"--workdir={workdir}", *flags]
  return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, cwd=tmp_path)


def _finish(processes: dict, timeout: float = 150) -> dict:
  """(stdout, stderr) of each process; all must exit with 0 (the others are killed if not)."""
  outputs, deadline = {}, time.time() + timeout
  try:
    for name, process in processes.items():
      outputs[name] = process.communicate(timeout=max(deadline - time.time(), 1))
  except subprocess.TimeoutExpired:
    pass
  finally:
    for process in processes.values():
      if process.poll() is None:
        process.kill()
        process.communicate()
  for name, process in processes.items():
    stderr = outputs.get(name, ("", "timed out"))[1]
    assert process.returncode == 0, f"{name} exited with {process.returncode}:\n{stderr[-3000:]}"
  return outputs


def test_two_processes_train_like_one(tmp_path):
  x, y = toy_arrays(128, 0)
  np.savez(tmp_path / "toy.npz", x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])
  (tmp_path / "config.py").write_text(CONFIG.format(path=str(tmp_path / "toy.npz"), batch=BATCH,
                                                    steps=STEPS, eval_every=0, every=3))
  (tmp_path / "driver.py").write_text(DRIVER)
  address = f"--config.distributed.coordinator_address=127.0.0.1:{_free_port()}"
  processes = {f"p{i}": _start(tmp_path, f"p{i}", 2, tmp_path / "two", address,
                               "--config.distributed.num_processes=2",
                               f"--config.distributed.process_id={i}") for i in (0, 1)}
  processes["one"] = _start(tmp_path, "one", 4, tmp_path / "one")
  outputs = _finish(processes)

  # Only process 0 talks and writes: one log, one metrics.jsonl, run_info naming 2 processes.
  p0, p1 = outputs["p0"][0], outputs["p1"][0]
  assert "2 processes x 2 devices = 4 devices" in p0 and "final test accuracy" in p0, p0
  assert "test accuracy" not in p1 and "final" not in p1, p1
  assert json.loads((tmp_path / "two" / "run_info.json").read_text())["process_count"] == 2
  records = [(r["step"], r["split"]) for r in read_metrics(tmp_path / "two")]
  assert records == [(2, "train"), (4, "train"), (6, "train"), (6, "test")]
  assert records == [(r["step"], r["split"]) for r in read_metrics(tmp_path / "one")]
  for a, b in zip(read_metrics(tmp_path / "two"), read_metrics(tmp_path / "one")):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
  assert read_metrics(tmp_path / "two")[-1]["count"] == 40  # Every test example once.

  # Each process loaded only its half of every global batch; together, the whole batch.
  seen = {name: json.loads((tmp_path / f"{name}.seen.json").read_text()) for name in processes}
  assert sorted(map(int, seen["one"])) == list(range(STEPS))
  for step, whole in seen["one"].items():
    assert len(whole) == BATCH
    assert len(seen["p0"][step]) == len(seen["p1"][step]) == BATCH // 2
    assert seen["p0"][step] + seen["p1"][step] == whole

  # The checkpoints (written by 2 processes / by 1) restore to the same parameters.
  mesh = make_mesh(jax.devices()[:1])
  two, one = load_run(tmp_path / "two", mesh), load_run(tmp_path / "one", mesh)
  assert two.step == one.step == STEPS
  difference = 0.0
  for a, b in zip(jax.tree.leaves(two.variables), jax.tree.leaves(one.variables)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    difference = max(difference, float(np.max(np.abs(np.asarray(a) - np.asarray(b)))))
  print(f"max abs parameter difference 2x2 vs 1x4: {difference:.3g}")


def _options(**fields):
  config = base_config()
  config.distributed.update(fields)
  return config


@pytest.mark.parametrize("fields,message", [
    (dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=2),
     r"process_id=2 must be in 0..1"),
    (dict(coordinator_address="127.0.0.1", num_processes=2), r"must be HOST:PORT"),
    (dict(coordinator_address="127.0.0.1:1234", num_processes=0), r"num_processes=0 must be at least 1"),
    (dict(num_processes=2, process_id=1), r"need distributed.coordinator_address"),
    (dict(coordinator_address="127.0.0.1:1234", num_processes=2, local_device_ids="0,x"),
     r"comma-separated device ids"),
])
def test_inconsistent_settings_are_refused_before_any_device_use(monkeypatch, fields, message):
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
  with pytest.raises(JaxkdError, match=message):
    distributed.initialize(_options(**fields))


def test_one_process_by_default(monkeypatch):
  for name in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "KUBERNETES_SERVICE_HOST"):
    monkeypatch.delenv(name, raising=False)
  assert distributed.initialize(base_config()) is None
  assert distributed.initialize(_options(auto=False)) is None
  assert distributed.local_device_ids("0, 1") == [0, 1] and distributed.local_device_ids("") is None


def test_a_multi_task_slurm_job_is_detected(monkeypatch):
  monkeypatch.setenv("SLURM_JOB_ID", "1234")
  monkeypatch.setenv("SLURM_STEP_NODELIST", "node[1-2]")
  monkeypatch.setenv("SLURM_NTASKS", "2")
  monkeypatch.setenv("SLURM_PROCID", "1")
  monkeypatch.setenv("SLURM_LOCALID", "0")
  assert distributed.detected_cluster() == ("SlurmCluster", 2)
  monkeypatch.setenv("SLURM_NTASKS", "1")
  assert distributed.initialize(base_config()) is None  # One task: nothing to start.
