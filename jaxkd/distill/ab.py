"""AB (Heo et al. 2019, knowledge transfer via distillation of activation boundaries).

The student's feature passes through a connector (the benchmark's ConvReg without
ReLU, conv + BatchNorm, when its shape differs from the teacher's); the loss pushes
each connected student neuron to the teacher's side of the activation boundary
with a margin. Both sides are pre-activation features (the benchmark's
`preact=True`: paths like 'layer1_2/preact'): on a post-ReLU student feature the
margin loss has no gradient for inactive neurons. The benchmark trains it in an
initialisation stage (config.stages) and then the student with cross-entropy alone.
"""

import jax
import jax.numpy as jnp

from jaxkd.distill.connectors import ConvReg, conv_reg_for
from jaxkd.distill.terms import register_term
from jaxkd.errors import JaxkdError


def ab_connector_for(student_shape: tuple, teacher_shape: tuple) -> ConvReg | None:
  """None when channels and size agree (the benchmark's Connector: an empty Sequential),
  else its ConvReg without ReLU (conv + BatchNorm)."""
  if len(student_shape) != 3 or len(teacher_shape) != 3:
    raise JaxkdError(f"ab: student feature {student_shape} and teacher feature {teacher_shape} "
                     "must both be maps [H, W, C] (python -m jaxkd inspect).")
  if student_shape[0] == teacher_shape[0] and student_shape[-1] == teacher_shape[-1]:
    return None
  return conv_reg_for("ab", student_shape, teacher_shape, relu=False)


@register_term("ab", features=True, connector=ab_connector_for)
def ab(student: jax.Array, teacher: jax.Array, margin: float = 1.0) -> jax.Array:
  """Heo et al. 2019 (AB), the alternative L2 loss of the paper and the CRD benchmark:
  0.003 / B * sum [(s + m)^2 1(s > -m, t <= 0) + (s - m)^2 1(s <= m, t > 0)] over every
  neuron, s the connected student response, t the teacher's (only its sign matters,
  so a post-ReLU teacher feature gives the same loss as its pre-activation), m the
  margin. The 0.003 is the benchmark's scaling, kept so its weights carry over."""
  t = jax.lax.stop_gradient(teacher)
  loss = ((student + margin) ** 2 * ((student > -margin) & (t <= 0))
          + (student - margin) ** 2 * ((student <= margin) & (t > 0)))
  return jnp.sum(loss) / student.shape[0] * 3e-3
