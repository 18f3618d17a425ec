"""A split held in memory: inputs, labels and each example's stable index."""

import dataclasses
import hashlib

import numpy as np

from jaxkd.data.batches import TrainBatches, array_eval_batches
from jaxkd.errors import JaxkdError


UNLABELED = -1  # The label of an example whose label is not known (a transfer set's).
# What the inputs are, and the batch key they travel under: images (pixels, scaled and
# normalised), numeric inputs used as they are (tables, sequences of vectors), token ids.
KINDS = ("image", "numeric", "tokens")


def has_token_labels(data) -> bool:
  """Whether `data` holds per-token labels [N, T] in memory (a language model's data);
  False for class labels and for streamed data."""
  return getattr(getattr(data, "labels", None), "ndim", 1) == 2


def input_dtype(kind: str) -> np.dtype:
  """The dtype a model of inputs of `kind` is traced with: int32 token ids, else float32."""
  return np.dtype(np.int32 if kind == "tokens" else np.float32)


@dataclasses.dataclass
class ArrayDataset:
  """One split of a dataset as arrays.

  inputs: of `kind` 'image' ([N, H, W, C] or [N, H, W]: uint8 pixels, or floats already
  scaled to [0, 1]), 'numeric' (float [N, ...] of any rank: tables [N, D], sequences
  [N, T, F]; used as they are) or 'tokens' (integer ids [N, T]). labels: [N]
  ints in [0, num_classes), or UNLABELED (-1) for examples whose label is not known; for
  tokens also [N, T], each position's next token (a language model's targets; -1 where a
  position does not count: padding, a prompt), num_classes the vocabulary size. An
  example's stable index is its position in the split: loaders keep the source's fixed
  order, so cached soft labels and memory banks can be keyed by it.

  Text (jaxkd.data.text) adds: extras, per-example arrays the model also takes (the
  `segments` [N, T] of packed documents), batched along with the inputs; token_bytes [V],
  the UTF-8 bytes of each token (bits per byte are reported from them); tokenizer, the
  tokenizer.json the ids come from (a run keeps a copy).
  """

  inputs: np.ndarray
  labels: np.ndarray
  num_classes: int
  name: str = "arrays"
  split: str = "train"
  kind: str = "image"
  extras: dict = dataclasses.field(default_factory=dict)
  token_bytes: np.ndarray | None = None
  tokenizer: str | None = None

  def __post_init__(self):
    images, labels = np.asarray(self.inputs), np.asarray(self.labels)
    where = f"{self.name}/{self.split}"
    if self.kind not in KINDS:
      raise JaxkdError(f"{where}: input kind '{self.kind}' is not one of {KINDS}.")
    if not len(images):
      raise JaxkdError(f"{where} has no examples; give a split with at least one.")
    if np.issubdtype(images.dtype, np.floating) and not np.all(np.isfinite(images)):
      first = int(np.argmax(~np.isfinite(images).reshape(len(images), -1).all(axis=1)))
      raise JaxkdError(f"{where}: the inputs of example {first} are not finite (NaN or inf); "
                       "clean or drop them before training (every split is checked).")
    if self.kind == "image":
      if images.ndim == 3:  # [N, H, W] grayscale
        images = images[..., None]
      if images.ndim != 4:
        raise JaxkdError(f"{where}: images must be [N, H, W, C] or [N, H, W], got shape "
                         f"{images.shape}; for tables or sequences use kind='numeric' "
                         "(dataset.input_kind).")
    elif self.kind == "numeric":
      if images.ndim < 2 or not np.issubdtype(images.dtype, np.number):
        raise JaxkdError(f"{where}: numeric inputs must be numbers [N, D] or [N, ...], got "
                         f"{images.dtype} of shape {images.shape}.")
      images = images.astype(np.float32)
    elif images.ndim != 2 or not np.issubdtype(images.dtype, np.integer):
      raise JaxkdError(f"{where}: tokens must be integer ids [N, T], got {images.dtype} of "
                       f"shape {images.shape}.")
    per_token = self.kind == "tokens" and labels.ndim == 2  # Next-token labels [N, T].
    if per_token and labels.shape != images.shape:
      raise JaxkdError(f"{where}: per-token labels must have the tokens' shape "
                       f"{images.shape}, got {labels.shape}.")
    if not per_token and (labels.ndim != 1 or len(labels) != len(images)):
      unit = "image" if self.kind == "image" else "example"
      raise JaxkdError(f"{where}: need one integer label per {unit}, got {len(images)} "
                       f"{unit}s and labels of shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
      raise JaxkdError(f"{where}: labels must be integers, got {labels.dtype}.")
    if len(labels) and (labels.min() < UNLABELED or labels.max() >= self.num_classes):
      raise JaxkdError(f"{where}: labels span [{labels.min()}, {labels.max()}] "
                       f"but num_classes is {self.num_classes} (and {UNLABELED} marks an "
                       "unlabeled example); set dataset.num_classes.")
    for name, values in self.extras.items():
      if len(values) != len(images):
        raise JaxkdError(f"{where}: '{name}' has {len(values)} rows for {len(images)} examples.")
    self.inputs, self.labels = images, labels.astype(np.int32)

  @property
  def num_labeled(self) -> int:
    """Examples with a label (with per-token labels: with at least one)."""
    labeled = self.labels != UNLABELED
    return int(np.sum(labeled if labeled.ndim == 1 else labeled.any(axis=1)))

  def subset(self, index: np.ndarray, split: str, labels: np.ndarray | None = None
             ) -> "ArrayDataset":
    """The examples `index` (in that order) as a new split, with other labels if given;
    their stable indices are their positions in it."""
    return dataclasses.replace(self, inputs=self.inputs[index],
                               labels=self.labels[index] if labels is None else labels,
                               split=split, extras={k: v[index] for k, v in self.extras.items()})

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.inputs.shape[1:])

  def fingerprint(self) -> str:
    """A short hash of the labels and size: what a cache keyed by index must match."""
    digest = hashlib.sha256(self.labels.tobytes())
    digest.update(repr((self.name, self.split, self.inputs.shape)).encode())
    return digest.hexdigest()[:16]

  def train_batches(self, global_batch_size: int, seed: int, process_index: int = 0,
                    process_count: int = 1) -> TrainBatches:
    """Shuffled training batches, addressable by step (the data protocol, data/batches.py)."""
    return TrainBatches(self, global_batch_size, seed, process_index, process_count)

  def eval_batches(self, global_batch_size: int, process_index: int = 0, process_count: int = 1):
    """Every example once, in order, the last batch padded and masked."""
    return array_eval_batches(self, global_batch_size, process_index, process_count)


def load_npz(path: str, split: str, num_classes: int | None, kind: str = "image"
             ) -> ArrayDataset:
  """Reads x_<split>, y_<split> from a .npz file (the Keras naming); x of `kind`."""
  try:
    with np.load(path) as data:
      images, labels = data[f"x_{split}"], data[f"y_{split}"]
  except FileNotFoundError:
    raise JaxkdError(f"dataset file {path} does not exist; set dataset.path to a .npz file "
                     f"with arrays x_train, y_train, x_test, y_test.") from None
  except KeyError as e:
    raise JaxkdError(f"{path} has no array {e}; it needs x_train, y_train, x_test, y_test.") from None
  if num_classes is None:
    num_classes = int(labels.max()) + 1
  return ArrayDataset(images, labels, num_classes, name="npz", split=split, kind=kind)
