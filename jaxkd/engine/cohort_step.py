"""The step of a cohort (deep mutual learning, jaxkd.distill.dml): K students on one batch,
each taught by the others' predictions from the forward its own update repeats. Members of
one architecture are stacked and vmapped (make_cohort_step); members of different
architectures are a tuple of states (make_mixed_cohort_step)."""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxkd.engine.features import apply_with_features
from jaxkd.engine.sharding import batch_sharding, replicated
from jaxkd.engine.state import TrainState
from jaxkd.engine.step import (StepSpec, cast_input, cast_tree, member_sharding, prepare,
                               step_keys, update)


def make_cohort_step(spec: StepSpec, mesh: Mesh, split: str = "batch") -> Callable:
  """step(states, hparams, batch) -> (states, metrics [K, ...]), jitted: K students
  (stacked states, different seeds) on one batch, each taught by the others (deep mutual
  learning, jaxkd.distill.dml). The batch is prepared once (the first member's
  augmentation: all see the same images); every member's predictions come from its own
  forward with its own dropout key, the very forward its update then repeats, and member
  k's teachers' outputs are the other members' predictions, held fixed ([K - 1, B, C])."""

  def step(states, hparams, batch):
    count = states.step.shape[0]
    peers = jnp.asarray([[j for j in range(count) if j != k] for k in range(count)])
    prepared = prepare(spec, states.rng[0], states.step[0], (), batch)
    keys = jax.vmap(step_keys)(states.rng, states.step)  # [K, 4]
    logits = jax.lax.stop_gradient(jax.vmap(
        lambda state, key: _member_logits(spec, state, prepared.inputs, key))(states, keys[:, 1]))

    def member(state, h, k, member_keys):
      own = prepared.replace(teacher_logits=logits[peers[k]], dropout_key=member_keys[1],
                             objective_key=member_keys[3])
      return update(spec, state, own, batch, h)

    return jax.vmap(member)(states, hparams, jnp.arange(count), keys)

  members = member_sharding(mesh) if split == "member" else replicated(mesh)
  return jax.jit(step, in_shardings=(members, members, batch_sharding(mesh)),
                 out_shardings=(members, members), donate_argnums=0)


def _member_logits(spec: StepSpec, state: TrainState, inputs: jax.Array,
                   dropout_key: jax.Array) -> jax.Array:
  """A cohort member's predictions on the step's inputs, from the forward its update repeats
  (the same dropout key and mode): what the other members are taught by."""
  dtype = spec.precision.student
  variables = {"params": cast_tree(state.params, dtype), **state.model_state}
  logits, _, _ = apply_with_features(
      spec.model, variables, cast_input(inputs, dtype), (), train=not spec.student_eval_mode,
      rngs={"dropout": dropout_key}, mutable=[] if spec.student_eval_mode else list(state.model_state))
  return logits.astype(jnp.float32)[..., :spec.num_classes]


def make_mixed_cohort_step(specs: Sequence[StepSpec], mesh: Mesh) -> Callable:
  """step(states, batch) -> (states, metrics [K, ...]), jitted: a cohort whose members differ
  in architecture (a tuple of K states, each with its own model and optimizer), each taught
  by the others on one batch, as make_cohort_step does for members of one architecture: the
  first member's view of the batch for all, each member's predictions from its own forward
  (its dropout key), held fixed as the others' teachers' outputs."""

  def step(states, batch):
    prepared = prepare(specs[0], states[0].rng, states[0].step, (), batch)
    keys = [step_keys(state.rng, state.step) for state in states]
    logits = [jax.lax.stop_gradient(_member_logits(spec, state, prepared.inputs, key[1]))
              for spec, state, key in zip(specs, states, keys)]
    updated, metrics = [], []
    for k, (spec, state) in enumerate(zip(specs, states)):
      others = jnp.stack([logits[j] for j in range(len(states)) if j != k])
      own = prepared.replace(teacher_logits=others, dropout_key=keys[k][1],
                             objective_key=keys[k][3])
      new_state, found = update(spec, state, own, batch)
      updated.append(new_state)
      metrics.append(found)
    return tuple(updated), jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)

  return jax.jit(step, in_shardings=(replicated(mesh), batch_sharding(mesh)),
                 out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=0)
