"""The objective: a weighted sum of named terms, read from config.distill.terms.

config.distill.terms.<name> = {weight, <options of the term>}, where <name> is a
registered term or any label with `term: <registered name>` (to use one term
twice). `weight` and `temperature` may follow a schedule:
  weight_schedule: constant | warmup (0 -> weight over weight_warmup_epochs)
                   | epoch_warmup (weight * min(epoch / weight_warmup_epochs, 1), the
                   1-based epoch: mdistiller's warm-up, e.g. ReviewKD's)
                   | cosine (weight -> weight_end over the run)
  temperature_schedule: constant | warmup (temperature_start -> temperature over
                   temperature_warmup_epochs) | cosine (temperature -> temperature_end)
With several teachers, teacher_combine='average' feeds each term the teachers'
averaged probabilities; 'sum' evaluates each teacher term once per teacher and sums.
Feature terms (options `student` and `teacher`: feature paths) are always one per
teacher, summed; their learnable connectors are initialised by `init_aux` and live
in the train state beside the student. A term that reads several layers (FSP,
ReviewKD) names a tuple of paths per side and receives a tuple of features.
"""

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxkd.distill.terms import TERMS, TermInputs, epoch_warmup
from jaxkd.errors import JaxkdError

SCHEDULE_KINDS = ("constant", "warmup", "epoch_warmup", "cosine")


def value_schedule(name: str, spec: dict, steps_per_epoch: int, total_steps: int) -> Callable:
  """A step -> value schedule for field `name` of a term ('weight' or 'temperature')."""
  value = float(spec[name])
  kind = spec.pop(f"{name}_schedule", "constant")
  warmup_epochs = spec.pop(f"{name}_warmup_epochs", 0.0)
  start = spec.pop(f"{name}_start", 0.0 if name == "weight" else 1.0)
  end = spec.pop(f"{name}_end", 0.0 if name == "weight" else 1.0)
  if kind not in SCHEDULE_KINDS:
    raise JaxkdError(f"{name}_schedule '{kind}' is not one of {SCHEDULE_KINDS}.")
  if kind == "warmup":
    return optax.linear_schedule(float(start), value, max(int(warmup_epochs * steps_per_epoch), 1))
  if kind == "epoch_warmup":
    return lambda step: value * epoch_warmup(step, steps_per_epoch, warmup_epochs)
  if kind == "cosine":
    return lambda step: end + (value - end) * 0.5 * (
        1 + jnp.cos(jnp.pi * jnp.minimum(step / max(total_steps, 1), 1.0)))
  return lambda step: value


Paths = str | tuple[str, ...]


def _flat_paths(paths: Paths) -> tuple[str, ...]:
  return (paths,) if isinstance(paths, str) else tuple(paths)


def _pick(mapping: dict, paths: Paths):
  """mapping[path], or a tuple of them for a tuple of paths."""
  return mapping[paths] if isinstance(paths, str) else tuple(mapping[p] for p in paths)


def _zeros(shapes):
  """Two zero examples of a feature shape, or of each shape in a tuple of shapes."""
  if shapes and isinstance(shapes[0], tuple):
    return tuple(jnp.zeros((2, *shape), jnp.float32) for shape in shapes)
  return jnp.zeros((2, *shapes), jnp.float32)


@dataclasses.dataclass(frozen=True)
class Term:
  label: str
  fn: Callable
  weight: Callable
  temperature: Callable | None
  options: dict
  student_path: Paths | None = None  # Feature terms: where their features come from.
  teacher_path: Paths | None = None
  connector: nn.Module | None = None  # Set by Objective.with_shapes.


@dataclasses.dataclass(frozen=True)
class Objective:
  terms: tuple[Term, ...]
  teacher_combine: str = "average"

  @property
  def needs_teacher(self) -> bool:
    return any(t.fn.uses_teacher for t in self.terms)

  @property
  def student_paths(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p for t in self.terms if t.fn.features
                               for p in _flat_paths(t.student_path)))

  @property
  def teacher_paths(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p for t in self.terms if t.fn.features
                               for p in _flat_paths(t.teacher_path)))

  def with_shapes(self, student_shapes: dict, teacher_shapes: dict,
                  num_examples: int = 0, train_labels=None) -> "Objective":
    """Builds each feature term's connector from the shapes at its paths (no batch axis);
    `train_labels` (the training set's, by stable index) for connectors that need them."""
    terms = []
    for term in self.terms:
      if term.fn.features:
        # Each feature term's `connector` builds its learnable part, or returns None, and
        # raises for shapes the method cannot bridge.
        connector = term.fn.connector(_pick(student_shapes, term.student_path),
                                      _pick(teacher_shapes, term.teacher_path),
                                      options=term.options, num_examples=num_examples,
                                      train_labels=train_labels)
        term = dataclasses.replace(term, connector=connector)
      terms.append(term)
    return dataclasses.replace(self, terms=tuple(terms))

  def init_aux(self, key: jax.Array, student_shapes: dict, teacher_shapes: dict
               ) -> tuple[dict, dict]:
    """The connectors' parameters (trained with the student) and running state (e.g.
    memory banks, updated functionally each step), both {term label: ...}."""
    params, state = {}, {}
    for term in self.terms:
      if term.connector is not None:
        key, init_key, sample_key = jax.random.split(key, 3)
        student = _zeros(_pick(student_shapes, term.student_path))
        teacher = _zeros(_pick(teacher_shapes, term.teacher_path))
        variables = dict(term.connector.init({"params": init_key, "negatives": sample_key},
                                             student, teacher, jnp.zeros(2, jnp.int32)))
        params[term.label] = variables.pop("params", {})
        if variables:
          state[term.label] = variables
    return params, state

  def _feature_value(self, term: Term, inputs: TermInputs, aux_params: dict, aux_state: dict,
                     options: dict):
    student = _pick(inputs.student_features, term.student_path)
    teachers = _pick(inputs.teacher_features, term.teacher_path)
    total, new_state = 0.0, aux_state.get(term.label)
    for k in range(jax.tree.leaves(teachers)[0].shape[0]):
      teacher = jax.tree.map(lambda t: jax.lax.stop_gradient(t[k]), teachers)
      student_k = student
      if term.connector is not None:
        variables = {"params": aux_params[term.label], **(new_state or {})}
        rngs = {} if inputs.key is None else {"negatives": jax.random.fold_in(inputs.key, k)}
        if new_state:
          (student_k, teacher), new_state = term.connector.apply(
              variables, student, teacher, inputs.index, rngs=rngs, mutable=list(new_state))
          new_state = jax.lax.stop_gradient(dict(new_state))
        else:
          student_k, teacher = term.connector.apply(variables, student, teacher, inputs.index,
                                                    rngs=rngs)
      total = total + term.fn(student_k, teacher, **options)
    return total, new_state

  def __call__(self, inputs: TermInputs, aux_params: dict | None = None,
               aux_state: dict | None = None) -> tuple[jax.Array, dict, dict]:
    """Returns (total loss, {label: unweighted term value, 'weight/label': weight},
    updated running state of the connectors)."""
    total, metrics, new_aux_state = 0.0, {}, dict(aux_state or {})
    for term in self.terms:
      options = dict(term.options)
      if term.temperature is not None:
        options["temperature"] = term.temperature(inputs.step)
      if term.fn.features:
        options = {k: v for k, v in options.items() if k in term.fn.term_options}
        value, state = self._feature_value(term, inputs, aux_params or {}, aux_state or {}, options)
        if state is not None:
          new_aux_state[term.label] = state
      elif term.fn.uses_teacher and self.teacher_combine == "sum":
        value = sum(term.fn(inputs.replace(teacher_logits=inputs.teacher_logits[k:k + 1]), **options)
                    for k in range(inputs.teacher_logits.shape[0]))
      else:
        value = term.fn(inputs, **options)
      weight = term.weight(inputs.step)
      total = total + weight * value
      metrics[f"loss/{term.label}"] = value
      metrics[f"weight/{term.label}"] = weight
    return total, metrics, new_aux_state


def build_objective(config: ml_collections.ConfigDict, steps_per_epoch: int,
                    total_steps: int) -> Objective:
  """Builds the objective of config.distill (terms, teacher_combine)."""
  if config.teacher_combine not in ("average", "sum"):
    raise JaxkdError(f"distill.teacher_combine must be 'average' or 'sum', got "
                     f"'{config.teacher_combine}'.")
  terms = []
  for label, spec in config.terms.items():
    spec = dict(spec.to_dict() if isinstance(spec, ml_collections.ConfigDict) else spec)
    fn = TERMS.get(spec.pop("term", label))
    if "weight" not in spec:
      raise JaxkdError(f"objective term '{label}' needs a weight (distill.terms.{label}.weight).")
    weight = value_schedule("weight", spec, steps_per_epoch, total_steps)
    spec.pop("weight")
    temperature = None
    if "temperature" in spec:
      temperature = value_schedule("temperature", spec, steps_per_epoch, total_steps)
      spec.pop("temperature")
    paths = {}
    if fn.features:
      for side in ("student", "teacher"):
        if not spec.get(side):
          raise JaxkdError(f"feature term '{label}' needs distill.terms.{label}.{side}: the "
                           f"{side}'s feature path (python -m jaxkd.models.inspect lists them).")
        value = spec.pop(side)
        paths[f"{side}_path"] = value if isinstance(value, str) else tuple(value)
    known = fn.term_options | set(fn.connector_options)
    unknown = sorted(set(spec) - known)
    if unknown or (temperature is not None and "temperature" not in known):
      raise JaxkdError(f"objective term '{label}' has no option(s) "
                       f"{unknown or ['temperature']}; its options are {sorted(known)}.")
    terms.append(Term(label, fn, weight, temperature, spec, **paths))
  if not terms:
    raise JaxkdError("distill.terms is empty; give at least one term, e.g. ce with weight 1.")
  return Objective(tuple(terms), config.teacher_combine)
