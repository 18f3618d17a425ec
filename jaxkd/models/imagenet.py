"""ImageNet ResNets (He et al. 2016): ResNet-18, ResNet-34 (basic blocks), ResNet-50
(bottlenecks), torchvision's layout: 7x7/2 stem, 3x3/2 max-pool, four stages."""

from typing import Sequence

import flax.linen as nn
import jax

from jaxkd.models.cifar import BasicBlock, GlobalPool, batch_norm, register_variant


class Bottleneck(nn.Module):
  """1x1 reduce - 3x3 (stride) - 1x1 expand (x4), BN after each, projection shortcut."""

  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.relu(batch_norm(train, "bn1")(nn.Conv(self.features, (1, 1), use_bias=False, name="conv1")(x)))
    y = nn.Conv(self.features, (3, 3), self.stride, padding=1, use_bias=False, name="conv2")(y)
    y = nn.relu(batch_norm(train, "bn2")(y))
    y = batch_norm(train, "bn3")(nn.Conv(4 * self.features, (1, 1), use_bias=False, name="conv3")(y))
    residual = x
    if self.stride != 1 or x.shape[-1] != 4 * self.features:
      residual = nn.Conv(4 * self.features, (1, 1), self.stride, use_bias=False,
                         name="downsample_conv")(x)
      residual = batch_norm(train, "downsample_bn")(residual)
    return nn.relu(y + residual)


class ImageNetResNet(nn.Module):
  num_classes: int
  blocks: Sequence[int] = (2, 2, 2, 2)
  bottleneck: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = nn.Conv(64, (7, 7), 2, padding=3, use_bias=False, name="conv1")(x)
    x = nn.relu(batch_norm(train, "bn1")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    block = Bottleneck if self.bottleneck else BasicBlock
    for stage, (count, features) in enumerate(zip(self.blocks, (64, 128, 256, 512))):
      for i in range(count):
        stride = 2 if stage > 0 and i == 0 else 1
        x = block(features, stride, name=f"layer{stage + 1}_{i}")(x, train)
    return nn.Dense(self.num_classes, name="fc")(GlobalPool(name="pool")(x))


register_variant("resnet18", ImageNetResNet, blocks=(2, 2, 2, 2))
register_variant("resnet34", ImageNetResNet, blocks=(3, 4, 6, 3))
register_variant("resnet50", ImageNetResNet, blocks=(3, 4, 6, 3), bottleneck=True)
