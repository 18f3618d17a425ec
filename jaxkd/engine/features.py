"""Intermediate features of any flax.linen model, taken by module path without editing it.

A path is the '/'-joined names of a submodule, e.g. 'layer3_0' (a block's output)
or 'layer3_0/conv2'. `python -m jaxkd inspect --model=NAME` lists them.
"""

import difflib
from typing import Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.errors import JaxkdError


def _path(module: nn.Module) -> str:
  return "/".join(module.path)


def apply_with_features(model: nn.Module, variables: dict, inputs: jax.Array,
                        paths: Sequence[str], train: bool = False, rngs: dict | None = None,
                        mutable: Sequence[str] = (), **model_inputs):
  """Runs the model and returns (logits, {path: output}, updated mutable collections).
  model_inputs: the batch's other inputs the model takes (a language model's `mask` of
  padding, the `segments` of packed documents)."""
  wanted = set(paths)
  if not wanted:
    if mutable:
      logits, updates = model.apply(variables, inputs, train=train, rngs=rngs,
                                    mutable=list(mutable), **model_inputs)
      return logits, {}, updates
    return model.apply(variables, inputs, train=train, rngs=rngs, **model_inputs), {}, {}
  logits, state = model.apply(
      variables, inputs, train=train, rngs=rngs, mutable=["intermediates", *mutable],
      capture_intermediates=lambda module, method: method == "__call__" and _path(module) in wanted,
      **model_inputs)
  state = dict(state)
  captured = flax.traverse_util.flatten_dict(state.pop("intermediates", {}), sep="/")
  features = {path.removesuffix("/__call__"): value[0] for path, value in captured.items()}
  missing = wanted - set(features)
  if missing:
    raise JaxkdError(f"no module at feature path(s) {sorted(missing)} in {type(model).__name__}"
                     f"{_near(model, variables, inputs, missing)}")
  return logits, features, state


def list_features(model: nn.Module, variables: dict, images: jax.Array) -> dict[str, tuple]:
  """Every capturable path with its output shape, in execution order (abstract: no FLOPs)."""
  order = []

  def record(module, method):
    if method == "__call__" and module.path:
      order.append(_path(module))
      return True
    return False

  def run(variables, images):
    _, state = model.apply(variables, images, train=False, mutable=["intermediates"],
                           capture_intermediates=record)
    return flax.traverse_util.flatten_dict(state["intermediates"], sep="/")

  shapes = jax.eval_shape(run, variables, images)
  shapes = {path.removesuffix("/__call__"): tuple(value[0].shape) for path, value in shapes.items()}
  return {path: shapes[path] for path in dict.fromkeys(order) if path in shapes}


def _near(model, variables, images, missing) -> str:
  known = list_features(model, variables, images)
  hints = {path: difflib.get_close_matches(path, known, n=3) for path in sorted(missing)}
  listed = "; ".join(f"near '{p}': {close}" for p, close in hints.items() if close)
  return (f" ({listed})" if listed else "") + (
      ". List the paths with python -m jaxkd inspect --model=<name>.")


def feature_shapes(model: nn.Module, variables: dict, input_shape: tuple,
                   paths: Sequence[str], input_dtype=jnp.float32) -> dict[str, tuple]:
  """The shape of one example's feature at each of `paths` (no batch axis), one trace."""
  shapes = list_features(model, variables, jnp.zeros((1, *input_shape), input_dtype))
  for path in paths:
    if path not in shapes:
      close = difflib.get_close_matches(path, shapes, n=3)
      raise JaxkdError(f"no module at feature path '{path}' in {type(model).__name__}; near "
                       f"matches: {close}. List the paths with python -m jaxkd inspect.")
  return {path: shapes[path][1:] for path in paths}
