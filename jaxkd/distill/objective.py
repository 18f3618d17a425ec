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

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxkd.distill.terms import TERMS, Method, TermInputs, epoch_warmup, option_names
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
  if kind == "cosine":  # Ours: optax's cosine schedules scale init_value, so cannot rise from 0.
    return lambda step: end + (value - end) * 0.5 * (
        1 + jnp.cos(jnp.pi * jnp.minimum(step / max(total_steps, 1), 1.0)))
  return lambda step: value


Paths = str | tuple[str, ...]


def _flat_paths(paths: Paths) -> tuple[str, ...]:
  return (paths,) if isinstance(paths, str) else tuple(paths)


def _pick(mapping: dict, paths: Paths):
  """mapping[path], or a tuple of them for a tuple of paths."""
  return mapping[paths] if isinstance(paths, str) else tuple(mapping[p] for p in paths)


def _zeros(shapes, leading: tuple = (2,)):
  """Zero examples of a feature shape, or of each shape in a tuple of shapes."""
  if shapes and isinstance(shapes[0], tuple):
    return tuple(jnp.zeros((*leading, *shape), jnp.float32) for shape in shapes)
  return jnp.zeros((*leading, *shapes), jnp.float32)


@dataclasses.dataclass(frozen=True)
class Term:
  """One weighted term: a method (a Flax module holding its options) under a label."""

  label: str
  method: Method
  weight: Callable
  temperature: Callable | None
  student_path: Paths | None = None  # Feature terms: where their features come from.
  teacher_path: Paths | None = None

  def apply(self, inputs: TermInputs, params: dict, state: dict | None, rngs: dict):
    """(value, metrics, new running state or None) of the method on `inputs`."""
    variables = {"params": params.get(self.label, {}), **(state or {})}
    if state:
      output, new_state = self.method.apply(variables, inputs, rngs=rngs, mutable=list(state))
      new_state = jax.lax.stop_gradient(dict(new_state))
    else:
      output, new_state = self.method.apply(variables, inputs, rngs=rngs), None
    value, metrics = output if isinstance(output, tuple) else (output, {})
    return value, metrics, new_state


@dataclasses.dataclass(frozen=True)
class Objective:
  terms: tuple[Term, ...]
  teacher_combine: str = "average"

  @property
  def needs_teacher(self) -> bool:
    return any(t.method.uses_teacher for t in self.terms)

  @property
  def cross_tokenizer(self) -> bool:
    """A term compares a teacher with its own tokenizer (jaxkd.distill.uld)."""
    return any(t.method.cross_tokenizer for t in self.terms)

  @property
  def student_paths(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p for t in self.terms if t.method.features
                               for p in _flat_paths(t.student_path)))

  @property
  def teacher_paths(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p for t in self.terms if t.method.features
                               for p in _flat_paths(t.teacher_path)))

  def with_shapes(self, student_shapes: dict, teacher_shapes: dict,
                  num_examples: int = 0, train_labels=None) -> "Objective":
    """Checks each feature term's shapes at its paths (no batch axis), raising JaxkdError
    for shapes its method cannot bridge, and gives every method the transfer set's size and
    `train_labels` (by stable index) for the methods that need them."""
    terms = []
    for term in self.terms:
      if term.method.features:
        term.method.check_shapes(_pick(student_shapes, term.student_path),
                                 _pick(teacher_shapes, term.teacher_path))
      terms.append(dataclasses.replace(term, method=term.method.with_data(num_examples,
                                                                          train_labels)))
    return dataclasses.replace(self, terms=tuple(terms))

  def init_aux(self, key: jax.Array, student_shapes: dict, teacher_shapes: dict,
               num_classes: int = 2) -> tuple[dict, dict]:
    """The methods' learnable parameters (trained with the student) and running state (e.g.
    memory banks, updated functionally each step), both {term label: ...}; terms with
    neither are left out."""
    params, state = {}, {}
    for term in self.terms:
      key, init_key, sample_key = jax.random.split(key, 3)
      logits = jnp.zeros((2, num_classes), jnp.float32)
      inputs = TermInputs(logits, logits[None], jnp.zeros(2, jnp.int32), logits,
                          jnp.zeros((), jnp.int32), index=jnp.zeros(2, jnp.int32),
                          mask=jnp.ones(2, jnp.float32), temperature=self._temperature(term, 0))
      if term.method.features:
        inputs = inputs.replace(student=_zeros(_pick(student_shapes, term.student_path)),
                                teacher=_zeros(_pick(teacher_shapes, term.teacher_path)))
      variables = dict(term.method.init({"params": init_key, "negatives": sample_key}, inputs))
      term_params = variables.pop("params", {})
      if term_params:
        params[term.label] = term_params
      if variables:
        state[term.label] = variables
    return params, state

  @staticmethod
  def _temperature(term: Term, step):
    return None if term.temperature is None else term.temperature(step)

  def _per_teacher(self, term: Term, inputs: TermInputs, aux_params: dict, state: dict | None):
    """The term summed over the teachers, each seeing one teacher's outputs (feature terms;
    logit terms with teacher_combine='sum'); running state passed from one to the next."""
    total, metrics = 0.0, {}
    if term.method.features:
      student = _pick(inputs.student_features, term.student_path)
      teachers = _pick(inputs.teacher_features, term.teacher_path)
      count = jax.tree.leaves(teachers)[0].shape[0]
    else:
      count = inputs.teacher_logits.shape[0]
    for k in range(count):
      logits = inputs.teacher_logits
      view = inputs.replace(teacher_logits=None if logits is None else logits[k:k + 1])
      if term.method.features:
        view = view.replace(student=student, teacher=jax.tree.map(
            lambda t: jax.lax.stop_gradient(t[k]), teachers))
      rngs = {} if inputs.key is None else {"negatives": jax.random.fold_in(inputs.key, k)}
      value, metrics, new_state = term.apply(view, aux_params, state, rngs)
      state = state if new_state is None else new_state
      total = total + value
    return total, metrics, state

  def __call__(self, inputs: TermInputs, aux_params: dict | None = None,
               aux_state: dict | None = None, overrides: dict | None = None
               ) -> tuple[jax.Array, dict, dict]:
    """Returns (total loss, {'loss/label': unweighted term value, 'weight/label': weight,
    'label/name': a method's own metrics}, updated running state of the methods).
    overrides {label: {'weight': w, 'temperature': t, option: value}} replaces constant
    values and the method's options (traced: a population member's, jaxkd.run.population)."""
    total, metrics, new_aux_state = 0.0, {}, dict(aux_state or {})
    for term in self.terms:
      given = (overrides or {}).get(term.label, {})
      options = {k: v for k, v in given.items() if k not in ("weight", "temperature")}
      if options:  # A population member's traced option values (e.g. label_smoothing).
        term = dataclasses.replace(term, method=term.method.clone(**options))
      temperature = given.get("temperature", self._temperature(term, inputs.step))
      view = inputs.replace(temperature=temperature)
      state = (aux_state or {}).get(term.label)
      if term.method.features or (term.method.uses_teacher and self.teacher_combine == "sum"):
        value, term_metrics, state = self._per_teacher(term, view, aux_params or {}, state)
      else:
        rngs = {} if inputs.key is None else {"negatives": inputs.key}
        value, term_metrics, new_state = term.apply(view, aux_params or {}, state, rngs)
        state = state if new_state is None else new_state
      if state is not None:
        new_aux_state[term.label] = state
      weight = given.get("weight", term.weight(inputs.step))
      total = total + weight * value
      metrics[f"loss/{term.label}"] = value
      metrics[f"weight/{term.label}"] = weight
      metrics.update({f"{term.label}/{name}": v for name, v in term_metrics.items()})
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
    method = TERMS.get(spec.pop("term", label))
    if "weight" not in spec:
      raise JaxkdError(f"objective term '{label}' needs a weight (distill.terms.{label}.weight).")
    weight = value_schedule("weight", spec, steps_per_epoch, total_steps)
    spec.pop("weight")
    known = set(option_names(method))
    temperature = None
    if "temperature" in known:  # A schedule of the given value, or of the method's default.
      spec.setdefault("temperature", dict(method.__dataclass_fields__)["temperature"].default)
      temperature = value_schedule("temperature", spec, steps_per_epoch, total_steps)
      spec.pop("temperature")
    paths = {}
    if method.features:
      for side in ("student", "teacher"):
        if not spec.get(side):
          raise JaxkdError(f"feature term '{label}' needs distill.terms.{label}.{side}: the "
                           f"{side}'s feature path (python -m jaxkd inspect lists them).")
        value = spec.pop(side)
        paths[f"{side}_path"] = value if isinstance(value, str) else tuple(value)
    unknown = sorted(set(spec) - known)
    if unknown:
      raise JaxkdError(f"objective term '{label}' has no option(s) {unknown}; its options are "
                       f"{sorted(known)}.")
    terms.append(Term(label, method(**spec), weight, temperature, **paths))
  if not terms:
    raise JaxkdError("distill.terms is empty; give at least one term, e.g. ce with weight 1.")
  return Objective(tuple(terms), config.teacher_combine)
