"""What jaxkd's command lines share: config mistakes as one line and exit code 2."""

import sys
from typing import Callable, NoReturn

from absl import flags


def fail(program: str, message: str) -> NoReturn:
  print(f"{program}: error: {message}", file=sys.stderr)
  sys.exit(2)


def flags_parser(program: str) -> Callable[[list[str]], list[str]]:
  """absl parsing for app.run(flags_parser=...), with config mistakes reported as one line."""

  def parse(argv: list[str]) -> list[str]:
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      fail(program, str(e))
    except AttributeError as e:  # ml_collections: an override names a field the config lacks.
      fail(program, f"unknown config field in an override: {str(e.args[0]).strip(chr(39))}")

  return parse
