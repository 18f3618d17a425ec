"""Hinton et al. 2015's MNIST experiment; writes its table into README.md.

  python experiments/mnist_hinton/run.py [--seeds 3] [--first_seed 0] [--workdir runs/mnist_hinton]

One pipeline run (configs/mnist/hinton.py): one teacher (seed 0), then the 2x800
student alone and distilled, for each student seed. Finished runs are reused. A
student seed sets its initialisation and data order.
"""

import json
import pathlib
import time

from absl import flags

from jaxkd.cli import common
from jaxkd.files import write_text
from jaxkd.jobs import pipeline
from jaxkd.config import load_config_file
from jaxkd.jobs.tables import markdown_table, write_between_markers

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = HERE.parents[1] / "configs" / "mnist" / "hinton.py"
PAPER = {"teacher": 67, "baseline": 146, "distilled": 74}
NAMES = {"teacher": "teacher 2x1200, dropout + max-norm + jitter",
         "baseline": "student 2x800, no teacher", "distilled": "student 2x800, distilled (T=20)"}


def table(report: dict) -> str:
  seeds = report["baseline"]["seeds"]
  teacher = report["teacher"]["test_errors"]
  rows = [[NAMES["teacher"], *["(one teacher)"] * len(seeds), teacher, PAPER["teacher"]]]
  for role in ("baseline", "distilled"):
    entry = report[role]
    errors = [r["test_errors"] for r in entry["per_seed"]]
    spread = f" ± {entry['test_errors_std']:.1f}" if entry["test_errors_std"] is not None else ""
    rows.append([NAMES[role], *errors, f"{entry['test_errors']:.1f}{spread}", PAPER[role]])
  lines = [markdown_table(["model", *[f"seed {s}" for s in seeds], "mean ± std", "paper"], rows)]
  gain = report["gain"]
  interval = ("" if gain["ci95_low"] is None else
              f", 95% interval [{gain['ci95_low']:.1f}, {gain['ci95_high']:.1f}] (Welch's t)")
  lines += ["", f"Gain: {gain['errors_mean']:.1f} fewer test errors on average{interval}."]
  return "\n".join(lines)


_FLAGS = {}


def define_flags():
  _FLAGS["seeds"] = flags.DEFINE_integer("seeds", 3, "Student seeds.", lower_bound=2)
  _FLAGS["first_seed"] = flags.DEFINE_integer("first_seed", 0, "The first student seed.")
  _FLAGS["workdir"] = common.path_flag("workdir", "runs/mnist_hinton", "The pipeline's workdir.")

def main():
  args = common.values(_FLAGS)
  args.workdir = pathlib.Path(args.workdir)
  config = load_config_file(CONFIG)
  config.student.seeds, config.student.seed = args.seeds, args.first_seed
  start = time.perf_counter()
  report = pipeline.run(config, args.workdir)
  minutes = (time.perf_counter() - start) / 60
  write_text(args.workdir / "summary.json", json.dumps(report, indent=2))
  body = table(report) + f"\n\nThis run: {minutes:.0f} minutes (finished stages reused)."
  write_between_markers(HERE / "README.md", body)
  print(body)


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
