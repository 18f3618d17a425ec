"""Several processes in one run (multi-host): jax.distributed, set up before any device use.

Every process runs the same command. Which setup is used:

  1. config.distributed.coordinator_address set: exactly those settings
     (num_processes, process_id, optionally local_device_ids), e.g. two processes
     on one machine: --config.distributed.coordinator_address=127.0.0.1:1234
     --config.distributed.num_processes=2 --config.distributed.process_id=0 (and =1).
     (With num_processes > 1 and no address, jax's JAX_COORDINATOR_ADDRESS is used.)
  2. else, with config.distributed.auto (the default), a cluster that
     jax.distributed.initialize() detects by itself (SLURM, Open MPI, Cloud TPU
     VMs and GKE TPU, Kubernetes with the `kubernetes` package) and that has more
     than one process: jax.distributed.initialize() with no arguments.
  3. else nothing: one process, all its local devices.

Then jax.devices() are the devices of all processes, the mesh spans them, and each
process loads only its part of every global batch (jaxkd.data.batches).
"""

import os

import jax
import ml_collections

from jaxkd.errors import JaxkdError


def settings(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.distributed, completed from the schema (jaxkd.config.complete)."""
  from jaxkd.config import complete

  return complete(config).distributed


def local_device_ids(value) -> list[int] | None:
  """'' / None: all local devices; '0,1' (or a sequence of ints): those."""
  if value is None or value == "" or value == ():
    return None
  parts = value.split(",") if isinstance(value, str) else list(value)
  try:
    ids = [int(part) for part in parts]
  except (TypeError, ValueError):
    raise JaxkdError(f"distributed.local_device_ids={value!r} must be comma-separated device "
                     "ids, e.g. '0,1'.") from None
  if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
    raise JaxkdError(f"distributed.local_device_ids={value!r} must be distinct ids >= 0.")
  return ids


def detected_cluster() -> tuple[str, int] | None:
  """(name, process count) of the cluster jax.distributed.initialize() would detect, or None.

  Uses jax's own detection (the ClusterEnv subclasses it tries in order); a
  Kubernetes pod without the `kubernetes` package is skipped, as jax skips it.
  """
  try:  # Private: jax has no public way to ask for the cluster without connecting to it.
    from jax._src import clusters
  except ImportError:  # Private module moved: fall back to the two common environments.
    if all(k in os.environ for k in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
                                     "SLURM_PROCID", "SLURM_LOCALID")):
      return "SLURM", int(os.environ["SLURM_NTASKS"])
    if "OMPI_MCA_orte_hnp_uri" in os.environ:
      return "Open MPI", int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    return None
  for env in clusters.ClusterEnv._cluster_types:
    if env.opt_in_only_method:
      continue
    if env.__name__ == "K8sCluster":
      import importlib.util

      if "KUBERNETES_SERVICE_HOST" not in os.environ or importlib.util.find_spec("kubernetes") is None:
        continue  # jax would only warn here; a plain pod is no cluster.
    if env.is_env_present():
      return env.__name__, int(env.get_process_count())
  return None


def initialize(config: ml_collections.ConfigDict) -> str | None:
  """Starts jax.distributed as config.distributed or the cluster says; returns how (for the
  log), or None for a single process.

  Must run before anything touches a device (jax.devices(), an array, a jit call).
  """
  options = settings(config)
  address = (options.coordinator_address or "").strip()
  num_processes, process_id = int(options.num_processes), int(options.process_id)
  device_ids = local_device_ids(options.local_device_ids)
  if not address and (num_processes != 1 or process_id != 0):
    address = os.environ.get("JAX_COORDINATOR_ADDRESS", "").strip()  # jax's own variable
    if not address:
      raise JaxkdError(f"distributed.num_processes={num_processes} and distributed.process_id="
                       f"{process_id} need distributed.coordinator_address=HOST:PORT (process 0's "
                       "address, the same for every process).")
  if not address:
    if not options.auto:
      return None
    cluster = detected_cluster()
    if cluster is None or cluster[1] <= 1:
      return None  # One process: nothing to coordinate.
    if not jax.distributed.is_initialized():
      _start(local_device_ids=device_ids)
    return f"{cluster[0]} detected"

  if ":" not in address or not address.rsplit(":", 1)[1].isdigit():
    raise JaxkdError(f"distributed.coordinator_address={address!r} must be HOST:PORT, e.g. "
                     "10.0.0.1:1234 (process 0's host and a free port).")
  if num_processes < 1:
    raise JaxkdError(f"distributed.num_processes={num_processes} must be at least 1.")
  if not 0 <= process_id < num_processes:
    raise JaxkdError(f"distributed.process_id={process_id} must be in 0..{num_processes - 1} "
                     f"(distributed.num_processes={num_processes}); give each process its own id.")
  if not jax.distributed.is_initialized():
    _start(coordinator_address=address, num_processes=num_processes, process_id=process_id,
           local_device_ids=device_ids)
  return f"coordinator {address}"


def _start(**kwargs) -> None:
  # CPU devices of several processes talk through gloo (unless another one was chosen).
  if not jax.config.jax_cpu_collectives_implementation:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**kwargs)
  except (RuntimeError, ValueError) as e:
    raise JaxkdError(f"jax.distributed.initialize failed: {e}") from e


def shutdown() -> None:
  """Leaves the distributed system (a no-op in one process); jax also does it at exit."""
  jax.distributed.shutdown()
