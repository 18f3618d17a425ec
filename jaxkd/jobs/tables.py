"""Tables and plots that reports, sweeps, searches, benchmarks and experiments write: one
markdown table writer, one way to put a table into a README, one way to save a figure."""

import contextlib
import pathlib
from typing import Iterator, Sequence

from jaxkd.errors import JaxkdError
from jaxkd.files import atomic_path, write_text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: str = "") -> str:
  """A markdown table; `align` has one letter per column: 'l' (default) or 'r'."""
  align = align.ljust(len(header), "l")
  rule = ["---:" if a == "r" else "---" for a in align]
  lines = [header, rule, *rows]
  return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def write_between_markers(path: str | pathlib.Path, body: str, begin: str = "<!-- table -->",
                          end: str = "<!-- /table -->") -> None:
  """Replaces what stands between `begin` and `end` in the text file `path` with `body`: how
  an experiment writes its table into its README."""
  path = pathlib.Path(path)
  text = path.read_text()
  if begin not in text or end not in text:
    raise JaxkdError(f"{path} has no {begin} ... {end} block to write the table into.")
  write_text(path, text[:text.index(begin) + len(begin)] + "\n" + body + "\n" +
             text[text.index(end):])


@contextlib.contextmanager
def figure(path: str | pathlib.Path, columns: int = 1, size: tuple[float, float] = (6, 4),
           **subplots) -> Iterator:
  """Yields (figure, axes) of a new matplotlib figure (Agg, no display), saved to `path`
  (atomically, at 120 dpi) when the block ends."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, columns, figsize=size, dpi=120, **subplots)
  try:
    yield fig, axes
    fig.tight_layout()
    with atomic_path(path, suffix=pathlib.Path(path).suffix) as temporary:
      fig.savefig(temporary)
  finally:
    plt.close(fig)
