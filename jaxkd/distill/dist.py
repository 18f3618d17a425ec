"""DIST (Huang et al. 2022, knowledge distillation from a stronger teacher)."""

import jax
import jax.numpy as jnp

from jaxkd.distill.terms import TermInputs, register_term, teacher_probs


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
