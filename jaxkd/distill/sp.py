"""SP (Tung & Mori 2019, similarity-preserving knowledge distillation).

Relations are compared, not the features, so student and teacher features may have
any sizes; no learnable part.
"""

import jax
import jax.numpy as jnp

from jaxkd.distill.terms import flatten, l2_normalize, register_term


@register_term("sp", features=True)
def sp(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Tung & Mori 2019 (similarity-preserving): ||G_s - G_t||_F^2 / B^2 with
  G = row-normalise(F F^T) over the flattened features of the batch."""
  def gram(feature):
    flat = flatten(feature)
    return l2_normalize(flat @ flat.T)

  batch = student.shape[0]
  return jnp.sum((gram(student) - jax.lax.stop_gradient(gram(teacher))) ** 2) / batch**2
