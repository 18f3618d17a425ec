"""Mobile CIFAR models of the CRD benchmark (Tian et al. 2020): MobileNetV2, ShuffleNetV1/V2.

The architectures follow the benchmark's code (github.com/HobbitLong/RepDistiller,
models/mobilenetv2.py `mobile_half`, models/ShuffleNetv1.py `ShuffleV1`,
models/ShuffleNetv2.py `ShuffleV2`), which adapts to 32x32 inputs:
- MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear
  Bottlenecks"): `mobile_half` is expansion T=6 and width 0.5, a stride-2 stem then the
  paper's stage strides (1, 1, 2, 2, 1, 2, 1), so 32x32 ends at 2x2; every block keeps its
  1x1 expansion (also at t=1) and the head is 1280 wide.
- ShuffleNetV1 (Zhang et al. 2018, "ShuffleNet: An Extremely Efficient Convolutional
  Neural Network for Mobile Devices"): 1x1 stem of 24, stages of 240, 480, 960 channels
  with 4, 8, 4 blocks, 3 groups; the first 1x1 of the first block is not grouped.
- ShuffleNetV2 (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN
  Architecture Design"): net size 1, 1x1 stem of 24, stages of 116, 232, 464 channels
  (a down-sampling block then 3, 7, 3 basic blocks), a 1x1 conv to 1024.

Layer names follow the benchmark's (conv1, blocks_0..6, layer1..3, conv2; the linear layer
is 'fc' as in every jaxkd model). The benchmark's intermediate features (its `is_feat`
list) are module outputs here: MobileNetV2 conv1, blocks_1, blocks_2, blocks_4, blocks_6
and pool; ShuffleNets layer1, layer2, layer3 and pool (their stem feature is relu(bn1),
which, as for the ResNets, is no module's output).
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models.cifar import GlobalPool, batch_norm, register_variant


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """NHWC channel shuffle: channel g * (C / groups) + i moves to i * groups + g."""
  *batch, channels = x.shape
  x = x.reshape(*batch, groups, channels // groups)
  return jnp.swapaxes(x, -1, -2).reshape(*batch, channels)


def depthwise_conv(features: int, stride: int, name: str) -> nn.Conv:
  return nn.Conv(features, (3, 3), stride, padding=1, feature_group_count=features,
                 use_bias=False, name=name)


# ---------------------------------------------------------------------------- MobileNetV2


class ConvBNReLU(nn.Module):
  """conv (3x3 or 1x1) - BN - ReLU, the benchmark's conv_bn / conv_1x1_bn."""

  features: int
  kernel: int = 3
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Conv(self.features, (self.kernel, self.kernel), self.stride,
                padding=self.kernel // 2, use_bias=False, name="conv")(x)
    return nn.relu(batch_norm(train, "bn")(x))


class InvertedResidual(nn.Module):
  """1x1 expand-BN-ReLU, 3x3 depthwise-BN-ReLU, 1x1 linear projection-BN, plus the input
  when the shape is kept (no ReLU after the sum)."""

  features: int
  stride: int
  expansion: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    hidden = x.shape[-1] * self.expansion
    y = nn.Conv(hidden, (1, 1), use_bias=False, name="conv1")(x)
    y = nn.relu(batch_norm(train, "bn1")(y))
    y = depthwise_conv(hidden, self.stride, "conv2")(y)
    y = nn.relu(batch_norm(train, "bn2")(y))
    y = nn.Conv(self.features, (1, 1), use_bias=False, name="conv3")(y)
    y = batch_norm(train, "bn3")(y)
    if self.stride == 1 and x.shape[-1] == self.features:
      return x + y
    return y


class MobileStage(nn.Module):
  """`num_blocks` inverted residuals, the first with `stride`; its output is a feature path."""

  features: int
  num_blocks: int
  stride: int
  expansion: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(self.num_blocks):
      x = InvertedResidual(self.features, self.stride if i == 0 else 1, self.expansion,
                           name=f"block{i}")(x, train)
    return x


class MobileNetV2(nn.Module):
  """MobileNetV2 of the CRD benchmark; the defaults are its `mobile_half` (T=6, width 0.5).

  `settings` rows are (expansion or None for T, channels, blocks, stride) before the width
  multiplier, as in the benchmark's `interverted_residual_setting`.
  """

  num_classes: int
  expansion: int = 6
  width_mult: float = 0.5
  settings: Sequence[Sequence[int | None]] = (
      (1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
      (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = ConvBNReLU(int(32 * self.width_mult), 3, 2, name="conv1")(x, train)
    for i, (t, c, n, s) in enumerate(self.settings):
      x = MobileStage(int(c * self.width_mult), n, s, self.expansion if t is None else t,
                      name=f"blocks_{i}")(x, train)
    last = int(1280 * self.width_mult) if self.width_mult > 1.0 else 1280
    x = ConvBNReLU(last, 1, 1, name="conv2")(x, train)
    return nn.Dense(self.num_classes, name="fc")(GlobalPool(name="pool")(x))


register_variant("mobilenetv2", MobileNetV2)


# ---------------------------------------------------------------------------- ShuffleNetV1


class ShuffleV1Block(nn.Module):
  """Grouped 1x1-BN-ReLU, channel shuffle, 3x3 depthwise-BN-ReLU, grouped 1x1-BN, then
  ReLU of the sum with the input, or (stride 2) of the concatenation with its 3x3 average
  pool. `features` is the residual branch's width (the stage width less the input's when
  concatenating)."""

  features: int
  stride: int
  groups: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    mid = self.features // 4
    # The benchmark does not group the first 1x1 of the network's first block (24 inputs).
    first_groups = 1 if x.shape[-1] == 24 else self.groups
    y = nn.Conv(mid, (1, 1), feature_group_count=first_groups, use_bias=False, name="conv1")(x)
    y = nn.relu(batch_norm(train, "bn1")(y))
    y = channel_shuffle(y, first_groups)
    # The benchmark has a ReLU after the depthwise conv (the paper has none there).
    y = depthwise_conv(mid, self.stride, "conv2")(y)
    y = nn.relu(batch_norm(train, "bn2")(y))
    y = nn.Conv(self.features, (1, 1), feature_group_count=self.groups, use_bias=False,
                name="conv3")(y)
    y = batch_norm(train, "bn3")(y)
    if self.stride == 2:
      # PyTorch's AvgPool2d(3, 2, padding=1) counts the zero padding in the average.
      shortcut = nn.avg_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)),
                             count_include_pad=True)
      return nn.relu(jnp.concatenate([y, shortcut], axis=-1))
    return nn.relu(y + x)


class ShuffleV1Stage(nn.Module):
  features: int
  num_blocks: int
  groups: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(self.num_blocks):
      width = self.features - x.shape[-1] if i == 0 else self.features
      x = ShuffleV1Block(width, 2 if i == 0 else 1, self.groups, name=f"block{i}")(x, train)
    return x


class ShuffleNetV1(nn.Module):
  """ShuffleNetV1 of the CRD benchmark (`ShuffleV1`): three stride-2 stages after a 1x1 stem."""

  num_classes: int
  widths: Sequence[int] = (240, 480, 960)
  num_blocks: Sequence[int] = (4, 8, 4)
  groups: int = 3

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = nn.Conv(24, (1, 1), use_bias=False, name="conv1")(x)
    x = nn.relu(batch_norm(train, "bn1")(x))
    for i, (width, blocks) in enumerate(zip(self.widths, self.num_blocks)):
      x = ShuffleV1Stage(width, blocks, self.groups, name=f"layer{i + 1}")(x, train)
    return nn.Dense(self.num_classes, name="fc")(GlobalPool(name="pool")(x))


register_variant("shufflenetv1", ShuffleNetV1)


# ---------------------------------------------------------------------------- ShuffleNetV2


def shuffle_v2_branch(x: jax.Array, width: int, stride: int, train: bool, first: int) -> jax.Array:
  """ShuffleNetV2's convolutional branch, 1x1-BN-ReLU, 3x3 depthwise (stride)-BN,
  1x1-BN-ReLU, its layers named conv/bn `first` .. `first + 2` in the calling module."""
  names = [(f"conv{first + i}", f"bn{first + i}") for i in range(3)]
  x = nn.relu(batch_norm(train, names[0][1])(nn.Conv(width, (1, 1), use_bias=False,
                                                     name=names[0][0])(x)))
  x = batch_norm(train, names[1][1])(depthwise_conv(width, stride, names[1][0])(x))
  return nn.relu(batch_norm(train, names[2][1])(nn.Conv(width, (1, 1), use_bias=False,
                                                        name=names[2][0])(x)))


class ShuffleV2Block(nn.Module):
  """Splits the channels in half; the second half goes through 1x1-BN-ReLU, 3x3
  depthwise-BN, 1x1-BN-ReLU; concatenated back after the first half, then shuffled."""

  split_ratio: float = 0.5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    width = int(x.shape[-1] * self.split_ratio)  # The benchmark's branch width (C even here).
    x1, x2 = x[..., :width], x[..., width:]
    y = shuffle_v2_branch(x2, width, 1, train, first=1)
    return channel_shuffle(jnp.concatenate([x1, y], axis=-1), 2)


class ShuffleV2DownBlock(nn.Module):
  """Stride-2 block: left 3x3 depthwise-BN, 1x1-BN-ReLU; right 1x1-BN-ReLU, 3x3
  depthwise-BN, 1x1-BN-ReLU; each half of `features`, concatenated, then shuffled."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    mid = self.features // 2
    left = batch_norm(train, "bn1")(depthwise_conv(x.shape[-1], 2, "conv1")(x))
    left = nn.Conv(mid, (1, 1), use_bias=False, name="conv2")(left)
    left = nn.relu(batch_norm(train, "bn2")(left))
    right = shuffle_v2_branch(x, mid, 2, train, first=3)
    return channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class ShuffleV2Stage(nn.Module):
  """A down-sampling block ('down') then `num_blocks` basic blocks ('block0', ...)."""

  features: int
  num_blocks: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = ShuffleV2DownBlock(self.features, name="down")(x, train)
    for i in range(self.num_blocks):
      x = ShuffleV2Block(name=f"block{i}")(x, train)
    return x


class ShuffleNetV2(nn.Module):
  """ShuffleNetV2 of the CRD benchmark (`ShuffleV2`, net size 1)."""

  num_classes: int
  widths: Sequence[int] = (116, 232, 464, 1024)
  num_blocks: Sequence[int] = (3, 7, 3)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = nn.Conv(24, (1, 1), use_bias=False, name="conv1")(x)
    x = nn.relu(batch_norm(train, "bn1")(x))
    for i, (width, blocks) in enumerate(zip(self.widths[:-1], self.num_blocks)):
      x = ShuffleV2Stage(width, blocks, name=f"layer{i + 1}")(x, train)
    x = nn.Conv(self.widths[-1], (1, 1), use_bias=False, name="conv2")(x)
    x = nn.relu(batch_norm(train, "bn2")(x))
    return nn.Dense(self.num_classes, name="fc")(GlobalPool(name="pool")(x))


register_variant("shufflenetv2", ShuffleNetV2)
