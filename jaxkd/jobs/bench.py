"""Speed of the train step users run, per teacher/student pair and distillation mode.

  python -m jaxkd bench [--pair=mlp|resnet32x4-resnet8x4|all] [--batch_size=N] [--steps=N]
      [--warmup=N] [--rounds=N] [--modes=student,online,...] [--peak_size=N] [--json=PATH]

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
                   step with one teacher forward (jaxkd.run.population); its examples/s
                   count all 4, and a target line gives it as a ratio to 'online'

The train modes are assembled as a training run is (jaxkd.run.assemble, with the
teacher given as an object) and run jaxkd.engine.step.make_train_step, the same jitted
program a training run uses (SGD with momentum 0.9, the dataset's preprocessing and
augmentation on the device). FLOPs per step are XLA's count for that compiled
program (`Compiled.cost_analysis()`); the peak is the best time of a large
float32 matmul measured in the same run, so % of peak = step FLOPs / step time /
peak. Everything runs on one device (the first). experiments/bench_peers/run.py
times torchdistill on the same machine beside these modes.
"""

import dataclasses
import json
import pathlib
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxkd.config import base_config, validate
from jaxkd.data import ArrayDataset, Preprocess, preprocessing
from jaxkd.engine.evaluation import make_predict
from jaxkd.engine.sharding import make_mesh, replicated, shard_batch
from jaxkd.engine.state import stream
from jaxkd.engine.step import make_population_step, make_train_step
from jaxkd.files import write_text
from jaxkd.jobs.tables import markdown_table as table
from jaxkd.jobs.timing import environment, flops_of, matmul_peak, time_calls
from jaxkd.models import create_model
from jaxkd.run.assemble import Parts, assemble

MODES = ("teacher_forward", "student", "online", "cached", "fitnet", "population")
TRAIN_MODES = MODES[1:-1]
# The population mode: the online step of 4 students (kd at T = 1, 2, 4, 8) sharing one
# teacher forward per batch (jaxkd.run.population), against which 'online' is one student.
POPULATION_TEMPERATURES = (1.0, 2.0, 4.0, 8.0)
TEACHER_FORWARDS = {"online": 1, "fitnet": 1, "population": 1, "student": 0, "cached": 0}
KD_TERMS = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
LEARNING_RATE = 0.05


@dataclasses.dataclass(frozen=True)
class Pair:
  """A teacher -> student pair on data of one shape."""

  name: str
  dataset: str  # Whose preprocessing (mean/std, crop, flip) the step applies.
  input_shape: tuple[int, ...]
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


def synthetic_batch(pair: Pair, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A host batch as the input pipeline ships it: uint8 images, int32 labels and indices."""
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (batch_size, *pair.input_shape), dtype=np.uint8),
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
  dataset = base_config().dataset
  dataset.name = pair.dataset
  preprocess = Preprocess(**preprocessing(dataset, pair.input_shape[-1]))
  teacher = create_model(ml_collections.ConfigDict(pair.teacher), pair.num_classes)
  student = create_model(ml_collections.ConfigDict(pair.student), pair.num_classes)
  images = jnp.zeros((1, *pair.input_shape), jnp.float32)
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
  images = shard_batch({"image": setup.host_batch["image"]}, setup.mesh)["image"]
  start = time.perf_counter()
  predict = make_predict(setup.teacher, setup.preprocess, setup.mesh)
  compiled = predict.lower(setup.teacher_variables, images, {}).compile()
  return Runner("teacher_forward", lambda: compiled(setup.teacher_variables, images, {}),
                flops_of(compiled), time.perf_counter() - start)


def train_config(setup: Setup, mode: str, seed: int = 0, precision: str = "float32"
                 ) -> ml_collections.ConfigDict:
  """The training config of a train mode on the pair (its objective, SGD, the batch), its
  student and teacher computing in `precision` (parameters and optimizer float32)."""
  pair = setup.pair
  config = base_config()
  config.seed = seed
  config.precision.update(student=precision, teacher=precision)
  config.dataset.name = pair.dataset  # Its preprocessing and augmentation.
  config.model = ml_collections.ConfigDict({**pair.student, "init_from": ""})
  config.distill.terms = ml_collections.ConfigDict(terms_for(mode, pair))
  config.optimizer.learning_rate = LEARNING_RATE  # sgd, momentum 0.9 (base_config)
  config.train.update(batch_size=len(setup.host_batch["label"]), num_steps=1000)
  validate(config, ("teachers",) if mode in ("online", "fitnet") else ())
  return config


def assemble_mode(setup: Setup, mode: str, seed: int = 0, config=None,
                  precision: str = "float32"):
  """The run of a train mode, assembled as a training run is, on the synthetic batch (the
  teacher given as an object; for 'cached', its logits as the cache stores them, float16)."""
  host = setup.host_batch
  data = ArrayDataset(host["image"], host["label"], setup.pair.num_classes, name=setup.pair.dataset)
  cached = None
  if mode == "cached":
    predict = make_predict(setup.teacher, setup.preprocess, setup.mesh)
    logits = predict(setup.teacher_variables, shard_batch({"image": host["image"]},
                                                          setup.mesh)["image"], {})
    cached = np.asarray(logits, np.float16).astype(np.float32)[:, None]
  teachers = ((setup.teacher, setup.teacher_variables),) if mode in ("online", "fitnet") else ()
  return assemble(config or train_config(setup, mode, seed, precision), None, (data, data),
                  setup.mesh,
                  parts=Parts(teachers=teachers, cached_logits=cached))


def device_batch(setup: Setup, run) -> dict:
  """The synthetic batch as a step gets it (with the cached logits of its examples)."""
  host = dict(setup.host_batch)
  if "teacher_logits" in run.batches.extras:
    host["teacher_logits"] = run.batches.extras["teacher_logits"][host["index"]]
  return shard_batch({**host, "mask": np.ones(len(host["label"]), np.float32)}, setup.mesh)


def build_train_step(setup: Setup, mode: str, seed: int = 0, precision: str = "float32"):
  """(compiled step, state, teacher_variables, device batch, run) of a train mode."""
  run = assemble_mode(setup, mode, seed, precision=precision)
  batch = device_batch(setup, run)
  step = make_train_step(run.spec, setup.mesh)
  compiled = step.lower(run.state, run.teacher_variables, batch).compile()
  return compiled, run.state, run.teacher_variables, batch, run


def prepare_train(setup: Setup, mode: str, seed: int = 0, precision: str = "float32") -> Runner:
  """A train mode compiled, with its own train state (donated and replaced each step)."""
  start = time.perf_counter()
  compiled, state, teacher_variables, batch, _ = build_train_step(setup, mode, seed, precision)
  compile_s = time.perf_counter() - start
  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], teacher_variables, batch)
    return holder[0], metrics

  return Runner(mode, run, flops_of(compiled), compile_s)


def prepare_population(setup: Setup, seed: int = 0) -> Runner:
  """The population mode compiled: the online pair's student for each temperature, stacked,
  one teacher forward per step for all (jaxkd.run.population's shared-seed step)."""
  from jaxkd.run.population import hyperparameters

  start = time.perf_counter()
  first = assemble_mode(setup, "online", seed)
  runs = []
  for temperature in POPULATION_TEMPERATURES:
    config = ml_collections.ConfigDict(first.config.to_dict())
    config.distill.terms.kd.temperature = temperature
    runs.append(dataclasses.replace(first, config=config))
  hparams = hyperparameters(runs)
  states = jax.tree.map(lambda x: jnp.stack([x] * len(runs)), first.state)
  batch = device_batch(setup, first)
  teacher_shardings = jax.tree.map(lambda x: x.sharding, first.teacher_variables)
  compiled = make_population_step(first.spec, setup.mesh, teacher_shardings, shared_batch=True,
                                  shared_prepare=True).lower(
      states, hparams, first.teacher_variables, batch, None).compile()
  holder = [states]

  def go():
    holder[0], metrics = compiled(holder[0], hparams, first.teacher_variables, batch, None)
    return holder[0], metrics

  return Runner("population", go, flops_of(compiled), time.perf_counter() - start)


def prepare(setup: Setup, mode: str, precision: str = "float32") -> Runner:
  """The runner of `mode`; train modes compute in `precision` (float32 | bfloat16)."""
  if mode == "teacher_forward":
    return prepare_teacher_forward(setup)
  return prepare_population(setup) if mode == "population" else prepare_train(
      setup, mode, precision=precision)


def time_rounds(runs: dict[str, Callable[[], Any]], steps: int, warmup: int, rounds: int = 1
                ) -> dict[str, list[float]]:
  """Step times of several callables measured in interleaved rounds: each round runs
  `warmup` untimed and ceil(steps / rounds) timed calls of each in turn, so that a
  load that drifts on a shared machine hits all of them alike."""
  per_round = -(-steps // max(rounds, 1))
  times = {name: [] for name in runs}
  for _ in range(max(rounds, 1)):
    for name, run in runs.items():
      times[name] += time_calls(run, per_round, warmup)
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


def markdown_table(rows: Sequence[dict]) -> str:
  header = ["pair", "mode", "batch", "ms/step (median)", "examples/s", "GFLOP/step", "GFLOP/s",
            "% of peak", "students", "teacher forwards/step"]
  return table(header, [[r["pair"], r["mode"], r["batch_size"], f"{r['ms_per_step']:.2f}",
                         f"{r['examples_per_sec']:.0f}", f"{r['gflop_per_step']:.3f}",
                         f"{r['gflop_per_sec']:.1f}",
                         f"{r['pct_of_peak']:.1f}" if "pct_of_peak" in r else "-",
                         r.get("members", 1), r.get("teacher_forwards_per_step", "-")]
                        for r in rows], align="llrrrrrrrr")


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


def run(pairs: Sequence[Pair], batch_size: int | None = None, steps: int | None = None,
        warmup: int | None = None, modes: Sequence[str] = MODES, rounds: int | None = None,
        peak_size: int | None = None, json_path: str | None = None) -> list[dict]:
  """Times every mode of every pair, prints the table, the targets and the JSON lines (also
  to `json_path`); returns the rows."""
  say = lambda message: print(message, file=sys.stderr, flush=True)
  env = environment(make_mesh(jax.devices()[:1]))
  say(f"device: {env['device_kind']} ({env['platform']}), jax {env['jax_version']}, "
      f"{env['threads']} CPU threads")
  peak = matmul_peak(peak_size, repeats=10)
  rows = []
  for pair in pairs:
    rows += bench_pair(pair, batch_size, steps, warmup, modes, None, rounds, log=say)
  # The peak before and after the steps, the best of both (a shared machine's load drifts).
  later = matmul_peak(peak_size, repeats=10)
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
  if json_path:
    write_text(pathlib.Path(json_path), "\n".join(lines) + "\n")
  return rows
