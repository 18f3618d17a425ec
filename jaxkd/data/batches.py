"""Training and evaluation batches from arrays in memory (ArrayDataset), and the protocol
every dataset meets: `data.train_batches(global_batch_size, seed, process_index,
process_count)` returns a BatchSource (steps_per_epoch, iterate, add_extra) and
`data.eval_batches(global_batch_size, process_index, process_count)` yields every example
once, padded and masked. ArrayDataset and StreamDataset (data/streaming.py) implement it;
this module imports neither.

A training batch is a pure function of (seed, step): each epoch is a fresh
permutation drawn from (seed, epoch), and step s takes the s-th slice of it.
Resuming at any step therefore continues the exact data order. A global batch
is split over processes: process p takes the p-th contiguous part.
"""

import abc
import queue
import threading
from typing import Iterator

import numpy as np

from jaxkd.errors import JaxkdError

Batch = dict[str, np.ndarray]


def counted(labels, mask=None):
  """1.0 for each label that counts, else 0.0, in the labels' shape ([B], or [B, T] per
  token): labelled (>= 0; -1 marks no label, padding or a prompt) and, with `mask` [B], in
  an example that counts. NumPy or JAX arrays alike."""
  weights = (labels >= 0).astype(np.float32)
  if mask is None:
    return weights
  return weights * mask.reshape(mask.shape + (1,) * (labels.ndim - 1))


def take(columns: dict, index) -> Batch:
  """A training batch: the rows `index` of every per-example column ({input kind, 'label',
  extras}), its stable indices and an all-ones mask. NumPy or JAX arrays alike (jaxkd.run.population
  gathers on the device with it)."""
  return {**{name: values[index] for name, values in columns.items()},
          "index": index.astype(np.int32), "mask": np.ones(index.shape, np.float32)}


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def _local_slice(global_batch_size: int, process_index: int, process_count: int) -> slice:
  if global_batch_size % process_count:
    raise JaxkdError(f"global batch size {global_batch_size} does not divide over "
                     f"{process_count} processes; use a multiple of {process_count}.")
  per_process = global_batch_size // process_count
  return slice(process_index * per_process, (process_index + 1) * per_process)


class BatchSource(abc.ABC):
  """What the loop needs of training batches: steps_per_epoch, iterate, add_extra."""

  def __init__(self, data, global_batch_size: int, seed: int, process_index: int = 0,
               process_count: int = 1):
    if global_batch_size > len(data):
      raise JaxkdError(f"batch size {global_batch_size} is larger than the {len(data)} "
                       f"training examples of {data.name}; use a smaller train.batch_size.")
    self.data = data
    self.global_batch_size = global_batch_size
    self.seed = seed
    self.steps_per_epoch = len(data) // global_batch_size
    self._local = _local_slice(global_batch_size, process_index, process_count)
    self.extras: dict[str, np.ndarray] = {}

  def add_extra(self, name: str, values: np.ndarray) -> None:
    """Per-example arrays keyed by stable index (e.g. cached teacher logits), batched along."""
    if len(values) != len(self.data):
      raise JaxkdError(f"'{name}' has {len(values)} rows for {len(self.data)} examples.")
    self.extras[name] = values

  @abc.abstractmethod
  def iterate(self, start_step: int, end_step: int) -> Iterator[Batch]:
    """Batches of steps start_step .. end_step - 1 (this process's part of each)."""


class TrainBatches(BatchSource):
  """Shuffled training batches of an ArrayDataset, drop-remainder, addressable by step."""

  def __init__(self, data, global_batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    super().__init__(data, global_batch_size, seed, process_index, process_count)
    self._epoch, self._permutation = -1, None
    self._process = (process_index, process_count)
    self._classes = None  # with pair_by_class(): each class's examples

  def pair_by_class(self) -> None:
    """From now on each example of a batch is followed by a partner of its class drawn at
    random (by seed and step), with mask 0 (CS-KD, Yun et al. 2020: the batch doubles)."""
    labels = np.asarray(self.data.labels)
    if labels.ndim != 1 or np.any(labels < 0):
      raise JaxkdError("pairs by class need one label per example, every example labeled "
                       "(cs_kd); this data has per-token or missing labels.")
    self._classes = {c: np.nonzero(labels == c)[0] for c in np.unique(labels)}
    self._local = _local_slice(2 * self.global_batch_size, *self._process)

  def indices(self, step: int) -> np.ndarray:
    """Stable indices of this process's part of the global batch at `step`."""
    epoch, position = divmod(step, self.steps_per_epoch)
    if epoch != self._epoch:
      self._epoch, self._permutation = epoch, epoch_permutation(len(self.data), self.seed, epoch)
    start = position * self.global_batch_size
    chosen = self._permutation[start:start + self.global_batch_size]
    if self._classes is not None:  # each example, then its partner of the same class
      rng = np.random.default_rng([self.seed, step, 2020])
      labels = self.data.labels[chosen]
      partners = np.array([rng.choice(self._classes[c]) for c in labels], chosen.dtype)
      chosen = np.stack([chosen, partners], axis=1).reshape(-1)
    return chosen[self._local]

  def columns(self) -> dict:
    """The per-example arrays a batch takes rows of: the inputs, labels and extras (the
    data's own, e.g. segments, and those added, e.g. cached teacher logits)."""
    return {self.data.kind: self.data.inputs, "label": self.data.labels, **self.data.extras,
            **self.extras}

  def batch(self, step: int) -> Batch:
    batch = take(self.columns(), self.indices(step))
    if self._classes is not None:
      batch["mask"][1::2] = 0.0  # the partners: seen by cs_kd alone
    return batch

  def iterate(self, start_step: int, end_step: int) -> Iterator[Batch]:
    for step in range(start_step, end_step):
      yield self.batch(step)


def array_eval_batches(data, global_batch_size: int, process_index: int = 0,
                       process_count: int = 1) -> Iterator[Batch]:
  """Every example of an ArrayDataset exactly once, in order; the last batch is padded and
  masked. All batches have the same shape (one compilation); `mask` is 1 for real
  examples and 0 for padding, and metrics must be weighted by it.
  """
  local = _local_slice(global_batch_size, process_index, process_count)
  for start in range(0, len(data), global_batch_size):
    index = np.arange(start, start + global_batch_size)
    mask = (index < len(data)).astype(np.float32)
    index = np.where(mask > 0, index, 0)[local]
    yield {data.kind: data.inputs[index], "label": data.labels[index],
           **{name: values[index] for name, values in data.extras.items()},
           "index": index.astype(np.int32), "mask": mask[local]}


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
  """Runs `iterator` in a background thread, `size` items ahead."""
  items: queue.Queue = queue.Queue(maxsize=size)
  done = object()

  def produce():
    try:
      for item in iterator:
        items.put(item)
    except BaseException as e:  # Re-raised in the consumer.
      items.put(e)
    items.put(done)

  threading.Thread(target=produce, daemon=True).start()
  while (item := items.get()) is not done:
    if isinstance(item, BaseException):
      raise item
    yield item
