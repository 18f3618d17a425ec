"""FSP (Yim et al. 2017, a gift from knowledge distillation: the flow of solution procedure).

A term names a tuple of paths per side, e.g. student=('layer1_2', 'layer2_2',
'layer3_2'); the FSP matrix of each consecutive pair of layers is matched. The
benchmark trains it in an initialisation stage (config.stages) and then the
student with cross-entropy alone.
"""

import jax
import jax.numpy as jnp

from jaxkd.distill.terms import adaptive_avg_pool, register_term
from jaxkd.errors import JaxkdError


def fsp_matrix(bottom: jax.Array, top: jax.Array) -> jax.Array:
  """G_ij = mean_{h,w} bottom_hwi top_hwj, the larger map pooled to the smaller: [B, C1, C2]."""
  size = min(bottom.shape[1], top.shape[1])
  bottom, top = adaptive_avg_pool(bottom, size), adaptive_avg_pool(top, size)
  return jnp.einsum("bhwi,bhwj->bij", bottom, top) / (size * size)


def check_layers(student_shapes: tuple, teacher_shapes: tuple) -> None:
  if isinstance(student_shapes[0], int) or len(student_shapes) < 2:
    raise JaxkdError("fsp: name at least two layers per side, e.g. student=('layer1_2', "
                     "'layer2_2'); the FSP matrix relates consecutive ones.")
  if len(student_shapes) != len(teacher_shapes):
    raise JaxkdError(f"fsp: {len(student_shapes)} student layers but {len(teacher_shapes)} "
                     "teacher layers; name as many on each side.")
  for s, t in zip(student_shapes, teacher_shapes):
    if len(s) != 3 or len(t) != 3 or s[-1] != t[-1]:
      raise JaxkdError(f"fsp: student feature {s} and teacher feature {t} need the same number "
                       "of channels (an FSP matrix has no connector); pick layers whose "
                       "channels agree, or another method.")


@register_term("fsp", features=True, check=check_layers)
def fsp(student: tuple[jax.Array, ...], teacher: tuple[jax.Array, ...]) -> jax.Array:
  """Yim et al. 2017 (FSP): sum over consecutive layer pairs (l, l+1) of
  mean (G_s(l, l+1) - G_t(l, l+1))^2, G the FSP matrix (as the CRD benchmark computes it)."""
  total = 0.0
  for l in range(len(student) - 1):
    target = jax.lax.stop_gradient(fsp_matrix(teacher[l], teacher[l + 1]))
    total = total + jnp.mean((fsp_matrix(student[l], student[l + 1]) - target) ** 2)
  return total
