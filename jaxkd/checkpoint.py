"""Checkpoints of the train state with orbax: periodic, atomic, keep-last-N, resume.

Orbax writes each step into a temporary directory and renames it when
complete, so a crash mid-save never leaves a half checkpoint that looks whole.
"""

import pathlib
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxkd.errors import JaxkdError

TMP_SUFFIX = ".orbax-checkpoint-tmp"  # How orbax names a checkpoint still being written.


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of `tree`: the target orbax restores into."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
  """Saves every `every_steps` steps (and when forced) under workdir/checkpoints."""

  def __init__(self, workdir: str | pathlib.Path, every_steps: int, keep: int = 3):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self.every_steps = max(every_steps, 1)
    self._remove_unfinished()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

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
    """The state at `step` (default: latest), laid out like `like`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise JaxkdError(f"no checkpoint in {self.directory}; train there first or point to the "
                       "workdir of a finished run.")
    try:
      return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_like(like)))
    except (ValueError, KeyError, TypeError) as e:
      raise JaxkdError(f"checkpoint {self.directory}/{step} does not fit this model and "
                       f"optimizer ({type(e).__name__}: {str(e)[:300]}); use a fresh workdir "
                       "or the config the checkpoint was written with.") from e

  def save(self, step: int, state: Any, force: bool = False) -> bool:
    """Saves at multiples of every_steps, or now if `force`; never twice at one step."""
    if (step % self.every_steps and not force) or step == self.latest_step():
      return False
    return self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
