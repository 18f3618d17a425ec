"""The one shape of a distillation method, its registry, and helpers shared by methods.

Every method is a Flax module, a subclass of `Method`, registered by name:

  @register_method("my_kd")
  class MyKD(Method):
    temperature: float = 4.0              # its options: the module's fields, listed once

    def __call__(self, inputs: TermInputs):   # -> loss, or (loss, {name: metric})
      ...

It owns its learnable parts (submodules: trained with the student, kept in the train
state under the term's label, never exported) and its running state (variables of any
other collection, e.g. a memory bank, updated functionally each step). It is called with
TermInputs: the student's and the teachers' outputs and the batch. A feature method
(`features = True`) names feature paths in its options `student` and `teacher` and finds
those features in inputs.student and inputs.teacher (one teacher at a time: the
objective sums it over the teachers). A method that needs no learnable part or state is
a pure function, registered with @register_term, which makes the module for it.

Registration needs no import elsewhere: every module of the package jaxkd/distill is
imported by jaxkd.distill, so a file added there registers its methods. A method
defined outside the package registers when its module is imported (import it before
building the objective, e.g. at the top of the config file).
"""

import dataclasses
import inspect
from typing import Any, Callable, ClassVar

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.registry import Registry


@flax.struct.dataclass
class TermInputs:
  """The batch as a method sees it.

  student_logits [B, C]; teacher_logits [K, B, C] for K teachers (None without
  a teacher); labels [B] hard labels; targets [B, C] label distributions (one-hot,
  or mixed by mixup); step and steps_per_epoch for warm-ups; the captured
  features of the paths that feature terms name; index [B] stable example indices
  (memory banks); key the step's randomness; mask [B] 1 for examples that count.
  Language models: logits [B, T, V], labels [B, T] (-1 where a token does not count),
  teacher_topk a cached teacher's top-k instead of teacher_logits (token_divergences).
  Set by the objective for each term: student / teacher, the features at the term's
  own paths (a tuple for a tuple of paths; the teacher's for one teacher), and
  temperature, the step's value of a `temperature` option that follows a schedule.
  """

  student_logits: jax.Array
  teacher_logits: jax.Array | None
  labels: jax.Array
  targets: jax.Array
  step: jax.Array
  steps_per_epoch: int = flax.struct.field(pytree_node=False, default=1)
  student_features: dict = flax.struct.field(default_factory=dict)  # path -> [B, ...]
  teacher_features: dict = flax.struct.field(default_factory=dict)  # path -> [K, B, ...]
  index: jax.Array | None = None
  key: jax.Array | None = None
  mask: jax.Array | None = None
  student: Any = None
  teacher: Any = None
  temperature: Any = None
  teacher_topk: Any = None  # A cached LM teacher: (log-probs, token ids), each [B, T, k].
  # A teacher with its own tokenizer (jaxkd.data.alignment): its tokens, labels and spans,
  # the student's tokens and spans, and vocab_map (a constant: teacher id -> student id).
  cross: Any = None


class Method(nn.Module):
  """The base of every distillation method (see the module's docstring).

  features: reads feature paths (options `student` and `teacher`); uses_teacher: needs
  teacher outputs (online or cached). check_shapes raises JaxkdError, naming the fix,
  for feature shapes the method cannot bridge (checked before anything compiles);
  with_data receives the transfer set's size and labels (CRD's memory banks).
  """

  features: ClassVar[bool] = False
  uses_teacher: ClassVar[bool] = True
  needs_labels: ClassVar[bool] = False  # Reads every example's label (refused on unlabeled).
  cross_tokenizer: ClassVar[bool] = False  # Compares a teacher of another tokenizer (uld).
  class_pairs: ClassVar[bool] = False  # Reads batches of (example, same-class partner) pairs.
  data_fields: ClassVar[tuple[str, ...]] = ()  # Fields with_data sets: not options.

  def __init_subclass__(cls, **kwargs):
    # Called on the unbound module, before any init: not wrapped as Flax wraps methods
    # (a connector a check builds would otherwise be bound to the unbound method).
    for name in ("check_shapes", "with_data"):
      if name in cls.__dict__:
        nn.nowrap(cls.__dict__[name])
    super().__init_subclass__(**kwargs)

  @nn.nowrap
  def check_shapes(self, student_shape, teacher_shape) -> None:
    """Shapes [H, W, C] or [C] (tuples of them for tuples of paths), no batch axis."""

  @nn.nowrap
  def with_data(self, num_examples: int, train_labels) -> "Method":
    return self


def option_names(method: type) -> tuple[str, ...]:
  """A method's options: its module fields (but those with_data sets)."""
  return tuple(f.name for f in dataclasses.fields(method)
               if f.name not in ("parent", "name", *method.data_fields))


TERMS: Registry[type] = Registry("objective term")


def register_method(name: str) -> Callable[[type], type]:
  """Registers a Method subclass under `name`."""

  def add(cls: type) -> type:
    if not (isinstance(cls, type) and issubclass(cls, Method)):
      raise TypeError(f"register_method('{name}') takes a subclass of Method, got {cls!r}")
    return TERMS.register(name)(cls)

  return add


class FunctionTerm(Method):
  """A method made from a pure function by @register_term; its options are the function's
  keyword parameters, its learnable part (if any) the connector built from the shapes."""

  loss: ClassVar[Callable]
  connector_for: ClassVar[Callable | None] = None

  @nn.compact
  def __call__(self, inputs: TermInputs) -> jax.Array:
    options = {name: getattr(self, name) for name in option_names(type(self))}
    if inputs.temperature is not None and "temperature" in options:
      options["temperature"] = inputs.temperature
    if not self.features:
      return type(self).loss(inputs, **options)
    student = inputs.student
    if self.connector_for is not None:
      connector = type(self).connector_for(feature_shape(inputs.student),
                                           feature_shape(inputs.teacher))
      student = student if connector is None else own(self, connector)(student)
    return type(self).loss(student, inputs.teacher, **options)


def feature_shape(feature):
  """The shape of a feature without its batch axis (a tuple of them for a tuple)."""
  return tuple(map(feature_shape, feature)) if isinstance(feature, tuple) else feature.shape[1:]


def register_term(name: str, uses_teacher: bool = True, features: bool = False,
                  check: Callable | None = None, connector: Callable | None = None,
                  needs_labels: bool = False):
  """Registers a pure function as the method `name` and returns the function unchanged.

  Logit terms: `fn(inputs: TermInputs, **options) -> scalar`. Feature terms
  (features=True): `fn(student_feature, teacher_feature, **options) -> scalar`, and
  `check(student_shape, teacher_shape)` raising JaxkdError for shapes it cannot take.
  `connector(student_shape, teacher_shape)` returns the method's learnable part, a Flax
  module applied to the student's feature before `fn` (or None: none for these shapes),
  and raises JaxkdError for shapes it cannot bridge (it is the check too). Every option
  needs a default.
  """

  def add(fn: Callable) -> Callable:
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.name not in ("inputs", "student", "teacher")]
    missing = [p.name for p in params if p.default is inspect.Parameter.empty]
    if missing:
      raise TypeError(f"term '{name}': options {missing} need defaults")
    namespace = {"__annotations__": {p.name: Any for p in params},
                 **{p.name: p.default for p in params}, "__doc__": fn.__doc__,
                 "__module__": fn.__module__, "loss": staticmethod(fn), "features": features,
                 "uses_teacher": uses_teacher, "needs_labels": needs_labels,
                 "connector_for": None if connector is None else staticmethod(connector)}
    shapes_check = check or connector
    if shapes_check is not None:
      namespace["check_shapes"] = lambda self, student_shape, teacher_shape: shapes_check(
          student_shape, teacher_shape)
    TERMS.register(name)(type(f"{fn.__name__}_term", (FunctionTerm,), namespace))
    return fn

  return add


def standardize(logits: jax.Array) -> jax.Array:
  """Sun et al. 2024 (Logit Standardization in KD): z -> (z - mean(z)) / (1e-7 + std(z))
  per example, std the unbiased (C - 1) estimate, as the authors' code (torch.std) computes."""
  mean = jnp.mean(logits, axis=-1, keepdims=True)
  std = jnp.std(logits, axis=-1, keepdims=True, ddof=1)
  return (logits - mean) / (std + 1e-7)


def epoch_warmup(step: jax.Array, steps_per_epoch: int, warmup_epochs: float) -> jax.Array:
  """min(epoch / warmup_epochs, 1) with the 1-based epoch number (epoch 1 during the first
  epoch), constant within an epoch: the warm-up of mdistiller's DKD and ReviewKD."""
  if warmup_epochs <= 0:
    return jnp.asarray(1.0)
  epoch = step // steps_per_epoch + 1
  return jnp.minimum(epoch / warmup_epochs, 1.0)


def scaled(logits: jax.Array, temperature, standardized: bool) -> jax.Array:
  return (standardize(logits) if standardized else logits) / temperature


def teacher_probs(inputs: TermInputs, temperature, standardized: bool = False) -> jax.Array:
  """Teacher probabilities at `temperature`, averaged over the K teachers: [B, C]."""
  teacher = jax.lax.stop_gradient(inputs.teacher_logits)
  return jnp.mean(jax.nn.softmax(scaled(teacher, temperature, standardized), axis=-1), axis=0)


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """x / ||x|| along `axis`; eps inside the root keeps a zero vector at 0 with a finite
  gradient (RKD's i == j direction, an all-zero feature map)."""
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=axis, keepdims=True) + 1e-12)


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
  """PyTorch's adaptive_avg_pool2d to size x size for [B, H, W, C] features."""
  height, width = x.shape[1:3]
  if (height, width) == (size, size):
    return x
  if height % size == 0 and width % size == 0:
    return jnp.mean(x.reshape(x.shape[0], size, height // size, size, width // size, x.shape[-1]),
                    axis=(2, 4))
  bounds = lambda n: [((i * n) // size, -((-(i + 1) * n) // size)) for i in range(size)]
  return jnp.stack([jnp.stack([jnp.mean(x[:, top:bottom, left:right], axis=(1, 2))
                               for left, right in bounds(width)], axis=1)
                    for top, bottom in bounds(height)], axis=1)


def same_spatial_size(student: jax.Array, teacher: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Pools the larger of two [B, H, W, C] maps down to the smaller one's size (square maps)."""
  size = min(student.shape[1], teacher.shape[1])
  return adaptive_avg_pool(student, size), adaptive_avg_pool(teacher, size)


def own(method: nn.Module, part: nn.Module) -> nn.Module:
  """`part` (a connector built inside `method`'s compact call) with its variables at the
  method's own top level: under the term's label, at the paths configs name (train.freeze
  'aux/<label>/conv') and checkpoints keep."""
  nn.share_scope(method, part)
  return part


def flatten(feature: jax.Array) -> jax.Array:
  """[B, ...] -> [B, D]: a feature as one vector per example."""
  return feature.reshape(feature.shape[0], -1)
