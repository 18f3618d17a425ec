"""AB (Heo et al. 2019, knowledge transfer via distillation of activation boundaries).

The student's feature passes through a connector (1x1 conv + BatchNorm, as in
the CRD benchmark, when its shape differs from the teacher's); the loss pushes
each connected student neuron to the teacher's side of the activation boundary
with a margin. The benchmark trains it in an initialisation stage (config.stages)
and then the student with cross-entropy alone.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.distill.terms import register_term
from jaxkd.errors import JaxkdError


class ABConnector(nn.Module):
  """1x1 convolution (no bias) to the teacher's channels, then BatchNorm on the batch."""

  features: int

  @nn.compact
  def __call__(self, student: jax.Array, teacher: jax.Array, index: jax.Array):
    x = nn.Conv(self.features, (1, 1), use_bias=False, name="conv")(student)
    x = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, name="bn")(x)
    return x, teacher


def ab_connector_for(student_shape: tuple, teacher_shape: tuple, **_) -> nn.Module | None:
  if len(student_shape) != 3 or student_shape[:2] != teacher_shape[:2]:
    raise JaxkdError(f"ab: student feature {student_shape} and teacher feature {teacher_shape} "
                     "need the same spatial size; pick paths at the same resolution "
                     "(python -m jaxkd.models.inspect).")
  return None if student_shape == teacher_shape else ABConnector(teacher_shape[-1])


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
