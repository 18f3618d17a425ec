"""The pairs of experiments/bench_peers in PyTorch: the same layers, shapes and parameter
counts as jaxkd's models (jaxkd.models.mlp.MLP and the CRD benchmark's CIFAR ResNets)."""

import numpy as np
import torch
import torch.nn as nn

class MLP(nn.Module):
  """jaxkd.models.mlp.MLP: flatten, Linear-ReLU per width, linear head."""

  def __init__(self, in_features: int, widths, num_classes: int):
    super().__init__()
    layers, previous = [nn.Flatten()], in_features
    for width in widths:
      layers += [nn.Linear(previous, width), nn.ReLU()]
      previous = width
    self.body = nn.Sequential(*layers)
    self.fc = nn.Linear(previous, num_classes)

  def forward(self, x):
    return self.fc(self.body(x))


class BasicBlock(nn.Module):
  """The CRD benchmark's block: conv3x3-BN-ReLU-conv3x3-BN, plus the input (or a strided
  1x1 conv-BN of it when the shape changes), then ReLU."""

  def __init__(self, in_channels: int, channels: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(channels)
    self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(channels)
    self.downsample = None
    if stride != 1 or in_channels != channels:
      self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                      nn.BatchNorm2d(channels))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(nn.Module):
  """The CRD benchmark's CIFAR ResNet (depth 6n+2; resnet8x4 / resnet32x4 have widths
  32, 64, 128, 256): conv3x3-BN-ReLU, three stages of n blocks, 8x8 average pool, fc."""

  def __init__(self, depth: int, widths, num_classes: int):
    super().__init__()
    blocks = (depth - 2) // 6
    self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0])
    stages, previous = [], widths[0]
    for stage, channels in enumerate(widths[1:]):
      layer = []
      for block in range(blocks):
        layer.append(BasicBlock(previous, channels, 2 if stage > 0 and block == 0 else 1))
        previous = channels
      stages.append(nn.Sequential(*layer))
    self.layer1, self.layer2, self.layer3 = stages
    self.fc = nn.Linear(previous, num_classes)

  def forward(self, x):
    x = torch.relu(self.bn1(self.conv1(x)))
    x = self.layer3(self.layer2(self.layer1(x)))
    return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def torch_model(config: dict, pair) -> nn.Module:
  """The PyTorch model of one side (`config`: the pair's student or teacher) of a
  jaxkd.jobs.bench.Pair."""
  name = config["name"]
  if name == "mlp":
    return MLP(int(np.prod(pair.input_shape)), config["widths"], pair.num_classes)
  sizes = {"resnet8x4": 8, "resnet32x4": 32}
  if name in sizes:
    return CifarResNet(sizes[name], (32, 64, 128, 256), pair.num_classes)
  raise ValueError(f"no PyTorch version of '{name}' here")


def param_count(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())
