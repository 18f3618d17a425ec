"""Deep mutual learning (Zhang, Xiang, Hospedales & Lu 2018): a cohort of students trained
together, each on its labels and on the others' predictions, with no teacher trained
before them (distill.cohort = K: jaxkd.run.cohort).

Each member's teachers are the other K - 1 members at the same step, held fixed (their
predictions on the same batch, from the same forward as their own update reads: the
simultaneous form of the paper's update); the term averages the KL to each of them."""

import jax
import jax.numpy as jnp

from jaxkd.distill.ce import labeled_weights
from jaxkd.distill.terms import TermInputs, register_term


@register_term("dml")
def dml(inputs: TermInputs, temperature: float = 1.0) -> jax.Array:
  """Zhang et al. 2018: 1/(K - 1) sum_{l != k} KL(p_l || p_k), p at `temperature` (T^2 times
  it for T != 1, as kd), the mean over the batch's examples that count (mask)."""
  peers = jax.nn.log_softmax(jax.lax.stop_gradient(inputs.teacher_logits) / temperature, -1)
  own = jax.nn.log_softmax(inputs.student_logits / temperature, -1)
  per_peer = jnp.sum(jnp.exp(peers) * (peers - own[None]), axis=-1)  # [K - 1, B]
  per_example = temperature ** 2 * jnp.mean(per_peer, axis=0)
  mask = jnp.ones(per_example.shape) if inputs.mask is None else inputs.mask
  return jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1.0)
