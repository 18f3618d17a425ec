"""The hard-label term: cross-entropy with the labels (optionally smoothed)."""

import jax
import jax.numpy as jnp
import optax

from jaxkd.data.batches import counted
from jaxkd.distill.terms import TermInputs, register_term


@register_term("ce", uses_teacher=False)
def ce(inputs: TermInputs, label_smoothing: float = 0.0) -> jax.Array:
  """Cross-entropy with the labels: -sum_c y_c log softmax(s)_c, y smoothed as
  (1 - eps) * y + eps / C (Szegedy et al. 2016), averaged over the labeled examples only
  (label >= 0, and mask 1 where a mask is given): a transfer set's unlabeled examples and
  a batch's padding count for nothing. Over a sharded batch the sums are global, so the
  mean is the same on any number of devices."""
  targets = optax.smooth_labels(inputs.targets, label_smoothing)
  weights = labeled_weights(inputs)
  losses = optax.softmax_cross_entropy(inputs.student_logits, targets)
  return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def labeled_weights(inputs: TermInputs) -> jax.Array:
  """1 for the examples (or tokens: labels [B, T]) with a label (label >= 0) that count
  (mask [B]), else 0: the labels' shape."""
  return counted(inputs.labels, inputs.mask)
