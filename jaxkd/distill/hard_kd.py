"""Hard-label distillation (Touvron et al. 2021, DeiT): the teacher's argmax as the label."""

import jax
import jax.numpy as jnp
import optax

from jaxkd.distill.terms import Method, TermInputs, register_method, teacher_probs


@register_method("hard_kd")
class HardKD(Method):
  """Touvron et al. 2021 (DeiT, hard distillation): mean_b CE(s_b, y_b), y_b = argmax_c of
  the teacher's probabilities (averaged over the teachers), smoothed as
  (1 - eps) * y + eps / C with eps = label_smoothing. Beside `kd` (soft labels), the
  two strategies compare by config."""

  label_smoothing: float = 0.0

  def __call__(self, inputs: TermInputs) -> jax.Array:
    probs = teacher_probs(inputs, 1.0)
    labels = jax.nn.one_hot(jnp.argmax(probs, axis=-1), probs.shape[-1])
    targets = optax.smooth_labels(labels, self.label_smoothing)
    return jnp.mean(optax.softmax_cross_entropy(inputs.student_logits, targets))
