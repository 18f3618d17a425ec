"""A search over the kd temperature and weight on MNIST (jaxkd.jobs.search: successive halving
over populations); writes its table and plot into this folder.

  python experiments/mnist_search/run.py [--workdir runs/mnist_search]

The student and teacher of `make demo` (configs/mnist/student_kd.py: the 2x100 MLP, taught
online by the LeNet teacher in runs/mnist_pipeline/teacher), 5000 training images held out
for validation. 16 trials of T ~ loguniform(1, 32) and kd weight ~ uniform(0.1, 1) (ce
weight 0.1 as in the recipe), 3 rungs of 2, 4 and 8 epochs keeping half each time, the
demo's hand-set recipe (T=4, kd 0.9) beside them as the control.
"""

import pathlib
import shutil
import subprocess
import sys
import time

from jaxkd.cli import common
from jaxkd.jobs.tables import write_between_markers

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


_FLAGS = {}


def define_flags():
  _FLAGS["workdir"] = common.path_flag("workdir", "runs/mnist_search", "The search's workdir.")

def main():
  args = common.values(_FLAGS)
  workdir = (ROOT / args.workdir).absolute()
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "jaxkd", "search", "--config=configs/mnist/student_kd.py",
                  f"--workdir={workdir}",
                  "--space", "distill.terms.kd.temperature=loguniform(1,32)",
                  "--space", "distill.terms.kd.weight=uniform(0.1,1)",
                  "--trials=16", "--eta=2", "--rungs=3", "--min_epochs=2",
                  "--config.dataset.validation_size=5000"], cwd=ROOT, check=True)
  minutes = (time.perf_counter() - start) / 60
  table = (workdir / "trials.md").read_text().strip()
  write_between_markers(HERE / "README.md", table + f"\n\nThis run: {minutes:.1f} minutes, "
                        "from nothing (the teacher aside).")
  shutil.copyfile(workdir / "search.png", HERE / "search.png")
  print(table)


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
