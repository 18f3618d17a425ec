"""Timing compiled programs: each call waited on (jax.block_until_ready) and timed on its
own, after warm-up calls; the median is what a table reports. Benchmarks, reports, exports
and experiments time here; so are XLA's FLOP count of a program, the device's measured
matmul peak and the description of the machine a number was measured on."""

import json
import os
import pathlib
import platform
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxkd.files import write_text


def time_calls(run: Callable[[], Any], calls: int, warmup: int) -> list[float]:
  """Seconds of each of `calls` calls of run() (after `warmup` untimed ones), each waited on
  with jax.block_until_ready."""
  times = []
  for i in range(warmup + calls):
    start = time.perf_counter()
    jax.block_until_ready(run())
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return times


def median_ms(run: Callable[[], Any], calls: int, warmup: int = 3) -> float:
  """The median milliseconds of one call of run() (compiled and warmed up first)."""
  return 1000.0 * statistics.median(time_calls(run, calls, warmup))


def model_latency_ms(run, inputs, repeats: int) -> float:
  """Median wall time of a saved run's (jaxkd.run.saved.SavedRun) inference on `inputs` (one
  batch), compiled, inputs and variables on the first device."""
  from jaxkd.engine.evaluation import make_predict
  from jaxkd.engine.sharding import make_mesh

  device = jax.devices()[0]
  predict = make_predict(run.model, run.preprocess(), make_mesh([device]), run.input_kind)
  variables, inputs = jax.device_put((run.variables, inputs), device)
  return median_ms(lambda: predict(variables, inputs, {}), repeats)


def flops_of(compiled: Any) -> float:
  """XLA's FLOP count of a compiled program (jax.jit(f).lower(...).compile()); 0 if unknown.
  jax 0.10 returns a dict; older versions a list with one dict per program."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def matmul_peak(size: int | None = None, repeats: int = 5, device: jax.Device | None = None
                ) -> dict:
  """The device's float32 matmul rate: 2 n^3 / the best of `repeats` timed n x n dots.
  n defaults to 2048 on CPU and 8192 on accelerators."""
  device = device or jax.devices()[0]
  size = size or (2048 if device.platform == "cpu" else 8192)
  a, b = jax.device_put(jax.random.normal(jax.random.PRNGKey(0), (2, size, size), jnp.float32),
                        device)
  dot = jax.jit(jnp.dot).lower(a, b).compile()
  times = time_calls(lambda: dot(a, b), repeats, warmup=1)
  best = min(times)
  return {"size": size, "seconds": best, "gflops": 2 * size**3 / best / 1e9,
          "xla_flops": flops_of(dot)}


def cpu_model() -> str:
  """The CPU's name as /proc/cpuinfo gives it (e.g. 'AMD EPYC 7B13'), with its thread count:
  what a table measured on this machine names."""
  name = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      name = next((line.split(":", 1)[1].strip() for line in f
                   if line.startswith("model name")), name)
  except OSError:
    pass
  return f"{name}, {cpu_threads()} threads"


def cpu_threads() -> int:
  """CPUs this process may run on: the size of XLA's CPU thread pool (and torch's default)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


def environment(mesh=None) -> dict:
  device = (mesh.devices.flat[0] if mesh is not None else jax.devices()[0])
  return {"device_kind": device.device_kind, "platform": device.platform,
          "devices_used": 1 if mesh is None else int(mesh.devices.size),
          "jax_version": jax.__version__, "jaxlib_version": jax.lib.__version__,
          "threads": cpu_threads(), "cpu_count": os.cpu_count(),
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "python": platform.python_version(),
          "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


class StageTimes(dict):
  """Wall seconds of an experiment's stages, kept in `path` (JSON): a stage timed once keeps
  its time when a later invocation finds it done and reuses it."""

  def __init__(self, path, legacy=None):
    self.path = pathlib.Path(path)
    legacy = None if legacy is None else pathlib.Path(legacy)
    found = (json.loads(self.path.read_text()) if self.path.exists() else
             json.loads(legacy.read_text()).get("timings", {}) if legacy and legacy.exists()
             else {})
    super().__init__(found)

  def run(self, name: str, work: Callable[[], Any]) -> None:
    """Runs work() and keeps its wall time under `name` unless one is kept already."""
    began = time.perf_counter()
    work()
    if name not in self:
      self[name] = time.perf_counter() - began
      self.path.parent.mkdir(parents=True, exist_ok=True)
      write_text(self.path, json.dumps(dict(self), indent=1) + "\n")
