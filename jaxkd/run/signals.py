"""Stop at a step boundary on SIGTERM (preemption) or Ctrl-C, so a checkpoint can be saved.

With several processes, every process must stop after the same step (they save one
checkpoint together, and a process that runs on waits forever in the next collective).
A signal usually reaches one process, or reaches them at different steps, so they agree:

  * jax's preemption sync (multihost_utils.reached_preemption_sync_point), the default:
    jax.distributed.initialize installs a C-level SIGTERM handler (its preemption
    notifier, polled every second) that tells the coordination service; every process
    then stops at the same step, one past the furthest any process had reached. A Python
    SIGTERM handler would replace that handler, so none is installed then; a first
    Ctrl-C is passed on to it as a SIGTERM to this process.
  * without that service (jax_enable_preemption_service off): every step, the processes
    gather each one's stop flag (a small collective) and stop if any is set.

Once the loop has saved its checkpoint it raises Stopped, which every caller lets pass (a
pipeline does not go on to its next stage, a sweep not to its next cell) up to the command
line, which says so and exits with code 0. Outside the loop (loading data, compiling,
writing soft labels, between stages), stop_anywhere() turns SIGTERM and Ctrl-C into Stopped
at once: files a user keeps are written atomically, so nothing half-written is left, and
the same command resumes from the last checkpoint and reuses every finished stage.
"""

import contextlib
import itertools
import os
import signal
import threading

class Stopped(BaseException):
  """A run stopped by a signal: at `step` after saving its checkpoint (step None: outside
  the training loop, nothing in flight). A BaseException, so that no `except Exception`
  on the way up mistakes it for an error."""

  def __init__(self, signal_name: str, step: int | None = None):
    super().__init__(signal_name, step)
    self.signal_name, self.step = signal_name, step

  def message(self) -> str:
    if self.step is None:
      return (f"stopped by {self.signal_name}; every checkpoint and finished stage is kept. "
              "Run the same command again to resume.")
    return (f"stopped by {self.signal_name} at step {self.step}; checkpoint saved. "
            "Run the same command again to resume.")


@contextlib.contextmanager
def stop_anywhere():
  """SIGTERM and SIGINT raise Stopped wherever the program is (the training loop installs
  its own handlers, which stop it at a step boundary instead)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handle(signum, frame):
    raise Stopped(signal.Signals(signum).name)

  previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


# Sync point ids for jax's preemption sync: rising over every loop of this process (stages
# start at step 0 again), one per step, so every process asks about the same ids in order.
_sync_ids = itertools.count(1)


def _preemption_service() -> bool:
  """Whether jax.distributed started its preemption sync manager (and its SIGTERM handler):
  it does whenever it is initialised with jax_enable_preemption_service on."""
  import jax

  return jax.distributed.is_initialized() and bool(jax.config.jax_enable_preemption_service)


class StopRequest:
  """signal_name: the signal this process caught; stop_now(): whether to stop after this step."""

  def __init__(self, mode: str = "local"):
    self.signal_name: str | None = None
    self.mode = mode  # local (one process) | preemption_sync | allgather

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def stop_now(self) -> bool:
    """Whether to stop after the current step. Call it once per step, on every process: with
    several processes it is a collective decision (all stop at the same step)."""
    if self.mode == "local":
      return self.requested
    from jax.experimental import multihost_utils

    if self.mode == "preemption_sync":
      return multihost_utils.reached_preemption_sync_point(next(_sync_ids))
    import numpy as np

    return bool(np.any(multihost_utils.process_allgather(np.int32(self.requested))))

  @property
  def reason(self) -> str:
    """What stopped the run, for the log (another process's signal is not known by name)."""
    if self.mode == "preemption_sync":  # This process's SIGTERM went to jax's handler.
      return self.signal_name or "SIGTERM or SIGINT to one of the processes"
    return self.signal_name or "SIGTERM or SIGINT to another process"


@contextlib.contextmanager
def stop_on_signals(process_count: int = 1):
  """Yields a StopRequest that SIGTERM/SIGINT set; a second Ctrl-C stops at once.

  With process_count > 1 (jax.process_count()), stop_now() is agreed by all processes.
  """
  mode = ("local" if process_count <= 1 else
          "preemption_sync" if _preemption_service() else "allgather")
  request = StopRequest(mode)
  if threading.current_thread() is not threading.main_thread():
    yield request  # Signals can only be caught in the main thread.
    return

  def handle(signum, frame):
    if request.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    request.signal_name = signal.Signals(signum).name
    if mode == "preemption_sync":  # jax's notifier starts the sync between the processes.
      os.kill(os.getpid(), signal.SIGTERM)

  # jax's preemption notifier owns SIGTERM (a C handler Python does not see); keep it.
  signals = (signal.SIGINT,) if mode == "preemption_sync" else (signal.SIGTERM, signal.SIGINT)
  previous = {s: signal.signal(s, handle) for s in signals}
  try:
    yield request
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
