"""FT (Kim et al. 2018, paraphrasing complex network: network compression via factor transfer).

One connector holds both learnable parts: the teacher's paraphraser (a
convolutional autoencoder whose code is the teacher's 'factor') and the
student's translator. Two terms share it under one label:
  ft_paraphraser  stage 1 (config.stages): the paraphraser learns to reconstruct
                  the teacher's feature; freeze the student and the translator
                  (train.freeze = ('params', 'aux/ft/translator')).
  ft              stage 2: the translator's factor matches the paraphraser's
                  (freeze 'aux/ft/paraphraser').
Layer shapes follow the CRD benchmark's code: three 3x3 convolutions each way,
LeakyReLU 0.1, factor channels = rate * teacher channels, BatchNorm in the
translator only.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.distill.terms import (Method, TermInputs, l2_normalize, register_method,
                                 same_spatial_size)
from jaxkd.errors import JaxkdError


def _stack(x: jax.Array, channels: tuple[int, ...], prefix: str, batch_norm: bool = False,
           transpose: bool = False) -> jax.Array:
  """3x3 (transposed) convolutions, each with optional BatchNorm and LeakyReLU(0.1)."""
  for i, features in enumerate(channels):
    layer = nn.ConvTranspose if transpose else nn.Conv
    x = layer(features, (3, 3), padding="SAME", name=f"{prefix}{i}")(x)
    if batch_norm:
      x = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5,
                       name=f"{prefix}_bn{i}")(x)
    x = nn.leaky_relu(x, 0.1)
  return x


class Paraphraser(nn.Module):
  factor_channels: int

  @nn.compact
  def __call__(self, teacher: jax.Array) -> tuple[jax.Array, jax.Array]:
    channels = teacher.shape[-1]
    factor = _stack(teacher, (channels, self.factor_channels, self.factor_channels), "encoder")
    reconstruction = _stack(factor, (self.factor_channels, channels, channels), "decoder",
                            transpose=True)
    return factor, reconstruction


class Translator(nn.Module):
  factor_channels: int

  @nn.compact
  def __call__(self, student: jax.Array) -> jax.Array:
    return _stack(student, (student.shape[-1], self.factor_channels, self.factor_channels),
                  "conv", batch_norm=True)


def ft_paraphraser(reconstruction: jax.Array, teacher: jax.Array) -> jax.Array:
  """Kim et al. 2018 (FT), paraphraser stage: mean (P(F_t) - F_t)^2, P the autoencoder."""
  return jnp.mean((reconstruction - teacher) ** 2)


def _factor_vector(factor: jax.Array, form: str) -> jax.Array:
  if form == "paper":
    return l2_normalize(factor.reshape(factor.shape[0], -1))
  if form == "crd_code":
    return l2_normalize(jnp.mean(factor**2, axis=-1).reshape(factor.shape[0], -1))
  raise JaxkdError(f"ft: form '{form}' is not one of ('paper', 'crd_code').")


def ft(student_factor: jax.Array, teacher_factor: jax.Array, p: float = 1.0,
       form: str = "paper") -> jax.Array:
  """Kim et al. 2018 (FT). form='paper': mean_b ||u_s - u_t||_p with u = vec(factor) /
  ||vec(factor)||_2 per example (p = 1 in the paper). form='crd_code' (what the CRD
  benchmark runs, weight 200): u = normalize(mean_c factor^2), the factor's attention
  map, and mean |u_s - u_t|^p over all elements. The larger map is pooled to the
  smaller; the teacher's factor is a fixed target (its paraphraser trains in stage 1)."""
  student_factor, teacher_factor = same_spatial_size(student_factor, teacher_factor)
  difference = (_factor_vector(student_factor, form)
                - jax.lax.stop_gradient(_factor_vector(teacher_factor, form)))
  if form == "paper":
    return jnp.mean(jnp.sum(jnp.abs(difference) ** p, axis=1) ** (1.0 / p))
  return jnp.mean(jnp.abs(difference) ** p)


class FactorTransfer(Method):
  """Both stages' learnable parts, at aux/<label>/translator and aux/<label>/paraphraser
  (the same in both stages, so the second takes over what the first trained): factor
  channels = rate * the teacher's channels."""

  rate: float = 0.5
  features = True

  def check_shapes(self, student_shape, teacher_shape) -> None:
    if len(student_shape) != 3 or len(teacher_shape) != 3:
      raise JaxkdError(f"ft: student feature {student_shape} and teacher feature "
                       f"{teacher_shape} must both be [H, W, C] maps; pick convolutional layers.")

  @nn.compact
  def factors(self, inputs: TermInputs) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(the student's factor, the teacher's factor, the teacher's reconstruction)."""
    factor_channels = max(int(inputs.teacher.shape[-1] * self.rate), 1)
    student_factor = Translator(factor_channels, name="translator")(inputs.student)
    teacher_factor, reconstruction = Paraphraser(factor_channels, name="paraphraser")(inputs.teacher)
    return student_factor, teacher_factor, reconstruction


@register_method("ft_paraphraser")
class FTParaphraser(FactorTransfer):
  """FT stage 1: `ft_paraphraser`, the paraphraser reconstructing the teacher's feature."""

  def __call__(self, inputs: TermInputs) -> jax.Array:
    _, _, reconstruction = self.factors(inputs)
    return ft_paraphraser(reconstruction, inputs.teacher)


@register_method("ft")
class FT(FactorTransfer):
  """FT stage 2: `ft`, the translator's factor matched to the paraphraser's."""

  p: float = 1.0
  form: str = "paper"

  def __call__(self, inputs: TermInputs) -> jax.Array:
    student_factor, teacher_factor, _ = self.factors(inputs)
    return ft(student_factor, teacher_factor, self.p, self.form)
