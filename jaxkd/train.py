"""Train state, the jitted train step, and the training loop (evaluation: jaxkd/evaluation.py).

The steps are pure functions of (state, batch) compiled once with jax.jit over
a device mesh: the batch is split on the 'data' axis, the state replicated.
"""

import json
import pathlib
import platform
import sys
import time
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from jax.sharding import Mesh

from jaxkd import config_base
from jaxkd.checkpoint import Checkpointer
from jaxkd.data import (ArrayDataset, Preprocess, load_split, make_train_batches, prefetch,
                        preprocessing, split_validation, training_splits)
from jaxkd.data.augment import mixup
from jaxkd.distill import Objective, TermInputs, build_objective
from jaxkd.errors import JaxkdError
from jaxkd.evaluation import evaluate, make_eval_step, select_on_validation
from jaxkd.features import apply_with_features, feature_shapes
from jaxkd.interrupt import stop_on_signals
from jaxkd.metric_writer import MetricWriter, read_metrics
from jaxkd.models import create_model
from jaxkd.optim import freeze_labels, make_optimizer, make_schedule
from jaxkd.precision import cast_floating, to_float32
from jaxkd.sharding import batch_sharding, check_batch_size, make_mesh, replicated, shard_batch
from jaxkd.stages import take_over
from jaxkd.teachers import prepare_teachers

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as one pytree (what is checkpointed).

  model_state holds the model's non-parameter collections (e.g. batch_stats).
  rng is the run's base key; step s uses fold_in(rng, s). aux_params are the
  objective's learnable parts (connectors), optimised with the student and
  left out of everything that reads the student (teachers, reports, export).
  """

  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rng: jax.Array
  aux_params: Any = flax.struct.field(default_factory=dict)  # connectors, never exported
  aux_state: Any = flax.struct.field(default_factory=dict)  # their running state (memory banks)

  def trainable(self) -> dict:
    return {"params": self.params, "aux": self.aux_params}

  def variables(self) -> dict:
    return {"params": self.params, **self.model_state}


def init_train_state(model: nn.Module, tx: optax.GradientTransformation,
                     image_shape: tuple[int, ...], seed: int, mesh: Mesh,
                     aux_params: dict | None = None, aux_state: dict | None = None) -> TrainState:
  def init(aux_params, aux_state):
    init_key, dropout_key, state_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    variables = dict(model.init({"params": init_key, "dropout": dropout_key},
                                jnp.zeros((1, *image_shape), jnp.float32), train=False))
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                      opt_state=tx.init({"params": params, "aux": aux_params}), rng=state_key,
                      aux_params=aux_params, aux_state=aux_state)

  return jax.jit(init, out_shardings=replicated(mesh))(aux_params or {}, aux_state or {})


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, preprocess: Preprocess,
                    mesh: Mesh, objective: Objective, num_classes: int,
                    schedule: optax.Schedule | None = None,
                    teachers: Sequence[nn.Module] = (), steps_per_epoch: int = 1,
                    mixup_alpha: float = 0.0, frozen_student: bool = False,
                    student_dtype: Any = jnp.float32, teacher_dtype: Any = jnp.float32,
                    teacher_shardings: Any = None, frozen: Any = None,
                    student_eval_mode: bool = False) -> Callable:
  """Returns step(state, teacher_variables, batch) -> (state, metrics), jitted over `mesh`.

  Teachers are frozen inputs: run in inference mode on the student's augmented
  view under stop_gradient, never differentiated or donated. A batch that
  carries `teacher_logits` (cached soft labels, [B, K, C]) runs no teacher. A
  frozen student (train.freeze has 'params') keeps its batch statistics too, and
  so does one in `student_eval_mode` (run with train=False while it trains).
  `frozen` (a pytree of bools like state.trainable(), True where train.freeze holds)
  leaves those gradients out of the logged grad_norm: only what trains is measured.

  student_dtype / teacher_dtype (config.precision) is the compute dtype: the
  student's params (float32 in the state, so gradients and the optimizer stay
  float32) and the images are cast to it for the forward pass, batch statistics
  stay float32; the teacher's floating variables are cast likewise; logits and
  features come back as float32 for the objective. teacher_shardings (a pytree
  matching teacher_variables, e.g. sharding.split_largest_axis) lays the teachers
  out over the mesh; None replicates them.
  """
  student_dtype, teacher_dtype = jnp.dtype(student_dtype), jnp.dtype(teacher_dtype)

  def step(state: TrainState, teacher_variables: Sequence[dict], batch: Batch):
    augment_key, dropout_key, mixup_key, objective_key = jax.random.split(
        jax.random.fold_in(state.rng, state.step), 4)
    images = preprocess(batch["image"], augment_key)
    targets = jax.nn.one_hot(batch["label"], num_classes)
    if mixup_alpha > 0:
      images, targets = mixup(mixup_key, images, targets, mixup_alpha)
    teacher_features = {}
    if "teacher_logits" in batch:
      teacher_logits = jnp.swapaxes(batch["teacher_logits"].astype(jnp.float32), 0, 1)
    elif objective.needs_teacher:
      outputs = [to_float32(apply_with_features(teacher, _cast(variables, teacher_dtype),
                                                 images.astype(teacher_dtype),
                                                 objective.teacher_paths))
                 for teacher, variables in zip(teachers, teacher_variables)]
      teacher_logits = jax.lax.stop_gradient(jnp.stack([logits for logits, _, _ in outputs]))
      teacher_features = jax.lax.stop_gradient(
          {path: jnp.stack([features[path] for _, features, _ in outputs])
           for path in objective.teacher_paths})
    else:
      teacher_logits = None

    def loss_fn(trainable):
      variables = {"params": _cast(trainable["params"], student_dtype), **state.model_state}
      logits, features, new_model_state = to_float32(apply_with_features(
          model, variables, images.astype(student_dtype), objective.student_paths,
          train=not student_eval_mode, rngs={"dropout": dropout_key},
          mutable=[] if student_eval_mode else list(state.model_state)))
      inputs = TermInputs(logits, teacher_logits, batch["label"], targets, state.step,
                          steps_per_epoch, features, teacher_features, batch["index"],
                          objective_key)
      loss, term_metrics, aux_state = objective(inputs, trainable["aux"], state.aux_state)
      return loss, (logits, new_model_state, term_metrics, aux_state)

    trainable = state.trainable()
    (loss, (logits, model_state, term_metrics, aux_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(trainable)
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    new_state = state.replace(step=state.step + 1, params=trainable["params"],
                              aux_params=trainable["aux"], aux_state=aux_state,
                              model_state=(state.model_state if frozen_student or student_eval_mode
                                           else dict(model_state)),
                              opt_state=opt_state)
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
               "grad_norm": optax.tree.norm(grads if frozen is None else jax.tree.map(
                   lambda g, is_frozen: jnp.zeros_like(g) if is_frozen else g, grads, frozen)),
               **term_metrics}
    if schedule is not None:
      metrics["learning_rate"] = schedule(state.step)
    return new_state, metrics

  teacher_shardings = replicated(mesh) if teacher_shardings is None else teacher_shardings
  return jax.jit(step, in_shardings=(replicated(mesh), teacher_shardings, batch_sharding(mesh)),
                 out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=0)


def _cast(tree: Any, dtype: jnp.dtype) -> Any:
  """The floating arrays of `tree` in `dtype` (float32: unchanged, no copy traced)."""
  return tree if dtype == jnp.float32 else cast_floating(tree, dtype)


def _write_run_files(workdir: pathlib.Path, config: ml_collections.ConfigDict, mesh: Mesh,
                     data: ArrayDataset) -> None:
  if jax.process_index() != 0:
    return
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
  import orbax.checkpoint as ocp

  info = {"argv": sys.argv, "python": platform.python_version(),
          "versions": {"jax": jax.__version__, "jaxlib": jax.lib.__version__,
                       "flax": flax.__version__, "optax": optax.__version__,
                       "orbax-checkpoint": getattr(ocp, "__version__", "unknown"),
                       "numpy": np.__version__},
          "devices": [str(d) for d in mesh.devices.flat], "process_count": jax.process_count(),
          "num_classes": data.num_classes, "image_shape": list(data.image_shape)}
  (workdir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")


def _connect_features(objective: Objective, model: nn.Module, teachers, teacher_variables,
                      image_shape: tuple, seed: int, train_data
                      ) -> tuple[Objective, dict, dict]:
  """Checks the feature paths, builds the connectors, initialises their params and state."""
  if not objective.student_paths:
    return objective, {}, {}
  images = jnp.zeros((1, *image_shape), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images))
  student_shapes = feature_shapes(model, variables, image_shape, objective.student_paths)
  teacher_shapes = feature_shapes(teachers[0], teacher_variables[0], image_shape,
                                  objective.teacher_paths)
  objective = objective.with_shapes(student_shapes, teacher_shapes, len(train_data),
                                    getattr(train_data, "labels", None))
  return objective, *objective.init_aux(jax.random.PRNGKey(seed + 1), student_shapes,
                                        teacher_shapes)


def say(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                       datasets: tuple[ArrayDataset, ArrayDataset] | None = None,
                       mesh: Mesh | None = None) -> dict:
  """Trains config.model on config.dataset in `workdir`, resuming from its checkpoint.

  `datasets` = (train, test) arrays replaces config.dataset's loader (a user's
  own in-memory data). With config.stages, each stage first trains in
  workdir/stages/<name> (its own objective, optimizer, length and frozen parts),
  handing the student and the connectors to the next; the main run comes last.
  Returns the final test metrics and the step reached.
  """
  config_base.validate(config)
  carry = None
  for stage in config_base.stage_configs(config):
    say(f"stage '{stage.stage_name}' in {pathlib.Path(workdir) / 'stages' / stage.stage_name}")
    result, carry = _train(stage, pathlib.Path(workdir) / "stages" / stage.stage_name, datasets,
                           mesh, carry)
    if result["interrupted"]:
      return result
  return _train(config, workdir, datasets, mesh, carry)[0]


def _check_finite(pending: list[dict], first_step: int, checkpointer: Checkpointer) -> None:
  """Stops the run (JaxkdError) at the first step whose loss or gradient norm is not finite.

  pending: the metrics of steps first_step, first_step + 1, ... The state after such a step
  holds its update, so it is checked before every save: no saved state has a bad update.
  """
  values = jax.device_get([(m["loss"], m["grad_norm"]) for m in pending])
  for offset, (loss, grad_norm) in enumerate(values):
    for what, value in (("loss", loss), ("gradient norm", grad_norm)):
      if np.isfinite(value):
        continue
      checkpointer.manager.wait_until_finished()  # Saves under way (all of good states).
      kept = checkpointer.latest_step()
      checkpointer.close()
      where = (f"the last good checkpoint (step {kept}) is kept in {checkpointer.directory}"
               if kept is not None else "no checkpoint had been saved yet")
      raise JaxkdError(
          f"the training {what} became {float(value)} at step {first_step + offset}; training "
          f"stopped without saving that state: {where}. Lower optimizer.learning_rate or set "
          "optimizer.grad_clip_norm (e.g. 1.0), or check the data for bad values; then run again "
          "with the same workdir to resume from that checkpoint.")


def _train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
           datasets: tuple[ArrayDataset, ArrayDataset] | None, mesh: Mesh | None,
           carry: dict | None) -> tuple[dict, dict]:
  """One run (or stage) of training; returns (result, what the next stage starts from).
  `config` is validated by the caller (train_and_evaluate; stage_configs for stages)."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = mesh or make_mesh()
  if datasets is None:
    (train_data, validation_data), test_data = (training_splits(config.dataset),
                                                load_split(config.dataset, "test"))
  else:  # The user's arrays: a validation split is held out as from a named dataset.
    (train_data, test_data), validation_data = datasets, None
    if config.dataset.get("validation_size", 0):
      train_data, validation_data = split_validation(train_data, config.dataset.validation_size,
                                                     config.dataset.get("validation_seed", 0))
  if train_data.num_classes != test_data.num_classes:
    raise JaxkdError(f"train and test splits have {train_data.num_classes} and "
                     f"{test_data.num_classes} classes; they must agree. For an .npz file (whose "
                     "classes are counted from each split's labels), set dataset.num_classes.")
  check_batch_size(config.train.batch_size, mesh)
  check_batch_size(config.train.eval_batch_size, mesh, "train.eval_batch_size")

  batches = make_train_batches(train_data, config.train.batch_size, config.seed,
                               jax.process_index(), jax.process_count())
  steps_per_epoch = batches.steps_per_epoch
  total_steps = config.train.num_steps or int(round(config.train.epochs * steps_per_epoch))
  preprocess_fields = preprocessing(config.dataset, train_data.image_shape[-1])
  preprocess = Preprocess(**preprocess_fields)
  objective = build_objective(config.distill, steps_per_epoch, total_steps)
  precision = config.get("precision") or {}
  teachers, teacher_variables, cached_logits = prepare_teachers(
      config.distill, objective, train_data, preprocess_fields, mesh,
      precision.get("teacher", "float32"))
  if cached_logits is not None:
    batches.add_extra("teacher_logits", cached_logits)
  model = create_model(config.model, train_data.num_classes)
  objective, aux_params, aux_state = _connect_features(
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

  checkpointer = Checkpointer(workdir, config.train.checkpoint_every_steps or steps_per_epoch,
                              config.train.keep_checkpoints)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    say(f"resuming from the checkpoint at step {int(state.step)} in {checkpointer.directory}")
  start_step = int(state.step)
  _write_run_files(workdir, config, mesh, train_data)
  writer = MetricWriter(workdir, resume_step=start_step)
  writer.write_hparams(config)
  train_step = make_train_step(model, tx, preprocess, mesh, objective, train_data.num_classes,
                               schedule, teachers, steps_per_epoch, config.dataset.mixup_alpha,
                               frozen_student="params" in config.train.freeze,
                               frozen=frozen, student_eval_mode=config.train.student_eval_mode,
                               student_dtype=precision.get("student", "float32"),
                               teacher_dtype=precision.get("teacher", "float32"),
                               teacher_shardings=jax.tree.map(lambda x: x.sharding,
                                                              teacher_variables))
  eval_step = make_eval_step(model, preprocess, mesh)
  eval_every = config.train.eval_every_steps or steps_per_epoch
  log_every = config.train.log_every_steps
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  terms = ", ".join(f"{t.label}" for t in objective.terms)
  source = ("cached soft labels" if cached_logits is not None else
            f"{len(teachers)} online teacher(s)" if teachers else "no teacher")
  say(f"objective [{terms}] with {source}")
  say(f"{config.model.name} ({num_params:,} params) on {config.dataset.name}: "
      f"{len(train_data)} train / {len(test_data)} test examples, {mesh.devices.size} device(s), "
      f"steps {start_step}->{total_steps} ({steps_per_epoch} per epoch)")

  pending, last_time, last_step, stopped_by = [], time.perf_counter(), start_step, None
  last_eval = (None, None)
  progress = tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                       disable=jax.process_index() != 0, mininterval=1.0 if sys.stderr.isatty() else 30)
  # The thread only gathers host arrays: device transfers stay on the main thread, since
  # transfers racing collectives from another thread can deadlock the CPU backend.
  host_batches = prefetch(batches.iterate(start_step, total_steps))
  with stop_on_signals(jax.process_count()) as stop:
    for step, batch in zip(range(start_step + 1, total_steps + 1), host_batches):
      state, metrics = train_step(state, teacher_variables, shard_batch(batch, mesh))
      if pending:
        # At most two steps in flight: one queued ahead hides dispatch latency, and an
        # unbounded queue deadlocks collectives on multi-device CPU (threads starve).
        jax.block_until_ready(pending[-1])
      pending.append(metrics)
      progress.update(1)
      if step % log_every == 0 or step % checkpointer.every_steps == 0 or step == total_steps:
        _check_finite(pending, last_step + 1, checkpointer)  # Before any save of this state.
      if step % log_every == 0 or step == total_steps:
        means = {k: float(np.mean(v)) for k, v in jax.tree.map(
            lambda *xs: np.stack(xs), *jax.device_get(pending)).items()}
        now = time.perf_counter()
        means["examples_per_sec"] = (step - last_step) * config.train.batch_size / (now - last_time)
        means["epoch"] = step / steps_per_epoch
        writer.write(step, "train", means)
        progress.set_postfix(epoch=f"{means['epoch']:.2f}", loss=f"{means['loss']:.4f}",
                             ex_per_s=f"{means['examples_per_sec']:.0f}", refresh=False)
        pending, last_time, last_step = [], now, step
      if step % eval_every == 0 or step == total_steps:
        eval_start = time.perf_counter()
        line = f"step {step} epoch {step / steps_per_epoch:.2f}:"
        if validation_data is not None:
          validation = evaluate(eval_step, state.variables(), validation_data,
                                config.train.eval_batch_size, mesh)
          writer.write(step, "validation", validation)
          line += f" validation accuracy {validation['accuracy']:.4f},"
        result = evaluate(eval_step, state.variables(), test_data, config.train.eval_batch_size, mesh)
        last_eval = (step, result)
        writer.write(step, "test", result)
        if jax.process_index() == 0:  # tqdm.write prints even where the bar is disabled.
          progress.write(f"{line} test accuracy {result['accuracy']:.4f} ({result['errors']} "
                         f"errors / {result['count']})")
        # Evaluation time is not training throughput: the window since the last log
        # (which may hold steps before this evaluation) loses the time evaluation took.
        last_time += time.perf_counter() - eval_start
      checkpointer.save(step, state)
      if stop.stop_now():  # With several processes: agreed, all stop after the same step.
        stopped_by = stop.reason
        break
  progress.close()

  _check_finite(pending, last_step + 1, checkpointer)  # Stopped between checks: before saving.
  final_step = int(state.step)
  checkpointer.save(final_step, state, force=True)
  checkpointer.close()
  carry = {"params": state.params, "aux_params": state.aux_params, "aux_state": state.aux_state,
           "model_state": state.model_state}
  if stopped_by:
    writer.close()
    say(f"stopped by {stopped_by} at step {final_step}; checkpoint saved. "
        "Run the same command again to resume.")
    return {"step": final_step, "interrupted": True, "num_params": num_params}, carry
  result = last_eval[1]
  if last_eval[0] != final_step:  # Nothing trained (resumed at the end): evaluate once.
    result = evaluate(eval_step, state.variables(), test_data, config.train.eval_batch_size, mesh)
    say(f"already trained to step {final_step}; test accuracy {result['accuracy']:.4f}")
  writer.close()
  summary = {"step": final_step, "interrupted": False, "num_params": num_params,
             **{f"test_{k}": v for k, v in result.items()}}
  # Only process 0 wrote metrics.jsonl (other hosts may not share the disk, or read it mid-write).
  if validation_data is not None and jax.process_index() == 0:
    summary.update(select_on_validation(read_metrics(workdir)))
  return summary, carry
