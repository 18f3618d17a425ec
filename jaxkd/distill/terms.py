"""What every term sees, the term registry, and helpers shared by logit terms."""

import inspect
from typing import Callable

import flax
import jax
import jax.numpy as jnp

from jaxkd.registry import Registry

TERMS: Registry[Callable] = Registry("objective term")


def register_term(name: str, uses_teacher: bool = True, features: bool = False,
                  connector: Callable | None = None, connector_options: tuple[str, ...] = ()):
  """Registers a term under `name`.

  Logit terms: `fn(inputs: TermInputs, **options) -> scalar`. Feature terms
  (features=True): `fn(student_feature, teacher_feature, **options) -> scalar`,
  with options `student` and `teacher` naming the feature paths, and a
  `connector(student_shape, teacher_shape, options=..., num_examples=..., train_labels=...)` that
  returns a Flax module or None, and raises JaxkdError for shapes the method
  cannot bridge. The module is called as (student, teacher, index) -> (student',
  teacher') before the term; its params train with the student, and any other
  collection (e.g. 'memory') is running state. `connector_options` are options
  the connector reads rather than the term.
  """

  if features and connector is None:
    raise ValueError(f"feature term '{name}' needs a connector (or a shape check returning None)")

  def add(fn):
    fn.uses_teacher = uses_teacher
    fn.features = features
    fn.connector = connector
    fn.connector_options = connector_options
    fn.term_options = set(inspect.signature(fn).parameters) - {"inputs", "student", "teacher"}
    return TERMS.register(name)(fn)

  return add


@flax.struct.dataclass
class TermInputs:
  """The batch as the objective sees it.

  student_logits [B, C]; teacher_logits [K, B, C] for K teachers (None without
  a teacher); labels [B] hard labels; targets [B, C] label distributions (one-hot,
  or mixed by mixup); step and steps_per_epoch for warm-ups; the captured
  features of the paths that feature terms name.
  """

  student_logits: jax.Array
  teacher_logits: jax.Array | None
  labels: jax.Array
  targets: jax.Array
  step: jax.Array
  steps_per_epoch: int = flax.struct.field(pytree_node=False, default=1)
  student_features: dict = flax.struct.field(default_factory=dict)  # path -> [B, ...]
  teacher_features: dict = flax.struct.field(default_factory=dict)  # path -> [K, B, ...]
  index: jax.Array | None = None  # [B] stable example indices (memory banks)
  key: jax.Array | None = None  # randomness of the step (e.g. sampled negatives)


def standardize(logits: jax.Array) -> jax.Array:
  """Sun et al. 2024 (Logit Standardization in KD): z -> (z - mean(z)) / (1e-7 + std(z))
  per example, std the unbiased (C - 1) estimate, as the authors' code (torch.std) computes."""
  mean = jnp.mean(logits, axis=-1, keepdims=True)
  std = jnp.std(logits, axis=-1, keepdims=True, ddof=1)
  return (logits - mean) / (std + 1e-7)


def epoch_warmup(step: jax.Array, steps_per_epoch: int, warmup_epochs: float) -> jax.Array:
  """min(epoch / warmup_epochs, 1) with the 1-based epoch number (epoch 1 during the first
  epoch), constant within an epoch: the warm-up of mdistiller's DKD and ReviewKD."""
  if warmup_epochs <= 0:
    return jnp.asarray(1.0)
  epoch = step // steps_per_epoch + 1
  return jnp.minimum(epoch / warmup_epochs, 1.0)


def scaled(logits: jax.Array, temperature, standardized: bool) -> jax.Array:
  return (standardize(logits) if standardized else logits) / temperature


def teacher_probs(inputs: TermInputs, temperature, standardized: bool = False) -> jax.Array:
  """Teacher probabilities at `temperature`, averaged over the K teachers: [B, C]."""
  teacher = jax.lax.stop_gradient(inputs.teacher_logits)
  return jnp.mean(jax.nn.softmax(scaled(teacher, temperature, standardized), axis=-1), axis=0)


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """x / ||x|| along `axis`; eps inside the root keeps a zero vector at 0 with a finite
  gradient (RKD's i == j direction, an all-zero feature map)."""
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=axis, keepdims=True) + 1e-12)


def kl_divergence(target_probs: jax.Array, log_probs: jax.Array) -> jax.Array:
  """KL(target || model) per example, with 0 * log 0 = 0."""
  return jnp.sum(jax.scipy.special.xlogy(target_probs, target_probs) - target_probs * log_probs,
                 axis=-1)


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
  """PyTorch's adaptive_avg_pool2d to size x size for [B, H, W, C] features."""
  height, width = x.shape[1:3]
  if (height, width) == (size, size):
    return x
  if height % size == 0 and width % size == 0:
    return jnp.mean(x.reshape(x.shape[0], size, height // size, size, width // size, x.shape[-1]),
                    axis=(2, 4))
  bounds = lambda n: [((i * n) // size, -((-(i + 1) * n) // size)) for i in range(size)]
  return jnp.stack([jnp.stack([jnp.mean(x[:, top:bottom, left:right], axis=(1, 2))
                               for left, right in bounds(width)], axis=1)
                    for top, bottom in bounds(height)], axis=1)


def same_spatial_size(student: jax.Array, teacher: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Pools the larger of two [B, H, W, C] maps down to the smaller one's size (square maps)."""
  size = min(student.shape[1], teacher.shape[1])
  return adaptive_avg_pool(student, size), adaptive_avg_pool(teacher, size)
