"""The distillation temperature on MNIST: T = 1, 2, 4, 8 x 3 seeds; writes the table into README.md.

  python experiments/mnist_temperature/run.py [--workdir runs/mnist_temperature] [--epochs 3]

Runs the sweep below (finished cells are reused), then copies WORKDIR/results.md's table
into README.md and WORKDIR/results.png next to it. The teacher must exist in
runs/mnist_pipeline/teacher (make demo trains it; or python -m jaxkd.main
--config=configs/mnist/teacher_lenet.py --workdir=runs/mnist_pipeline/teacher).
"""

import argparse
import pathlib
import shutil
import subprocess
import sys

from jaxkd.report import write_between_markers

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def command(workdir: str, epochs: int) -> list[str]:
  return [sys.executable, "-m", "jaxkd.sweep", "--config=configs/mnist/student_kd.py",
          f"--workdir={workdir}", "--sweep", "distill.terms.kd.temperature=1,2,4,8",
          "--seeds=3", f"--config.train.epochs={epochs}", "--config.dataset.validation_size=5000"]


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--workdir", default="runs/mnist_temperature")
  parser.add_argument("--epochs", type=int, default=3)
  args = parser.parse_args()
  subprocess.run(command(args.workdir, args.epochs), cwd=ROOT, check=True)
  workdir = ROOT / args.workdir
  results = (workdir / "results.md").read_text().splitlines()
  table = "\n".join(line for line in results if line.startswith("|"))
  write_between_markers(HERE / "README.md", table)
  shutil.copyfile(workdir / "results.png", HERE / "results.png")
  print(table)


if __name__ == "__main__":
  main()
