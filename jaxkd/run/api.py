"""A Python API: distil into your own Flax module from arrays, without a config file or a
registered name. Runs on the same train step, checkpoints and logs as the command line.

  result = jaxkd.train_student(Student(), (x_train, y_train), (x_test, y_test),
                               teachers=[(Teacher(), teacher_variables)],
                               terms={"ce": {"weight": 0.5}, "kd": {"weight": 0.5}},
                               optimizer=optax.adam(1e-3), epochs=10, batch_size=64,
                               workdir="runs/mine")
  result.variables, result.metrics

The student (and each teacher) is any flax.linen module called as module(x, train=bool)
and returning logits; running it again with the same workdir resumes or reuses it.
"""

import dataclasses
import pathlib
from typing import Any, Sequence

import flax.linen as nn
import ml_collections
import numpy as np
import optax

from jaxkd.errors import JaxkdError


@dataclasses.dataclass
class Result:
  """The trained student's variables ({'params': ..., other collections}), its metrics (the
  run's summary: test accuracy, errors, loss, step ...) and its workdir."""

  variables: dict
  metrics: dict
  workdir: pathlib.Path


def _kind(inputs: np.ndarray) -> str:
  if inputs.dtype == np.uint8 or inputs.ndim == 4:
    return "image"
  if np.issubdtype(inputs.dtype, np.integer):
    return "tokens"
  if inputs.ndim == 2:
    return "numeric"
  raise JaxkdError(f"inputs of shape {inputs.shape} ({inputs.dtype}): say what they are with "
                   "kind='image' (pixels) or kind='numeric' (tables, sequences).")


def train_student(student: nn.Module, train: tuple, test: tuple, *,
                  optimizer: optax.GradientTransformation, epochs: float, batch_size: int,
                  workdir: str | pathlib.Path,
                  teachers: Sequence[tuple[nn.Module, Any]] = (), terms: dict | None = None,
                  num_classes: int | None = None, kind: str | None = None, seed: int = 0,
                  config: dict | None = None) -> Result:
  """Trains `student` on train = (inputs, labels), evaluates on test = (inputs, labels).

  teachers: (module, variables) pairs, frozen and run online in the train step. terms: the
  objective as in config.distill.terms (default: ce alone). kind: 'image' (uint8 pixels, or
  floats on [0, 1]), 'numeric' or 'tokens'; guessed from the arrays by default. Labels -1
  mark unlabeled examples (only teacher terms see them). config: any other config fields,
  nested (e.g. {'transfer': {'drop_classes': (3,)}, 'dataset': {'validation_size': 100}}).
  """
  from flax import traverse_util

  from jaxkd.config import base_config
  from jaxkd.data import ArrayDataset
  from jaxkd.engine.sharding import make_mesh
  from jaxkd.run.assemble import Parts
  from jaxkd.run.saved import read_variables
  from jaxkd.run.train import train_and_evaluate

  (x_train, y_train), (x_test, y_test) = ((np.asarray(x), np.asarray(y)) for x, y in (train, test))
  kind = kind or _kind(x_train)
  classes = num_classes or int(max(y_train.max(), y_test.max())) + 1
  datasets = tuple(ArrayDataset(x, y, classes, name="arrays", split=split, kind=kind)
                   for (x, y), split in (((x_train, y_train), "train"), ((x_test, y_test), "test")))
  settings = base_config()
  settings.dataset.name = "npz"  # The user's arrays: mean/std 0.5 for images unless given.
  settings.dataset.input_kind = kind
  settings.seed = seed
  settings.train.update(epochs=float(epochs), batch_size=batch_size,
                        eval_batch_size=min(1000, batch_size * 8))
  if terms is not None:
    settings.distill.terms = ml_collections.ConfigDict(terms)
  settings.update_from_flattened_dict(traverse_util.flatten_dict(config or {}, sep="."))
  parts = Parts(model=student, teachers=tuple(teachers), tx=optimizer)
  metrics = train_and_evaluate(settings, workdir, datasets=datasets, parts=parts)
  _, variables = read_variables(workdir, make_mesh())
  return Result(variables, metrics, pathlib.Path(workdir))

