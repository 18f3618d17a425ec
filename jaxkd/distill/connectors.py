"""Learnable connectors several methods share: the CRD benchmark's convolutional regressor."""

import flax.linen as nn
import jax

from jaxkd.errors import JaxkdError


class ConvReg(nn.Module):
  """The CRD benchmark's convolutional regressor (RepDistiller models/util.py ConvReg):
  student map -> teacher channels and size, then BatchNorm (batch statistics while
  training) and, with `relu`, a ReLU. The convolution follows the sizes: 3x3 stride 2
  when the student's map is twice the teacher's, a 4x4 stride-2 transposed convolution
  when it is half, else a valid convolution of kernel 1 + (student - teacher size),
  1x1 for equal sizes. Vectors get a linear map (no BatchNorm): the benchmark has no
  hint on vectors; so do sequences [T, C] (a language model's hidden states), at each
  position: TinyBERT's (Jiao et al. 2020) H_S W_h for students narrower than the teacher."""

  features: int
  student_size: int = 0
  teacher_size: int = 0
  relu: bool = True

  @nn.compact
  def __call__(self, student: jax.Array) -> jax.Array:
    if student.ndim <= 3:  # Vectors [B, C], sequences [B, T, C]: per position.
      return nn.Dense(self.features, name="dense")(student)
    s, t = self.student_size, self.teacher_size
    if s == 2 * t:
      conv = nn.Conv(self.features, (3, 3), strides=2, padding=1, name="conv")
    elif 2 * s == t:  # torch's ConvTranspose2d(k=4, s=2, p=1): k - 1 - p = 2 on each side.
      conv = nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                              name="conv")
    else:
      conv = nn.Conv(self.features, (1 + s - t, 1 + s - t), padding="VALID", name="conv")
    x = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, name="bn")(conv(student))
    return nn.relu(x) if self.relu else x


def conv_reg_for(method: str, student_shape: tuple, teacher_shape: tuple, relu: bool) -> ConvReg:
  """A ConvReg from `student_shape` to `teacher_shape` ([H, W, C] or [C]), or an error
  naming both shapes when the benchmark's rules cannot bridge them."""
  if len(student_shape) != len(teacher_shape):
    raise JaxkdError(f"{method}: student feature {student_shape} and teacher feature "
                     f"{teacher_shape} are not both maps or both vectors; pick paths of the same "
                     "kind (python -m jaxkd inspect).")
  if len(student_shape) == 1:
    return ConvReg(teacher_shape[-1], relu=relu)
  if len(student_shape) == 2:
    if student_shape[0] != teacher_shape[0]:
      raise JaxkdError(f"{method}: student sequence {student_shape} and teacher sequence "
                       f"{teacher_shape} differ in length; match hidden states of the same "
                       "positions.")
    return ConvReg(teacher_shape[-1], relu=relu)
  s, t = student_shape[0], teacher_shape[0]
  if s != 2 * t and 2 * s != t and s < t:
    raise JaxkdError(f"{method}: student feature {student_shape} is smaller than teacher feature "
                     f"{teacher_shape} but not half its size, which the regressor cannot bridge; "
                     "pick paths at the same resolution (python -m jaxkd inspect).")
  return ConvReg(teacher_shape[-1], s, t, relu)
