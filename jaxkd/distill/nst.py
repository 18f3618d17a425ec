"""NST (Huang & Wang 2017, neuron selectivity transfer): MMD between channel maps."""

import jax
import jax.numpy as jnp

from jaxkd.distill.at import check_same_spatial
from jaxkd.distill.terms import l2_normalize, register_term


@register_term("nst", features=True, check=check_same_spatial)
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
