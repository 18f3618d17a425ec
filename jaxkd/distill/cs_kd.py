"""CS-KD, class-wise self-knowledge distillation (Yun et al. 2020, "Regularizing Class-wise
Predictions via Self-knowledge Distillation"): no teacher network; each example's
predictions are pulled toward those of another example of its class.

The batch comes in pairs (data.batches.TrainBatches.pair_by_class, turned on by this term):
example, then a random partner of its class (mask 0, so ce and the accuracy count the
examples only). The loss is T^2 * KL(softmax(partner / T) || softmax(example / T)) summed
over the examples and divided by their number, the partner's logits held fixed: the
authors' KDLoss (train.py of alinlab/cs-kd) on their two halves of a batch, checked by
tests/reference/make_self_kd_fixtures.py. Their partners go through a second forward pass
under no_grad; here examples and partners go through one, so a model with BatchNorm
normalises over both (the statistics of 2B examples instead of B and B): the same loss for
models without it.
"""

from typing import ClassVar

import jax
import jax.numpy as jnp

from jaxkd.distill.terms import Method, TermInputs, register_method


@register_method("cs_kd")
class CSKD(Method):
  """Yun et al. 2020: T^2 * KL(softmax(partner/T) || softmax(example/T)), the mean over the
  batch's examples (each followed by a partner of its class), the partner held fixed."""

  uses_teacher: ClassVar[bool] = False
  needs_labels: ClassVar[bool] = True
  class_pairs: ClassVar[bool] = True

  temperature: float = 4.0

  def __call__(self, inputs: TermInputs):
    temperature = self.temperature if inputs.temperature is None else inputs.temperature
    examples = inputs.student_logits[0::2]
    partners = jax.lax.stop_gradient(inputs.student_logits[1::2])
    target = jax.nn.softmax(partners / temperature, axis=-1)
    log_target = jax.nn.log_softmax(partners / temperature, axis=-1)
    log_student = jax.nn.log_softmax(examples / temperature, axis=-1)
    per_example = jnp.sum(target * (log_target - log_student), axis=-1)
    mask = jnp.ones(per_example.shape) if inputs.mask is None else inputs.mask[0::2]
    return temperature ** 2 * jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1.0)
