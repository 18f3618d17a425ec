"""Tf-KD's manually designed teacher (Yuan et al. 2020, "Revisiting Knowledge Distillation via
Label Smoothing Regularization"): distillation with no teacher network, from a virtual
teacher that gives the true class probability `correct_prob` and the others an even share.

The authors' code (loss_kd_regularization in their my_loss_function.py) softens the
virtual teacher's *probabilities* by the temperature, p = softmax(u / T) with u the
one-hot-like vector, compares them with the student's untempered log-softmax through
torch's KLDivLoss with its default reduction (the mean over all B * C entries), and
multiplies by `multiplier` (100 in their CIFAR-100 configs). This term computes exactly
that (tests/reference/make_self_kd_fixtures.py runs their function); the ce beside it is a
ce term: their (1 - alpha) CE + alpha * regularizer is ce weight 1 - alpha and this term's
weight alpha. reduction='batchmean' divides by the batch size instead (the KL per example),
as the paper's formula reads.
"""

import jax
import jax.numpy as jnp

from jaxkd.distill.ce import labeled_weights
from jaxkd.distill.terms import TermInputs, register_term
from jaxkd.errors import JaxkdError


@register_term("virtual_teacher", uses_teacher=False, needs_labels=True)
def virtual_teacher(inputs: TermInputs, correct_prob: float = 0.99, temperature: float = 20.0,
                    multiplier: float = 1.0, reduction: str = "mean") -> jax.Array:
  """Yuan et al. 2020 (Tf-KD_reg): multiplier * KL(softmax(u / T) || softmax(s)), u_c =
  correct_prob for the label, (1 - correct_prob) / (C - 1) for the others; over the labeled
  examples, the mean over examples and classes (reduction 'mean', the authors') or over
  examples ('batchmean')."""
  if reduction not in ("mean", "batchmean"):
    raise JaxkdError(f"virtual_teacher: reduction must be 'mean' or 'batchmean', got {reduction!r}.")
  logits = inputs.student_logits
  classes = logits.shape[-1]
  labels = jnp.maximum(inputs.labels, 0)
  virtual = jnp.where(jax.nn.one_hot(labels, classes) > 0, correct_prob,
                      (1 - correct_prob) / (classes - 1))
  target = jax.nn.softmax(virtual / temperature, axis=-1)
  log_student = jax.nn.log_softmax(logits, axis=-1)
  per_example = jnp.sum(target * (jnp.log(target) - log_student), axis=-1)
  weights = labeled_weights(inputs)
  count = jnp.maximum(jnp.sum(weights), 1.0) * (classes if reduction == "mean" else 1)
  return multiplier * jnp.sum(per_example * weights) / count
