"""Checkpoints of the train state with orbax: periodic, atomic, keep-last-N, resume.

Orbax writes each step into a temporary directory and renames it when
complete, so a crash mid-save never leaves a half checkpoint that looks whole.
A checkpoint damaged later (files truncated or lost on disk) is skipped when
resuming: the previous one is used and the damaged one moved aside.
"""

import logging as std_logging
import pathlib
import re
import shutil
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from absl import logging

from jaxkd.errors import JaxkdError

TMP_SUFFIX = ".orbax-checkpoint-tmp"  # How orbax names a checkpoint still being written.
CORRUPT_SUFFIX = ".corrupt"  # Where a damaged checkpoint is moved (orbax ignores the name).


class _OrbaxErrors(std_logging.Filter):
  """Orbax logs a failed background save from each of its threads (tracebacks at ERROR), and
  asyncio may log the same error again from orbax's event loop ("exception was never
  retrieved"); Checkpointer reports it once, as one line, so those are left out. Other
  asyncio errors (not raised inside orbax) still pass."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno < std_logging.ERROR:
      return True
    if "/orbax/" in record.pathname:
      return False
    return not (record.name == "asyncio" and _raised_in_orbax(record))


def _raised_in_orbax(record: std_logging.LogRecord) -> bool:
  """Whether the exception an asyncio record carries was raised in orbax's code."""
  frame = record.exc_info[2] if record.exc_info else None  # asyncio logs with exc_info.
  while frame is not None:
    if "/orbax/" in frame.tb_frame.f_code.co_filename:
      return True
    frame = frame.tb_next
  return False


logging.get_absl_logger().addFilter(_OrbaxErrors())
std_logging.getLogger("asyncio").addFilter(_OrbaxErrors())


class DamagedCheckpoint(JaxkdError):
  """A checkpoint whose files cannot be read back (not one of another model)."""


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of `tree`: the target orbax restores into."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _describe(error: BaseException, limit: int = 300) -> str:
  return f"{type(error).__name__}: {' '.join(str(error).split())[:limit]}"


def _flat_shapes(tree: Any) -> dict[str, tuple]:
  """{'params.dense0.kernel': shape} for each array leaf, named as orbax names it on disk."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path, simple=True, separator="."): tuple(getattr(leaf, "shape", ()))
          for path, leaf in leaves}


class Checkpointer:
  """Saves every `every_steps` steps (and when forced) under workdir/checkpoints."""

  def __init__(self, workdir: str | pathlib.Path, every_steps: int, keep: int = 3,
               read_only: bool = False):
    """read_only: another run's checkpoints (a teacher that may still be training):
    nothing there is removed or written."""
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self.every_steps = max(every_steps, 1)
    self._pending = None  # The step of the save in flight (written in the background).
    if not read_only:
      self._remove_unfinished()
    # (Not orbax's own read_only option: it warns three times per directory opened.)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           cleanup_tmp_directories=False)
    # The handler named up front lets item_metadata read a step before any restore.
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_handlers=ocp.StandardCheckpointHandler())

  def _remove_unfinished(self) -> None:
    """Deletes checkpoints a crash left half-written (orbax's temporary folders), now,
    before any other thread touches the directory (orbax's own cleanup runs in the
    background)."""
    if jax.process_index() == 0 and self.directory.exists():
      for unfinished in self.directory.glob(f"*{TMP_SUFFIX}*"):
        shutil.rmtree(unfinished, ignore_errors=True)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, like: Any, step: int | None = None) -> Any:
    """The state at `step` (default: the newest readable one), laid out like `like`.

    Without `step`, a damaged newest checkpoint (unreadable or truncated files) is
    skipped with a warning and moved aside once an older one restores. One written
    for another model or optimizer is an error, never skipped.
    """
    if step is not None:
      return self._restore_step(like, step)
    _, state, damaged = self._newest_readable(
        lambda step: self._restore_step(like, step),
        fix="delete that directory (or use a fresh workdir) to train from the start")
    self._set_aside(damaged)
    return state

  def _restore_step(self, like: Any, step: int) -> Any:
    """Checks the stored tree against `like` from orbax's metadata (a mismatch: JaxkdError),
    then restores; any failure to read the files is a DamagedCheckpoint."""
    where = f"{self.directory}/{step}"
    try:
      stored = _flat_shapes(self.manager.item_metadata(step).tree)
    except Exception as e:  # Missing or unreadable _METADATA / array metadata.
      raise DamagedCheckpoint(f"checkpoint {where} is damaged: its metadata cannot be read "
                              f"({_describe(e)})") from e
    wanted = _flat_shapes(like)
    differences = [f"{k}: stored {stored.get(k, 'nothing')}, this model {wanted.get(k, 'nothing')}"
                   for k in sorted(stored.keys() | wanted.keys()) if stored.get(k) != wanted.get(k)]
    if differences:
      more = f"; {len(differences) - 3} more" if len(differences) > 3 else ""
      raise JaxkdError(f"checkpoint {where} does not fit this model and optimizer "
                       f"({'; '.join(differences[:3])}{more}); use a fresh workdir or the config "
                       "the checkpoint was written with.")
    try:
      return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_like(like)))
    except Exception as e:  # The tree fits, so the array files are missing or truncated.
      raise DamagedCheckpoint(f"checkpoint {where} is damaged: its arrays cannot be read "
                              f"({_describe(e)})") from e

  def restore_part(self, target: Callable[[Any], dict]) -> tuple[int, dict]:
    """(step, part) of the newest readable checkpoint, reading only part of it from disk.

    `target(stored)` gets the stored tree's metadata (nested dicts whose leaves have .shape
    and .dtype) and returns the part wanted: some of its top-level entries, each array a
    jax.ShapeDtypeStruct with the sharding to restore it into. Each array is read straight
    into that layout; the rest (e.g. the optimizer state) is never read. A damaged newest
    checkpoint is skipped with a warning and left in place (this may be another run's
    directory); errors `target` raises (a tree of another kind) are not skipped.
    """
    def read(step: int) -> dict:
      where = f"{self.directory}/{step}"
      try:
        stored = self.manager.item_metadata(step).tree
      except Exception as e:  # Missing or unreadable _METADATA / array metadata.
        raise DamagedCheckpoint(f"checkpoint {where} is damaged: its metadata cannot be read "
                                f"({_describe(e)})") from e
      part = target(stored)
      try:
        # Orbax's PyTree handler reads a subset of the saved tree (the manager's standard
        # handler reads it whole), from the step's one item folder.
        with ocp.PyTreeCheckpointer() as reader:
          return reader.restore(self.directory / str(step) / ocp.checkpoint_manager.DEFAULT_ITEM_NAME,
                                args=ocp.args.PyTreeRestore(
                                    item=part, partial_restore=True,
                                    restore_args=ocp.checkpoint_utils.construct_restore_args(part)))
      except Exception as e:  # Missing or truncated array files.
        raise DamagedCheckpoint(f"checkpoint {where} is damaged: its arrays cannot be read "
                                f"({_describe(e)})") from e

    step, part, _ = self._newest_readable(
        read, fix="train that run again (after deleting that directory)")
    return step, part

  def _newest_readable(self, read: Callable[[int], Any], fix: str
                       ) -> tuple[int, Any, list[int]]:
    """(step, read(step), damaged newer steps) for the newest step `read` finds undamaged;
    warns of each damaged one, changes nothing on disk."""
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      raise JaxkdError(f"no checkpoint in {self.directory}; train there first or point to the "
                       "workdir of a finished run.")
    damaged = []
    for step in steps:
      try:
        value = read(step)
      except DamagedCheckpoint as e:
        logging.warning("%s; trying the previous checkpoint.", e)
        damaged.append(step)
        continue
      if damaged:
        logging.warning("using the checkpoint at step %d in %s instead of the damaged one(s) at "
                        "step(s) %s.", step, self.directory, damaged)
      return step, value, damaged
    raise JaxkdError(f"every checkpoint in {self.directory} is damaged (steps {damaged}, see the "
                     f"warnings above); {fix}.")

  def _set_aside(self, steps: list[int]) -> None:
    """Renames damaged step directories to <step>.corrupt (kept for inspection), so they
    are neither listed as the latest step again nor in the way of a new save there."""
    if not steps:
      return
    if jax.process_index() == 0:
      for step in steps:
        target, n = self.directory / f"{step}{CORRUPT_SUFFIX}", 1
        while target.exists():
          target, n = self.directory / f"{step}{CORRUPT_SUFFIX}{n}", n + 1
        (self.directory / str(step)).rename(target)
        logging.warning("moved the damaged checkpoint %s/%d aside to %s.", self.directory, step,
                        target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices("jaxkd_checkpoint_set_aside")
    self.manager.reload()

  def save(self, step: int, state: Any, force: bool = False) -> bool:
    """Saves at multiples of every_steps, or now if `force`; never twice at one step. Called
    every step, it first checks that the last save (written in the background) succeeded:
    a failed save (a full disk) stops the run at once, with one line naming it."""
    self._check_saved()
    if (step % self.every_steps and not force) or step == self.latest_step():
      return False
    try:
      saved = self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
    except Exception as e:  # This save failed, or the one before (orbax waits for it).
      raise self._failed(e, self._pending or step) from None
    self._pending = step
    return saved

  def _check_saved(self) -> None:
    """Raises (one line) if the save in flight has finished and failed."""
    if self._pending is None or self.manager.is_saving_in_progress():
      return
    step, self._pending = self._pending, None
    try:
      self.manager.wait_until_finished()  # Finished: returns at once, or raises its error.
      self.manager.check_for_errors()
    except Exception as e:
      raise self._failed(e, step) from None

  def _failed(self, error: BaseException, step: int) -> JaxkdError:
    text = " ".join(str(error).split())
    found = re.search(r"(No space left on device|Disk quota exceeded|Read-only file system|"
                      r"Permission denied|Input/output error)", text)
    reason = found.group(1) if found else text[:200]
    kept = [s for s in self.manager.all_steps() if s != step]
    return JaxkdError(f"could not write the checkpoint of step {step} in {self.directory} "
                      f"({reason}); free the disk or give another --workdir, then run the same "
                      "command again: it resumes from the last checkpoint "
                      f"({max(kept) if kept else 'none yet'}).")

  def close(self) -> None:
    try:
      self.manager.wait_until_finished()
      self._check_saved()
    except Exception as e:
      if isinstance(e, JaxkdError):
        raise
      raise self._failed(e, self._pending) from None
    finally:
      self.manager.close()
