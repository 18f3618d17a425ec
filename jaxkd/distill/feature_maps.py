"""Terms over intermediate features: FitNets hints and attention transfer.

A feature term names its student and teacher feature paths in its options
(`student: 'layer3_0'`, `teacher: 'layer3_2'`) and is called with those
features, the student's passed through the term's learnable connector when the
method has one.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.distill.terms import l2_normalize, register_term
from jaxkd.errors import JaxkdError


class Regressor(nn.Module):
  """FitNets' regressor: a 1x1 convolution (or a linear map for vectors) from the
  student's channels to the teacher's."""

  features: int

  @nn.compact
  def __call__(self, student: jax.Array, teacher: jax.Array, index: jax.Array):
    if student.ndim == 4:
      return nn.Conv(self.features, (1, 1), name="conv")(student), teacher
    return nn.Dense(self.features, name="dense")(student), teacher


def regressor_for(student_shape: tuple, teacher_shape: tuple, **_) -> nn.Module | None:
  """A regressor when the channels differ; an error when the spatial sizes differ."""
  if student_shape[:-1] != teacher_shape[:-1]:
    raise JaxkdError(f"fitnet: student feature {student_shape} and teacher feature "
                     f"{teacher_shape} differ in spatial size, which a 1x1 regressor cannot "
                     "bridge; pick paths at the same resolution (python -m jaxkd.models.inspect).")
  return Regressor(teacher_shape[-1])


@register_term("fitnet", features=True, connector=regressor_for)
def fitnet(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Romero et al. 2015 (FitNets): mean (r(F_s) - F_t)^2 over all elements, r a learned
  regressor (applied before this call) from the student's hint layer to the teacher's."""
  return jnp.mean((student - jax.lax.stop_gradient(teacher)) ** 2)


def attention_map(feature: jax.Array, p: float = 2.0) -> jax.Array:
  """Zagoruyko & Komodakis: the channel mean of |F|^p, flattened and L2-normalised."""
  return l2_normalize(jnp.mean(jnp.abs(feature) ** p, axis=-1).reshape(feature.shape[0], -1))


def _same_spatial(student_shape: tuple, teacher_shape: tuple, **_) -> None:
  if len(student_shape) != 3 or student_shape[:2] != teacher_shape[:2]:
    raise JaxkdError(f"at: student feature {student_shape} and teacher feature {teacher_shape} "
                     "need the same spatial size (channels may differ); pick paths at the "
                     "same resolution (python -m jaxkd.models.inspect).")
  return None


@register_term("at", features=True, connector=_same_spatial)
def at(student: jax.Array, teacher: jax.Array, p: float = 2.0) -> jax.Array:
  """Zagoruyko & Komodakis 2017 (attention transfer): mean_{b,i} (a_s - a_t)^2 with
  a(F) = normalize(mean_c |F|^p) over the flattened spatial positions i."""
  return jnp.mean((attention_map(student, p) - jax.lax.stop_gradient(attention_map(teacher, p))) ** 2)


class VIDHead(nn.Module):
  """VID's learnable parts: a 1x1-conv regressor for the mean (in -> mid -> mid -> teacher
  channels, ReLU between) and a per-channel variance softplus(alpha) + eps."""

  features: int
  mid_features: int
  init_variance: float = 5.0
  eps: float = 1e-5

  @nn.compact
  def __call__(self, student: jax.Array, teacher: jax.Array, index: jax.Array):
    x = nn.relu(nn.Conv(self.mid_features, (1, 1), name="conv1")(student))
    x = nn.relu(nn.Conv(self.mid_features, (1, 1), name="conv2")(x))
    mean = nn.Conv(self.features, (1, 1), name="conv3")(x)
    start = jnp.log(jnp.expm1(self.init_variance - self.eps))  # softplus(start) + eps = init
    alpha = self.param("alpha", lambda key, shape: jnp.full(shape, start), (self.features,))
    return (mean, jax.nn.softplus(alpha) + self.eps), teacher


def vid_head_for(student_shape: tuple, teacher_shape: tuple, **_) -> nn.Module:
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
