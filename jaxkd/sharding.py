"""Data parallelism over a device mesh with one 'data' axis (jax.jit + NamedSharding).

Batches are split along the 'data' axis; parameters and optimizer state are
replicated. The same code serves 1 device, N devices and N processes.
"""

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxkd.errors import JaxkdError

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(devices) if devices is not None else jax.devices()
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
  """A global batch must split evenly over the devices and the processes."""
  devices, processes = mesh.devices.size, jax.process_count()
  for count, unit in ((devices, "devices"), (processes, "processes")):
    if global_batch_size % count:
      multiple = -(-global_batch_size // count) * count
      raise JaxkdError(f"{what}={global_batch_size} does not divide over {count} {unit}; "
                       f"use a multiple of {count} (e.g. {multiple}).")


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles this process's part of a global batch into global arrays on the mesh."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated(mesh))
