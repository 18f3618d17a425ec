"""Where offline datasets are kept: $JAXKD_DATA_DIR (default ~/.cache/jaxkd)/<package>-<version>."""

import os
import pathlib


def cache_dir(package: str, version: str) -> pathlib.Path:
  root = os.environ.get("JAXKD_DATA_DIR", os.path.join(os.path.expanduser("~"), ".cache", "jaxkd"))
  return pathlib.Path(root) / f"{package}-{version}"
