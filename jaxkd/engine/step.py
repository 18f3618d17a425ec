"""The jitted train step, built from one small object (StepSpec) rather than a parameter list.

A step is a pure function step(state, teacher_variables, batch) -> (state, metrics),
compiled once with jax.jit over a device mesh: the batch is split on the 'data' axis,
the state replicated. It holds no Python-side state: every random draw comes from
fold_in(state.rng, state.step), so the same step is vmapped over a leading member axis
of the state for a population (make_population_step: S students in one program).
"""

import dataclasses
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxkd.data.augment import Preprocess, mixup, model_input, model_inputs
from jaxkd.data.batches import counted, take
from jaxkd.distill import Objective, TermInputs
from jaxkd.distill.uld import cached_teacher_log_probs
from jaxkd.engine.chunked import chunked_objective
from jaxkd.engine.features import apply_with_features
from jaxkd.engine.on_policy import OnPolicy, on_policy_batch
from jaxkd.engine.precision import cast_floating, to_float32
from jaxkd.engine.sharding import DATA_AXIS, batch_sharding, replicated
from jaxkd.engine.state import TrainState
from jaxkd.models.lm_head import apply_head, final_path, head_params

Batch = dict[str, jax.Array]
MEAN_TEACHER = "mean_teacher"  # state.aux_state's entry of a mean teacher's parameters


@dataclasses.dataclass(frozen=True)
class Precision:
  """Compute dtypes (config.precision). The student's params stay float32 in the state (so
  gradients and the optimizer are float32) and are cast for the forward pass, as are the
  inputs and the teachers' floating variables; logits and features return as float32."""

  student: Any = jnp.float32
  teacher: Any = jnp.float32

  @classmethod
  def from_config(cls, precision) -> "Precision":
    """From config.precision (student, teacher: dtype names)."""
    return cls(jnp.dtype(precision.student), jnp.dtype(precision.teacher))


@dataclasses.dataclass(frozen=True, eq=False)
class CrossTokenizer:
  """A teacher with its own tokenizer (jaxkd.run.cross_tokenizer): it reads the batch's
  teacher_tokens / teacher_segments (the same text through its tokenizer), its logits are
  cut to its tokenizer's `teacher_num_classes` ids, and `vocab_map` [teacher_num_classes]
  gives the student id of each teacher token the two vocabularies share (-1: none)."""

  teacher_num_classes: int
  vocab_map: Any  # np.ndarray: a constant of the compiled step

  # The batch's cross-tokenizer entries (jaxkd.data.alignment; the last, a cache's:
  # jaxkd.run.cross_cache) that the terms read.
  BATCH_KEYS = ("student_span", "teacher_span", "teacher_labels", "teacher_tokens",
                "teacher_own_logprobs")


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """What a train step is made of.

  model / tx / objective: the student, its optimizer (over state.trainable()) and the
  weighted terms. teachers: frozen Flax modules, run in inference mode on the student's
  augmented view under stop_gradient (their variables are the step's second argument,
  never differentiated or donated); a batch carrying `teacher_logits` (cached soft
  labels, [B, K, C]) runs none. schedule: logged as learning_rate. frozen: a pytree of
  bools like state.trainable(), True where train.freeze holds, left out of the logged
  grad_norm. keep_model_state: the student's batch statistics stay as they are (a
  frozen student); student_eval_mode: the student runs with train=False while it
  trains (and keeps its statistics).
  """

  model: nn.Module
  tx: optax.GradientTransformation
  objective: Objective
  preprocess: Preprocess
  num_classes: int
  teachers: Sequence[nn.Module] = ()
  schedule: optax.Schedule | None = None
  steps_per_epoch: int = 1
  mixup_alpha: float = 0.0
  precision: Precision = Precision()
  frozen: Any = None
  keep_model_state: bool = False
  student_eval_mode: bool = False
  on_policy: OnPolicy | None = None
  loss_chunk: int = 0  # > 0: a language model's loss C positions at a time (engine.chunked)
  cross_tokenizer: CrossTokenizer | None = None
  # Mean teacher (Tarvainen & Valpola 2017): the teacher is the student's exponential moving
  # average, kept in state.aux_state[MEAN_TEACHER] and updated after every step.
  mean_teacher_decay: float = 0.0


def cast_input(x: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """A model input in the compute dtype; token ids stay integers."""
  return x if jnp.issubdtype(x.dtype, jnp.integer) else x.astype(dtype)


def cast_tree(tree: Any, dtype: jnp.dtype) -> Any:
  """The floating arrays of `tree` in `dtype` (float32: unchanged, no copy traced)."""
  return tree if dtype == jnp.float32 else cast_floating(tree, dtype)


def teacher_outputs(spec: StepSpec, teacher_variables: Sequence[dict], batch: Batch,
                    inputs: jax.Array) -> tuple[jax.Array | None, dict]:
  """(teacher logits [K, B, C] or None, {path: [K, B, ...]}) under stop_gradient: read from
  the batch's cached soft labels, or computed by the online teachers when a term needs them."""
  if "teacher_logits" in batch:
    return jnp.swapaxes(batch["teacher_logits"].astype(jnp.float32), 0, 1), {}
  if "teacher_topk_ids" in batch and spec.cross_tokenizer is not None:
    # A cached teacher of another tokenizer (jaxkd.run.cross_cache): its distributions.
    return cached_teacher_log_probs(batch["teacher_topk_logprobs"], batch["teacher_topk_ids"],
                                    spec.cross_tokenizer.teacher_num_classes)[None], {}
  if not spec.objective.needs_teacher or "teacher_topk_ids" in batch or not spec.teachers:
    return None, {}  # (no teachers: a cohort's members teach each other, make_cohort_step)
  dtype, paths = spec.precision.teacher, spec.objective.teacher_paths
  width, extra = spec.num_classes, model_inputs(batch)
  if spec.cross_tokenizer is not None:  # the same text through the teacher's own tokenizer
    inputs, extra = batch["teacher_tokens"], {"segments": batch["teacher_segments"]}
    width = spec.cross_tokenizer.teacher_num_classes
  if spec.loss_chunk:  # The final hidden states: the loss makes the logits chunk by chunk.
    hidden = tuple(jax.lax.stop_gradient(apply_with_features(
        teacher, cast_tree(variables, dtype), cast_input(inputs, dtype), [final_path(teacher)],
        **extra)[1][final_path(teacher)]) for teacher, variables in
        zip(spec.teachers, teacher_variables))
    return hidden, {}
  outputs = [to_float32(apply_with_features(teacher, cast_tree(variables, dtype),
                                            cast_input(inputs, dtype), paths, **extra))
             for teacher, variables in zip(spec.teachers, teacher_variables)]
  # A language model's vocabulary may be padded past the tokenizer's: compare the ids it has.
  logits = jnp.stack([logits[..., :width] for logits, _, _ in outputs])
  features = {path: jnp.stack([features[path] for _, features, _ in outputs]) for path in paths}
  return jax.lax.stop_gradient(logits), jax.lax.stop_gradient(features)


@flax.struct.dataclass
class Prepared:
  """What a step computes before the student: its inputs (augmented, mixed), targets, the
  teachers' outputs, and the keys of the student's dropout and the objective."""

  inputs: jax.Array
  targets: jax.Array
  teacher_logits: jax.Array | None
  teacher_features: dict
  dropout_key: jax.Array
  objective_key: jax.Array
  labels: jax.Array  # The batch's, or those of on-policy generations.
  teacher_topk: tuple | None = None  # A cached LM teacher's (log-probs, ids).
  model_inputs: dict = flax.struct.field(default_factory=dict)  # e.g. the segments
  # With spec.loss_chunk: each teacher's output-layer parameters (its teacher_logits are
  # then its final hidden states, one per teacher).
  teacher_heads: tuple = ()
  cross: dict | None = None  # A teacher of another tokenizer: the batch's spans and tokens.


def step_keys(rng: jax.Array, step: jax.Array) -> jax.Array:
  """A step's keys [4] (augmentation, dropout, mixup, objective): fold_in(rng, step), split."""
  return jax.random.split(jax.random.fold_in(rng, step), 4)


def prepare(spec: StepSpec, rng: jax.Array, step: jax.Array, teacher_variables: Sequence[dict],
            batch: Batch, mixup_alpha: jax.Array | None = None,
            student_variables: dict | None = None) -> Prepared:
  """The batch as the student will see it, and the teachers' outputs on that view.
  `mixup_alpha` (traced: a population member's) replaces spec.mixup_alpha; 0 mixes nothing.
  student_variables: the student's, for on-policy generation (spec.on_policy)."""
  root = jax.random.fold_in(rng, step)
  augment_key, dropout_key, mixup_key, objective_key = step_keys(rng, step)
  if spec.on_policy is not None:
    batch = on_policy_batch(
        spec.on_policy, root, batch, (spec.model, student_variables),
        (spec.teachers[0], teacher_variables[0]) if spec.teachers else None, spec.num_classes)
  inputs = model_input(batch, spec.preprocess, augment_key)
  targets = jax.nn.one_hot(batch["label"], spec.num_classes)
  if mixup_alpha is not None or spec.mixup_alpha > 0:
    inputs, targets = mixup(mixup_key, inputs, targets,
                            spec.mixup_alpha if mixup_alpha is None else mixup_alpha)
  teacher_logits, teacher_features = teacher_outputs(spec, teacher_variables, batch, inputs)
  topk = (batch["teacher_topk_logprobs"], batch["teacher_topk_ids"]) if (
      "teacher_topk_ids" in batch and spec.cross_tokenizer is None) else None
  heads = tuple(cast_tree(head_params(teacher, variables["params"]), spec.precision.teacher)
                for teacher, variables in zip(spec.teachers, teacher_variables)) if (
      spec.loss_chunk and teacher_logits is not None) else ()
  cross = None if spec.cross_tokenizer is None else {
      "student_tokens": inputs, **{k: batch[k] for k in CrossTokenizer.BATCH_KEYS if k in batch}}
  return Prepared(inputs, targets, teacher_logits, teacher_features, dropout_key, objective_key,
                  batch["label"], topk, model_inputs(batch), heads, cross)


def update(spec: StepSpec, state: TrainState, prepared: Prepared, batch: Batch,
           hparams: dict | None = None) -> tuple[TrainState, dict]:
  """One update of the student and the objective's learnable parts. `hparams` (a
  population member's traced values, jaxkd.run.population): 'terms' overrides the terms'
  weights, temperatures and options, 'model' the model's fields (its traced_fields, e.g.
  a dropout rate), 'learning_rate_scale' scales the updates."""
  student_dtype, eval_mode = spec.precision.student, spec.student_eval_mode
  labels = prepared.labels
  model = spec.model.clone(**hparams["model"]) if (hparams or {}).get("model") else spec.model

  def loss_fn(trainable):
    variables = {"params": cast_tree(trainable["params"], student_dtype), **state.model_state}
    if spec.loss_chunk:
      return _chunked_loss(spec, model, variables, trainable, state, prepared, batch, hparams)
    logits, features, new_model_state = to_float32(apply_with_features(
        model, variables, cast_input(prepared.inputs, student_dtype),
        spec.objective.student_paths, train=not eval_mode,
        rngs={"dropout": prepared.dropout_key},
        mutable=[] if eval_mode else list(state.model_state), **prepared.model_inputs))
    logits = logits[..., :spec.num_classes]  # A padded vocabulary: the tokenizer's ids.
    term_inputs = TermInputs(logits, prepared.teacher_logits, labels, prepared.targets,
                             state.step, spec.steps_per_epoch, features,
                             prepared.teacher_features, batch["index"], prepared.objective_key,
                             batch.get("mask"), teacher_topk=prepared.teacher_topk,
                             cross=None if prepared.cross is None else {
                                 **prepared.cross,
                                 "vocab_map": spec.cross_tokenizer.vocab_map})
    loss, term_metrics, aux_state = spec.objective(term_inputs, trainable["aux"], state.aux_state,
                                                   (hparams or {}).get("terms"))
    return loss, (logits, new_model_state, term_metrics, aux_state)

  trainable = state.trainable()
  (loss, (logits, model_state, term_metrics, aux_state)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(trainable)
  updates, opt_state = spec.tx.update(grads, state.opt_state, trainable)
  scale = None if hparams is None else hparams["learning_rate_scale"]
  if scale is not None:
    updates = jax.tree.map(lambda u: u * scale, updates)
  trainable = optax.apply_updates(trainable, updates)
  keep = spec.keep_model_state or eval_mode
  if spec.mean_teacher_decay:  # the teacher follows the student: ema = d * ema + (1 - d) * new
    decay = spec.mean_teacher_decay
    aux_state = {**aux_state, MEAN_TEACHER: {"params": jax.tree.map(
        lambda ema, new: decay * ema + (1 - decay) * new,
        state.aux_state[MEAN_TEACHER]["params"], trainable["params"])}}
  new_state = state.replace(step=state.step + 1, params=trainable["params"],
                            aux_params=trainable["aux"], aux_state=aux_state,
                            model_state=state.model_state if keep else dict(model_state),
                            opt_state=opt_state)
  measured = grads if spec.frozen is None else jax.tree.map(
      lambda g, is_frozen: jnp.zeros_like(g) if is_frozen else g, grads, spec.frozen)
  if spec.loss_chunk:  # (correct, counted tokens) in place of the logits
    accuracy = logits[0] / jnp.maximum(logits[1], 1.0)
  else:
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    # Accuracy on the labeled examples that count (a transfer set's unlabeled ones have none).
    mask = counted(labels, batch.get("mask"))
    accuracy = jnp.sum(correct * mask) / jnp.maximum(jnp.sum(mask), 1.0)
  metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(measured),
             **term_metrics}
  if spec.schedule is not None:
    rate = spec.schedule(state.step)
    metrics["learning_rate"] = rate if scale is None else rate * scale
  return new_state, metrics


def _chunked_loss(spec: StepSpec, model, variables, trainable, state, prepared: Prepared,
                  batch: Batch, hparams):
  """loss_fn's value with the logits made spec.loss_chunk positions at a time."""
  student_dtype = spec.precision.student
  final = final_path(model)
  _, features, _ = apply_with_features(model, variables,
                                       cast_input(prepared.inputs, student_dtype), [final],
                                       train=not spec.student_eval_mode,
                                       rngs={"dropout": prepared.dropout_key},
                                       **prepared.model_inputs)
  head = cast_tree(head_params(model, variables["params"]), student_dtype)
  cut = lambda logits: logits[..., :spec.num_classes].astype(jnp.float32)

  def evaluate(logits, teacher_logits, labels, topk):
    inputs = TermInputs(logits, teacher_logits, labels, jax.nn.one_hot(labels, spec.num_classes),
                        state.step, spec.steps_per_epoch, {}, {}, batch["index"],
                        prepared.objective_key, batch.get("mask"), teacher_topk=topk)
    loss, metrics, _ = spec.objective(inputs, trainable["aux"], state.aux_state,
                                      (hparams or {}).get("terms"))
    return loss, metrics

  teachers = prepared.teacher_logits or ()
  loss, metrics, correct, tokens = chunked_objective(
      evaluate, lambda h: cut(apply_head(head, h)), features[final],
      tuple(lambda h, p=p: cut(apply_head(p, h)) for p in prepared.teacher_heads), teachers,
      prepared.labels, batch.get("mask"), prepared.teacher_topk, spec.loss_chunk)
  return loss, ((correct, tokens), state.model_state, metrics, state.aux_state)


def mean_teacher_variables(state: TrainState) -> list[dict]:
  """The mean teacher's variables: the moving average of the student's parameters, with the
  student's current batch statistics."""
  return [{"params": state.aux_state[MEAN_TEACHER]["params"], **state.model_state}]


def train_step(spec: StepSpec, state: TrainState, teacher_variables: Sequence[dict],
               batch: Batch) -> tuple[TrainState, dict]:
  """One training step of one student (not jitted): prepare, then update."""
  if spec.mean_teacher_decay:
    teacher_variables = mean_teacher_variables(state)
  return update(spec, state, prepare(spec, state.rng, state.step, teacher_variables, batch,
                                     student_variables=state.variables()), batch)


def make_train_step(spec: StepSpec, mesh: Mesh, teacher_shardings: Any = None) -> Callable:
  """train_step(spec, ...) jitted over `mesh`: the state replicated and donated, the batch
  split on 'data'; teacher_shardings (a pytree matching teacher_variables, e.g.
  sharding.split_largest_axis) lays the teachers out over the mesh, None replicates them."""
  teacher_shardings = replicated(mesh) if teacher_shardings is None else teacher_shardings
  step = lambda state, teacher_variables, batch: train_step(spec, state, teacher_variables, batch)
  return jax.jit(step, in_shardings=(replicated(mesh), teacher_shardings, batch_sharding(mesh)),
                 out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=0)


def member_sharding(mesh: Mesh) -> NamedSharding:
  """A population's member axis (leading) split over the mesh's devices."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def batch_layout(mesh: Mesh, shared_batch: bool, split: str) -> NamedSharding:
  """Where a population step's batch lives: one batch for all (shared_batch) or one per
  member ([S, B, ...]), split over the devices by batch or, with split='member', whole on
  the devices holding the members that read it."""
  if split == "member":
    return replicated(mesh) if shared_batch else member_sharding(mesh)
  return batch_sharding(mesh) if shared_batch else NamedSharding(mesh,
                                                                 PartitionSpec(None, DATA_AXIS))


def make_population_step(spec: StepSpec, mesh: Mesh, teacher_shardings: Any, shared_batch: bool,
                         shared_prepare: bool, split: str = "batch", gather: bool = False
                         ) -> Callable:
  """step(states, hparams, teacher_variables, batch, table) -> (states, metrics [S, ...]),
  jitted: update (and prepare) vmapped over the members stacked on the states' leading
  axis, each with its traced hyperparameters `hparams` (see update). shared_prepare:
  members share batch, augmentation and mixup, so the teachers run once per step for all
  (outside the vmap); otherwise each member prepares its own view. split: the member axis
  ('member') or the batch axis ('batch') over the devices. gather: `batch` holds only each
  member's example indices [S, B] and `table` the training data on the devices, from
  which the step gathers the members' batches."""

  def step(states, hparams, teacher_variables, batch, table):
    if gather:
      batch = take(table, batch)
    if shared_prepare:
      first = jax.tree.map(lambda x: x[0], (states.rng, states.step))
      prepared = prepare(spec, *first, teacher_variables, batch)
      return jax.vmap(lambda s, h: update(spec, s, prepared, batch, h))(states, hparams)

    def member(s, h, b):
      return update(spec, s, prepare(spec, s.rng, s.step, teacher_variables, b,
                                     h.get("mixup_alpha"), s.variables()), b, h)

    return jax.vmap(member, in_axes=(0, 0, None if shared_batch else 0))(states, hparams, batch)

  members = member_sharding(mesh) if split == "member" else replicated(mesh)
  return jax.jit(step, in_shardings=(members, members, teacher_shardings,
                                     batch_layout(mesh, shared_batch, split), replicated(mesh)),
                 out_shardings=(members, members), donate_argnums=0)
