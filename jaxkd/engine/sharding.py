"""Data parallelism over a device mesh with one 'data' axis (jax.jit + NamedSharding).

Batches are split along the 'data' axis; parameters and optimizer state are
replicated. The same code serves 1 device, N devices and N processes.
"""

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxkd.errors import JaxkdError
from jaxkd.engine.precision import cast_floating

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: all), through jax.make_mesh."""
  devices = list(devices) if devices is not None else jax.devices()
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
  """A global batch must split evenly over the devices and the processes."""
  devices, processes = mesh.devices.size, jax.process_count()
  spread = (f" ({processes} processes x {devices // processes} devices; {what} is the global "
            "batch, split over all of them)" if processes > 1 else "")
  for count, unit in ((devices, "devices"), (processes, "processes")):
    if global_batch_size % count:
      multiple = -(-global_batch_size // count) * count
      raise JaxkdError(f"{what}={global_batch_size} does not divide over {count} {unit}{spread}; "
                       f"use a multiple of {count} (e.g. {multiple}).")


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles this process's part of a global batch into global arrays on the mesh."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


SPLIT_MIN_ELEMENTS = 2 ** 14  # Smaller arrays stay whole: splitting them saves little.


def split_largest_axis(tree: Any, mesh: Mesh, min_elements: int | None = None) -> Any:
  """Shardings that split each array of `tree` on its largest dimension dividing evenly over
  the 'data' axis (the first such, on a tie); arrays under `min_elements` (default
  SPLIT_MIN_ELEMENTS) or with no such dimension are replicated. For frozen variables too
  big for one device (a teacher)."""
  count = mesh.shape[DATA_AXIS]
  min_elements = SPLIT_MIN_ELEMENTS if min_elements is None else min_elements

  def sharding(x):
    dims = [d for d in range(x.ndim) if x.shape[d] % count == 0]
    if count == 1 or x.size < min_elements or not dims:
      return replicated(mesh)
    spec = [None] * x.ndim
    spec[max(dims, key=lambda d: x.shape[d])] = DATA_AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))

  return jax.tree.map(sharding, tree)


# Tensor parallelism over the 'data' devices: attention heads, MLP units and the vocabulary
# split, the model width kept whole (Megatron-LM's layout of a Transformer).
TENSOR_RULES = {"heads": DATA_AXIS, "mlp": DATA_AXIS, "vocab": DATA_AXIS}


def logical_shardings(tree: Any, axes: Any, mesh: Mesh, rules: dict | None = None) -> Any:
  """Shardings of `tree` from each array's logical axis names (`axes`: a tree of tuples,
  e.g. jaxkd.models.transformer.param_logical_axes): `rules` maps a name to a mesh axis
  (default TENSOR_RULES). A dimension is split only where it divides evenly, and each mesh
  axis at most once per array; the rest is replicated."""
  rules = TENSOR_RULES if rules is None else rules

  def sharding(names, x):
    spec, used = [], set()
    for size, name in zip(x.shape, names):
      axis = rules.get(name)
      split = axis is not None and axis not in used and size % mesh.shape[axis] == 0
      spec.append(axis if split else None)
      used.update([axis] if split else [])
    return NamedSharding(mesh, PartitionSpec(*spec))

  return jax.tree.map(sharding, axes, tree, is_leaf=lambda a: isinstance(a, tuple))


def place(tree: Any, shardings: Any, dtype: Any = None) -> Any:
  """`tree` laid out as `shardings` (a matching pytree), its floating arrays cast to `dtype`
  if given; one jitted copy, so it also works with arrays spanning several processes."""
  cast = (lambda tree: tree) if dtype is None else (lambda tree: cast_floating(tree, dtype))
  return jax.jit(cast, out_shardings=shardings)(tree)
