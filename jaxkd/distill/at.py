"""AT (Zagoruyko & Komodakis 2017, attention transfer)."""

import jax
import jax.numpy as jnp

from jaxkd.distill.terms import l2_normalize, register_term
from jaxkd.errors import JaxkdError


def attention_map(feature: jax.Array, p: float = 2.0) -> jax.Array:
  """Zagoruyko & Komodakis: the channel mean of |F|^p, flattened and L2-normalised."""
  return l2_normalize(jnp.mean(jnp.abs(feature) ** p, axis=-1).reshape(feature.shape[0], -1))


def check_same_spatial(student_shape: tuple, teacher_shape: tuple) -> None:
  if len(student_shape) != 3 or student_shape[:2] != teacher_shape[:2]:
    raise JaxkdError(f"at: student feature {student_shape} and teacher feature {teacher_shape} "
                     "need the same spatial size (channels may differ); pick paths at the "
                     "same resolution (python -m jaxkd inspect).")


@register_term("at", features=True, check=check_same_spatial)
def at(student: jax.Array, teacher: jax.Array, p: float = 2.0) -> jax.Array:
  """Zagoruyko & Komodakis 2017 (attention transfer): mean_{b,i} (a_s - a_t)^2 with
  a(F) = normalize(mean_c |F|^p) over the flattened spatial positions i."""
  return jnp.mean((attention_map(student, p) - jax.lax.stop_gradient(attention_map(teacher, p))) ** 2)
