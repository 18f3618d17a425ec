"""Per-class logit bias correction, for a student that saw some classes rarely or never.

Hinton et al. 2015 (section 3): a student distilled on a transfer set without any 3 makes
most of its errors on 3s, and raising the bias of the 3 logit recovers most of them. Here
the bias b (one value per class) is fitted, never hand-set and never on the test set:

  source 'validation': argmin_b mean CE(y, softmax(z + b)) over the validation split
                       (its labels y); needs dataset.validation_size.
  source 'transfer':   argmin_b mean KL(p_teacher || softmax(z + b)) over the transfer set
                       (the teachers' averaged probabilities: no label needed).

Both are convex in b and solved with L-BFGS (optax.lbfgs); b is centred to mean 0 (a
shift of every logit changes nothing). It is written to workdir/bias_correction.json,
added to the logits for the corrected test metrics the run reports beside the
uncorrected ones, and carried into an export (jaxkd.jobs.export adds it to the logits).
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxkd.engine.evaluation import logits_of
from jaxkd.errors import JaxkdError
from jaxkd.files import write_text

BIAS_FILE = "bias_correction.json"  # In the run's workdir; an export carries it (jaxkd.jobs.export).


def fit_logit_bias(logits: np.ndarray, targets: np.ndarray, steps: int = 200) -> np.ndarray:
  """argmin_b mean_n CE(targets_n, softmax(logits_n + b)): [C], centred to mean 0."""
  logits, targets = jnp.asarray(logits, jnp.float32), jnp.asarray(targets, jnp.float32)
  loss = lambda bias: jnp.mean(optax.softmax_cross_entropy(logits + bias, targets))
  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  @jax.jit
  def step(bias, state):
    value, grad = value_and_grad(bias, state=state)
    updates, state = solver.update(grad, state, bias, value=value, grad=grad, value_fn=loss)
    return optax.apply_updates(bias, updates), state

  bias = jnp.zeros(logits.shape[-1], jnp.float32)
  state = solver.init(bias)
  for _ in range(steps):
    bias, state = step(bias, state)
  bias = np.asarray(bias)
  return bias - bias.mean()


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
  correct = int(np.sum(np.argmax(logits, -1) == labels))
  return correct / len(labels), len(labels) - correct


def _targets(run, source: str, batch_size: int) -> tuple:
  """(data, targets [N, C]) the bias is fitted on."""
  if source == "validation":
    data = run.validation_data
    if data is None:
      raise JaxkdError("bias_correction.source='validation' needs dataset.validation_size > 0.")
    return data, np.eye(data.num_classes, dtype=np.float32)[data.labels]
  data = run.train_data
  if "teacher_logits" in run.batches.extras:  # Cached soft labels [N, K, C].
    teacher_logits = np.swapaxes(run.batches.extras["teacher_logits"], 0, 1)
  elif run.spec.teachers:
    teacher_logits = np.stack([logits_of(teacher, variables, run.spec.preprocess, data,
                                         batch_size, run.mesh)
                               for teacher, variables in zip(run.spec.teachers,
                                                             run.teacher_variables)])
  else:
    raise JaxkdError("bias_correction.source='transfer' fits the bias to the teachers' "
                     "probabilities on the transfer set: the objective needs a teacher term.")
  return data, np.mean(jax.nn.softmax(jnp.asarray(teacher_logits), axis=-1), axis=0)


def correct_bias(run, variables: dict, workdir: str | pathlib.Path) -> dict:
  """Fits the bias of run.config.bias_correction for the student `variables`, writes it to
  workdir/bias_correction.json and returns the corrected test metrics ('test_*_corrected')."""
  config = run.config.bias_correction
  batch_size = run.config.train.eval_batch_size
  data, targets = _targets(run, config.source, batch_size)
  model, preprocess = run.spec.model, run.spec.preprocess
  bias = fit_logit_bias(logits_of(model, variables, preprocess, data, batch_size, run.mesh),
                        targets, int(config.steps))
  test = logits_of(model, variables, preprocess, run.test_data, batch_size, run.mesh)
  before, errors_before = _accuracy(test, run.test_data.labels)
  after, errors_after = _accuracy(test + bias, run.test_data.labels)
  fitted = {"source": config.source, "bias": [float(b) for b in bias], "fitted_on": data.split,
            "count": len(data), "test_accuracy": before, "test_errors": errors_before,
            "test_accuracy_corrected": after, "test_errors_corrected": errors_after}
  if jax.process_index() == 0:
    write_text(pathlib.Path(workdir) / BIAS_FILE, json.dumps(fitted, indent=2) + "\n")
  return {"test_accuracy_corrected": after, "test_errors_corrected": errors_after,
          "logit_bias": fitted["bias"]}
