"""Multi-layer perceptron on flattened inputs (Hinton et al. 2015's MNIST nets)."""

from typing import Sequence

import flax.linen as nn
import jax

from jaxkd.models import MODELS


@MODELS.register("mlp")
class MLP(nn.Module):
  """Dense-ReLU layers of the given widths, dropout after each, then a linear head."""

  num_classes: int
  widths: Sequence[int] = (1200, 1200)
  dropout: float = 0.0
  input_dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = x.reshape((x.shape[0], -1))
    x = nn.Dropout(self.input_dropout, deterministic=not train)(x)
    for i, width in enumerate(self.widths):
      x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name="head")(x)
