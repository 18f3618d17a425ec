"""Files a user keeps are written whole or not at all: to a unique temporary name beside the
destination, flushed, then renamed over it (os.replace is atomic on one filesystem). Two
writers never share a temporary name, and a crash leaves the old file as it was."""

import contextlib
import hashlib
import os
import pathlib
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | pathlib.Path, suffix: str = "") -> Iterator[pathlib.Path]:
  """Yields a fresh temporary path beside `path` (ending in `suffix`, for writers that pick a
  format by extension); on success it replaces `path`, on an error it is removed."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}",
                                       dir=path.parent)
  os.close(handle)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(temporary, 0o666 & ~umask)  # As open() would create it (mkstemp makes it private).
  temporary = pathlib.Path(temporary)
  try:
    yield temporary
    os.replace(temporary, path)
  finally:
    temporary.unlink(missing_ok=True)


def write_bytes(path: str | pathlib.Path, data: bytes) -> pathlib.Path:
  """Writes `data` to `path` atomically (flushed to disk before the rename); returns the path."""
  with atomic_path(path) as temporary:
    with open(temporary, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
  return pathlib.Path(path)


def write_text(path: str | pathlib.Path, text: str) -> pathlib.Path:
  """Writes `text` (UTF-8) to `path` atomically; returns the path."""
  return write_bytes(path, text.encode())



def fingerprint(root: str | pathlib.Path, files, whole_below: int = 1 << 20) -> str:
  """A short content hash of `files` under `root`: each one's path relative to root, its size
  and, up to `whole_below` bytes, its content (metadata and manifests whole; large array
  files by their size)."""
  root, digest = pathlib.Path(root), hashlib.sha256()
  for path in sorted(pathlib.Path(p) for p in files):
    size = path.stat().st_size
    digest.update(f"{path.relative_to(root)}:{size}".encode())
    if size <= whole_below:
      digest.update(path.read_bytes())
  return digest.hexdigest()[:16]
