"""Regression on the teacher's outputs: logits (Ba & Caruana 2014) or probabilities."""

import jax
import jax.numpy as jnp

from jaxkd.distill.terms import TermInputs, register_term, teacher_probs


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
