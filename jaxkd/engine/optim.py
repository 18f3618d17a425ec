"""Optimizers and learning-rate schedules from config, built with optax.

config.optimizer: name (sgd | adam | adamw), learning_rate, momentum, nesterov,
b1, b2, eps, weight_decay, decay_biases_and_norms, grad_clip_norm, max_norm, and
for sgd momentum_start / momentum_warmup_epochs (a momentum schedule).
config.schedule: name (constant | step | cosine), warmup_epochs,
boundaries_epochs and decay_factor (step), end_factor (cosine).
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxkd.errors import JaxkdError
from jaxkd.registry import Registry

SCHEDULES: Registry = Registry("schedule")
OPTIMIZERS: Registry = Registry("optimizer")


@SCHEDULES.register("constant")
def _constant(config, base_lr, steps_per_epoch, decay_steps, warmup_steps):
  return optax.constant_schedule(base_lr)


@SCHEDULES.register("step")
def _step(config, base_lr, steps_per_epoch, decay_steps, warmup_steps):
  # Multi-step decay: multiply by decay_factor at each boundary (in epochs from the start of
  # training; this schedule's own count starts after the warm-up).
  factor = config.decay_factor
  boundaries = {max(int(round(e * steps_per_epoch)) - warmup_steps, 0): factor
                for e in config.boundaries_epochs}
  return optax.piecewise_constant_schedule(base_lr, boundaries)


@SCHEDULES.register("cosine")
def _cosine(config, base_lr, steps_per_epoch, decay_steps, warmup_steps):
  return optax.cosine_decay_schedule(base_lr, max(decay_steps, 1), alpha=config.end_factor)


def make_schedule(config: ml_collections.ConfigDict, base_lr: float, steps_per_epoch: int,
                  total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 over warmup_epochs, then the named schedule.

  Step boundaries count from the start of training, warm-up included (the
  usual 'divide at epochs 150/180/210'); cosine decays over the steps after it.
  Joined with optax.join_schedules, which starts the named one at 0 after the warm-up.
  """
  make = SCHEDULES.get(config.name)
  warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
  main = make(config, base_lr, steps_per_epoch, total_steps - warmup_steps, warmup_steps)
  if not warmup_steps:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, base_lr, warmup_steps), main],
                              [warmup_steps])


def decay_mask(params: Any) -> Any:
  """True for the leaves weight decay applies to: kernels, not biases or norm scales."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def decayed_weights(config, mask) -> optax.GradientTransformation:
  """optax.add_decayed_weights with its rate kept in the optimizer state
  (optax.inject_hyperparams), where a population sets each member's own
  (optax.tree.set(opt_state, weight_decay=...)): one compiled step for every rate."""
  return optax.inject_hyperparams(optax.add_decayed_weights, static_args=("mask",))(
      weight_decay=float(config.weight_decay), mask=mask)


@OPTIMIZERS.register("sgd")
def _sgd(config, schedule, mask, momentum=None):
  # L2 added to the gradient before momentum, as in PyTorch's SGD(weight_decay=...).
  # `momentum`: a step -> momentum schedule (config.optimizer.momentum_start), else constant.
  if momentum is None:
    sgd = optax.sgd(schedule, momentum=config.momentum or None,
                    nesterov=config.nesterov)
  else:
    sgd = optax.inject_hyperparams(optax.sgd, static_args=("nesterov",))(
        learning_rate=schedule, momentum=momentum, nesterov=config.nesterov)
  return optax.chain(decayed_weights(config, mask), sgd)


@OPTIMIZERS.register("adam")
def _adam(config, schedule, mask):
  return optax.chain(
      decayed_weights(config, mask),
      optax.adam(schedule, b1=config.b1, b2=config.b2,
                 eps=config.eps))


@OPTIMIZERS.register("adamw")
def _adamw(config, schedule, mask):
  # optax.adamw's own chain, with the decay as a state hyperparameter (decayed_weights).
  return optax.chain(
      optax.scale_by_adam(b1=config.b1, b2=config.b2,
                          eps=config.eps),
      decayed_weights(config, mask), optax.scale_by_learning_rate(schedule))


def max_norm(limit: float) -> optax.GradientTransformation:
  """Max-norm constraint (Srivastava et al. 2014, as Hinton et al. 2012/2015 train their
  MNIST nets): after each update, every unit's incoming weight vector (a kernel's slice
  for one output unit: all axes but the last) is scaled down to L2 norm <= limit.
  Biases and norm scales (1-D) are left alone. It comes last in the chain: it turns the
  update u of params p into project(p + u) - p."""

  def update(updates, state, params):
    if params is None:
      raise ValueError("max_norm needs the parameters: pass them to update().")

    def project(u, p):
      if p.ndim < 2:
        return u
      new = p + u
      norms = jnp.sqrt(jnp.sum(new * new, axis=tuple(range(new.ndim - 1)), keepdims=True))
      return new * jnp.minimum(1.0, limit / jnp.maximum(norms, 1e-12)) - p

    return jax.tree.map(project, updates, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def momentum_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int):
  """momentum_start -> momentum linearly over momentum_warmup_epochs, then momentum (as
  Hinton et al. 2012 raise it during training); None when momentum_start is unset."""
  start = config.momentum_start
  if start is None:
    return None
  steps = max(int(round(config.momentum_warmup_epochs * steps_per_epoch)), 1)
  return optax.linear_schedule(float(start), float(config.momentum), steps)


def freeze_labels(prefixes: tuple[str, ...]):
  """A labeller for optax.multi_transform: 'frozen' for leaves under any of the path
  prefixes ('params', 'aux/fitnet', ...), else 'train'. A prefix matching nothing is an
  error (a typo would silently train what was meant to be frozen)."""

  def labels(trainable):
    name = lambda path: jax.tree_util.keystr(path, simple=True, separator="/")
    under = lambda path, prefix: path == prefix or path.startswith(prefix.rstrip("/") + "/")
    paths = [name(path) for path, _ in jax.tree_util.tree_leaves_with_path(trainable)]
    for prefix in prefixes:
      if not any(under(path, prefix) for path in paths):
        tops = sorted({"/".join(path.split("/")[:2]) for path in paths})
        raise JaxkdError(f"train.freeze: '{prefix}' matches no trainable parameter; prefixes "
                         f"start with one of {tops}.")
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if any(under(name(path), p) for p in prefixes) else "train",
        trainable)

  return labels


def with_freeze(tx: optax.GradientTransformation, freeze: tuple[str, ...]
                ) -> optax.GradientTransformation:
  """`tx` for the trainable parts, no update for those under a `freeze` prefix."""
  if not freeze:
    return tx
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               freeze_labels(tuple(freeze)))


def make_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule,
                   freeze: tuple[str, ...] = (), steps_per_epoch: int = 1
                   ) -> optax.GradientTransformation:
  """The optimizer over the trainable tree; parts under a `freeze` prefix get no updates.
  Chain: clip by global norm (grad_clip_norm), weight decay, the optimizer (momentum
  schedule for sgd), max-norm projection (max_norm)."""
  if freeze:
    return with_freeze(make_optimizer(config, schedule, steps_per_epoch=steps_per_epoch), freeze)
  make = OPTIMIZERS.get(config.name)
  mask = None if config.decay_biases_and_norms else decay_mask
  momentum = momentum_schedule(config, steps_per_epoch)
  tx = make(config, schedule, mask) if momentum is None else make(config, schedule, mask, momentum)
  clip = config.grad_clip_norm
  tx = optax.chain(optax.clip_by_global_norm(clip), tx) if clip else tx
  limit = config.max_norm
  return optax.chain(tx, max_norm(limit)) if limit else tx
