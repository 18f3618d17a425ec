"""From a config to a run ready to train: data, objective, teachers, connectors, optimizer,
state and the step's spec. One hop per layer: config.<section> -> its builder -> StepSpec."""

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from jaxkd.config import base_config, complete
from jaxkd.data import ArrayDataset, Preprocess, load_split, preprocessing, training_splits
from jaxkd.data.arrays import input_dtype
from jaxkd.data.catalog import load_source_split
from jaxkd.data.transfer import build_transfer_set, check_objective
from jaxkd.distill import Objective, build_objective
from jaxkd.engine import chunked
from jaxkd.engine.evaluation import make_eval_step
from jaxkd.engine.features import feature_shapes
from jaxkd.engine.on_policy import OnPolicy
from jaxkd.engine.optim import freeze_labels, make_optimizer, make_schedule, with_freeze
from jaxkd.engine.sharding import check_batch_size, make_mesh, place, replicated
from jaxkd.engine.state import TrainState, init_train_state, stream
from jaxkd.engine.step import MEAN_TEACHER, Precision, StepSpec
from jaxkd.errors import JaxkdError
from jaxkd.log import say
from jaxkd.models import create_model, lm_head
from jaxkd.run import cross_tokenizer
from jaxkd.run.stages import take_over
from jaxkd.run.teachers import prepare_teachers
from jaxkd.run.warm_start import warm_start


@dataclasses.dataclass
class Run:
  """One run (or stage), assembled: what the loop (jaxkd.run.loop.fit) trains and evaluates."""

  config: ml_collections.ConfigDict
  workdir: pathlib.Path | None
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
  sources: dict = dataclasses.field(default_factory=dict)  # teacher pins (run_info.json)

  @property
  def steps_per_epoch(self) -> int:
    return self.batches.steps_per_epoch


@dataclasses.dataclass(frozen=True)
class Parts:
  """What a Python caller gives as objects instead of names in the config (jaxkd.run.api,
  jaxkd.jobs.bench): the student module, teachers as (module, variables) pairs run online,
  or their cached logits [N, K, C] for the training examples (as a soft-label cache holds
  them), an optax optimizer (train.freeze still applies to it)."""

  model: Any = None
  teachers: tuple = ()
  tx: Any = None
  cached_logits: Any = None

  @property
  def given(self) -> tuple[str, ...]:
    """The config sections these objects stand for (jaxkd.config.validate's `given`)."""
    teachers = bool(self.teachers) or self.cached_logits is not None
    return tuple(name for name, given in (("model", self.model is not None),
                                          ("teachers", teachers),
                                          ("optimizer", self.tx is not None)) if given)


def load_data(config: ml_collections.ConfigDict, datasets: tuple | None):
  """(transfer set, validation or None, test): config.dataset's splits, or the user's
  (train, test) arrays, with the validation split held out of the training split in the
  one way (data.training_splits) and the rest shaped by config.transfer (data.transfer)."""
  train, test = datasets if datasets is not None else (None, load_split(config.dataset, "test"))
  train, validation = training_splits(config.dataset, train)
  train = build_transfer_set(train, config.transfer, load_extra)
  if train.num_classes != test.num_classes:
    raise JaxkdError(f"train and test splits have {train.num_classes} and "
                     f"{test.num_classes} classes; they must agree. For an .npz file (whose "
                     "classes are counted from each split's labels), set dataset.num_classes.")
  return train, validation, test


def transfer_set_of(config: ml_collections.ConfigDict):
  """The transfer set a config trains on: config.dataset's training split (less the
  validation examples) shaped by config.transfer."""
  train, _ = training_splits(config.dataset)
  return build_transfer_set(train, config.transfer, load_extra)


def load_extra(extra: ml_collections.ConfigDict):
  """Split transfer.extra.split of transfer.extra's dataset (its labels are not used)."""
  dataset = base_config().dataset
  dataset.update({k: v for k, v in extra.items() if k not in ("split", "num_classes")})
  dataset.num_classes = extra.num_classes or None  # 0: counted from the labels.
  return load_source_split(dataset, extra.split or "train")


def connect_features(objective: Objective, model, teachers, teacher_variables,
                     input_shape: tuple, seed: int, train_data) -> tuple[Objective, dict, dict]:
  """Checks the feature paths, builds the connectors, initialises their params and state
  from the run's stream 'connectors'."""
  if not objective.student_paths:
    return objective, {}, {}
  dtype = input_dtype(train_data.kind)
  inputs = jnp.zeros((1, *input_shape), dtype)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), inputs))
  student_shapes = feature_shapes(model, variables, input_shape, objective.student_paths, dtype)
  teacher_shapes = feature_shapes(teachers[0], teacher_variables[0], input_shape,
                                  objective.teacher_paths, dtype)
  objective = objective.with_shapes(student_shapes, teacher_shapes, len(train_data),
                                    getattr(train_data, "labels", None))
  key = stream(jax.random.PRNGKey(seed), "connectors")
  return objective, *objective.init_aux(key, student_shapes, teacher_shapes)


def _check_classes(model, variables: dict, data, what: str = "the model") -> None:
  """The model's logits have one entry per class of the data (a user's own module may not)."""
  inputs = jnp.zeros((1, *data.input_shape), input_dtype(data.kind))
  try:
    logits = jax.eval_shape(lambda v: model.apply(v, inputs, train=False), variables)
  except Exception as e:  # A module that cannot run on these inputs with these variables.
    raise JaxkdError(f"{what} ({type(model).__name__}) cannot run on this data's inputs "
                     f"{tuple(data.input_shape)} with its variables ({type(e).__name__}: "
                     f"{str(e).splitlines()[0][:200]}).") from None
  outputs = getattr(logits, "shape", (None,))[-1]
  padded = data.kind == "tokens" and outputs is not None and outputs > data.num_classes
  if outputs != data.num_classes and not padded:
    raise JaxkdError(f"{what}'s output has shape {getattr(logits, 'shape', None)} for one "
                     f"example, but the data has {data.num_classes} classes: give it "
                     f"{data.num_classes} outputs (logits).")
  if padded:
    say(f"{what} has {outputs} output ids, the tokenizer {data.num_classes}: compared on "
        f"the tokenizer's ids (the rest is its vocabulary's padding).")


def _loss_chunk(config, objective, model, teachers, data) -> int:
  """config.train.loss_chunk, refused where a chunked loss would not be the dense one."""
  chunk = config.train.loss_chunk
  if chunk:
    if data.kind != "tokens":
      raise JaxkdError(f"train.loss_chunk={chunk} chunks a language model's positions; this "
                       f"data's inputs are '{data.kind}'. Set train.loss_chunk=0.")
    for module in (model, *teachers):
      lm_head.check(module)
    chunked.check(objective, chunk, data.input_shape[0])
  return chunk


def assemble(config: ml_collections.ConfigDict, workdir: str | pathlib.Path | None,
             datasets: tuple[ArrayDataset, ArrayDataset] | None = None, mesh: Mesh | None = None,
             carry: dict | None = None, parts: Parts | None = None) -> Run:
  """The run of `config` (validated by the caller) in `workdir` (None: a run that is only
  stepped, never saved, e.g. a benchmark's), starting from a previous stage's `carry`;
  `parts` replaces the config's model, teachers or optimizer with objects. Nothing is
  written: the loop creates the workdir and its files."""
  parts, config = parts or Parts(), complete(config)  # Every schema field present.
  mesh = mesh or make_mesh()
  train_data, validation_data, test_data = load_data(config, datasets)
  check_batch_size(config.train.batch_size, mesh)
  check_batch_size(config.train.eval_batch_size, mesh, "train.eval_batch_size")
  batches = train_data.train_batches(config.train.batch_size, config.seed, jax.process_index(),
                                     jax.process_count())
  steps_per_epoch = batches.steps_per_epoch
  total_steps = config.train.num_steps or int(round(config.train.epochs * steps_per_epoch))
  preprocess_fields = preprocessing(config.dataset, train_data.input_shape[-1])
  objective = build_objective(config.distill, steps_per_epoch, total_steps)
  check_objective(objective, train_data, config)
  if any(t.method.class_pairs for t in objective.terms):
    if not hasattr(batches, "pair_by_class"):
      raise JaxkdError(f"cs_kd pairs each example with one of its class; {train_data.name} is "
                       "streamed, and pairs are drawn from data in memory only.")
    batches.pair_by_class()  # each example followed by a partner of its class (CS-KD)
  if objective.cross_tokenizer:
    cross_tokenizer.check(config, objective, train_data)
  precision = Precision.from_config(config.precision)
  if parts.teachers or parts.cached_logits is not None:
    teachers = tuple(module for module, _ in parts.teachers)
    teacher_variables = [place(variables, replicated(mesh)) for _, variables in parts.teachers]
    cached_logits, sources = parts.cached_logits, {}
    for teacher, variables in zip(teachers, teacher_variables):
      _check_classes(teacher, variables, train_data, "a teacher given as an object")
  elif config.distill.cohort > 1 or config.distill.mean_teacher_decay:
    # The members teach each other (jaxkd.run.cohort), or the student's moving average does.
    teachers, teacher_variables, cached_logits, sources = (), [], None, {}
  else:
    teachers, teacher_variables, cached_logits, sources = prepare_teachers(
        config.distill, objective, train_data, preprocess_fields, mesh, precision.teacher)
  cross = None
  if objective.cross_tokenizer:  # A teacher with its own tokenizer: the same text in its tokens.
    cross, extras = cross_tokenizer.prepare(config, train_data, teachers[0] if teachers else None)
    for name, values in extras.items():
      batches.add_extra(name, values)
  if isinstance(cached_logits, dict):  # A language model's top-k per token.
    for name, values in cached_logits.items():
      batches.add_extra(name, values)
  elif cached_logits is not None:
    batches.add_extra("teacher_logits", cached_logits)
  model = parts.model or create_model(config.model, train_data.num_classes)
  if config.distill.mean_teacher_decay:  # the student's architecture, its averaged parameters
    teachers = (model,)
  objective, aux_params, aux_state = connect_features(
      objective, model, teachers, teacher_variables, train_data.input_shape, config.seed,
      train_data)
  if parts.tx is not None:
    schedule, tx = None, with_freeze(parts.tx, tuple(config.train.freeze))
  else:
    schedule = make_schedule(config.schedule, config.optimizer.learning_rate, steps_per_epoch,
                             total_steps)
    tx = make_optimizer(config.optimizer, schedule, freeze=config.train.freeze,
                        steps_per_epoch=steps_per_epoch)
  state = init_train_state(model, tx, train_data.input_shape, config.seed, mesh, aux_params,
                           aux_state, input_dtype(train_data.kind))
  _check_classes(model, state.variables(), train_data)
  frozen = None
  if config.train.freeze:  # Frozen leaves, as the optimizer labels them.
    frozen = jax.tree.map(lambda label: label == "frozen",
                          freeze_labels(tuple(config.train.freeze))(state.trainable()))
  if config.model.init_from:
    state, _ = warm_start(state, config.model.init_from, mesh, say=say)
  if carry is not None:
    state = take_over(state, carry)
  if config.distill.mean_teacher_decay and MEAN_TEACHER not in state.aux_state:
    # Its own buffers (a copy): the step donates the state, and one buffer donated twice
    # (the student's and the teacher's) would not do.
    average = jax.tree.map(lambda x: x.copy(), state.params)
    state = state.replace(aux_state={**state.aux_state, MEAN_TEACHER: {"params": average}})
  preprocess = Preprocess(**preprocess_fields)
  spec = StepSpec(model, tx, objective, preprocess, train_data.num_classes, tuple(teachers),
                  schedule, steps_per_epoch, config.dataset.mixup_alpha, precision, frozen,
                  keep_model_state="params" in config.train.freeze,
                  student_eval_mode=config.train.student_eval_mode,
                  # A teacher with its own tokenizer: on-policy batches are made between
                  # steps (run.cross_tokenizer.on_policy_step), not inside the step.
                  on_policy=None if cross is not None else OnPolicy.from_config(
                      config.distill.on_policy, train_data.kind),
                  loss_chunk=_loss_chunk(config, objective, model, teachers, train_data),
                  cross_tokenizer=cross,
                  mean_teacher_decay=config.distill.mean_teacher_decay)
  source = ("the other members of its cohort" if config.distill.cohort > 1 else
            "its own moving average (mean teacher)" if config.distill.mean_teacher_decay else
            "cached soft labels" if cached_logits is not None or (
                cross is not None and not teachers) else
            f"{len(teachers)} online teacher(s)" if teachers else "no teacher")
  return Run(config, None if workdir is None else pathlib.Path(workdir), mesh, train_data,
             validation_data, test_data, batches,
             total_steps, spec, state, teacher_variables,
             make_eval_step(model, preprocess, mesh, train_data.kind, train_data.num_classes,
                            getattr(train_data, "token_bytes", None)), source, sources)
