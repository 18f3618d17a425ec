"""Multi-layer perceptron on flattened inputs (Hinton et al. 2015's MNIST nets)."""

from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models.registry import MODELS


@MODELS.register("mlp")
class MLP(nn.Module):
  """Dense-ReLU layers of the given widths, dropout after each, then a linear head."""

  num_classes: int
  widths: Sequence[int] = (1200, 1200)
  dropout: float = 0.0
  input_dropout: float = 0.0
  # Fields that may hold traced values (a population's members differ in them).
  traced_fields: ClassVar[tuple[str, ...]] = ("dropout", "input_dropout")

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = x.reshape((x.shape[0], -1))
    x = RateDropout(self.input_dropout, deterministic=not train, name="Dropout_0")(x)
    for i, width in enumerate(self.widths):
      x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
      x = RateDropout(self.dropout, deterministic=not train, name=f"Dropout_{i + 1}")(x)
    return nn.Dense(self.num_classes, name="head")(x)


class RateDropout(nn.Dropout):
  """nn.Dropout whose rate may also be a traced number (a population member's): the same
  random stream (its own scope's 'dropout' rng) and the same mask for the same rate, so a
  member equals the model built with that rate as a Python float."""

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng=None):
    if isinstance(self.rate, (int, float)):
      return super().__call__(inputs, deterministic, rng)
    if nn.merge_param("deterministic", self.deterministic, deterministic):
      return inputs
    keep = 1.0 - self.rate
    rng = self.make_rng(self.rng_collection) if rng is None else rng
    mask = jax.random.bernoulli(rng, p=keep, shape=inputs.shape)
    return jax.lax.select(mask, inputs / jnp.maximum(keep, 1e-12), jnp.zeros_like(inputs))
