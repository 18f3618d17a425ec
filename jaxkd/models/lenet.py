"""LeNet-5 style CNN (LeCun et al. 1998), optionally with BatchNorm."""

import flax.linen as nn
import jax

from jaxkd.models.registry import MODELS


@MODELS.register("lenet")
class LeNet(nn.Module):
  """conv5x5(6)-pool-conv5x5(16)-pool-dense(120)-dense(84)-head, ReLU."""

  num_classes: int
  batch_norm: bool = False
  width_multiplier: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for i, features in enumerate((6, 16)):
      x = nn.Conv(features * self.width_multiplier, (5, 5), padding="SAME" if i == 0 else "VALID",
                  use_bias=not self.batch_norm, name=f"conv{i}")(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn{i}")(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    for i, features in enumerate((120, 84)):
      x = nn.relu(nn.Dense(features * self.width_multiplier, name=f"dense{i}")(x))
    return nn.Dense(self.num_classes, name="head")(x)
