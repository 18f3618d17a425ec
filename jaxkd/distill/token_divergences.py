"""The divergence family of language-model distillation, per token, over [B, T, V] logits.

Each term compares the teachers' next-token distribution p with the student's q at every
position and averages over the tokens that count: label >= 0 (the data marks padding and
prompts with -1) and, where the batch has one, mask 1 (its examples' mask, [B]). The sums
are global, so the mean is the same on any number of devices. The terms also take [B, C]
logits (one token per example).

Both sides are softened by `temperature` (logits / T) and, as TRL's GKD and DistiLLM do,
not rescaled by T^2 (the image term `kd` is). With several teachers, p is the average of
their distributions.

Cached teachers (jaxkd.run.soft_labels): the batch carries the teacher's top-k log-probabilities
and token ids per position (`teacher_topk_logprobs`, `teacher_topk_ids`, [B, T, k]) and no
teacher runs. Both distributions are then compared over k + 1 buckets: the k tokens, and
one bucket for all others (the teacher's tail mass 1 - sum of its top-k probabilities; the
student's summed probability of the same other tokens). When k = V the tail is empty and
every divergence equals the dense one. A cache holds temperature-1 log-probabilities, so
these terms refuse another temperature on cached data.
"""

import jax
import jax.numpy as jnp

from jaxkd.distill.ce import labeled_weights
from jaxkd.distill.terms import TermInputs, register_term
from jaxkd.errors import JaxkdError

# Log-probabilities are floored here: a token no distribution can emit (a logit of -inf:
# a padded vocabulary's unused ids) would make 0 * (-inf) = nan, and nan gradients.
FLOOR = -1e30


def _kl(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
  """KL(p || q) = sum_v p_v (log p_v - log q_v) over the last axis, 0 log 0 = 0."""
  p = jnp.exp(log_p)
  return jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)


def _mixture(log_a: jax.Array, log_b: jax.Array, weight_a) -> jax.Array:
  """log(w a + (1 - w) b)."""
  return jnp.maximum(jnp.logaddexp(log_a + jnp.log(weight_a), log_b + jnp.log1p(-weight_a)),
                     FLOOR)


def forward_kl(log_t, log_s):
  """KL(p || q): mean-seeking (Hinton et al. 2015 at T = 1; GKD's beta = 0)."""
  return _kl(log_t, log_s)


def reverse_kl(log_t, log_s):
  """KL(q || p): mode-seeking (MiniLLM, Gu et al. 2024; GKD's beta = 1)."""
  return _kl(log_s, log_t)


def generalized_jsd(log_t, log_s, beta: float):
  """Agarwal et al. 2024 (GKD), eq. 1, with m = beta p + (1 - beta) q:
  JSD(beta) = beta KL(p || m) + (1 - beta) KL(q || m); beta = 0 is forward KL and beta = 1
  reverse KL (the limits the paper names, which TRL's generalized_jsd_loss also takes at
  exactly 0 and 1; the formula itself vanishes there)."""
  if beta == 0:
    return forward_kl(log_t, log_s)
  if beta == 1:
    return reverse_kl(log_t, log_s)
  log_m = _mixture(log_t, log_s, beta)
  return beta * _kl(log_t, log_m) + (1 - beta) * _kl(log_s, log_m)


def skew_kl(log_t, log_s, alpha: float):
  """DistiLLM (Ko et al. 2024), skew KL: KL(p || alpha p + (1 - alpha) q); alpha = 0 is
  forward KL."""
  return _kl(log_t, _mixture(log_t, log_s, alpha))


def skew_reverse_kl(log_t, log_s, alpha: float):
  """DistiLLM (Ko et al. 2024), skew reverse KL: KL(q || alpha q + (1 - alpha) p)."""
  return _kl(log_s, _mixture(log_s, log_t, alpha))


def total_variation(log_t, log_s):
  """Total variation distance: 1/2 sum_v |p_v - q_v| (Wen et al. 2023, f-divergence KD)."""
  return 0.5 * jnp.sum(jnp.abs(jnp.exp(log_t) - jnp.exp(log_s)), axis=-1)


def _log_sum(log_values: jax.Array, axis: int = -1) -> jax.Array:
  return jnp.maximum(jax.nn.logsumexp(log_values, axis=axis), FLOOR)


def bucketed(student_log_probs: jax.Array, topk_log_probs: jax.Array, topk_ids: jax.Array):
  """(teacher, student) log-probabilities over k + 1 buckets: the teacher's top-k tokens
  and one tail bucket for every other token (none when k = V: the tail is empty, and a
  teacher's rounding residue there would face a student probability of exactly 0)."""
  log_t = jnp.maximum(topk_log_probs.astype(jnp.float32), FLOOR)
  if topk_ids.shape[-1] == student_log_probs.shape[-1]:
    return log_t, jnp.take_along_axis(student_log_probs, topk_ids, axis=-1)
  tail_t = jnp.log(jnp.clip(1.0 - jnp.sum(jnp.exp(log_t), axis=-1), 0.0, 1.0))
  log_s = jnp.take_along_axis(student_log_probs, topk_ids, axis=-1)
  in_topk = jnp.put_along_axis(jnp.zeros(student_log_probs.shape, bool), topk_ids, True,
                               axis=-1, inplace=False)
  tail_s = _log_sum(jnp.where(in_topk, -jnp.inf, student_log_probs))
  join = lambda top, tail: jnp.concatenate([top, jnp.maximum(tail, FLOOR)[..., None]], axis=-1)
  return join(log_t, tail_t), join(log_s, tail_s)


def log_probs(inputs: TermInputs, temperature) -> tuple[jax.Array, jax.Array]:
  """(teacher, student) log-probabilities at `temperature` over the vocabulary, or over the
  top-k buckets for a cached teacher; floored at FLOOR, so logits of -inf give finite
  values and gradients (those tokens count for nothing)."""
  student = jnp.maximum(jax.nn.log_softmax(inputs.student_logits / temperature, axis=-1), FLOOR)
  if inputs.teacher_topk is not None:
    if isinstance(temperature, (int, float)) and temperature != 1:
      raise JaxkdError(f"a cached teacher holds temperature-1 log-probabilities; a term at "
                       f"temperature {temperature} cannot read it: set the term's temperature "
                       "to 1, or teach online (distill.teachers).")
    topk_log_probs, topk_ids = jax.lax.stop_gradient(inputs.teacher_topk)
    return bucketed(student, topk_log_probs, topk_ids)
  teachers = jax.nn.log_softmax(jax.lax.stop_gradient(inputs.teacher_logits) / temperature, -1)
  teacher = _log_sum(teachers, axis=0) - jnp.log(teachers.shape[0])  # Mean of the teachers.
  return jnp.maximum(teacher, FLOOR), student


def token_mean(inputs: TermInputs, per_token: jax.Array) -> jax.Array:
  """The mean over the tokens that count (ce.labeled_weights)."""
  weights = labeled_weights(inputs)
  return jnp.sum(per_token * weights) / jnp.maximum(jnp.sum(weights), 1.0)


@register_term("fkl")
def fkl(inputs: TermInputs, temperature: float = 1.0, cross_entropy_form: bool = False):
  """Forward KL(p || q) per token at `temperature`. cross_entropy_form=True gives
  DistiLLM's forward_kl value, -sum_v p_v log q_v: the KL plus the teacher's entropy, a
  constant in the student's parameters (same gradients; its minimum is not 0)."""
  log_t, log_s = log_probs(inputs, temperature)
  per_token = forward_kl(log_t, log_s)
  if cross_entropy_form:
    per_token = per_token - jnp.sum(jnp.exp(log_t) * log_t, axis=-1)
  return token_mean(inputs, per_token)


@register_term("rkl")
def rkl(inputs: TermInputs, temperature: float = 1.0):
  """Reverse KL(q || p) per token at `temperature` (DistiLLM's reverse_kl)."""
  return token_mean(inputs, reverse_kl(*log_probs(inputs, temperature)))


@register_term("gjsd")
def gjsd(inputs: TermInputs, beta: float = 0.5, temperature: float = 1.0):
  """Generalized JSD(beta) per token (GKD; TRL's generalized_jsd_loss with labels)."""
  if not 0 <= beta <= 1:
    raise JaxkdError(f"gjsd: beta must be in [0, 1] (0: forward KL, 1: reverse KL), got {beta}.")
  return token_mean(inputs, generalized_jsd(*log_probs(inputs, temperature), beta))


@register_term("skew_kl")
def skew_kl_term(inputs: TermInputs, alpha: float = 0.1, temperature: float = 1.0,
                 cross_entropy_form: bool = False):
  """Skew KL per token (DistiLLM; alpha 0.1 as its default lam). cross_entropy_form=True
  gives DistiLLM's skewed_forward_kl value, -sum_v p_v log m_v (KL plus the teacher's
  entropy: the same gradients)."""
  log_t, log_s = log_probs(inputs, temperature)
  per_token = skew_kl(log_t, log_s, alpha)
  if cross_entropy_form:
    per_token = per_token - jnp.sum(jnp.exp(log_t) * log_t, axis=-1)
  return token_mean(inputs, per_token)


@register_term("skew_rkl")
def skew_rkl_term(inputs: TermInputs, alpha: float = 0.1, temperature: float = 1.0):
  """Skew reverse KL per token (DistiLLM's skewed_reverse_kl with lam = alpha)."""
  return token_mean(inputs, skew_reverse_kl(*log_probs(inputs, temperature), alpha))


@register_term("tv")
def tv(inputs: TermInputs, temperature: float = 1.0):
  """Total variation per token (DistiLLM's tv_distance)."""
  return token_mean(inputs, total_variation(*log_probs(inputs, temperature)))
