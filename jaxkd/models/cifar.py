"""CIFAR models of the CRD benchmark (Tian et al. 2020): ResNets, Wide ResNets, VGG.

Layer names follow the benchmark's (conv1, layer1..3, block1..3, block0..4,
fc) so that feature paths read like the published recipes. Besides each stage's
output (the benchmark's `feats`), the pre-activation features it distils for AB
and ReviewKD (`preact_feats`) have paths too: a ResNet block's sum before its
last ReLU is '<block>/preact', a VGG block's is its last BatchNorm
('block1/bn0'), a WRN stage's is the next stage's first BatchNorm ('block2_0/bn1',
and 'bn' after the last stage); the ResNet stem after its ReLU is 'stem'.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models.registry import MODELS


def register_variant(name: str, base: type[nn.Module], **defaults) -> None:
  """Registers `name` as `base` with other field defaults (a Flax subclass re-annotates them)."""
  annotations = {field: base.__annotations__[field] for field in defaults}
  MODELS.register(name)(type(name, (base,), {"__annotations__": annotations, **defaults}))


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
  # PyTorch's BatchNorm2d defaults: momentum 0.1 (flax: 0.9), epsilon 1e-5.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class GlobalPool(nn.Module):
  """Global average pooling as a module, so the penultimate embedding has a path ('pool')."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=(1, 2))


class Identity(nn.Module):
  """Returns its input: gives an intermediate value a feature path of its own."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return x


class BasicBlock(nn.Module):
  """conv3x3-BN-ReLU-conv3x3-BN plus identity (or 1x1 conv-BN) shortcut, then ReLU."""

  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    residual = x
    y = nn.Conv(self.features, (3, 3), self.stride, padding=1, use_bias=False, name="conv1")(x)
    y = nn.relu(batch_norm(train, "bn1")(y))
    y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, name="conv2")(y)
    y = batch_norm(train, "bn2")(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      residual = nn.Conv(self.features, (1, 1), self.stride, use_bias=False, name="downsample_conv")(x)
      residual = batch_norm(train, "downsample_bn")(residual)
    return nn.relu(Identity(name="preact")(y + residual))


class CifarResNet(nn.Module):
  """ResNet for 32x32 inputs (He et al. 2016): depth 6n+2, three stages of n blocks."""

  num_classes: int
  depth: int = 20
  widths: Sequence[int] = (16, 16, 32, 64)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    blocks = (self.depth - 2) // 6
    x = nn.Conv(self.widths[0], (3, 3), padding=1, use_bias=False, name="conv1")(x)
    x = Identity(name="stem")(nn.relu(batch_norm(train, "bn1")(x)))
    for stage, features in enumerate(self.widths[1:]):
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(features, stride, name=f"layer{stage + 1}_{block}")(x, train)
    return nn.Dense(self.num_classes, name="fc")(GlobalPool(name="pool")(x))


for _depth in (8, 14, 20, 32, 44, 56, 110):
  register_variant(f"resnet{_depth}", CifarResNet, depth=_depth)
register_variant("resnet8x4", CifarResNet, depth=8, widths=(32, 64, 128, 256))
register_variant("resnet32x4", CifarResNet, depth=32, widths=(32, 64, 128, 256))


class WideBlock(nn.Module):
  """Pre-activation block of Zagoruyko & Komodakis 2016: BN-ReLU-conv, BN-ReLU-conv."""

  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    activated = nn.relu(batch_norm(train, "bn1")(x))
    y = nn.Conv(self.features, (3, 3), self.stride, padding=1, use_bias=False, name="conv1")(activated)
    y = nn.relu(batch_norm(train, "bn2")(y))
    y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, name="conv2")(y)
    if x.shape[-1] == self.features:
      return x + y
    shortcut = nn.Conv(self.features, (1, 1), self.stride, use_bias=False, name="shortcut")(activated)
    return shortcut + y


class WideResNet(nn.Module):
  """WRN-depth-k: depth 6n+4, stage widths 16k, 32k, 64k."""

  num_classes: int
  depth: int = 16
  widen_factor: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    blocks = (self.depth - 4) // 6
    x = nn.Conv(16, (3, 3), padding=1, use_bias=False, name="conv1")(x)
    for stage, base in enumerate((16, 32, 64)):
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = WideBlock(base * self.widen_factor, stride, name=f"block{stage + 1}_{block}")(x, train)
    x = nn.relu(batch_norm(train, "bn")(x))
    return nn.Dense(self.num_classes, name="fc")(GlobalPool(name="pool")(x))


for _depth, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
  register_variant(f"wrn_{_depth}_{_k}", WideResNet, depth=_depth, widen_factor=_k)


class VGGBlock(nn.Module):
  """conv3x3-BN-ReLU layers; the block's output (a feature path) is after the last ReLU."""

  widths: Sequence[int]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i, features in enumerate(self.widths):
      x = nn.Conv(features, (3, 3), padding=1, name=f"conv{i}")(x)
      x = nn.relu(batch_norm(train, f"bn{i}")(x))
    return x


class VGG(nn.Module):
  """VGG with BatchNorm (Simonyan & Zisserman 2015), CIFAR version: five blocks of
  conv3x3-BN-ReLU, max-pooling between them, global pooling and one linear layer.

  As in the benchmark's code (RepDistiller models/vgg.py), the pooling after block 3
  runs only for 64x64 inputs: at 32x32, block 4 works on 4x4 maps, not 2x2.
  """

  num_classes: int
  blocks: Sequence[Sequence[int]] = ((64,), (128,), (256,), (512,), (512,))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    height = x.shape[1]
    for b, widths in enumerate(self.blocks):
      x = VGGBlock(tuple(widths), name=f"block{b}")(x, train)
      if b < len(self.blocks) - 2 or (b == len(self.blocks) - 2 and height == 64):
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return nn.Dense(self.num_classes, name="fc")(GlobalPool(name="pool")(x))


VGG_BLOCKS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}
for _name, _blocks in VGG_BLOCKS.items():
  register_variant(_name, VGG, blocks=_blocks)
