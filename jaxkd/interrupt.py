"""Stop at a step boundary on SIGTERM (preemption) or Ctrl-C, so a checkpoint can be saved."""

import contextlib
import signal
import threading


class StopRequest:
  def __init__(self):
    self.signal_name: str | None = None

  @property
  def requested(self) -> bool:
    return self.signal_name is not None


@contextlib.contextmanager
def stop_on_signals():
  """Yields a StopRequest that SIGTERM/SIGINT set; a second Ctrl-C stops at once."""
  request = StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request  # Signals can only be caught in the main thread.
    return

  def handle(signum, frame):
    if request.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    request.signal_name = signal.Signals(signum).name

  previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield request
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
