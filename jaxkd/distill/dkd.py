"""DKD (Zhao et al. 2022, decoupled knowledge distillation)."""

import jax
import jax.numpy as jnp
import optax

from jaxkd.distill.terms import TermInputs, epoch_warmup, register_term, scaled, teacher_probs


def dkd_parts(inputs: TermInputs, temperature: float, standardize: bool = False
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-example (TCKD, NCKD, teacher's target probability), without the T^2 factor.

  TCKD = KL(b_t || b_s), b = [p_target, 1 - p_target]; NCKD = KL(q_t || q_s),
  q = the probabilities over the non-target classes, renormalised.
  """
  gold = jax.nn.one_hot(inputs.labels, inputs.student_logits.shape[-1])
  p_teacher = teacher_probs(inputs, temperature, standardize)
  z_student = scaled(inputs.student_logits, temperature, standardize)
  log_norm = jax.nn.logsumexp(z_student, axis=-1)
  non_target = z_student - 1e9 * gold  # Target probability exactly 0, no inf * 0.
  log_b_student = jnp.stack([jnp.sum(z_student * gold, -1) - log_norm,
                             jax.nn.logsumexp(non_target, axis=-1) - log_norm], axis=-1)
  teacher_target = jnp.sum(p_teacher * gold, -1)
  b_teacher = jnp.stack([teacher_target, 1.0 - teacher_target], axis=-1)
  tckd = optax.kl_divergence(log_b_student, b_teacher)
  q_teacher = p_teacher * (1.0 - gold) / jnp.maximum(1.0 - teacher_target, 1e-12)[:, None]
  nckd = optax.kl_divergence(jax.nn.log_softmax(non_target, axis=-1), q_teacher)
  return tckd, nckd, teacher_target


@register_term("dkd", needs_labels=True)
def dkd(inputs: TermInputs, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
        warmup_epochs: float = 20.0, standardize: bool = False) -> jax.Array:
  """Zhao et al. 2022 (Decoupled KD): min(epoch / warmup, 1) * T^2 * (alpha * TCKD + beta * NCKD).

  KD itself equals TCKD + (1 - p_target^teacher) * NCKD; DKD frees the two weights.
  epoch is 1-based and whole, as in mdistiller (1/warmup during the first epoch).
  """
  tckd, nckd, _ = dkd_parts(inputs, temperature, standardize)
  warmup = epoch_warmup(inputs.step, inputs.steps_per_epoch, warmup_epochs)
  return warmup * temperature**2 * jnp.mean(alpha * tckd + beta * nckd)
