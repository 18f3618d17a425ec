"""What a run says on the console: one line from process 0 only."""


def say(message: str) -> None:
  """Prints `message` (flushed) on process 0; other processes of a multi-host run stay quiet."""
  import jax  # Lazy: the command lines print their usage and errors without loading jax.

  if jax.process_index() == 0:
    print(message, flush=True)

