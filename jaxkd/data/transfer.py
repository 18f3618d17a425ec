"""Transfer sets: the examples a student distils on, apart from the labeled set.

config.transfer shapes the training split (after dataset.validation_size is held out, so
the validation split keeps every label):
  keep_classes / drop_classes  class filters: only those classes, or all but those (Hinton
                      et al. 2015 omit every 3 from the transfer set); apply to the
                      labeled examples, by their label.
  labeled_fraction    the share of the (filtered) examples that keep their label, drawn by
                      labeled_seed; the rest become unlabeled (label -1). 0: none.
  labeled_indices     instead of a fraction: the positions (in the training split) that keep
                      their label.
  unlabeled           'keep' (default): unlabeled examples stay, seen by the teacher terms
                      only; 'drop': they leave, and the transfer set is the labeled subset
                      (the same student trained alone on those labels).
  extra               a dataset config (name, path, split, source, input_kind, num_classes)
                      whose examples are added unlabeled: data from elsewhere, e.g. another
                      domain or a large unlabeled pool. Same input shape and kind.
Label terms (ce) average over the labeled examples only; teacher terms over all. Stable
indices are positions in the transfer set: cached soft labels and memory banks key on them,
and its fingerprint (labels, size, name and split, which spells out these options) is
what a cache must match.
"""

import dataclasses

import ml_collections
import numpy as np

from jaxkd.data.arrays import UNLABELED, ArrayDataset
from jaxkd.errors import JaxkdError

def is_default(config: ml_collections.ConfigDict) -> bool:
  """Whether config.transfer leaves the training split as it is."""
  return (not config.keep_classes and not config.drop_classes
          and config.labeled_fraction == 1.0 and not config.labeled_indices
          and not config.extra.name)


def _class_filter(data: ArrayDataset, keep: tuple, drop: tuple) -> tuple[np.ndarray, str]:
  """Positions of the examples the filters keep, and how to name the filter."""
  for what, classes in (("keep_classes", keep), ("drop_classes", drop)):
    bad = [c for c in classes if not 0 <= int(c) < data.num_classes]
    if bad:
      raise JaxkdError(f"transfer.{what}: classes {bad} are not among {data.num_classes}.")
  if keep:
    return np.flatnonzero(np.isin(data.labels, np.asarray(keep))), f"keep={list(keep)}"
  if drop:
    return np.flatnonzero(~np.isin(data.labels, np.asarray(drop))), f"drop={list(drop)}"
  return np.arange(len(data)), ""


def _labeled(positions: np.ndarray, config: ml_collections.ConfigDict) -> tuple[np.ndarray, str]:
  """A bool per kept example: does it keep its label; and how to name the choice."""
  indices = tuple(int(i) for i in config.labeled_indices)
  fraction = float(config.labeled_fraction)
  if indices:
    missing = sorted(set(indices) - set(positions.tolist()))
    if missing:
      raise JaxkdError(f"transfer.labeled_indices: {missing[:5]} are not in the (filtered) "
                       "training split; give positions of examples it keeps.")
    return np.isin(positions, indices), f"labeled={len(indices)} given"
  count = int(round(fraction * len(positions)))
  chosen = np.zeros(len(positions), bool)
  seed = int(config.labeled_seed)
  chosen[np.random.default_rng(seed).permutation(len(positions))[:count]] = True
  return chosen, "" if fraction == 1.0 else f"labeled={fraction:g} seed={seed}"


def build_transfer_set(train: ArrayDataset, config: ml_collections.ConfigDict,
                       load_extra=None) -> ArrayDataset:
  """The transfer set of config.transfer made from the training split `train`;
  `load_extra(dataset_config)` loads transfer.extra's training split."""
  if is_default(config):
    return train
  if not isinstance(train, ArrayDataset):
    raise JaxkdError(f"config.transfer: {train.name} is streamed; transfer sets are built from "
                     "in-memory training data only.")
  unlabeled = config.unlabeled  # keep | drop
  positions, filter_name = _class_filter(train, tuple(config.keep_classes),
                                         tuple(config.drop_classes))
  if not len(positions):
    raise JaxkdError("config.transfer keeps no training example; loosen its class filter.")
  labeled, labeled_name = _labeled(positions, config)
  if unlabeled == "drop":
    positions, labeled = positions[labeled], labeled[labeled]
  labels = np.where(labeled, train.labels[positions], UNLABELED).astype(np.int32)
  images, parts = train.inputs[positions], [filter_name, labeled_name]
  extras = {name: values[positions] for name, values in train.extras.items()}
  extra = config.extra
  if extra.name:
    more = load_extra(extra)
    if set(more.extras) != set(extras):
      raise JaxkdError(f"transfer.extra ({more.name}) carries {sorted(more.extras)} beside its "
                       f"inputs, the training split {sorted(extras)}; give extra data of the "
                       "same kind.")
    extras = {name: np.concatenate([values, more.extras[name]]) for name, values in extras.items()}
    if (more.kind, more.input_shape) != (train.kind, train.input_shape):
      raise JaxkdError(f"transfer.extra ({more.name}) has {more.kind} inputs of shape "
                       f"{more.input_shape}; the training split's are {train.kind} of shape "
                       f"{train.input_shape}. Bring them to the same shape first.")
    images = np.concatenate([images, more.inputs.astype(images.dtype)])
    labels = np.concatenate([labels, np.full(len(more), UNLABELED, np.int32)])
    parts.append(f"extra={more.name}/{more.split}:{len(more)}")
  if unlabeled == "drop" and not len(labels):
    raise JaxkdError("config.transfer with unlabeled='drop' keeps no labeled example.")
  split = f"{train.split}[transfer {' '.join(p for p in parts if p) or 'all'}]"
  return dataclasses.replace(train, inputs=images, labels=labels, split=split, extras=extras)


def check_objective(objective, data: ArrayDataset, config: ml_collections.ConfigDict) -> None:
  """Refuses what would compute the wrong thing on a transfer set with unlabeled examples."""
  if not hasattr(data, "labels") or data.num_labeled == len(data):
    return
  readers = [t.label for t in objective.terms if getattr(t.method, "needs_labels", False)]
  if readers:
    raise JaxkdError(f"term(s) {readers} need every example's label, but the transfer set has "
                     f"{len(data) - data.num_labeled} unlabeled examples; use label-free terms "
                     "(kd, hard_kd, ...) with ce, or transfer.unlabeled='drop'.")
  if config.dataset.mixup_alpha > 0:
    raise JaxkdError("dataset.mixup_alpha > 0 with unlabeled examples: a mixed pair of a "
                     "labeled and an unlabeled example has no label to mix; set mixup_alpha=0 "
                     "or transfer.unlabeled='drop'.")
  if not data.num_labeled and not objective.needs_teacher:
    raise JaxkdError("the transfer set has no labeled example and the objective no teacher "
                     "term: nothing would train. Add a teacher term (e.g. kd).")
