"""Where a run's numbers go: workdir/metrics.jsonl, TensorBoard events, the console.

Only process 0 writes. On resume, records after the restored step are dropped
so that metrics.jsonl reads as one uninterrupted run. TensorBoard events come from
tensorboardX rather than TensorFlow's or clu's writers: the core must not import TensorFlow.
"""

import json
import math
import pathlib
import time

import jax
import numpy as np
from flax import traverse_util

from jaxkd.errors import JaxkdError
from jaxkd.files import write_text

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
  """The records of workdir/metrics.jsonl. A torn last line (what a crash mid-write leaves)
  is left out; a damaged line before the last is an error naming it."""
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  lines = [line for line in path.read_text().splitlines() if line.strip()]
  records = []
  for number, line in enumerate(lines, 1):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if number == len(lines):
        break  # Torn by a crash while it was written: that step is logged again on resume.
      raise JaxkdError(f"{path} line {number} is damaged ({line[:60]!r}); move the file aside "
                       "to resume without the run's earlier metrics.") from None
  return records


def last_record(workdir: str | pathlib.Path, split: str) -> dict:
  """The last record of `split` ('train', 'validation', 'test') in a run's metrics."""
  records = [r for r in read_metrics(workdir) if r["split"] == split]
  if not records:
    raise JaxkdError(f"{workdir} has no {split} record in its metrics.jsonl; has it run?")
  return records[-1]


def _plain(value):
  value = np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value).tolist()
  return None if isinstance(value, float) and not math.isfinite(value) else value


def flatten_hparams(tree) -> dict:
  """{'a.b': value} for a nested dict or ConfigDict (flax.traverse_util.flatten_dict):
  numbers, bools and strings as they are, sequences of dicts (config.stages) by index
  ('stages.0.name'), other sequences as their text, None left out (TensorBoard's HParams
  take scalars)."""
  if hasattr(tree, "to_dict"):
    tree = tree.to_dict()
  flat = {}
  for key, value in traverse_util.flatten_dict(tree, sep=".").items():
    if isinstance(value, (tuple, list)) and any(isinstance(v, dict) for v in value):
      flat.update({f"{key}.{k}": v for k, v in flatten_hparams(
          {str(i): v for i, v in enumerate(value)}).items()})
    elif value is None:
      continue
    elif isinstance(value, (bool, int, float, str)):
      flat[key] = value
    elif isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
      flat[key] = np.asarray(value).item()
    else:
      flat[key] = str(tuple(value) if isinstance(value, list) else value)
  return flat


class MetricWriter:

  def __init__(self, workdir: str | pathlib.Path, resume_step: int = 0, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = pathlib.Path(workdir) / METRICS_FILE
    self._tb = None
    self._resume_step = resume_step
    if not self.enabled:
      return
    kept = [r for r in read_metrics(workdir) if r["step"] <= resume_step]
    write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))  # Atomic.
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

  def write_hparams(self, hparams: dict,
                    metric_tags: tuple[str, ...] = ("test/accuracy", "test/loss", "train/loss")
                    ) -> None:
    """The run's hyperparameters for TensorBoard's HParams tab (and as a table in its Text tab).

    `hparams` is the config, flat ({'optimizer.learning_rate': 0.1}) or nested (a dict or
    ConfigDict, flattened here); see flatten_hparams for the values kept. Written into this
    run's own event file, so the HParams tab pairs it with the run's scalars `metric_tags`.
    Once per run: a writer resumed after step 0 writes nothing (the first session's stay).
    """
    if not self.enabled or self._tb is None or self._resume_step:
      return
    from tensorboardX.summary import hparams as hparams_summary

    flat = flatten_hparams(hparams)
    for summary in hparams_summary(flat, dict.fromkeys(metric_tags, 0.0)):
      self._tb.file_writer.add_summary(summary)
    self._tb.add_text("config", "| field | value |\n| --- | --- |\n" + "\n".join(
        f"| {k} | {v} |" for k, v in sorted(flat.items())), 0)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
