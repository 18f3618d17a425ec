"""RKD (Park et al. 2019, relational knowledge distillation): distances and angles.

Relations are compared, not the features, so student and teacher features may have
any sizes; no learnable part.
"""

import jax
import jax.numpy as jnp
import optax

from jaxkd.distill.terms import flatten, l2_normalize, register_term


def _pair_distances(flat: jax.Array) -> jax.Array:
  squared = jnp.sum((flat[:, None, :] - flat[None, :, :]) ** 2, axis=-1)
  return jnp.sqrt(jnp.maximum(squared, 1e-12)) * (1.0 - jnp.eye(flat.shape[0]))


def _angles(flat: jax.Array) -> jax.Array:
  """cos of the angle at j between i and k, for all (i, j, k): [B, B, B]."""
  directions = l2_normalize(flat[None, :, :] - flat[:, None, :])  # [j, i] = e_{i j}
  return jnp.einsum("jid,jkd->jik", directions, directions)


@register_term("rkd", features=True)
def rkd(student: jax.Array, teacher: jax.Array, distance_weight: float = 25.0,
        angle_weight: float = 50.0) -> jax.Array:
  """Park et al. 2019 (relational KD): distance_weight * mean Huber(psi_D^s - psi_D^t)
  + angle_weight * mean Huber(psi_A^s - psi_A^t); psi_D = ||f_i - f_j|| / mean distance,
  psi_A = cos of the angle (f_i, f_j, f_k) at f_j. As in the authors' and the benchmark's
  code, the mean distance is over the B(B-1) pairs i != j and the distance loss is a mean
  over all B^2 entries (the zero diagonal included); the angle loss over all B^3."""
  s, t = flatten(student), jax.lax.stop_gradient(flatten(teacher))
  batch = s.shape[0]
  off_diagonal = 1.0 - jnp.eye(batch)
  count = batch * (batch - 1)

  def normalised_distances(flat):
    distances = _pair_distances(flat)
    return distances / (jnp.sum(distances) / count)

  distance_huber = optax.huber_loss(normalised_distances(s), normalised_distances(t))
  distance = jnp.sum(distance_huber * off_diagonal) / batch**2
  angle = jnp.mean(optax.huber_loss(_angles(s), _angles(t)))
  return distance_weight * distance + angle_weight * angle
