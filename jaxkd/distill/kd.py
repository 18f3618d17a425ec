"""KD (Hinton, Vinyals & Dean 2015): matching the teachers' softened probabilities.

Teacher logits arrive as [K, B, C]; with several teachers the target is the
average of the teachers' probabilities (teacher_combine='sum' sums per-teacher
terms instead). Every loss is a mean over the batch.
"""

import jax
import jax.numpy as jnp
import optax

from jaxkd.distill.terms import TermInputs, register_term, scaled, teacher_probs


@register_term("kd")
def kd(inputs: TermInputs, temperature: float = 4.0, standardize: bool = False) -> jax.Array:
  """Hinton, Vinyals & Dean 2015: T^2 * KL(softmax(t/T) || softmax(s/T)).

  The T^2 factor keeps the gradient scale independent of T. Common forms map
  onto term weights: `alpha * hard + (1 - alpha) * soft` is ce weight alpha and
  kd weight 1 - alpha; `gamma * ce + alpha * kd` (RepDistiller, mdistiller) is
  ce weight gamma and kd weight alpha. standardize=True applies logit
  standardisation (Sun et al. 2024) to both sides before the temperature.
  """
  target = teacher_probs(inputs, temperature, standardize)
  log_student = jax.nn.log_softmax(scaled(inputs.student_logits, temperature, standardize))
  return temperature**2 * jnp.mean(optax.kl_divergence(log_student, target))
