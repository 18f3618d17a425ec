"""The temperature sweep of this folder, trained as populations and one cell at a time:
the same 12 cells (T = 1, 2, 4, 8 x seeds 0, 1, 2), the wall time of each way, and both
tables; writes them into README.md.

  python experiments/mnist_temperature/populations.py [--workdir runs/mnist_temperature_speed]

Populations: one per seed (4 temperatures in one compiled step, one teacher forward per
batch for the 4), jaxkd.jobs.sweep.grid --vectorize. One by one: jaxkd.jobs.sweep.grid --novectorize, 12
runs each with its own teacher forward. Both run in fresh workdirs (nothing is reused),
one after the other, on the same machine.
"""

import pathlib
import shutil
import subprocess
import sys
import time

from absl import flags

from jaxkd.cli import common
from jaxkd.jobs.tables import write_between_markers

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def sweep(workdir: pathlib.Path, vectorize: bool, epochs: int) -> float:
  """Runs the sweep in `workdir` (removed first) and returns its wall time in seconds."""
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "jaxkd", "sweep", "--config=configs/mnist/student_kd.py",
                  f"--workdir={workdir}", "--sweep", "distill.terms.kd.temperature=1,2,4,8",
                  "--seeds=3", f"--config.train.epochs={epochs}",
                  "--config.dataset.validation_size=5000",
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


def main():
  args = common.values(_FLAGS)
  root = (ROOT / args.workdir).absolute()
  together = sweep(root / "populations", True, args.epochs)
  apart = sweep(root / "one_by_one", False, args.epochs)
  import jax

  body = "\n".join([
      f"Populations: {together / 60:.1f} min; one cell at a time: {apart / 60:.1f} min "
      f"(the whole sweep, start-up and evaluation included; {jax.devices()[0].device_kind}, "
      f"{jax.device_count()} device). **Population: {apart / together:.1f}x the sequential cells.**",
      "", "As populations:", "", table(root / "populations"),
      "", "One cell at a time:", "", table(root / "one_by_one")])
  write_between_markers(HERE / "README.md", body, "<!-- populations -->", "<!-- /populations -->")
  print(body)


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
