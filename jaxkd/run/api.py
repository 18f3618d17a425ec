"""A Python API: distil into your own Flax module from arrays, without a config file or a
registered name. Runs on the same train step, checkpoints and logs as the command line.

  result = jaxkd.train_student(Student(), (x_train, y_train), (x_test, y_test),
                               teachers=[(Teacher(), teacher_variables)],
                               terms={"ce": {"weight": 0.5}, "kd": {"weight": 0.5}},
                               optimizer=optax.adam(1e-3), epochs=10, batch_size=64,
                               workdir="runs/mine")
  result.variables, result.metrics

The student (and each teacher) is any flax.linen module called as module(x, train=bool)
and returning logits; running it again with the same workdir resumes or reuses it. What the
model sees: image inputs (uint8 pixels, or floats on [0, 1]) are scaled to [0, 1] and
normalised, (x - mean) / std with config={'dataset': {'mean': ..., 'std': ...}} (default 0.5
and 0.5: [-1, 1]); numeric and token inputs reach it as they are. result.predict(inputs)
applies the same, so give it raw inputs like the training arrays; jaxkd.export(result, out)
writes the student as any run's export.
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
  """The trained student: its module and variables ({'params': ..., other collections}),
  its metrics (the run's summary: test accuracy, errors, loss, step ...), its workdir, and
  the preprocessing of its inputs (predict applies it)."""

  variables: dict
  metrics: dict
  workdir: pathlib.Path
  model: Any = None
  preprocess: Any = None  # jaxkd.data.Preprocess: mean and std of image inputs
  kind: str = "image"

  def predict(self, inputs) -> np.ndarray:
    """Logits of the student on raw `inputs` (as given to training: uint8 pixels or floats on
    [0, 1] for images), preprocessed as training preprocessed them, in inference mode."""
    import jax

    from jaxkd.engine.evaluation import inference

    if not hasattr(self, "_predict"):
      self._predict = jax.jit(inference(self.model, self.preprocess, self.kind))
    return np.asarray(self._predict(self.variables, np.asarray(inputs)))


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
  from jaxkd.config.paths import override
  from jaxkd.data import ArrayDataset, Preprocess, preprocessing
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
  settings.lock()
  for path, value in traverse_util.flatten_dict(dict(config or {}), sep=".").items():
    override(settings, path, value, f"config={{{path!r}: ...}}")  # A typo: an error, as on the CLI.
  parts = Parts(model=student, teachers=_checked(teachers), tx=optimizer)
  metrics = train_and_evaluate(settings, workdir, datasets=datasets, parts=parts)
  _, variables = read_variables(workdir, make_mesh())
  return Result(variables, metrics, pathlib.Path(workdir), student,
                Preprocess(**preprocessing(settings.dataset, datasets[0].input_shape[-1])), kind)


def _checked(teachers) -> tuple:
  """(module, variables) pairs, each variables a dict of collections with 'params'."""
  pairs = []
  for i, pair in enumerate(teachers):
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
      raise JaxkdError(f"teachers[{i}] must be a (module, variables) pair, not "
                       f"{type(pair).__name__}.")
    module, variables = pair
    if isinstance(variables, Result):
      raise JaxkdError(f"teachers[{i}] gives a Result where its variables belong: pass "
                       "(module, result.variables).")
    if not isinstance(module, nn.Module) or not (hasattr(variables, "keys") and
                                                 "params" in variables):
      raise JaxkdError(f"teachers[{i}] must be (a flax.linen Module, its variables: a dict with "
                       f"'params'), not ({type(module).__name__}, {type(variables).__name__}).")
    pairs.append((module, variables))
  return tuple(pairs)

