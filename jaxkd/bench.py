"""Speed of the train step users run, per teacher/student pair and distillation mode.

  python -m jaxkd.bench [--pair=mlp|resnet32x4-resnet8x4|all] [--batch_size=N] [--steps=N]
      [--warmup=N] [--rounds=N] [--modes=student,online,...] [--peak_size=N] [--json=PATH]
      [--peers]

For each pair, on synthetic data of the pair's shape (uint8 images, as the input
pipeline ships them), every mode is compiled, then the modes run in interleaved
rounds (warm-up steps, then timed ones, each mode in turn), each step timed on its
own (dispatch to jax.block_until_ready); the median is reported:

  teacher_forward  the teacher's inference pass (preprocessing included)
  student          student-only training, ce
  online           ce 0.1 + kd 0.9 at T=4, the teacher running inside the step
  cached           the same objective from logits carried in the batch (no teacher)
  fitnet           ce + FitNets hints (with its regressor), the teacher online
  population       the online step of 4 students (kd at T = 1, 2, 4, 8) in one vmapped
                   step with one teacher forward (jaxkd.population); its examples/s
                   count all 4, and a target line gives it as a ratio to 'online'

The train modes run jaxkd.step.make_train_step, the same jitted program a
training run uses (SGD with momentum 0.9, the dataset's preprocessing and
augmentation on the device). FLOPs per step are XLA's count for that compiled
program (`Compiled.cost_analysis()`); the peak is the best time of a large
float32 matmul measured in the same run, so % of peak = step FLOPs / step time /
peak. Everything runs on one device (the first). --peers also times torchdistill
on the same machine (experiments/bench_peers/run.py) and prints jaxkd's speed
as a ratio to it.
"""

import dataclasses
import json
import os
import pathlib
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags

from jaxkd.assemble import connect_features
from jaxkd.cli import fail
from jaxkd.config_base import base_config
from jaxkd.data import ArrayDataset, Preprocess, preprocessing
from jaxkd.distill import build_objective
from jaxkd.models import create_model
from jaxkd.optim import make_optimizer, make_schedule
from jaxkd.sharding import batch_sharding, make_mesh, replicated, shard_batch
from jaxkd.state import init_train_state, stream
from jaxkd.step import StepSpec, make_train_step

MODES = ("teacher_forward", "student", "online", "cached", "fitnet", "population")
TRAIN_MODES = MODES[1:-1]
# The population mode: the online step of 4 students (kd at T = 1, 2, 4, 8) sharing one
# teacher forward per batch (jaxkd.population), against which 'online' is one student.
POPULATION_TEMPERATURES = (1.0, 2.0, 4.0, 8.0)
TEACHER_FORWARDS = {"online": 1, "fitnet": 1, "population": 1, "student": 0, "cached": 0}
KD_TERMS = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
LEARNING_RATE = 0.05


@dataclasses.dataclass(frozen=True)
class Pair:
  """A teacher -> student pair on data of one shape."""

  name: str
  dataset: str  # Whose preprocessing (mean/std, crop, flip) the step applies.
  image_shape: tuple[int, ...]
  num_classes: int
  teacher: dict  # Model config: {'name': ..., options}.
  student: dict
  hint: tuple[str, str]  # FitNets (student path, teacher path).
  fitnet_weight: float = 100.0
  batch_size: int = 128
  steps: int = 30  # Timed steps per mode (defaults of the CLI).
  warmup: int = 3  # Untimed steps per mode and round.
  rounds: int = 3  # Interleaved rounds the steps are split over.


PAIRS = {
    # Hinton et al. 2015's MNIST nets (configs/mnist/hinton.py): 2x1200 -> 2x800, no jitter.
    "mlp": Pair("mlp", "mnist", (28, 28, 1), 10, {"name": "mlp", "widths": (1200, 1200)},
                {"name": "mlp", "widths": (800, 800)}, hint=("dense0", "dense0"),
                batch_size=128, steps=40, warmup=3, rounds=4),
    # The CRD benchmark's pair at its batch size; FitNets hints at the middle stage, as
    # configs/cifar100/distill.py (the benchmark's feat[2]).
    "resnet32x4-resnet8x4": Pair("resnet32x4-resnet8x4", "cifar100", (32, 32, 3), 100,
                                 {"name": "resnet32x4"}, {"name": "resnet8x4"},
                                 hint=("layer2_0", "layer2_4"), batch_size=64, steps=4, warmup=1,
                                 rounds=2),
}


def terms_for(mode: str, pair: Pair) -> dict:
  """The objective's terms (config.distill.terms) of a train mode."""
  if mode == "student":
    return {"ce": {"weight": 1.0}}
  if mode in ("online", "cached"):
    return KD_TERMS
  if mode == "fitnet":
    return {"ce": {"weight": 1.0}, "fitnet": {"weight": pair.fitnet_weight,
                                              "student": pair.hint[0], "teacher": pair.hint[1]}}
  raise ValueError(f"unknown train mode '{mode}'; known: {TRAIN_MODES}")


def flops_of(compiled: Any) -> float:
  """XLA's FLOP count of a compiled program (jax.jit(f).lower(...).compile()); 0 if unknown.
  jax 0.10 returns a dict; older versions a list with one dict per program."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def time_steps(run: Callable[[], Any], steps: int, warmup: int) -> list[float]:
  """Seconds of each of `steps` calls of run() (after `warmup` untimed ones), each
  waited on with jax.block_until_ready."""
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    jax.block_until_ready(run())
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return times


def matmul_peak(size: int | None = None, repeats: int = 5, device: jax.Device | None = None
                ) -> dict:
  """The device's float32 matmul rate: 2 n^3 / the best of `repeats` timed n x n dots.
  n defaults to 2048 on CPU and 8192 on accelerators."""
  device = device or jax.devices()[0]
  size = size or (2048 if device.platform == "cpu" else 8192)
  a, b = jax.device_put(jax.random.normal(jax.random.PRNGKey(0), (2, size, size), jnp.float32),
                        device)
  dot = jax.jit(jnp.dot).lower(a, b).compile()
  times = time_steps(lambda: dot(a, b), repeats, warmup=1)
  best = min(times)
  return {"size": size, "seconds": best, "gflops": 2 * size**3 / best / 1e9,
          "xla_flops": flops_of(dot)}


def synthetic_batch(pair: Pair, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A host batch as the input pipeline ships it: uint8 images, int32 labels and indices."""
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (batch_size, *pair.image_shape), dtype=np.uint8),
          "label": rng.integers(0, pair.num_classes, batch_size).astype(np.int32),
          "index": np.arange(batch_size, dtype=np.int32)}


@dataclasses.dataclass
class Setup:
  pair: Pair
  mesh: Any
  preprocess: Preprocess
  teacher: Any
  teacher_variables: dict
  student: Any
  host_batch: dict


def setup_pair(pair: Pair, batch_size: int, mesh=None, seed: int = 0) -> Setup:
  """Models (teacher randomly initialised: speed does not depend on its weights), the
  dataset's preprocessing and a synthetic batch, on a one-device mesh by default."""
  mesh = mesh or make_mesh(jax.devices()[:1])
  channels = pair.image_shape[-1]
  preprocess = Preprocess(**preprocessing(ml_collections.ConfigDict({"name": pair.dataset}),
                                          channels))
  teacher = create_model(ml_collections.ConfigDict(pair.teacher), pair.num_classes)
  student = create_model(ml_collections.ConfigDict(pair.student), pair.num_classes)
  images = jnp.zeros((1, *pair.image_shape), jnp.float32)
  variables = jax.jit(lambda: teacher.init(stream(jax.random.PRNGKey(seed), "teacher"), images,
                                            train=False),
                      out_shardings=replicated(mesh))()
  return Setup(pair, mesh, preprocess, teacher, dict(variables), student,
               synthetic_batch(pair, batch_size, seed))


@dataclasses.dataclass
class Runner:
  """One mode ready to time: run() does one step (returns what to block on)."""

  mode: str
  run: Callable[[], Any]
  flops: float  # XLA's count for the compiled program
  compile_s: float


def prepare_teacher_forward(setup: Setup) -> Runner:
  """The teacher's inference pass over the batch (as soft-label caching and eval run it)."""
  teacher, preprocess, mesh = setup.teacher, setup.preprocess, setup.mesh

  def forward(variables, images):
    return teacher.apply(variables, preprocess(images), train=False)

  images = shard_batch({"image": setup.host_batch["image"]}, mesh)["image"]
  start = time.perf_counter()
  jitted = jax.jit(forward, in_shardings=(replicated(mesh), batch_sharding(mesh)),
                   out_shardings=replicated(mesh))
  compiled = jitted.lower(setup.teacher_variables, images).compile()
  return Runner("teacher_forward", lambda: compiled(setup.teacher_variables, images),
                flops_of(compiled), time.perf_counter() - start)


def build_train_step(setup: Setup, mode: str, seed: int = 0, spec_out: list | None = None):
  """(compiled step, state, teacher_variables, device batch) of a train mode, built as
  jaxkd.train builds them (objective, connectors, optimizer, make_train_step); the StepSpec
  is appended to `spec_out` when given."""
  pair, mesh = setup.pair, setup.mesh
  config = base_config()
  config.distill.terms = ml_collections.ConfigDict(terms_for(mode, pair))
  config.optimizer.learning_rate = LEARNING_RATE  # sgd, momentum 0.9 (base_config)
  total_steps = 1000
  objective = build_objective(config.distill, 1, total_steps)
  online = mode in ("online", "fitnet")
  teachers = (setup.teacher,) if online else ()
  teacher_variables = [setup.teacher_variables] if online else []
  host = dict(setup.host_batch)
  objective, aux_params, aux_state = connect_features(
      objective, setup.student, (setup.teacher,), [setup.teacher_variables], pair.image_shape,
      seed, ArrayDataset(host["image"], host["label"], pair.num_classes))
  schedule = make_schedule(config.schedule, LEARNING_RATE, 1, total_steps)
  tx = make_optimizer(config.optimizer, schedule)
  state = init_train_state(setup.student, tx, pair.image_shape, seed, mesh, aux_params, aux_state)
  spec = StepSpec(setup.student, tx, objective, setup.preprocess, pair.num_classes, teachers,
                  schedule)
  if spec_out is not None:
    spec_out.append(spec)
  step = make_train_step(spec, mesh)
  if mode == "cached":  # Soft labels as the cache stores them: [B, K=1, C] float16.
    logits = jax.jit(lambda v, x: setup.teacher.apply(v, setup.preprocess(x), train=False))(
        setup.teacher_variables, host["image"])
    host["teacher_logits"] = np.asarray(logits, np.float16)[:, None]
  batch = shard_batch(host, mesh)
  compiled = step.lower(state, teacher_variables, batch).compile()
  return compiled, state, teacher_variables, batch


def prepare_train(setup: Setup, mode: str, seed: int = 0) -> Runner:
  """A train mode compiled, with its own train state (donated and replaced each step)."""
  start = time.perf_counter()
  compiled, state, teacher_variables, batch = build_train_step(setup, mode, seed)
  compile_s = time.perf_counter() - start
  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], teacher_variables, batch)
    return holder[0], metrics

  return Runner(mode, run, flops_of(compiled), compile_s)


def prepare_population(setup: Setup, seed: int = 0) -> Runner:
  """The population mode compiled: the online pair's state stacked for each temperature."""
  import types

  from jaxkd.population import make_population_step

  start = time.perf_counter()
  specs = []
  _, state, teacher_variables, batch = build_train_step(setup, "online", seed, specs)
  members = len(POPULATION_TEMPERATURES)
  ones = jnp.ones(members, jnp.float32)
  hparams = {"learning_rate_scale": ones, "terms": {
      "ce": {"weight": KD_TERMS["ce"]["weight"] * ones},
      "kd": {"weight": KD_TERMS["kd"]["weight"] * ones,
             "temperature": jnp.asarray(POPULATION_TEMPERATURES, jnp.float32)}}}
  states = jax.tree.map(lambda x: jnp.stack([x] * members), state)
  run = types.SimpleNamespace(spec=specs[0], mesh=setup.mesh, teacher_variables=teacher_variables)
  compiled = make_population_step(run, shared_batch=True, shared_prepare=True).lower(
      states, hparams, teacher_variables, batch, None).compile()
  holder = [states]

  def go():
    holder[0], metrics = compiled(holder[0], hparams, teacher_variables, batch, None)
    return holder[0], metrics

  return Runner("population", go, flops_of(compiled), time.perf_counter() - start)


def prepare(setup: Setup, mode: str) -> Runner:
  if mode == "teacher_forward":
    return prepare_teacher_forward(setup)
  return prepare_population(setup) if mode == "population" else prepare_train(setup, mode)


def time_rounds(runs: dict[str, Callable[[], Any]], steps: int, warmup: int, rounds: int = 1
                ) -> dict[str, list[float]]:
  """Step times of several callables measured in interleaved rounds: each round runs
  `warmup` untimed and ceil(steps / rounds) timed calls of each in turn, so that a
  load that drifts on a shared machine hits all of them alike."""
  per_round = -(-steps // max(rounds, 1))
  times = {name: [] for name in runs}
  for _ in range(max(rounds, 1)):
    for name, run in runs.items():
      times[name] += time_steps(run, per_round, warmup)
  return times


def make_row(pair: str, mode: str, batch_size: int, times: list[float], flops: float,
             compile_s: float, peak: dict | None = None, members: int = 1) -> dict:
  """One mode's numbers; a population's examples/s counts every member's examples
  (examples_per_sec_per_member: one member's)."""
  median = statistics.median(times)
  row = {"pair": pair, "mode": mode, "batch_size": batch_size, "steps": len(times),
         "ms_per_step": median * 1e3, "ms_min": min(times) * 1e3, "ms_max": max(times) * 1e3,
         "members": members, "teacher_forwards_per_step": TEACHER_FORWARDS.get(mode, 1),
         "examples_per_sec": members * batch_size / median,
         "examples_per_sec_per_member": batch_size / median, "gflop_per_step": flops / 1e9,
         "gflop_per_sec": flops / median / 1e9, "compile_s": compile_s}
  if peak:
    add_peak(row, peak)
  return row


def add_peak(row: dict, peak: dict) -> dict:
  row["peak_gflops"] = peak["gflops"]
  row["pct_of_peak"] = 100.0 * row["gflop_per_sec"] / peak["gflops"]
  return row


def bench_pair(pair: Pair, batch_size: int | None = None, steps: int | None = None,
               warmup: int | None = None, modes: Sequence[str] = MODES, peak: dict | None = None,
               rounds: int | None = None, mesh=None, log: Callable[[str], None] | None = None
               ) -> list[dict]:
  """Rows (one per mode) for one pair, every mode compiled first and then timed in
  interleaved rounds; defaults from the pair."""
  batch_size, steps = batch_size or pair.batch_size, steps or pair.steps
  warmup = pair.warmup if warmup is None else warmup
  rounds = rounds or pair.rounds
  setup = setup_pair(pair, batch_size, mesh)
  runners = {}
  for mode in modes:
    runners[mode] = prepare(setup, mode)
    if log:
      log(f"  {pair.name} {mode}: compiled in {runners[mode].compile_s:.1f} s")
  times = time_rounds({m: r.run for m, r in runners.items()}, steps, warmup, rounds)
  env = environment(setup.mesh)
  rows = []
  for mode, runner in runners.items():
    row = make_row(pair.name, mode, batch_size, times[mode], runner.flops, runner.compile_s, peak,
                   members=len(POPULATION_TEMPERATURES) if mode == "population" else 1)
    rows.append({**row, **env})
    if log:
      log(f"  {pair.name} {mode}: {row['ms_per_step']:.2f} ms/step, "
          f"{row['examples_per_sec']:.0f} examples/s")
  return rows


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


def markdown_table(rows: Sequence[dict]) -> str:
  lines = ["| pair | mode | batch | ms/step (median) | examples/s | GFLOP/step | GFLOP/s | "
           "% of peak | students | teacher forwards/step |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for r in rows:
    peak = f"{r['pct_of_peak']:.1f}" if "pct_of_peak" in r else "-"
    lines.append(f"| {r['pair']} | {r['mode']} | {r['batch_size']} | {r['ms_per_step']:.2f} | "
                 f"{r['examples_per_sec']:.0f} | {r['gflop_per_step']:.3f} | "
                 f"{r['gflop_per_sec']:.1f} | {peak} | {r.get('members', 1)} | "
                 f"{r.get('teacher_forwards_per_step', '-')} |")
  return "\n".join(lines)


def targets(rows: Sequence[dict]) -> list[str]:
  """Where the issue's targets stand (those that need only jaxkd's rows)."""
  found = {(r["pair"], r["mode"]): r for r in rows}
  lines = []
  for pair in dict.fromkeys(r["pair"] for r in rows):
    student, cached = found.get((pair, "student")), found.get((pair, "cached"))
    if student and cached:
      slower = 100.0 * (cached["ms_per_step"] / student["ms_per_step"] - 1.0)
      verdict = "met" if slower <= 5.0 else "NOT met"
      lines.append(f"{pair}: cached distillation {slower:+.1f}% step time vs student-only "
                   f"(target <= +5%): {verdict}")
    online, population = found.get((pair, "online")), found.get((pair, "population"))
    if online and population:
      ratio = population["examples_per_sec"] / online["examples_per_sec"]
      lines.append(f"{pair}: population of {population['members']} (one teacher forward per "
                   f"step): {ratio:.1f}x the examples/s of one online student "
                   f"({population['examples_per_sec_per_member']:.0f} examples/s per member, "
                   f"{online['examples_per_sec']:.0f} alone)")
  for mode in ("online", "student", "cached"):
    row = found.get(("mlp", mode))
    if row and "pct_of_peak" in row:
      verdict = "met" if row["pct_of_peak"] >= 80.0 else "NOT met"
      lines.append(f"mlp {mode}: {row['pct_of_peak']:.1f}% of the measured matmul peak "
                   f"(target >= 80%): {verdict}")
  return lines


def parse_flags(argv: Sequence[str] | None) -> tuple[flags.FlagValues, list[str]]:
  """The command's absl flags, on their own FlagValues (so that jaxkd.bench can be imported
  and run beside jaxkd.main's flags); returns (flags, the arguments no flag took)."""
  values = flags.FlagValues()
  define = lambda kind, name, default, help, **kw: getattr(flags, f"DEFINE_{kind}")(
      name=name, default=default, help=help, flag_values=values, **kw)
  define("enum", "pair", "all", "the model pair to time", enum_values=[*PAIRS, "all"])
  define("integer", "batch_size", None, "global batch (default: the pair's, mlp 128, resnet 64)")
  define("integer", "steps", None, "timed steps per mode (default: the pair's, mlp 40, resnet 4)")
  define("integer", "warmup", None, "untimed steps per mode in each round (default: mlp 3, "
         "resnet 1)")
  define("integer", "rounds", None, "interleaved rounds the timed steps are split over "
         "(default: mlp 4, resnet 2)")
  define("string", "modes", ",".join(MODES), f"comma-separated subset of {','.join(MODES)}")
  define("integer", "peak_size", None, "n of the n x n float32 matmul timed for the peak "
         "(default 2048 on CPU)")
  define("string", "json", None, "also write the JSON lines to this file")
  define("boolean", "peers", False, "compare with torchdistill instead "
         "(experiments/bench_peers/run.py; needs the 'bench' extra)")
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    rest = values(["python -m jaxkd.bench", *argv], known_only=True)[1:]
  except flags.Error as e:
    fail("python -m jaxkd.bench", str(e))
  return values, rest


def main(argv: Sequence[str] | None = None) -> list[dict]:
  args, rest = parse_flags(argv)
  if args.peers:
    return _run_peers(argv if argv is not None else sys.argv[1:])
  if rest:
    raise SystemExit(f"python -m jaxkd.bench: unknown arguments {rest}")
  modes = [m for m in args.modes.split(",") if m]
  unknown = sorted(set(modes) - set(MODES))
  if unknown:
    raise SystemExit(f"python -m jaxkd.bench: unknown mode(s) {unknown}; known: {MODES}")
  pairs = list(PAIRS.values()) if args.pair == "all" else [PAIRS[args.pair]]
  say = lambda message: print(message, file=sys.stderr, flush=True)
  env = environment(make_mesh(jax.devices()[:1]))
  say(f"device: {env['device_kind']} ({env['platform']}), jax {env['jax_version']}, "
      f"{env['threads']} CPU threads")
  peak = matmul_peak(args.peak_size, repeats=10)
  rows = []
  for pair in pairs:
    rows += bench_pair(pair, args.batch_size, args.steps, args.warmup, modes, None, args.rounds,
                       log=say)
  # The peak before and after the steps, the best of both (a shared machine's load drifts).
  later = matmul_peak(args.peak_size, repeats=10)
  peak = max(peak, later, key=lambda p: p["gflops"])
  say(f"matmul peak: {peak['gflops']:.1f} GFLOP/s (float32 {peak['size']}^3 in "
      f"{peak['seconds'] * 1e3:.1f} ms, best of 10 before and 10 after)")
  rows = [add_peak(row, peak) for row in rows]
  lines = [json.dumps(row, sort_keys=True) for row in rows]
  print(markdown_table(rows))
  print()
  print(f"peak: float32 {peak['size']}x{peak['size']} matmul, {peak['gflops']:.1f} GFLOP/s; "
        f"{env['device_kind']}, jax {env['jax_version']}, {env['threads']} threads")
  for line in targets(rows):
    print(f"target: {line}")
  print()
  print("\n".join(lines))
  if args.json:
    pathlib.Path(args.json).write_text("\n".join(lines) + "\n")
  return rows


def _run_peers(argv: Sequence[str]) -> list[dict]:
  """Runs experiments/bench_peers/run.py (in a source checkout) with the same arguments."""
  script = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "bench_peers" / "run.py"
  if not script.exists():
    raise SystemExit(f"--peers needs a source checkout: {script} is missing.")
  import importlib.util

  spec = importlib.util.spec_from_file_location("jaxkd_bench_peers", script)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.main([a for a in argv if a != "--peers"])


if __name__ == "__main__":
  main()
