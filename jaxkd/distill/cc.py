"""CC (Peng et al. 2019, correlation congruence for knowledge distillation).

Both sides' pooled embeddings pass through a learned linear embedding (trained
with the student, as in the CRD benchmark's code); the loss compares the
example-by-example correlation matrices of the batch.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.distill.terms import Method, TermInputs, l2_normalize, own, register_method
from jaxkd.errors import JaxkdError

FORMS = ("gaussian", "crd_code")


class CCEmbed(nn.Module):
  """Linear embeddings of the flattened student and teacher features to feat_dim."""

  feat_dim: int = 128

  @nn.compact
  def __call__(self, student: jax.Array, teacher: jax.Array) -> tuple[jax.Array, jax.Array]:
    batch = student.shape[0]
    return (nn.Dense(self.feat_dim, name="embed_student")(student.reshape(batch, -1)),
            nn.Dense(self.feat_dim, name="embed_teacher")(teacher.reshape(batch, -1)))


def correlation_matrix(embedding: jax.Array, gamma: float, order: int) -> jax.Array:
  """C_ij = k(f_i, f_j) for the Gaussian RBF k(x, y) = exp(-gamma ||x - y||^2) on unit
  vectors, by its order-P Taylor series: sum_p exp(-2 gamma) (2 gamma)^p / p! (x . y)^p."""
  unit = l2_normalize(embedding)
  dot = unit @ unit.T
  return sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * dot**p
             for p in range(order + 1))


def cc(student: jax.Array, teacher: jax.Array, form: str = "gaussian", gamma: float = 0.4,
       order: int = 2) -> jax.Array:
  """Peng et al. 2019 (CC). form='gaussian' (the paper): mean_{i,j} (C^s_ij - C^t_ij)^2 with
  C the Taylor-expanded Gaussian-RBF correlation of the embedded batch (gamma 0.4, P=2).
  form='crd_code' (what the CRD benchmark runs, weight 0.02): with d_i = |e^s_i - e^t_i|,
  mean_i sum_k d_ik d_(i+1)k over consecutive examples. Both embeddings are learned, so
  neither side is stopped."""
  if form == "crd_code":
    delta = jnp.abs(student - teacher)
    return jnp.mean(jnp.sum(delta[:-1] * delta[1:], axis=1))
  return jnp.mean((correlation_matrix(student, gamma, order)
                   - correlation_matrix(teacher, gamma, order)) ** 2)


@register_method("cc")
class CC(Method):
  """CC: `cc` on the learned embeddings (CCEmbed, its learnable part) of both sides."""

  form: str = "gaussian"
  gamma: float = 0.4
  order: int = 2
  feat_dim: int = 128
  features = True

  def check_shapes(self, student_shape, teacher_shape) -> None:
    if self.form not in FORMS:
      raise JaxkdError(f"cc: form '{self.form}' is not one of {FORMS}.")

  @nn.compact
  def __call__(self, inputs: TermInputs) -> jax.Array:
    student, teacher = own(self, CCEmbed(self.feat_dim))(inputs.student, inputs.teacher)
    return cc(student, teacher, self.form, self.gamma, self.order)
