"""CRD (Tian et al. 2020, contrastive representation distillation).

Its learnable parts (linear embedding heads for student and teacher) train with
the student; its memory banks (one row per training example, for each side) are
running state in the train state, updated functionally each step at the batch's
stable indices.
"""

import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.distill.terms import Method, TermInputs, l2_normalize, own, register_method
from jaxkd.errors import JaxkdError

NEGATIVES = ("other_classes", "uniform")


class ClassLayout:
  """The training labels grouped by class, for drawing negatives of other classes.

  order: example indices sorted by label; start/count: each class's block in it;
  labels: each example's label. Compared by identity (a module field that is hashed).
  """

  def __init__(self, labels: np.ndarray):
    labels = np.asarray(labels, np.int32)
    if len(np.unique(labels)) < 2:
      raise JaxkdError("crd: negatives='other_classes' needs training examples of at least two "
                       "classes; set negatives='uniform'.")
    num_classes = int(labels.max()) + 1
    self.labels = labels
    self.order = np.argsort(labels, kind="stable").astype(np.int32)
    self.count = np.bincount(labels, minlength=num_classes).astype(np.int32)
    self.start = (np.cumsum(self.count) - self.count).astype(np.int32)


def sample_other_class(key: jax.Array, index: jax.Array, layout: ClassLayout,
                       num_samples: int) -> jax.Array:
  """[B, num_samples] example indices drawn uniformly, with replacement, from the
  examples whose label differs from example index[b]'s."""
  label = jnp.asarray(layout.labels)[index]
  count, start = jnp.asarray(layout.count)[label], jnp.asarray(layout.start)[label]
  others = len(layout.labels) - count  # [B]
  u = jax.random.randint(key, (index.shape[0], num_samples), 0, others[:, None])
  position = u + jnp.where(u >= start[:, None], count[:, None], 0)  # Skip the own class.
  return jnp.asarray(layout.order)[position]


def contrast_scores(memory: jax.Array, embedding: jax.Array, contrast: jax.Array,
                    temperature: float) -> jax.Array:
  """exp(<memory row, embedding> / T) for each example's contrast rows: [B, K+1]."""
  rows = jax.lax.stop_gradient(memory)[contrast]
  return jnp.exp(jnp.einsum("bkd,bd->bk", rows, embedding) / temperature)


def update_memory(memory: jax.Array, embedding: jax.Array, index: jax.Array,
                  momentum: float) -> jax.Array:
  """Rows `index` <- normalize(momentum * row + (1 - momentum) * embedding)."""
  mixed = memory[index] * momentum + jax.lax.stop_gradient(embedding) * (1 - momentum)
  return memory.at[index].set(l2_normalize(mixed))


class CRDHeads(nn.Module):
  """Embeds both sides and scores each example against K sampled negatives.

  Returns {'student': [B, K+1], 'teacher': [B, K+1], 'noise': K/N}: column 0 is
  the positive (the example's own row), scores are exp(<memory row, embedding> / T)
  normalised by a constant Z fixed at the first step. The student's embedding is
  scored against the teacher's memory and vice versa, as in CRD's reference code.
  """

  num_examples: int
  feat_dim: int = 128
  num_negatives: int = 16384
  nce_temperature: float = 0.07
  momentum: float = 0.5
  class_layout: Any = None  # ClassLayout: negatives from other classes; None: uniform

  @nn.compact
  def __call__(self, student: jax.Array, teacher: jax.Array, index: jax.Array):
    batch = student.shape[0]
    embed_student = l2_normalize(nn.Dense(self.feat_dim, name="embed_student")(student.reshape(batch, -1)))
    embed_teacher = l2_normalize(nn.Dense(self.feat_dim, name="embed_teacher")(teacher.reshape(batch, -1)))
    bound = 1.0 / math.sqrt(self.feat_dim / 3)
    init = lambda: jax.random.uniform(self.make_rng("negatives"), (self.num_examples, self.feat_dim),
                                      minval=-bound, maxval=bound)
    memory_student = self.variable("memory", "student", init)
    memory_teacher = self.variable("memory", "teacher", init)
    z_student = self.variable("memory", "z_student", lambda: jnp.array(-1.0))
    z_teacher = self.variable("memory", "z_teacher", lambda: jnp.array(-1.0))

    if self.class_layout is None:
      negatives = jax.random.randint(self.make_rng("negatives"), (batch, self.num_negatives), 0,
                                     self.num_examples)
    else:
      negatives = sample_other_class(self.make_rng("negatives"), index, self.class_layout,
                                     self.num_negatives)
    contrast = jnp.concatenate([index[:, None], negatives], axis=1)
    scores_student = contrast_scores(memory_teacher.value, embed_student, contrast,
                                     self.nce_temperature)
    scores_teacher = contrast_scores(memory_student.value, embed_teacher, contrast,
                                     self.nce_temperature)
    if not self.is_initializing():
      # Z: fixed from the first batch (mean score times N), a constant afterwards.
      for z, scores in ((z_student, scores_student), (z_teacher, scores_teacher)):
        z.value = jnp.where(z.value < 0, jax.lax.stop_gradient(jnp.mean(scores)) * self.num_examples,
                            z.value)
      for memory, embedding in ((memory_student, embed_student), (memory_teacher, embed_teacher)):
        memory.value = update_memory(memory.value, embedding, index, self.momentum)
    return {"student": scores_student / jnp.abs(z_student.value),
            "teacher": scores_teacher / jnp.abs(z_teacher.value),
            "noise": self.num_negatives / self.num_examples}


def nce_loss(scores: jax.Array, noise: float, eps: float = 1e-7) -> jax.Array:
  """-(sum_b log h(positive_b) + sum_{b,k} log(1 - h(negative_bk))) / B with
  h(x) = x / (x + K/N): the NCE objective CRD optimises."""
  positive, negative = scores[:, 0], scores[:, 1:]
  log_positive = jnp.log(positive / (positive + noise + eps))
  log_negative = jnp.log(noise / (negative + noise + eps))
  return -(jnp.sum(log_positive) + jnp.sum(log_negative)) / scores.shape[0]


def crd(scores: dict) -> jax.Array:
  """Tian et al. 2020 (CRD): NCE(student embedding vs the teacher's memory) +
  NCE(teacher embedding vs the student's memory), on CRDHeads' scores."""
  return nce_loss(scores["student"], scores["noise"]) + nce_loss(scores["teacher"], scores["noise"])


@register_method("crd")
class CRD(Method):
  """Tian et al. 2020 (CRD): `crd` with K negatives from memory banks (defaults: 16384
  negatives, temperature 0.07, momentum 0.5, 128-d embeddings). Its embedding heads are
  its learnable part, its memory banks its running state (CRDHeads).

  negatives='other_classes' (default) draws them from examples of other classes, as
  the benchmark's CIFAR-100 loader does (mode 'exact'); 'uniform' from all examples.
  Draws are with replacement; the benchmark's are without replacement when K is at
  most the pool (16384 of 49,500 on CIFAR-100): a few repeated negatives per row.
  """

  feat_dim: int = 128
  num_negatives: int = 16384
  nce_temperature: float = 0.07
  momentum: float = 0.5
  negatives: str = "other_classes"
  num_examples: int = 0  # From the transfer set (with_data), not options.
  class_layout: Any = None
  data_fields: ClassVar[tuple[str, ...]] = ("num_examples", "class_layout")
  features = True

  def check_shapes(self, student_shape, teacher_shape) -> None:
    if self.negatives not in NEGATIVES:
      raise JaxkdError(f"crd: negatives='{self.negatives}' is not one of {NEGATIVES}.")

  def with_data(self, num_examples: int, train_labels) -> "CRD":
    self.check_shapes(None, None)
    layout = None
    if self.negatives == "other_classes":
      if train_labels is None:
        raise JaxkdError("crd: negatives='other_classes' needs the training labels in memory, "
                         "which a streamed dataset does not hold; set negatives='uniform'.")
      if np.any(np.asarray(train_labels) < 0):
        raise JaxkdError("crd: negatives='other_classes' needs every example's label, but the "
                         "transfer set has unlabeled examples; set negatives='uniform'.")
      layout = ClassLayout(train_labels)
    return self.clone(num_examples=num_examples, class_layout=layout)

  @nn.compact
  def __call__(self, inputs: TermInputs) -> jax.Array:
    heads = own(self, CRDHeads(self.num_examples, self.feat_dim, self.num_negatives,
                               self.nce_temperature, self.momentum, self.class_layout))
    return crd(heads(inputs.student, inputs.teacher, inputs.index))
