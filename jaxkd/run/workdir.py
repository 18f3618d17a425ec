"""A run's workdir keeps its promises: one writer at a time, and no resume that would change
the result.

lock(directories): each directory gets a lock file naming its writer (host, process id,
process start time, command); a second run on it stops before any work, naming the first.
A lock whose process has died (same host: the id is gone or belongs to a newer process) is
stale and taken over. Several processes of one multi-host run share their workdirs: process
0 holds the locks.

check_resume(workdir, config, sources): before a run resumes from its checkpoint, the config
and the teachers it was started with (config.json, run_info.json) are compared with this
run's; a difference that changes the result is refused, naming the fields. What may change:
RESUMABLE (how often to log, evaluate and checkpoint, evaluation batch size, the
distributed setup, the bias correction fitted after training) and the length
(train.epochs, train.num_steps) where no schedule depends on it.
"""

import contextlib
import datetime
import fnmatch
import json
import os
import pathlib
import socket
import sys
import tempfile
from typing import Iterator, Sequence

import ml_collections
from flax import traverse_util

from jaxkd.config import complete
from jaxkd.config.paths import OPEN
from jaxkd.errors import JaxkdError

LOCK_FILE = ".jaxkd.lock"
RESUMABLE = ("train.log_every_steps", "train.eval_every_steps", "train.checkpoint_every_steps",
             "train.keep_checkpoints", "train.eval_batch_size", "distributed.*",
             "dataset.data_dir", "bias_correction.*", "stage_name")
LENGTH = ("train.epochs", "train.num_steps")


def _start_time(pid: int) -> str | None:
  """The process's start time in clock ticks since boot (Linux), to tell a reused id."""
  try:
    return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _alive(holder: dict) -> bool:
  if holder.get("host") != socket.gethostname():
    return True  # Another machine's process: it cannot be checked from here.
  pid = int(holder.get("pid", -1))
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  started = _start_time(pid)
  return started is None or holder.get("started") in (None, started)


def _acquire(directory: pathlib.Path) -> pathlib.Path:
  path = directory / LOCK_FILE
  me = {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid()),
        "since": datetime.datetime.now().isoformat(timespec="seconds"), "argv": sys.argv}
  try:
    handle, staged = tempfile.mkstemp(prefix=f"{LOCK_FILE}.", dir=directory)
  except PermissionError:
    raise JaxkdError(f"workdir {directory} is not writable; give a --workdir you can write "
                     "to.") from None
  with os.fdopen(handle, "w") as f:
    json.dump(me, f)
  try:
    for _ in range(2):
      try:
        os.link(staged, path)  # Atomic: the lock appears with its content, or not at all.
        return path
      except FileExistsError:
        try:
          holder = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
          holder = {}
        if holder and _alive(holder):
          raise JaxkdError(
              f"workdir {directory} is in use by process {holder.get('pid')} on "
              f"{holder.get('host')} (since {holder.get('since')}): a workdir has one writer. "
              f"Wait for that run to end or use another --workdir; if that process is gone, "
              f"delete {path}.") from None
        path.unlink(missing_ok=True)  # Stale: its process is gone.
    raise JaxkdError(f"could not lock workdir {directory}; another run keeps taking it.")
  finally:
    os.unlink(staged)


@contextlib.contextmanager
def lock(directories: Sequence[pathlib.Path]) -> Iterator[None]:
  """Holds the lock of each directory (created if missing) while the block runs."""
  import jax

  held = []
  try:
    for directory in dict.fromkeys(pathlib.Path(d) for d in directories):
      _prepare(directory)
      if jax.process_index() == 0:
        held.append(_acquire(directory))
    yield
  finally:
    for path in held:
      path.unlink(missing_ok=True)


def _prepare(directory: pathlib.Path) -> None:
  """Creates the workdir, or says in one line why it cannot be one."""
  if directory.exists() and not directory.is_dir():
    raise JaxkdError(f"workdir {directory} is a file, not a directory; give another --workdir.")
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except (PermissionError, FileExistsError, NotADirectoryError, OSError) as e:
    raise JaxkdError(f"workdir {directory} cannot be created ({e.strerror or e}); give a "
                     "--workdir you can write to.") from None
  if not os.access(directory, os.W_OK):
    raise JaxkdError(f"workdir {directory} is not writable; give a --workdir you can write to.")


def _flat(config) -> dict:
  plain = json.loads(config.to_json_best_effort(sort_keys=True)) if hasattr(
      config, "to_json_best_effort") else config
  return traverse_util.flatten_dict(plain, sep=".")


def _length_matters(config) -> bool:
  """Whether a schedule depends on the run's length (changing it changes earlier steps)."""
  terms = config.distill.terms
  return config.schedule.name == "cosine" or any(
      spec.get(f"{name}_schedule") == "cosine" for spec in terms.values()
      for name in ("weight", "temperature"))


def check_resume(workdir: pathlib.Path, config, sources: dict) -> None:
  """Refuses (JaxkdError) to resume the run in `workdir` with a config or teachers that
  change its result; call it only when the workdir holds a checkpoint."""
  stored_config, stored_info = workdir / "config.json", workdir / "run_info.json"
  if not stored_config.exists():
    return
  try:
    # Fields an older version did not write yet take their defaults (jaxkd.config.complete).
    before = _flat(complete(ml_collections.ConfigDict(json.loads(stored_config.read_text()))))
  except (json.JSONDecodeError, TypeError, ValueError):
    raise JaxkdError(f"{stored_config} is damaged; its checkpoint cannot be checked against "
                     "this config. Use a fresh workdir.") from None
  now = _flat(config)
  allowed = RESUMABLE + (() if _length_matters(config) else LENGTH)
  # A field the schema no longer has is no difference; a term or model option gone is.
  gone = lambda k: k not in now and not OPEN.search(k.rsplit(".", 1)[0] + ".x")
  changed = [k for k in sorted(set(before) | set(now)) if before.get(k, "<none>") !=
             now.get(k, "<none>") and not gone(k)
             and not any(fnmatch.fnmatchcase(k, p) for p in allowed)]
  if changed:
    shown = "; ".join(f"{k}: {before.get(k, '<none>')!r} -> {now.get(k, '<none>')!r}"
                      for k in changed[:5]) + (f"; {len(changed) - 5} more" if len(changed) > 5
                                               else "")
    length = ("" if not set(changed) & set(LENGTH) else
              " (its length changes a schedule over the whole run, cosine)")
    raise JaxkdError(f"the run in {workdir} was started with other settings ({shown}){length}; "
                     "resuming would mix the two. Run it with the settings it was started with, "
                     f"or use a fresh workdir. A resume may change: {', '.join(RESUMABLE)}, and "
                     "the length where no schedule depends on it.")
  if stored_info.exists():
    try:
      info = json.loads(stored_info.read_text())
    except json.JSONDecodeError:
      return
    for kind, pins in sources.items():
      if kind in info and info[kind] != pins:
        raise JaxkdError(f"the run in {workdir} was trained from other {kind.replace('_', ' ')} "
                         f"({_describe(info[kind])}) than this run's ({_describe(pins)}): the "
                         "teacher changed since. Resume with the teacher it started from, or use "
                         "a fresh workdir.")


def _describe(pins: list) -> str:
  return "; ".join(f"{p.get('path')} at step {p.get('step')} ({str(p.get('fingerprint'))[:12]})"
                   for p in pins) or "none"
