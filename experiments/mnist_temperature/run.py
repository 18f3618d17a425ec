"""The distillation temperature on MNIST: T = 1, 2, 4, 8 x 3 seeds; writes the table into README.md.

  python experiments/mnist_temperature/run.py [--workdir runs/mnist_temperature] [--epochs 3]

Runs the sweep below (finished cells are reused), then copies WORKDIR/results.md's table
into README.md and WORKDIR/results.png next to it. The teacher must exist in
runs/mnist_pipeline/teacher (make demo trains it; or python -m jaxkd train
--config=configs/mnist/teacher_lenet.py --workdir=runs/mnist_pipeline/teacher).
"""

import pathlib
import shutil
import subprocess
import sys

from absl import flags

from jaxkd.cli import common
from jaxkd.jobs.tables import write_between_markers

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def command(workdir: str, epochs: int) -> list[str]:
  return [sys.executable, "-m", "jaxkd", "sweep", "--config=configs/mnist/student_kd.py",
          f"--workdir={workdir}", "--sweep", "distill.terms.kd.temperature=1,2,4,8",
          "--seeds=3", f"--config.train.epochs={epochs}", "--config.dataset.validation_size=5000"]


_FLAGS = {}


def define_flags():
  _FLAGS["workdir"] = common.path_flag("workdir", "runs/mnist_temperature", "The sweep's workdir.")
  _FLAGS["epochs"] = flags.DEFINE_integer("epochs", 3, "Epochs per cell.", lower_bound=1)

def main():
  args = common.values(_FLAGS)
  subprocess.run(command(args.workdir, args.epochs), cwd=ROOT, check=True)
  workdir = ROOT / args.workdir
  results = (workdir / "results.md").read_text().splitlines()
  table = "\n".join(line for line in results if line.startswith("|"))
  write_between_markers(HERE / "README.md", table)
  shutil.copyfile(workdir / "results.png", HERE / "results.png")
  print(table)


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
