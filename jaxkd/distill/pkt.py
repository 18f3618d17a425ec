"""PKT (Passalis & Tefas 2018, probabilistic knowledge transfer).

Relations are compared, not the features, so student and teacher features may have
any sizes; no learnable part.
"""

import jax
import jax.numpy as jnp

from jaxkd.distill.terms import flatten, l2_normalize, register_term


@register_term("pkt", features=True)
def pkt(student: jax.Array, teacher: jax.Array, eps: float = 1e-7) -> jax.Array:
  """Passalis & Tefas 2018 (probabilistic knowledge transfer): mean_{i,j} P_t log(P_t / P_s)
  with P = row-normalise((cos(f_i, f_j) + 1) / 2)."""
  def conditional(feature):
    flat = l2_normalize(flatten(feature))
    similarity = (flat @ flat.T + 1.0) / 2.0
    return similarity / jnp.sum(similarity, axis=1, keepdims=True)

  p_s, p_t = conditional(student), jax.lax.stop_gradient(conditional(teacher))
  return jnp.mean(p_t * jnp.log((p_t + eps) / (p_s + eps)))
