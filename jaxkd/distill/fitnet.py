"""FitNets (Romero et al. 2015): hints from a teacher layer through a learned regressor."""

import jax
import jax.numpy as jnp

from jaxkd.distill.connectors import ConvReg, conv_reg_for
from jaxkd.distill.terms import register_term


def regressor_for(student_shape: tuple, teacher_shape: tuple) -> ConvReg:
  """FitNets' regressor: conv + BatchNorm + ReLU, as the benchmark's `hint` runs it."""
  return conv_reg_for("fitnet", student_shape, teacher_shape, relu=True)


@register_term("fitnet", features=True, connector=regressor_for)
def fitnet(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Romero et al. 2015 (FitNets): mean (r(F_s) - F_t)^2 over all elements, r a learned
  regressor (applied before this call) from the student's hint layer to the teacher's:
  the benchmark's ConvReg (conv + BatchNorm + ReLU), not the paper's bare convolution."""
  return jnp.mean((student - jax.lax.stop_gradient(teacher)) ** 2)
