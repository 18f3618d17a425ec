"""python -m jaxkd bench [--pair=mlp|resnet32x4-resnet8x4|all] [--batch_size=N] [--steps=N]
    [--warmup=N] [--rounds=N] [--modes=student,online,...] [--peak_size=N] [--json=PATH]

The speed of the train step per teacher/student pair and mode (jaxkd.jobs.bench): a
markdown table, where the targets stand, and one JSON line per row. torchdistill beside it:
python experiments/bench_peers/run.py (the 'bench' extra).
"""

from absl import flags

from jaxkd.cli import common
from jaxkd.errors import JaxkdError

_FLAGS: dict = {}


def define_flags() -> None:
  from jaxkd.jobs.bench import MODES, PAIRS

  define_bench_flags(PAIRS)
  _FLAGS["modes"] = flags.DEFINE_list("modes", list(MODES), f"A subset of {', '.join(MODES)}.")
  _FLAGS["peak_size"] = flags.DEFINE_integer(
      "peak_size", None, "n of the n x n float32 matmul timed for the peak (default 2048 on "
      "CPU).", lower_bound=1)


def define_bench_flags(pairs) -> None:
  """The flags this command shares with experiments/bench_peers/run.py."""
  _FLAGS["pair"] = flags.DEFINE_enum("pair", "all", [*pairs, "all"], "The model pair to time.")
  _FLAGS["batch_size"] = flags.DEFINE_integer(
      "batch_size", None, "Global batch (default: the pair's, mlp 128, resnet 64).", lower_bound=1)
  _FLAGS["steps"] = flags.DEFINE_integer(
      "steps", None, "Timed steps per mode (default: the pair's, mlp 40, resnet 4).",
      lower_bound=1)
  _FLAGS["warmup"] = flags.DEFINE_integer(
      "warmup", None, "Untimed steps per mode in each round (default: mlp 3, resnet 1).",
      lower_bound=0)
  _FLAGS["rounds"] = flags.DEFINE_integer(
      "rounds", None, "Interleaved rounds the timed steps are split over (default: mlp 4, "
      "resnet 2).", lower_bound=1)
  _FLAGS["json"] = flags.DEFINE_string("json", None, "Also write the JSON lines to this file.")


def values():
  return common.values(_FLAGS)


def pairs(name: str) -> list:
  from jaxkd.jobs.bench import PAIRS

  return list(PAIRS.values()) if name == "all" else [PAIRS[name]]


def main() -> None:
  from jaxkd.jobs import bench

  args = values()
  unknown = sorted(set(args.modes) - set(bench.MODES))
  if unknown:
    raise JaxkdError(f"--modes: unknown mode(s) {unknown}; known: {list(bench.MODES)}.")
  bench.run(pairs(args.pair), args.batch_size, args.steps, args.warmup, args.modes, args.rounds,
            args.peak_size, args.json)
