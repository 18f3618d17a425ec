"""VID (Ahn et al. 2019, variational information distillation)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.distill.terms import register_term
from jaxkd.errors import JaxkdError


class VIDHead(nn.Module):
  """VID's learnable parts: a 1x1-conv regressor for the mean (in -> mid -> mid -> teacher
  channels, ReLU between, no biases as in the authors' and the benchmark's code) and a
  per-channel variance softplus(alpha) + eps."""

  features: int
  mid_features: int
  init_variance: float = 5.0
  eps: float = 1e-5

  @nn.compact
  def __call__(self, student: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = nn.relu(nn.Conv(self.mid_features, (1, 1), use_bias=False, name="conv1")(student))
    x = nn.relu(nn.Conv(self.mid_features, (1, 1), use_bias=False, name="conv2")(x))
    mean = nn.Conv(self.features, (1, 1), use_bias=False, name="conv3")(x)
    start = jnp.log(jnp.expm1(self.init_variance - self.eps))  # softplus(start) + eps = init
    alpha = self.param("alpha", lambda key, shape: jnp.full(shape, start), (self.features,))
    return mean, jax.nn.softplus(alpha) + self.eps


def vid_head_for(student_shape: tuple, teacher_shape: tuple) -> VIDHead:
  if len(student_shape) != 3 or student_shape[:2] != teacher_shape[:2]:
    raise JaxkdError(f"vid: student feature {student_shape} and teacher feature {teacher_shape} "
                     "need the same spatial size; pick paths at the same resolution.")
  return VIDHead(teacher_shape[-1], mid_features=teacher_shape[-1])


@register_term("vid", features=True, connector=vid_head_for)
def vid(student: tuple[jax.Array, jax.Array], teacher: jax.Array) -> jax.Array:
  """Ahn et al. 2019 (variational information distillation): the Gaussian negative
  log-likelihood of the teacher's features, mean 0.5 * ((t - mu(s))^2 / sigma^2 + log sigma^2),
  mu a learned regressor and sigma^2 a learned per-channel variance (constant dropped)."""
  mean, variance = student
  teacher = jax.lax.stop_gradient(teacher)
  return jnp.mean(0.5 * ((mean - teacher) ** 2 / variance + jnp.log(variance)))
