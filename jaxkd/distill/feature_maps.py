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


class ConvReg(nn.Module):
  """The CRD benchmark's convolutional regressor (RepDistiller models/util.py ConvReg):
  student map -> teacher channels and size, then BatchNorm (batch statistics while
  training) and, with `relu`, a ReLU. The convolution follows the sizes: 3x3 stride 2
  when the student's map is twice the teacher's, a 4x4 stride-2 transposed convolution
  when it is half, else a valid convolution of kernel 1 + (student - teacher size),
  1x1 for equal sizes. Vectors get a linear map (no BatchNorm): the benchmark has no
  hint on vectors."""

  features: int
  student_size: int = 0
  teacher_size: int = 0
  relu: bool = True

  @nn.compact
  def __call__(self, student: jax.Array, teacher: jax.Array, index: jax.Array):
    if student.ndim == 2:
      return nn.Dense(self.features, name="dense")(student), teacher
    s, t = self.student_size, self.teacher_size
    if s == 2 * t:
      conv = nn.Conv(self.features, (3, 3), strides=2, padding=1, name="conv")
    elif 2 * s == t:  # torch's ConvTranspose2d(k=4, s=2, p=1): k - 1 - p = 2 on each side.
      conv = nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                              name="conv")
    else:
      conv = nn.Conv(self.features, (1 + s - t, 1 + s - t), padding="VALID", name="conv")
    x = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, name="bn")(conv(student))
    return (nn.relu(x) if self.relu else x), teacher


def conv_reg_for(method: str, student_shape: tuple, teacher_shape: tuple, relu: bool) -> ConvReg:
  """A ConvReg from `student_shape` to `teacher_shape` ([H, W, C] or [C]), or an error
  naming both shapes when the benchmark's rules cannot bridge them."""
  if len(student_shape) != len(teacher_shape):
    raise JaxkdError(f"{method}: student feature {student_shape} and teacher feature "
                     f"{teacher_shape} are not both maps or both vectors; pick paths of the same "
                     "kind (python -m jaxkd.models.inspect).")
  if len(student_shape) == 1:
    return ConvReg(teacher_shape[-1], relu=relu)
  s, t = student_shape[0], teacher_shape[0]
  if s != 2 * t and 2 * s != t and s < t:
    raise JaxkdError(f"{method}: student feature {student_shape} is smaller than teacher feature "
                     f"{teacher_shape} but not half its size, which the regressor cannot bridge; "
                     "pick paths at the same resolution (python -m jaxkd.models.inspect).")
  return ConvReg(teacher_shape[-1], s, t, relu)


def regressor_for(student_shape: tuple, teacher_shape: tuple, **_) -> nn.Module:
  """FitNets' regressor: conv + BatchNorm + ReLU, as the benchmark's `hint` runs it."""
  return conv_reg_for("fitnet", student_shape, teacher_shape, relu=True)


@register_term("fitnet", features=True, connector=regressor_for)
def fitnet(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Romero et al. 2015 (FitNets): mean (r(F_s) - F_t)^2 over all elements, r a learned
  regressor (applied before this call) from the student's hint layer to the teacher's:
  the benchmark's ConvReg (conv + BatchNorm + ReLU), not the paper's bare convolution."""
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
  channels, ReLU between, no biases as in the authors' and the benchmark's code) and a
  per-channel variance softplus(alpha) + eps."""

  features: int
  mid_features: int
  init_variance: float = 5.0
  eps: float = 1e-5

  @nn.compact
  def __call__(self, student: jax.Array, teacher: jax.Array, index: jax.Array):
    x = nn.relu(nn.Conv(self.mid_features, (1, 1), use_bias=False, name="conv1")(student))
    x = nn.relu(nn.Conv(self.mid_features, (1, 1), use_bias=False, name="conv2")(x))
    mean = nn.Conv(self.features, (1, 1), use_bias=False, name="conv3")(x)
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
