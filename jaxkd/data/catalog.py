"""Named datasets: where each comes from and its standard preprocessing."""

import dataclasses
import glob
import os
from typing import Callable

import ml_collections
import numpy as np

from jaxkd.data import sklearn_sets
from jaxkd.data.arrays import ArrayDataset, load_npz
from jaxkd.data.streaming import StreamDataset
from jaxkd.errors import JaxkdError
from jaxkd.registry import Registry


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Facts about a named dataset; mean/std are per channel on [0, 1] pixels."""

  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  crop_padding: int = 0  # random crop of the original size after zero padding
  flip: bool = False  # random horizontal flip
  splits: tuple[str, str] = ("train", "test")
  offline: Callable[[str], tuple[np.ndarray, np.ndarray]] | None = None
  streaming: bool = False  # Too large for memory: read with tf.data (jaxkd.data.streaming).
  kind: str = "image"  # image | numeric | tokens (jaxkd.data.arrays.KINDS)
  offline_only: bool = False  # No tfds copy: always the offline source.
  # Builds a split from the dataset config (options such as seq_len): (inputs, labels).
  loader: Callable[[ml_collections.ConfigDict, str], tuple[np.ndarray, np.ndarray]] | None = None
  own_validation: bool = False  # The source has a 'validation' split (used unless
  #                               dataset.validation_size holds one out of 'train').


def _offline_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
  from jaxkd.data import mnist_offline  # Lazy: it is also run as a script.

  return mnist_offline.load(split)


DATASETS: Registry[DatasetInfo] = Registry("dataset")
DATASETS.register("mnist")(DatasetInfo(10, (0.1307,), (0.3081,), offline=_offline_mnist))
DATASETS.register("cifar10")(DatasetInfo(
    10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), crop_padding=4, flip=True))
DATASETS.register("cifar100")(DatasetInfo(
    100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), crop_padding=4, flip=True))
DATASETS.register("imagenet2012")(DatasetInfo(
    1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), flip=True,
    splits=("train", "validation"), streaming=True))
# A user's own arrays from dataset.path; statistics come from config or default to 0.5.
DATASETS.register("npz")(DatasetInfo(0, (0.5,), (0.5,)))
# scikit-learn's bundled sets (jaxkd.data.sklearn_sets): digits as MNIST-like images, with
# MNIST's statistics so that an MNIST teacher sees its own normalisation; two tables.
DATASETS.register("sklearn_digits")(DatasetInfo(
    10, (0.1307,), (0.3081,), offline=sklearn_sets.digits_as_mnist, offline_only=True))
DATASETS.register("sklearn_breast_cancer")(DatasetInfo(
    2, (0.0,), (1.0,), offline=sklearn_sets.breast_cancer, kind="numeric", offline_only=True))
DATASETS.register("sklearn_wine")(DatasetInfo(
    3, (0.0,), (1.0,), offline=sklearn_sets.wine, kind="numeric", offline_only=True))


def _shakespeare(config: ml_collections.ConfigDict, split: str) -> ArrayDataset:
  from jaxkd.data import shakespeare  # Lazy: it is also run as a script.

  tokens, labels = shakespeare.load(split, config.seq_len, config.max_chars)
  vocabulary = len(shakespeare.VOCABULARY)
  return ArrayDataset(tokens, labels, vocabulary, name="shakespeare_char", split=split,
                      kind="tokens", token_bytes=np.ones(vocabulary, np.int32))  # ASCII


def _text(config: ml_collections.ConfigDict, split: str):
  from jaxkd.data import text

  return text.load(config, split)


# A user's own text files, tokenized and packed (jaxkd.data.text); classes: the vocabulary.
DATASETS.register("text")(DatasetInfo(0, (0.0,), (1.0,), kind="tokens", offline_only=True,
                                      loader=_text, own_validation=True))
# Character-level Shakespeare (jaxkd.data.shakespeare): 84 tokens, split by play.
DATASETS.register("shakespeare_char")(DatasetInfo(
    84, (0.0,), (1.0,), kind="tokens", offline_only=True, loader=_shakespeare,
    own_validation=True))


def _tfds_data_dir(config: ml_collections.ConfigDict) -> str:
  return config.data_dir or os.environ.get(
      "TFDS_DATA_DIR", os.path.join(os.path.expanduser("~"), "tensorflow_datasets"))


def _tfds_prepared(name: str, data_dir: str) -> bool:
  # Looked up on disk so that the offline path never imports TensorFlow.
  return bool(glob.glob(os.path.join(data_dir, name, "*", "dataset_info.json")))


def _load_tfds(name: str, split: str, data_dir: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
  import tensorflow_datasets as tfds  # Input pipeline only.

  try:
    dataset = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False, download=download)
    # Chunks, not batch_size=-1: TF aborts on that for datasets of unknown size.
    chunks = list(tfds.as_numpy(dataset.batch(8192)))
  except Exception as e:  # tfds raises many types: network, missing files, bad versions.
    raise JaxkdError(f"tensorflow-datasets could not load {name}/{split} from {data_dir}: "
                     f"{type(e).__name__}: {str(e)[:300]}. Prepare it with tfds first "
                     f"(or set dataset.source='offline' where there is an offline copy).") from e
  return (np.concatenate([c["image"] for c in chunks]),
          np.concatenate([c["label"] for c in chunks]))


def choose_source(name: str, config: ml_collections.ConfigDict) -> str:
  """'tfds' or 'offline' for config.source in {'auto', 'tfds', 'offline'}.

  auto: tfds when the dataset is already prepared in the data dir, otherwise
  the offline copy where the dataset has one, otherwise a tfds download.
  """
  info = DATASETS.get(name)
  source = config.source  # auto | tfds | offline (checked with the config)
  if info.offline_only:
    if source == "tfds":
      raise JaxkdError(f"dataset '{name}' comes from scikit-learn, not tfds; set "
                       "dataset.source='auto' or 'offline'.")
    return "offline"
  if source == "offline" and info.offline is None:
    raise JaxkdError(f"dataset '{name}' has no offline copy; use dataset.source='tfds'.")
  if source == "auto":
    if info.offline is not None and not _tfds_prepared(name, _tfds_data_dir(config)):
      return "offline"
    return "tfds"
  return source


def _split_name(info: DatasetInfo, split: str) -> str:
  """'train' and 'test' name the dataset's own training and evaluation splits."""
  return {"train": info.splits[0], "test": info.splits[1]}.get(split, split)


def _stream_split(name: str, info: DatasetInfo, split: str, config: ml_collections.ConfigDict
                  ) -> StreamDataset:
  import tensorflow_datasets as tfds

  data_dir = _tfds_data_dir(config)
  try:
    count = tfds.builder(name, data_dir=data_dir).info.splits[split].num_examples
  except KeyError:  # No split metadata (e.g. tfds.testing.mock_data): count the records.
    count = int(tfds.load(name, split=split, data_dir=data_dir).reduce(0, lambda n, _: n + 1))
  return StreamDataset(name, split, info.num_classes, count,
                       config.image_size or 224, data_dir)


def load_split(config: ml_collections.ConfigDict, split: str) -> ArrayDataset | StreamDataset:
  """Loads split 'train', 'validation' or 'test' of config.name in its fixed order: into
  memory, or as a stream for datasets too large for it (imagenet2012).

  With dataset.validation_size = V > 0, 'validation' is V examples held out of the
  source's training split and 'train' the rest (see split_validation); with V = 0 there
  is no 'validation' split and 'train' is the whole training split.
  """
  if split == "test":
    return load_source_split(config, "test")
  train, validation = training_splits(config)
  if split == "train":
    return train
  if validation is None:
    raise JaxkdError("this run has no validation split: set dataset.validation_size > 0 "
                     "(examples held out of the training split).")
  return validation


def training_splits(config: ml_collections.ConfigDict, train: ArrayDataset | None = None
                    ) -> tuple[ArrayDataset | StreamDataset, ArrayDataset | None]:
  """(train, validation) from one read of the source's training split (or from `train`,
  that split when the caller holds it: a user's arrays). With dataset.validation_size = V
  > 0, V examples are held out of it (split_validation); else validation is the source's
  own validation split where it has one, or None."""
  size = config.validation_size
  train = load_source_split(config, "train") if train is None else train
  if not size:
    return train, load_source_split(config, "validation") if has_own_validation(config) else None
  if isinstance(train, StreamDataset):
    raise JaxkdError(f"dataset.validation_size: {config.name} is streamed, and a validation "
                     "split is carved from in-memory training data only; set it to 0.")
  return split_validation(train, size, config.validation_seed)


def has_own_validation(config: ml_collections.ConfigDict) -> bool:
  """Whether config.name's source has a 'validation' split of its own (used when
  dataset.validation_size holds none out of 'train')."""
  return config.name in DATASETS and DATASETS.get(config.name).own_validation


def split_validation(train: ArrayDataset, size: int, seed: int = 0
                     ) -> tuple[ArrayDataset, ArrayDataset]:
  """(train, validation): `size` examples of `train` drawn by `seed` are held out. Both
  keep the source's order; their stable indices are positions in the new splits. The
  split depends on `seed` (dataset.validation_seed) only, so every run with the same
  dataset config (the teacher, every student seed) holds out the same examples."""
  if not 0 < size < len(train):
    raise JaxkdError(f"dataset.validation_size={size}: it must be between 1 and the training "
                     f"split's {len(train) - 1} examples.")
  held_out = np.zeros(len(train), bool)
  held_out[np.random.default_rng(seed).permutation(len(train))[:size]] = True
  return (train.subset(np.flatnonzero(~held_out), "train"),
          train.subset(np.flatnonzero(held_out), "validation"))


def load_source_split(config: ml_collections.ConfigDict, split: str
                      ) -> ArrayDataset | StreamDataset:
  """Split `split` of the source as it is ('train', 'test', or any split tfds has, e.g. an
  'unlabelled' one), with no validation hold-out."""
  name = config.name
  info = DATASETS.get(name)
  if name == "npz":
    if not config.path:
      raise JaxkdError("dataset 'npz' needs dataset.path: a .npz file with x_train, y_train, "
                       "x_test, y_test.")
    return load_npz(config.path, split, config.num_classes, config.input_kind)
  if info.streaming:
    return _stream_split(name, info, _split_name(info, split), config)
  source = choose_source(name, config)
  if info.loader is not None:
    loaded = info.loader(config, split)
    if isinstance(loaded, ArrayDataset):  # A loader that knows its vocabulary (text).
      return loaded
    images, labels = loaded
  elif source == "offline":
    images, labels = info.offline(split)
  else:
    images, labels = _load_tfds(name, split, _tfds_data_dir(config), download=True)
  return ArrayDataset(images, labels, info.num_classes, name=name, split=split, kind=info.kind)


def preprocessing(config: ml_collections.ConfigDict, image_channels: int) -> dict:
  """The Preprocess fields for a dataset: its defaults, overridden by the config."""
  info = DATASETS.get(config.name)
  mean = config.mean or info.mean
  std = config.std or info.std
  if len(mean) == 1 and image_channels > 1:
    mean, std = mean * image_channels, std * image_channels
  if len(mean) != image_channels or len(std) != image_channels:
    raise JaxkdError(f"dataset.mean/std have {len(mean)}/{len(std)} values for images with "
                     f"{image_channels} channels; give one value per channel.")
  crop, flip = config.crop_padding, config.flip
  return dict(mean=tuple(mean), std=tuple(std),
              crop_padding=info.crop_padding if crop is None else int(crop),
              flip=info.flip if flip is None else bool(flip))
