"""CRD (Tian et al. 2020, contrastive representation distillation).

Its learnable parts (linear embedding heads for student and teacher) train with
the student; its memory banks (one row per training example, for each side) are
running state in the train state, updated functionally each step at the batch's
stable indices.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.distill.terms import l2_normalize, register_term


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

    negatives = jax.random.randint(self.make_rng("negatives"), (batch, self.num_negatives), 0,
                                   self.num_examples)
    contrast = jnp.concatenate([index[:, None], negatives], axis=1)
    score = lambda memory, embedding: jnp.exp(
        jnp.einsum("bkd,bd->bk", jax.lax.stop_gradient(memory)[contrast], embedding)
        / self.nce_temperature)
    scores_student = score(memory_teacher.value, embed_student)
    scores_teacher = score(memory_student.value, embed_teacher)
    if not self.is_initializing():
      # Z: fixed from the first batch (mean score times N), a constant afterwards.
      for z, scores in ((z_student, scores_student), (z_teacher, scores_teacher)):
        z.value = jnp.where(z.value < 0, jax.lax.stop_gradient(jnp.mean(scores)) * self.num_examples,
                            z.value)
      for memory, embedding in ((memory_student, embed_student), (memory_teacher, embed_teacher)):
        mixed = memory.value[index] * self.momentum + jax.lax.stop_gradient(embedding) * (1 - self.momentum)
        memory.value = memory.value.at[index].set(l2_normalize(mixed))
    return {"student": scores_student / jnp.abs(z_student.value),
            "teacher": scores_teacher / jnp.abs(z_teacher.value),
            "noise": self.num_negatives / self.num_examples}, None


def crd_heads_for(student_shape: tuple, teacher_shape: tuple, options: dict, num_examples: int,
                  **_) -> nn.Module:
  fields = ("feat_dim", "num_negatives", "nce_temperature", "momentum")
  return CRDHeads(num_examples, **{k: options[k] for k in fields if k in options})


def nce_loss(scores: jax.Array, noise: float, eps: float = 1e-7) -> jax.Array:
  """-(sum_b log h(positive_b) + sum_{b,k} log(1 - h(negative_bk))) / B with
  h(x) = x / (x + K/N): the NCE objective CRD optimises."""
  positive, negative = scores[:, 0], scores[:, 1:]
  log_positive = jnp.log(positive / (positive + noise + eps))
  log_negative = jnp.log(noise / (negative + noise + eps))
  return -(jnp.sum(log_positive) + jnp.sum(log_negative)) / scores.shape[0]


@register_term("crd", features=True, connector=crd_heads_for,
               connector_options=("feat_dim", "num_negatives", "nce_temperature", "momentum"))
def crd(student: dict, teacher: None) -> jax.Array:
  """Tian et al. 2020 (CRD): NCE(student embedding vs the teacher's memory) +
  NCE(teacher embedding vs the student's memory), K negatives from memory banks
  (defaults: 16384 negatives, temperature 0.07, momentum 0.5, 128-d embeddings)."""
  return nce_loss(student["student"], student["noise"]) + nce_loss(student["teacher"], student["noise"])
