"""Terms over relations between examples or channels: SP, RKD, PKT, NST.

They compare structures (example-by-example similarities, distances, angles,
channel distributions) rather than the features themselves, so student and
teacher features may have different sizes; none has a learnable part.
Features [B, ...] are flattened per example where the method works on vectors.
"""

import jax
import jax.numpy as jnp

from jaxkd.distill.feature_maps import _same_spatial
from jaxkd.distill.terms import l2_normalize, register_term


def any_shapes(student_shape: tuple, teacher_shape: tuple, **_) -> None:
  """Relations are compared, not features: any two shapes work, no connector."""
  return None


def _flat(feature: jax.Array) -> jax.Array:
  return feature.reshape(feature.shape[0], -1)


@register_term("sp", features=True, connector=any_shapes)
def sp(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Tung & Mori 2019 (similarity-preserving): ||G_s - G_t||_F^2 / B^2 with
  G = row-normalise(F F^T) over the flattened features of the batch."""
  def gram(feature):
    flat = _flat(feature)
    return l2_normalize(flat @ flat.T)

  batch = student.shape[0]
  return jnp.sum((gram(student) - jax.lax.stop_gradient(gram(teacher))) ** 2) / batch**2


def _huber(x: jax.Array) -> jax.Array:
  """Smooth L1 (PyTorch's default, delta 1)."""
  absolute = jnp.abs(x)
  return jnp.where(absolute < 1.0, 0.5 * x**2, absolute - 0.5)


def _pair_distances(flat: jax.Array) -> jax.Array:
  squared = jnp.sum((flat[:, None, :] - flat[None, :, :]) ** 2, axis=-1)
  return jnp.sqrt(jnp.maximum(squared, 1e-12)) * (1.0 - jnp.eye(flat.shape[0]))


def _angles(flat: jax.Array) -> jax.Array:
  """cos of the angle at j between i and k, for all (i, j, k): [B, B, B]."""
  directions = l2_normalize(flat[None, :, :] - flat[:, None, :])  # [j, i] = e_{i j}
  return jnp.einsum("jid,jkd->jik", directions, directions)


@register_term("rkd", features=True, connector=any_shapes)
def rkd(student: jax.Array, teacher: jax.Array, distance_weight: float = 25.0,
        angle_weight: float = 50.0) -> jax.Array:
  """Park et al. 2019 (relational KD): distance_weight * mean Huber(psi_D^s - psi_D^t)
  + angle_weight * mean Huber(psi_A^s - psi_A^t); psi_D = ||f_i - f_j|| / mean distance,
  psi_A = cos of the angle (f_i, f_j, f_k) at f_j. As in the authors' and the benchmark's
  code, the mean distance is over the B(B-1) pairs i != j and the distance loss is a mean
  over all B^2 entries (the zero diagonal included); the angle loss over all B^3."""
  s, t = _flat(student), jax.lax.stop_gradient(_flat(teacher))
  batch = s.shape[0]
  off_diagonal = 1.0 - jnp.eye(batch)
  count = batch * (batch - 1)

  def normalised_distances(flat):
    distances = _pair_distances(flat)
    return distances / (jnp.sum(distances) / count)

  distance = jnp.sum(_huber(normalised_distances(s) - normalised_distances(t)) * off_diagonal) / batch**2
  angle = jnp.mean(_huber(_angles(s) - _angles(t)))
  return distance_weight * distance + angle_weight * angle


@register_term("pkt", features=True, connector=any_shapes)
def pkt(student: jax.Array, teacher: jax.Array, eps: float = 1e-7) -> jax.Array:
  """Passalis & Tefas 2018 (probabilistic knowledge transfer): mean_{i,j} P_t log(P_t / P_s)
  with P = row-normalise((cos(f_i, f_j) + 1) / 2)."""
  def conditional(feature):
    flat = l2_normalize(_flat(feature))
    similarity = (flat @ flat.T + 1.0) / 2.0
    return similarity / jnp.sum(similarity, axis=1, keepdims=True)

  p_s, p_t = conditional(student), jax.lax.stop_gradient(conditional(teacher))
  return jnp.mean(p_t * jnp.log((p_t + eps) / (p_s + eps)))


@register_term("nst", features=True, connector=_same_spatial)
def nst(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Huang & Wang 2017 (neuron selectivity transfer): squared MMD with the kernel
  k(x, y) = (x . y)^2 between the channels' spatial maps, each L2-normalised:
  mean k(s, s) + mean k(t, t) - 2 mean k(s, t)."""
  def channels(feature):  # [B, H, W, C] -> [B, C, HW], unit norm over positions
    batch, channel_count = feature.shape[0], feature.shape[-1]
    return l2_normalize(feature.reshape(batch, -1, channel_count).transpose(0, 2, 1))

  s, t = channels(student), jax.lax.stop_gradient(channels(teacher))
  kernel = lambda a, b: jnp.mean(jnp.einsum("bip,bjp->bij", a, b) ** 2)
  return kernel(t, t) + kernel(s, s) - 2.0 * kernel(s, t)
