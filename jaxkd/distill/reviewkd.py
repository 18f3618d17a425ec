"""ReviewKD (Chen et al. 2021, distilling knowledge via knowledge review).

The student's features from several stages (shallow to deep, the last may be
the pooled embedding) are fused from the deepest up by attention-based fusion
(ABF) modules, each producing the teacher's channels at the teacher's size for
its level, and matched to the teacher's features at every level by the
hierarchical context loss. Layer shapes follow the reference code (mdistiller):
mid channels min(512, the deepest student's channels), nearest-neighbour
resizing, BatchNorm after each convolution. Name the paths as tuples:
student=('layer1_2', 'layer2_2', 'layer3_2', 'pool'), the teacher's likewise.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.distill.terms import adaptive_avg_pool, register_term
from jaxkd.errors import JaxkdError


def _as_map(feature: jax.Array) -> jax.Array:
  """[B, C] embeddings as [B, 1, 1, C] maps."""
  return feature if feature.ndim == 4 else feature[:, None, None, :]


def _resize(x: jax.Array, size: int) -> jax.Array:
  if x.shape[1] == size:
    return x
  return jax.image.resize(x, (x.shape[0], size, size, x.shape[-1]), "nearest")


def _bn(name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, name=name)


class ABF(nn.Module):
  """Attention-based fusion: 1x1 conv to mid channels; fused with the deeper level's
  output by a 2-channel sigmoid attention; resized to the teacher's size; 3x3 conv
  to the teacher's channels. Returns (output, residual for the next level)."""

  mid_channels: int
  out_channels: int
  out_size: int
  fuse: bool

  @nn.compact
  def __call__(self, x: jax.Array, residual: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    x = _bn("bn1")(nn.Conv(self.mid_channels, (1, 1), use_bias=False, name="conv1")(x))
    if self.fuse:
      y = _resize(residual, x.shape[1])
      attention = jax.nn.sigmoid(nn.Conv(2, (1, 1), name="att_conv")(jnp.concatenate([x, y], -1)))
      x = x * attention[..., 0:1] + y * attention[..., 1:2]
    x = _resize(x, self.out_size)
    out = _bn("bn2")(nn.Conv(self.out_channels, (3, 3), padding="SAME", use_bias=False,
                             name="conv2")(x))
    return out, x


class ReviewHeads(nn.Module):
  """Student features (shallow -> deep) -> one output per level at the teacher's shape."""

  teacher_shapes: tuple[tuple[int, ...], ...]
  mid_channels: int

  @nn.compact
  def __call__(self, student: tuple) -> tuple:
    levels = len(student)
    outputs, residual = [None] * levels, None
    for level in reversed(range(levels)):
      shape = self.teacher_shapes[level]
      size = shape[0] if len(shape) == 3 else 1
      outputs[level], residual = ABF(self.mid_channels, shape[-1], size, residual is not None,
                                     name=f"abf{level}")(_as_map(student[level]), residual)
    return tuple(outputs)


def review_heads_for(student_shapes: tuple, teacher_shapes: tuple) -> ReviewHeads:
  if isinstance(student_shapes[0], int) or len(student_shapes) != len(teacher_shapes):
    raise JaxkdError("reviewkd: name the same number of layers on each side as tuples, e.g. "
                     "student=('layer1_2', 'layer2_2', 'layer3_2', 'pool').")
  for s, t in zip(student_shapes, teacher_shapes):
    if len(s) not in (1, 3) or len(t) not in (1, 3):
      raise JaxkdError(f"reviewkd: features {s} and {t} must be [H, W, C] maps or [C] embeddings.")
  return ReviewHeads(tuple(tuple(t) for t in teacher_shapes), min(512, student_shapes[-1][-1]))


def hierarchical_context_loss(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """mse + sum over pyramid levels l in (4, 2, 1) smaller than the map of
  2^-k * mse(pool_l(s), pool_l(t)), divided by the sum of the level weights."""
  loss, weight, total = jnp.mean((student - teacher) ** 2), 1.0, 1.0
  for size in (4, 2, 1):
    if size >= student.shape[1]:
      continue
    weight /= 2.0
    loss = loss + weight * jnp.mean((adaptive_avg_pool(student, size)
                                     - adaptive_avg_pool(teacher, size)) ** 2)
    total += weight
  return loss / total


@register_term("reviewkd", features=True, connector=review_heads_for)
def reviewkd(student: tuple, teacher: tuple) -> jax.Array:
  """Chen et al. 2021 (ReviewKD): sum over levels of the hierarchical context loss between
  the fused student output and the teacher's feature (usual weight 1 with a 20-epoch
  warm-up on CIFAR-100: weight_schedule='warmup', weight_warmup_epochs=20)."""
  return sum(hierarchical_context_loss(s, jax.lax.stop_gradient(_as_map(t)))
             for s, t in zip(student, teacher))
