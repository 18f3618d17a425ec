"""Compute precision (config.precision): casting the floating arrays of a pytree."""

from typing import Any

import jax
import jax.numpy as jnp


def cast_floating(tree: Any, dtype: Any) -> Any:
  """The floating arrays of `tree` in `dtype`; other arrays (integers, keys) unchanged."""
  dtype = jnp.dtype(dtype)
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                      tree)


def to_float32(tree: Any) -> Any:
  """Floating arrays of lower precision (bfloat16 compute) back in float32."""
  return jax.tree.map(lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating)
                      and jnp.finfo(x.dtype).bits < 32 else x, tree)
