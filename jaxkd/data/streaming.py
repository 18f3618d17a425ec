"""Datasets too large for memory (ImageNet), read from tfds with tf.data as they train.

The stable index of an example is its position in tfds's fixed file order
(shuffle_files=False, then enumerate). Epoch e shuffles with a seed derived from
(seed, e), and each example's random crop is seeded by (seed, epoch, index), so
training batches are a deterministic function of (seed, step) as for arrays:
resuming skips the epoch's first batches. Host-side preprocessing is what needs
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

  def __len__(self) -> int:
    return self.num_examples

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, 3)

  def fingerprint(self) -> str:
    key = repr((self.name, self.split, self.num_examples, self.image_size))
    return hashlib.sha256(key.encode()).hexdigest()[:16]

  def _read(self):
    import tensorflow_datasets as tfds

    try:
      dataset = tfds.load(self.name, split=self.split, data_dir=self.data_dir, shuffle_files=False,
                          read_config=tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1))
    except Exception as e:
      raise JaxkdError(f"tensorflow-datasets could not read {self.name}/{self.split}: "
                       f"{type(e).__name__}: {str(e)[:300]}. {self.name} must be prepared in "
                       "the tfds data dir (dataset.data_dir) first.") from e
    return dataset.enumerate()

  def pipeline(self, train: bool, seed: int = 0, epoch: int = 0):
    """tf.data of (image uint8 [S, S, 3], label, index) in a fixed order."""
    import tensorflow as tf

    size = self.image_size
    dataset = self._read()
    if train:
      dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed * 100003 + epoch,
                                reshuffle_each_iteration=False)

    def prepare(index, example):
      image = example["image"]
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
  """Training batches of a StreamDataset: same interface, drop-remainder, by step."""

  def iterate(self, start_step: int, end_step: int) -> Iterator[Batch]:
    import tensorflow_datasets as tfds

    step = start_step
    while step < end_step:
      epoch, offset = divmod(step, self.steps_per_epoch)
      pipeline = self.data.pipeline(train=True, seed=self.seed, epoch=epoch)
      pipeline = pipeline.batch(self.global_batch_size, drop_remainder=True).skip(offset)
      for batch in tfds.as_numpy(pipeline.take(min(self.steps_per_epoch - offset, end_step - step))):
        batch = {k: v[self._local] for k, v in batch.items()}
        batch.update({name: values[batch["index"]] for name, values in self.extras.items()})
        yield batch
        step += 1


def stream_eval_batches(data: StreamDataset, global_batch_size: int, process_index: int = 0,
                        process_count: int = 1) -> Iterator[Batch]:
  """Every example once, in index order; the last batch padded and masked."""
  import tensorflow_datasets as tfds

  local = _local_slice(global_batch_size, process_index, process_count)
  for batch in tfds.as_numpy(data.pipeline(train=False).batch(global_batch_size)):
    count = len(batch["label"])
    mask = (np.arange(global_batch_size) < count).astype(np.float32)
    padded = {k: np.concatenate([v, np.repeat(v[:1], global_batch_size - count, axis=0)])
              for k, v in batch.items()}
    yield {**{k: v[local] for k, v in padded.items()}, "mask": mask[local]}
