"""Terms over logits: the hard-label loss and the logit-based distillation methods.

Every loss is a mean over the batch. Teacher logits arrive as [K, B, C]; with
several teachers the probability-based terms match the average of the
teachers' probabilities (see Objective for per-teacher sums instead).
"""

import jax
import jax.numpy as jnp
import optax

from jaxkd.distill.terms import (TermInputs, epoch_warmup, kl_divergence, register_term, scaled,
                                 teacher_probs)


@register_term("ce", uses_teacher=False)
def ce(inputs: TermInputs, label_smoothing: float = 0.0) -> jax.Array:
  """Cross-entropy with the labels: -sum_c y_c log softmax(s)_c, y smoothed as
  (1 - eps) * y + eps / C (Szegedy et al. 2016)."""
  num_classes = inputs.targets.shape[-1]
  targets = inputs.targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  return jnp.mean(optax.softmax_cross_entropy(inputs.student_logits, targets))


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
  return temperature**2 * jnp.mean(kl_divergence(target, log_student))


@register_term("soft_mse")
def soft_mse(inputs: TermInputs, temperature: float = 1.0) -> jax.Array:
  """Mean squared error between probabilities: mean_{b,c} (softmax(s/T) - softmax(t/T))^2."""
  student = jax.nn.softmax(inputs.student_logits / temperature)
  return jnp.mean((student - teacher_probs(inputs, temperature)) ** 2)


@register_term("logit_mse")
def logit_mse(inputs: TermInputs) -> jax.Array:
  """Ba & Caruana 2014 (Do Deep Nets Really Need to be Deep?): mean_{b,c} (s - t)^2,
  the teacher's logits averaged over teachers."""
  teacher = jnp.mean(jax.lax.stop_gradient(inputs.teacher_logits), axis=0)
  return jnp.mean((inputs.student_logits - teacher) ** 2)


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
  tckd = kl_divergence(b_teacher, log_b_student)
  q_teacher = p_teacher * (1.0 - gold) / jnp.maximum(1.0 - teacher_target, 1e-12)[:, None]
  nckd = kl_divergence(q_teacher, jax.nn.log_softmax(non_target, axis=-1))
  return tckd, nckd, teacher_target


@register_term("dkd")
def dkd(inputs: TermInputs, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
        warmup_epochs: float = 20.0, standardize: bool = False) -> jax.Array:
  """Zhao et al. 2022 (Decoupled KD): min(epoch / warmup, 1) * T^2 * (alpha * TCKD + beta * NCKD).

  KD itself equals TCKD + (1 - p_target^teacher) * NCKD; DKD frees the two weights.
  epoch is 1-based and whole, as in mdistiller (1/warmup during the first epoch).
  """
  tckd, nckd, _ = dkd_parts(inputs, temperature, standardize)
  warmup = epoch_warmup(inputs.step, inputs.steps_per_epoch, warmup_epochs)
  return warmup * temperature**2 * jnp.mean(alpha * tckd + beta * nckd)


def _pearson(a: jax.Array, b: jax.Array, axis: int) -> jax.Array:
  a = a - jnp.mean(a, axis=axis, keepdims=True)
  b = b - jnp.mean(b, axis=axis, keepdims=True)
  norms = jnp.linalg.norm(a, axis=axis) * jnp.linalg.norm(b, axis=axis)
  return jnp.sum(a * b, axis=axis) / (norms + 1e-8)


@register_term("dist")
def dist(inputs: TermInputs, beta: float = 1.0, gamma: float = 1.0,
         temperature: float = 4.0) -> jax.Array:
  """Huang et al. 2022 (DIST): T^2 * (beta * (1 - mean_i rho(p_s[i,:], p_t[i,:]))
  + gamma * (1 - mean_c rho(p_s[:,c], p_t[:,c]))), rho = Pearson correlation,
  p = softmax(z / T): inter-class relations per example, intra-class per class."""
  student = jax.nn.softmax(inputs.student_logits / temperature)
  teacher = teacher_probs(inputs, temperature)
  inter = 1.0 - jnp.mean(_pearson(student, teacher, axis=1))
  intra = 1.0 - jnp.mean(_pearson(student, teacher, axis=0))
  return temperature**2 * (beta * inter + gamma * intra)
