"""Config files: a Python file with get_config() (or get_config(arg)) -> ConfigDict."""

import importlib.util
import pathlib

import ml_collections

from jaxkd.errors import JaxkdError


def load_config_file(path, arg: str | None = None) -> ml_collections.ConfigDict:
  """get_config() (or get_config(arg)) of a config file: recipes are written once."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise JaxkdError(f"config file {path} does not exist; give the path of a .py file with "
                     "get_config().")
  spec = importlib.util.spec_from_file_location(f"jaxkd_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise JaxkdError(f"config file {path} has no get_config() function.")
  return module.get_config() if arg is None else module.get_config(arg)
