"""The temperature sweep of this folder, trained as populations and one cell at a time:
the same 12 cells (T = 1, 2, 4, 8 x seeds 0, 1, 2), the wall time of each way, and both
tables; writes them into README.md.

  python experiments/mnist_temperature/populations.py [--workdir=runs/mnist_temperature_speed]
      [--epochs=3] [--steps=0] [--teacher=runs/mnist_pipeline/teacher] [--no_readme]
      [--json=PATH]

Populations: one per seed (4 temperatures in one compiled step, one teacher forward per
batch for the 4), jaxkd.jobs.sweep.grid --vectorize. One by one: jaxkd.jobs.sweep.grid --novectorize, 12
runs each with its own teacher forward. Both run in fresh workdirs (nothing is reused),
one after the other, on the same machine.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import time

from absl import flags

from jaxkd.cli import common
from jaxkd.files import write_text
from jaxkd.jobs.tables import write_between_markers

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def sweep(workdir: pathlib.Path, vectorize: bool, epochs: int, steps: int = 0,
          teacher: str = "", temperatures: str = "1,2,4,8", seeds: int = 3) -> float:
  """Runs the sweep in `workdir` (removed first) and returns its wall time in seconds;
  steps > 0 trains each cell that many steps instead of `epochs`; teacher: another
  teacher workdir than the config's."""
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.perf_counter()
  length = [f"--config.train.num_steps={steps}"] if steps else [f"--config.train.epochs={epochs}"]
  given = [f"--config.distill.teachers=('{teacher}',)"] if teacher else []
  subprocess.run([sys.executable, "-m", "jaxkd", "sweep", "--config=configs/mnist/student_kd.py",
                  f"--workdir={workdir}", "--sweep",
                  f"distill.terms.kd.temperature={temperatures}", f"--seeds={seeds}", *length,
                  *given, "--config.dataset.validation_size=5000",
                  "--vectorize" if vectorize else "--novectorize"], cwd=ROOT, check=True)
  return time.perf_counter() - start


def table(workdir: pathlib.Path) -> str:
  return "\n".join(line for line in (workdir / "results.md").read_text().splitlines()
                   if line.startswith("|"))


_FLAGS = {}


def define_flags():
  _FLAGS["workdir"] = common.path_flag("workdir", "runs/mnist_temperature_speed",
                                          "Root of the two sweeps.")
  _FLAGS["epochs"] = flags.DEFINE_integer("epochs", 3, "Epochs per cell.", lower_bound=1)
  _FLAGS["steps"] = flags.DEFINE_integer("steps", 0, "Steps per cell instead of epochs (0: "
                                         "epochs).", lower_bound=0)
  _FLAGS["teacher"] = flags.DEFINE_string("teacher", "", "The teacher's workdir ('': the "
                                          "config's, runs/mnist_pipeline/teacher).")
  _FLAGS["temperatures"] = flags.DEFINE_string("temperatures", "1,2,4,8", "The swept T.")
  _FLAGS["seeds"] = flags.DEFINE_integer("seeds", 3, "Seeds per temperature.", lower_bound=1)
  _FLAGS["no_readme"] = flags.DEFINE_boolean("no_readme", False, "Print the tables only.")
  _FLAGS["json"] = flags.DEFINE_string("json", "", "Also write the wall times as a JSON line.")


def main():
  args = common.values(_FLAGS)
  root = (ROOT / args.workdir).absolute()
  grid = dict(steps=args.steps, teacher=args.teacher, temperatures=args.temperatures,
              seeds=args.seeds)
  together = sweep(root / "populations", True, args.epochs, **grid)
  apart = sweep(root / "one_by_one", False, args.epochs, **grid)
  import jax

  cells = len(args.temperatures.split(",")) * args.seeds
  line = json.dumps({"part": "sweep", "cells": cells, "populations_s": together,
                     "one_by_one_s": apart, "ratio": apart / together,
                     "epochs": args.epochs, "steps": args.steps,
                     "device": jax.devices()[0].device_kind})

  body = "\n".join([
      f"Populations: {together / 60:.1f} min; one cell at a time: {apart / 60:.1f} min "
      f"(the whole sweep, start-up and evaluation included; {jax.devices()[0].device_kind}, "
      f"{jax.device_count()} device). **Population: {apart / together:.1f}x the sequential cells.**",
      "", "As populations:", "", table(root / "populations"),
      "", "One cell at a time:", "", table(root / "one_by_one")])
  if not args.no_readme:
    write_between_markers(HERE / "README.md", body, "<!-- populations -->",
                          "<!-- /populations -->")
  print(body)
  print(line, flush=True)
  if args.json:
    write_text(pathlib.Path(args.json), line + "\n")


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
