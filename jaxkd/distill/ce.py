"""The hard-label term: cross-entropy with the labels (optionally smoothed)."""

import jax
import jax.numpy as jnp
import optax

from jaxkd.distill.terms import TermInputs, register_term


@register_term("ce", uses_teacher=False)
def ce(inputs: TermInputs, label_smoothing: float = 0.0) -> jax.Array:
  """Cross-entropy with the labels: -sum_c y_c log softmax(s)_c, y smoothed as
  (1 - eps) * y + eps / C (Szegedy et al. 2016)."""
  targets = optax.smooth_labels(inputs.targets, label_smoothing)
  return jnp.mean(optax.softmax_cross_entropy(inputs.student_logits, targets))
