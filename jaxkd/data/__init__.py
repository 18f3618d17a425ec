"""Input pipeline: named datasets (tfds or offline copies), user arrays, batches.

Only the tfds loaders import TensorFlow, and only when they run.
"""

from jaxkd.data.arrays import ArrayDataset, load_npz
from jaxkd.data.augment import Preprocess
from jaxkd.data.batches import TrainBatches, eval_batches, make_train_batches, prefetch
from jaxkd.data.catalog import (DATASETS, DatasetInfo, load_split, preprocessing, split_validation,
                                training_splits)
from jaxkd.data.streaming import StreamDataset

__all__ = ["ArrayDataset", "DATASETS", "DatasetInfo", "Preprocess", "TrainBatches",
           "StreamDataset", "eval_batches", "load_npz", "load_split", "make_train_batches",
           "prefetch", "preprocessing", "split_validation", "training_splits"]
