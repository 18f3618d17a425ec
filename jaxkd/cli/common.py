"""What every command line shares: absl flags, one-line errors and exit codes.

A command module defines `define_flags()` (called only when that command runs, so importing a
command adds no flags anywhere) and `main()`. run() parses the flags, runs main and turns a
user's mistake (a bad flag, an unknown config field, a JaxkdError) into one line,
`jaxkd: error: ...`, and exit code 2. Experiment scripts use run() too.
"""

import sys
import types
from typing import Callable, NoReturn, Sequence

from absl import app, flags, logging

from jaxkd.errors import JaxkdError

PROGRAM = "jaxkd"
# The arguments the running command was given (after `python -m jaxkd <command>`).
ARGS: list[str] = []


def fail(message: str) -> NoReturn:
  print(f"{PROGRAM}: error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def _parse(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e))
  except AttributeError as e:  # ml_collections: an override names a field the config lacks.
    fail(f"unknown config field in an override: {str(e.args[0]).strip(chr(39))}")


def run(main: Callable[[], None], argv: Sequence[str] | None = None,
        define_flags: Callable[[], None] | None = None) -> None:
  """Defines the flags (define_flags), parses `argv` (default sys.argv) and runs main();
  positional arguments, flag errors and JaxkdError exit with one line and code 2."""
  if define_flags is not None:
    define_flags()
  argv = list(sys.argv if argv is None else argv)
  ARGS[:] = argv[1:]

  def body(rest: list[str]) -> None:
    if len(rest) > 1:
      fail(f"unexpected arguments {rest[1:]}; every option is a --flag (see --help).")
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO.
    try:
      main()
    except JaxkdError as e:
      fail(str(e))

  app.run(body, argv=argv, flags_parser=_parse)


def values(holders: dict) -> types.SimpleNamespace:
  """The parsed values of a command's flags ({name: FlagHolder}) as attributes."""
  return types.SimpleNamespace(**{name: holder.value for name, holder in holders.items()})


def start_distributed(config) -> str | None:
  """jax.distributed for a training command, before any device is used (see
  jaxkd.run.distributed); returns how it started, None for one process."""
  from jaxkd.run import distributed

  return distributed.initialize(config)
