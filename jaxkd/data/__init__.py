"""Input pipeline: named datasets (tfds or offline copies), user arrays, batches.

Every dataset meets one protocol: data.train_batches(...) and data.eval_batches(...).

Only the tfds loaders import TensorFlow, and only when they run.
"""

from jaxkd.data.arrays import ArrayDataset, load_npz
from jaxkd.data.augment import Preprocess
from jaxkd.data.batches import TrainBatches, prefetch
from jaxkd.data.catalog import (DATASETS, DatasetInfo, load_split, preprocessing, split_validation,
                                training_splits)
from jaxkd.data.streaming import StreamDataset

__all__ = ["ArrayDataset", "DATASETS", "DatasetInfo", "Preprocess", "TrainBatches",
           "StreamDataset", "load_npz", "load_split", "prefetch", "preprocessing",
           "split_validation", "training_splits"]
