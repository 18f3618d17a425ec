"""Where a run's numbers go: workdir/metrics.jsonl, TensorBoard events, the console.

Only process 0 writes. On resume, records after the restored step are dropped
so that metrics.jsonl reads as one uninterrupted run.
"""

import json
import math
import pathlib
import time

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plain(value):
  value = np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value).tolist()
  return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricWriter:

  def __init__(self, workdir: str | pathlib.Path, resume_step: int = 0, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = pathlib.Path(workdir) / METRICS_FILE
    self._tb = None
    if not self.enabled:
      return
    kept = [r for r in read_metrics(workdir) if r["step"] <= resume_step]
    self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    if tensorboard:
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(str(workdir), purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, split: str, metrics: dict) -> dict:
    record = {"step": int(step), "split": split, **{k: _plain(v) for k, v in metrics.items()},
              "time": round(time.time(), 3)}
    if self.enabled:
      with self.path.open("a") as f:
        f.write(json.dumps(record) + "\n")
      if self._tb is not None:
        for name, value in record.items():
          if name not in ("step", "split", "time") and isinstance(value, (int, float)):
            self._tb.add_scalar(f"{split}/{name}", value, step)
    return record

  def write_hparams(self, hparams: dict, metrics: dict) -> None:
    if self.enabled and self._tb is not None:
      self._tb.add_hparams(hparams, metrics, run_name=".")

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
