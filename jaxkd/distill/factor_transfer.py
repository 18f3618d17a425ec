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

from jaxkd.distill.terms import l2_normalize, register_term, same_spatial_size
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


class FactorTransferHeads(nn.Module):
  """(student, teacher) -> (student factor, {teacher factor, reconstruction, feature})."""

  factor_channels: int

  @nn.compact
  def __call__(self, student: jax.Array, teacher: jax.Array, index: jax.Array):
    student_factor = Translator(self.factor_channels, name="translator")(student)
    teacher_factor, reconstruction = Paraphraser(self.factor_channels, name="paraphraser")(teacher)
    return student_factor, {"factor": teacher_factor, "reconstruction": reconstruction,
                            "feature": teacher}


def ft_heads_for(student_shape: tuple, teacher_shape: tuple, options: dict, **_) -> nn.Module:
  if len(student_shape) != 3 or len(teacher_shape) != 3:
    raise JaxkdError(f"ft: student feature {student_shape} and teacher feature {teacher_shape} "
                     "must both be [H, W, C] maps; pick convolutional layers.")
  return FactorTransferHeads(max(int(teacher_shape[-1] * options.get("rate", 0.5)), 1))


@register_term("ft_paraphraser", features=True, connector=ft_heads_for, connector_options=("rate",))
def ft_paraphraser(student: jax.Array, teacher: dict) -> jax.Array:
  """Kim et al. 2018 (FT), paraphraser stage: mean (P(F_t) - F_t)^2, P the autoencoder."""
  return jnp.mean((teacher["reconstruction"] - teacher["feature"]) ** 2)


def _factor_vector(factor: jax.Array, form: str) -> jax.Array:
  if form == "paper":
    return l2_normalize(factor.reshape(factor.shape[0], -1))
  if form == "crd_code":
    return l2_normalize(jnp.mean(factor**2, axis=-1).reshape(factor.shape[0], -1))
  raise JaxkdError(f"ft: form '{form}' is not one of ('paper', 'crd_code').")


@register_term("ft", features=True, connector=ft_heads_for, connector_options=("rate",))
def ft(student: jax.Array, teacher: dict, p: float = 1.0, form: str = "paper") -> jax.Array:
  """Kim et al. 2018 (FT). form='paper': mean_b ||u_s - u_t||_p with u = vec(factor) /
  ||vec(factor)||_2 per example (p = 1 in the paper). form='crd_code' (what the CRD
  benchmark runs, weight 200): u = normalize(mean_c factor^2), the factor's attention
  map, and mean |u_s - u_t|^p over all elements. The larger map is pooled to the
  smaller; the teacher's factor is a fixed target (its paraphraser trains in stage 1)."""
  student_factor, teacher_factor = same_spatial_size(student, teacher["factor"])
  difference = (_factor_vector(student_factor, form)
                - jax.lax.stop_gradient(_factor_vector(teacher_factor, form)))
  if form == "paper":
    return jnp.mean(jnp.sum(jnp.abs(difference) ** p, axis=1) ** (1.0 / p))
  return jnp.mean(jnp.abs(difference) ** p)
