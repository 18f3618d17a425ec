"""From a config to a run ready to train: data, objective, teachers, connectors, optimizer,
state and the step's spec. One hop per layer: config.<section> -> its builder -> StepSpec."""

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from jaxkd.data import (ArrayDataset, Preprocess, load_split, preprocessing, split_validation,
                        training_splits)
from jaxkd.distill import Objective, build_objective
from jaxkd.errors import JaxkdError
from jaxkd.evaluation import make_eval_step
from jaxkd.features import feature_shapes
from jaxkd.models import create_model
from jaxkd.optim import freeze_labels, make_optimizer, make_schedule
from jaxkd.sharding import check_batch_size, make_mesh
from jaxkd.stages import take_over
from jaxkd.state import TrainState, init_train_state, stream
from jaxkd.step import Precision, StepSpec
from jaxkd.teachers import prepare_teachers


@dataclasses.dataclass
class Run:
  """One run (or stage), assembled: what the loop (jaxkd.loop.fit) trains and evaluates."""

  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  mesh: Mesh
  train_data: Any
  validation_data: Any
  test_data: Any
  batches: Any  # data.train_batches(...): addressable by step
  total_steps: int
  spec: StepSpec
  state: TrainState
  teacher_variables: list
  eval_step: Any
  teacher_source: str  # what the objective's teacher terms read, for the log

  @property
  def steps_per_epoch(self) -> int:
    return self.batches.steps_per_epoch


def load_data(config: ml_collections.ConfigDict, datasets: tuple | None):
  """(train, validation or None, test): config.dataset's splits, or the user's (train, test)
  arrays with a validation split held out as from a named dataset."""
  if datasets is None:
    (train_data, validation_data), test_data = (training_splits(config.dataset),
                                                load_split(config.dataset, "test"))
  else:
    (train_data, test_data), validation_data = datasets, None
    if config.dataset.get("validation_size", 0):
      train_data, validation_data = split_validation(train_data, config.dataset.validation_size,
                                                     config.dataset.get("validation_seed", 0))
  if train_data.num_classes != test_data.num_classes:
    raise JaxkdError(f"train and test splits have {train_data.num_classes} and "
                     f"{test_data.num_classes} classes; they must agree. For an .npz file (whose "
                     "classes are counted from each split's labels), set dataset.num_classes.")
  return train_data, validation_data, test_data


def connect_features(objective: Objective, model, teachers, teacher_variables,
                     input_shape: tuple, seed: int, train_data) -> tuple[Objective, dict, dict]:
  """Checks the feature paths, builds the connectors, initialises their params and state
  from the run's stream 'connectors'."""
  if not objective.student_paths:
    return objective, {}, {}
  inputs = jnp.zeros((1, *input_shape), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), inputs))
  student_shapes = feature_shapes(model, variables, input_shape, objective.student_paths)
  teacher_shapes = feature_shapes(teachers[0], teacher_variables[0], input_shape,
                                  objective.teacher_paths)
  objective = objective.with_shapes(student_shapes, teacher_shapes, len(train_data),
                                    getattr(train_data, "labels", None))
  key = stream(jax.random.PRNGKey(seed), "connectors")
  return objective, *objective.init_aux(key, student_shapes, teacher_shapes)


def assemble(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
             datasets: tuple[ArrayDataset, ArrayDataset] | None = None, mesh: Mesh | None = None,
             carry: dict | None = None) -> Run:
  """The run of `config` (validated by the caller), starting from a previous stage's `carry`."""
  pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
  mesh = mesh or make_mesh()
  train_data, validation_data, test_data = load_data(config, datasets)
  check_batch_size(config.train.batch_size, mesh)
  check_batch_size(config.train.eval_batch_size, mesh, "train.eval_batch_size")
  batches = train_data.train_batches(config.train.batch_size, config.seed, jax.process_index(),
                                     jax.process_count())
  steps_per_epoch = batches.steps_per_epoch
  total_steps = config.train.num_steps or int(round(config.train.epochs * steps_per_epoch))
  preprocess_fields = preprocessing(config.dataset, train_data.image_shape[-1])
  objective = build_objective(config.distill, steps_per_epoch, total_steps)
  precision = Precision.from_config(config.get("precision"))
  teachers, teacher_variables, cached_logits = prepare_teachers(
      config.distill, objective, train_data, preprocess_fields, mesh, precision.teacher)
  if cached_logits is not None:
    batches.add_extra("teacher_logits", cached_logits)
  model = create_model(config.model, train_data.num_classes)
  objective, aux_params, aux_state = connect_features(
      objective, model, teachers, teacher_variables, train_data.image_shape, config.seed,
      train_data)
  schedule = make_schedule(config.schedule, config.optimizer.learning_rate, steps_per_epoch,
                           total_steps)
  tx = make_optimizer(config.optimizer, schedule, freeze=config.train.freeze,
                      steps_per_epoch=steps_per_epoch)
  state = init_train_state(model, tx, train_data.image_shape, config.seed, mesh, aux_params,
                           aux_state)
  frozen = None
  if config.train.freeze:  # Frozen leaves, as the optimizer labels them.
    frozen = jax.tree.map(lambda label: label == "frozen",
                          freeze_labels(tuple(config.train.freeze))(state.trainable()))
  if carry is not None:
    state = take_over(state, carry)
  preprocess = Preprocess(**preprocess_fields)
  spec = StepSpec(model, tx, objective, preprocess, train_data.num_classes, tuple(teachers),
                  schedule, steps_per_epoch, config.dataset.mixup_alpha, precision, frozen,
                  keep_model_state="params" in config.train.freeze,
                  student_eval_mode=config.train.student_eval_mode)
  source = ("cached soft labels" if cached_logits is not None else
            f"{len(teachers)} online teacher(s)" if teachers else "no teacher")
  return Run(config, pathlib.Path(workdir), mesh, train_data, validation_data, test_data, batches,
             total_steps, spec, state, teacher_variables, make_eval_step(model, preprocess, mesh),
             source)
