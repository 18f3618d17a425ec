"""Config fields by dotted path ('distill.terms.kd.temperature'): checked, read, set, and
set from text as --config.<path>=<text> would be (ml_collections' own parsers).

override() is the one way a field is set from outside a config file: the command lines'
--config.<path>=<value>, the sweep's and the search's values, the Python API's config={...}.
An unknown field is an error with near matches; a new term or a new option of a term
(distill.terms.<label>.<option>) and a new model option (model.<option>) may be added, as
a config file could add them: the method's or the model's own options check them later.
"""

import ast
import copy
import difflib
import re
from typing import Any

import ml_collections
from absl import flags
from ml_collections.config_flags import config_flags, config_path

from jaxkd.errors import JaxkdError

Sections = (ml_collections.ConfigDict, dict)


def check(config: ml_collections.ConfigDict, path: str, what: str) -> None:
  """A JaxkdError (starting with `what`, e.g. '--sweep KEY') naming the missing part of
  `path` with near matches, or saying it is a section rather than a value."""
  node, done = config, []
  for part in path.split("."):
    fields = list(node.keys()) if isinstance(node, Sections) else None
    if fields is None or part not in fields:
      where = "config." + ".".join(done) if done else "the config"
      if fields is None:
        raise JaxkdError(f"{what}: config.{'.'.join(done)} is a value, not a section; it has no "
                         f"field '{part}'.")
      near = difflib.get_close_matches(part, fields, n=3)
      hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
      raise JaxkdError(f"{what}: unknown config field '{part}' in {where} (its fields: "
                       f"{', '.join(sorted(fields))}){hint}")
    node = node[part]
    done.append(part)
  if isinstance(node, Sections):
    raise JaxkdError(f"{what}: config.{path} is a section, not a value; give one of its fields "
                     f"({', '.join(sorted(node.keys()))}).")


def get(config: ml_collections.ConfigDict, path: str) -> Any:
  return config_path.get_value(path, config)


def set_value(config: ml_collections.ConfigDict, path: str, value: Any, what: str) -> None:
  """Sets an existing field; numbers take the field's type (an int field stays int)."""
  check(config, path, what)
  current = get(config, path)
  if isinstance(current, (int, float)) and not isinstance(current, bool):
    value = type(current)(value)
  config_path.set_value(path, config, value)


def parse_override(config: ml_collections.ConfigDict, path: str, text: str, what: str
                   ) -> tuple[ml_collections.ConfigDict, Any]:
  """A copy of `config` with `path` set to `text` parsed as --config.<path>=<text> would be
  (the field's type decides), and the parsed value."""
  check(config, path, what)
  flag_values = flags.FlagValues()
  argv = ["jaxkd", f"--config.{path}={text}"]
  holder = config_flags.DEFINE_config_dict("config", copy.deepcopy(config),
                                           flag_values=flag_values, sys_argv=argv)
  try:
    flag_values(argv)
  except (flags.Error, AttributeError, TypeError, ValueError) as e:
    message = " ".join(str(e).split())
    raise JaxkdError(f"{what}: value '{text}' does not fit config.{path} (now "
                     f"{get(config, path)!r}): {message}") from None
  return holder.value, get(holder.value, path)


# Sections a config file may extend with new keys: a term and its options, a model's options.
OPEN = re.compile(r"(^|\.)(distill\.terms\.[^.]+\.[^.]+|model\.[^.]+)$")


def exists(config: ml_collections.ConfigDict, path: str) -> bool:
  node = config
  for part in path.split("."):
    if not isinstance(node, Sections) or part not in node:
      return False
    node = node[part]
  return True


def _literal(text: str) -> Any:
  """A new option's value from text: a Python literal (number, bool, tuple, ...) or else the
  text itself."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def override(config: ml_collections.ConfigDict, path: str, value: Any, what: str,
             text: bool = False) -> Any:
  """Sets field `path` of `config` (in place) and returns the value set. With `text`, `value`
  is command-line text, parsed with the field's type (or as a Python literal for a new
  option). An unknown field is a JaxkdError naming it (starting with `what`)."""
  if exists(config, path):
    if text:
      _, value = parse_override(config, path, value, what)
    set_value(config, path, value, what)
    return get(config, path)
  if not OPEN.search(path):
    check(config, path, what)  # Raises: the field is unknown.
  *parents, leaf = path.split(".")
  node = config
  with config.unlocked():
    for part in parents:  # A new term's section.
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    node[leaf] = _literal(value) if text else value
  return node[leaf]
