"""Datasets too large for memory (ImageNet), read from tfds with tf.data as they train.

The stable index of an example is its position in tfds's fixed file order
(shuffle_files=False, then enumerate). Epoch e shuffles with a seed derived from
(seed, e), and each example's random crop is seeded by (seed, epoch, index), so
training batches are a deterministic function of (seed, step) as for arrays:
resuming skips the epoch's first batches, before decoding them, and each process
decodes only its slice of every global batch. Host-side preprocessing is what needs
the variable-size JPEG (decode, random-resized crop for training, resize 256 +
centre crop for evaluation); flips and normalisation run on the device
(jaxkd.data.augment) like every other dataset.
"""

import dataclasses
import hashlib
from typing import Iterator

import numpy as np

from jaxkd.data.batches import Batch, BatchSource, _local_slice
from jaxkd.errors import JaxkdError

SHUFFLE_BUFFER = 16384


@dataclasses.dataclass
class StreamDataset:
  name: str
  split: str
  num_classes: int
  num_examples: int
  image_size: int
  data_dir: str | None = None
  kind: str = "image"  # Streamed datasets are images (jaxkd.data.arrays.KINDS).

  def __len__(self) -> int:
    return self.num_examples

  @property
  def input_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, 3)

  def fingerprint(self) -> str:
    key = repr((self.name, self.split, self.num_examples, self.image_size))
    return hashlib.sha256(key.encode()).hexdigest()[:16]

  def train_batches(self, global_batch_size: int, seed: int, process_index: int = 0,
                    process_count: int = 1) -> "StreamTrainBatches":
    """Training batches by step, as ArrayDataset's (the data protocol, data/batches.py)."""
    return StreamTrainBatches(self, global_batch_size, seed, process_index, process_count)

  def eval_batches(self, global_batch_size: int, process_index: int = 0, process_count: int = 1):
    return stream_eval_batches(self, global_batch_size, process_index, process_count)

  def _read(self):
    """(index, example) in tfds's fixed order, images still JPEG-encoded: a process decodes
    only the examples of its own slice."""
    import tensorflow_datasets as tfds

    try:
      dataset = tfds.load(self.name, split=self.split, data_dir=self.data_dir, shuffle_files=False,
                          read_config=tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1),
                          decoders={"image": tfds.decode.SkipDecoding()})
    except Exception as e:
      raise JaxkdError(f"tensorflow-datasets could not read {self.name}/{self.split}: "
                       f"{type(e).__name__}: {str(e)[:300]}. {self.name} must be prepared in "
                       "the tfds data dir (dataset.data_dir) first.") from e
    return dataset.enumerate()

  def pipeline(self, train: bool, seed: int = 0, epoch: int = 0, skip_batches: int = 0,
               global_batch_size: int = 1, local: slice | None = None):
    """tf.data of (image uint8 [S, S, 3], label, index) in a fixed order.

    skip_batches global batches are skipped and, with `local`, only this process's
    positions of each global batch are kept, both before any image is decoded: a
    resumed or multi-host run decodes only what it trains on.
    """
    import tensorflow as tf

    size = self.image_size
    dataset = self._read()
    if train:
      dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed * 100003 + epoch,
                                reshuffle_each_iteration=False)
    dataset = dataset.skip(skip_batches * global_batch_size)
    if local is not None and (local.start, local.stop) != (0, global_batch_size):
      start, stop = local.start, local.stop
      dataset = dataset.enumerate().filter(
          lambda position, _: (position % global_batch_size >= start)
          & (position % global_batch_size < stop)).map(lambda _, item: item)

    def prepare(index, example):
      image = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
      if train:
        crop_seed = tf.stack([tf.cast(seed * 100003 + epoch, tf.int64), index])
        image = random_resized_crop(image, size, crop_seed)
      else:
        image = resize_and_centre_crop(image, size)
      return {"image": tf.cast(image, tf.uint8), "label": tf.cast(example["label"], tf.int32),
              "index": tf.cast(index, tf.int32)}

    options = tf.data.Options()
    options.deterministic = True
    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).with_options(options)


def random_resized_crop(image, size: int, seed):
  """Inception-style crop: 8%-100% of the area, aspect 3/4-4/3, resized to size x size."""
  import tensorflow as tf

  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  image = tf.slice(image, begin, crop_size)
  return tf.image.resize(image, (size, size), antialias=True)


def resize_and_centre_crop(image, size: int):
  """Resize the shorter side to size * 256/224, then crop the centre size x size."""
  import tensorflow as tf

  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = (size * 256 / 224) / tf.reduce_min(shape)
  resized = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32), antialias=True)
  return tf.image.resize_with_crop_or_pad(resized, size, size)


class StreamTrainBatches(BatchSource):
  """Training batches of a StreamDataset: same interface, drop-remainder, by step. Each
  process reads its slice of every global batch (self._local), sliced before decoding."""

  def iterate(self, start_step: int, end_step: int) -> Iterator[Batch]:
    import tensorflow_datasets as tfds

    local_size = self._local.stop - self._local.start
    step = start_step
    while step < end_step:
      epoch, offset = divmod(step, self.steps_per_epoch)
      pipeline = self.data.pipeline(train=True, seed=self.seed, epoch=epoch, skip_batches=offset,
                                    global_batch_size=self.global_batch_size, local=self._local)
      pipeline = pipeline.batch(local_size, drop_remainder=True)
      for batch in tfds.as_numpy(pipeline.take(min(self.steps_per_epoch - offset, end_step - step))):
        batch.update({name: values[batch["index"]] for name, values in self.extras.items()})
        batch["mask"] = np.ones(len(batch["index"]), np.float32)
        yield batch
        step += 1


def stream_eval_batches(data: StreamDataset, global_batch_size: int, process_index: int = 0,
                        process_count: int = 1) -> Iterator[Batch]:
  """Every example once, in index order; each process decodes only its slice of each
  global batch; the last batches padded and masked (every process yields as many)."""
  import tensorflow_datasets as tfds

  local = _local_slice(global_batch_size, process_index, process_count)
  local_size = local.stop - local.start
  num_batches = -(-len(data) // global_batch_size)
  pipeline = data.pipeline(train=False, global_batch_size=global_batch_size, local=local)
  batches = iter(tfds.as_numpy(pipeline.batch(local_size)))
  empty = {"image": np.zeros((local_size, *data.input_shape), np.uint8),
           "label": np.zeros(local_size, np.int32), "index": np.zeros(local_size, np.int32)}
  for _ in range(num_batches):
    batch = next(batches, None)
    count = 0 if batch is None else len(batch["label"])
    padded = empty if batch is None else {
        k: np.concatenate([v, np.repeat(v[:1], local_size - count, axis=0)])
        for k, v in batch.items()}
    yield {**padded, "mask": (np.arange(local_size) < count).astype(np.float32)}
