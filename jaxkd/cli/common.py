"""What every command line shares: absl flags, one-line errors and exit codes, signals.

A command module defines `define_flags()` (called only when that command runs, so importing a
command adds no flags anywhere) and `main()`. run() parses the flags, loads the config file
(--config=FILE[:ARG]) and applies its overrides (--config.<field>=<value>: a field that does
not exist is an error naming it, with near matches; a new term or term option, e.g.
--config.distill.terms.hard_kd.weight=0.5, is added and checked against the method), runs
main, and turns a user's mistake (a bad flag or value, a missing or broken config file, a
JaxkdError) into one line, `jaxkd: error: ...`, and exit code 2. SIGTERM or Ctrl-C, in the
training loop or anywhere else, ends with one line and exit code 0 (jaxkd.run.signals).
Experiment scripts use run() too.
"""

import pathlib
import re
import sys
import threading
import types
from typing import Callable, NoReturn, Sequence

from absl import app, flags, logging

from jaxkd.errors import JaxkdError

PROGRAM = "jaxkd"
# The arguments the running command was given (after `python -m jaxkd <command>`).
ARGS: list[str] = []
# --config.<path>=<value>, --config.<path> <value>, --config.<flag> / --noconfig.<flag>.
_OVERRIDE = re.compile(r"^--?(no)?config\.([\w.]+)(=(.*))?$", re.S)


def fail(message: str) -> NoReturn:
  print(f"{PROGRAM}: error: {message}", file=sys.stderr, flush=True)
  sys.unraisablehook = lambda unraisable: None  # Background writers torn down at exit.
  sys.exit(2)


def _thread_failed(args) -> None:
  """A background thread's failure (a log writer on a full disk) as one line; the run itself
  reports what it means."""
  print(f"{PROGRAM}: warning: background thread {args.thread.name if args.thread else '?'} "
        f"failed: {args.exc_type.__name__}: {str(args.exc_value)[:200]}", file=sys.stderr,
        flush=True)


def _one_line(message: str) -> str:
  """A multi-line message (a traceback inside a flag error) as its first and last lines."""
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  return lines[0] if len(lines) < 2 else f"{lines[0].rstrip(':')}: {lines[-1]}"


def _split_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """(argv without the config overrides, [(path, text)] in their order)."""
  rest, overrides, i = [], [], 0
  while i < len(argv):
    match = _OVERRIDE.match(argv[i]) if i else None
    if not match:
      rest.append(argv[i])
      i += 1
      continue
    negated, path, given, text = match.groups()
    if given is None:
      if negated:
        text = "False"
      elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
        text, i = argv[i + 1], i + 1
      else:
        text = "True"
    overrides.append((path, text))
    i += 1
  return rest, overrides


def _config_file(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith(("--config=", "-config=")):
      return arg.split("=", 1)[1]
    if arg in ("--config", "-config") and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _load_config(given: str):
  """The loaded config of --config=FILE[:ARG], or fail() with one line."""
  path = given.split(":", 1)[0]
  if not pathlib.Path(path).is_file():
    fail(f"config file {path} does not exist; give --config=<a .py file with get_config()>.")
  config = flags.FLAGS["config"].value
  try:
    config.keys()  # ml_collections reports a failed load only on first use.
  except Exception as e:  # The config file's own error, in its words.
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    fail(f"config file {given} could not be loaded: {lines[-1] if lines else type(e).__name__}")
  return config


def _parser(overrides: list[tuple[str, str]]) -> Callable[[list[str]], list[str]]:
  def parse(argv: list[str]) -> list[str]:
    real, sys.argv = sys.argv, argv  # ml_collections reads its overrides from sys.argv: ours.
    try:
      rest = flags.FLAGS(argv)
    except flags.Error as e:
      fail(_one_line(str(e)))
    finally:
      sys.argv = real
    given = _config_file(argv)
    if given is None:
      if overrides:
        fail(f"--config.{overrides[0][0]} overrides a config, but no --config=FILE is given.")
      return rest
    from jaxkd.config.paths import override

    config = _load_config(given)
    try:
      for path, text in overrides:
        override(config, path, text, f"--config.{path}={text}", text=True)
    except JaxkdError as e:
      fail(str(e))
    return rest

  return parse


def run(main: Callable[[], None], argv: Sequence[str] | None = None,
        define_flags: Callable[[], None] | None = None) -> None:
  """Defines the flags (define_flags), parses `argv` (default sys.argv) and runs main();
  positional arguments, flag errors and JaxkdError exit with one line and code 2; a signal
  exits with one line and code 0."""
  from jaxkd.run.signals import Stopped, stop_anywhere

  if define_flags is not None:
    define_flags()
  threading.excepthook = _thread_failed
  sys.unraisablehook = lambda unraisable: None  # Callbacks of writers that failed (reported).
  argv = list(sys.argv if argv is None else argv)
  ARGS[:] = argv[1:]
  argv, overrides = _split_overrides(argv)

  def body(rest: list[str]) -> None:
    if len(rest) > 1:
      fail(f"unexpected arguments {rest[1:]}; every option is a --flag (see --help).")
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO.
    try:
      with stop_anywhere():
        main()
    except JaxkdError as e:
      fail(str(e))
    except Stopped as e:
      say(e.message())
      sys.exit(0)

  with stop_anywhere():  # Ctrl-C while the flags are parsed and the config file loads.
    try:
      app.run(body, argv=argv, flags_parser=_parser(overrides))
    except Stopped as e:
      say(e.message())
      sys.exit(0)


def say(message: str) -> None:
  """A line from process 0 (jaxkd.log.say once jax is loaded, else print)."""
  if "jax" in sys.modules:
    from jaxkd.log import say as say_once

    say_once(message)
  else:
    print(message, flush=True)


def path_flag(name: str, default: str | None, help: str):
  """A string flag naming a file or directory: an empty value is refused (it would mean the
  current directory)."""
  holder = flags.DEFINE_string(name, default, help)
  flags.register_validator(name, lambda value: value is None or bool(value.strip()),
                           f"--{name} must not be empty.")
  return holder


def positive_float_flag(name: str, default: float, help: str):
  holder = flags.DEFINE_float(name, default, help)
  flags.register_validator(name, lambda value: value > 0, f"--{name} must be > 0.")
  return holder


def values(holders: dict) -> types.SimpleNamespace:
  """The parsed values of a command's flags ({name: FlagHolder}) as attributes."""
  return types.SimpleNamespace(**{name: holder.value for name, holder in holders.items()})


def start_distributed(config) -> str | None:
  """jax.distributed for a training command, before any device is used (see
  jaxkd.run.distributed); returns how it started, None for one process."""
  from jaxkd.run import distributed

  return distributed.initialize(config)
