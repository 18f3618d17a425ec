"""Hinton et al. 2015's MNIST experiment over several seeds; writes the table into README.md.

  python experiments/mnist_hinton/run.py [--seeds 0 1 2] [--workdir runs/mnist_hinton]

Each seed is one pipeline run (configs/mnist/hinton.py) in WORKDIR/seed<N>; finished
seeds are reused. The seed sets initialisation, data order and dropout for all three
models.
"""

import argparse
import json
import pathlib
import statistics

from jaxkd import pipeline
from jaxkd.config_base import load_config_file

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = HERE.parents[1] / "configs" / "mnist" / "hinton.py"
ROLES = (("teacher", "teacher 2x1200, dropout + jitter"), ("baseline", "student 2x800, no teacher"),
         ("distilled", "student 2x800, distilled (T=20)"))
PAPER = {"teacher": 67, "baseline": 146, "distilled": 74}


def run_seed(seed: int, workdir: pathlib.Path) -> dict:
  config = load_config_file(CONFIG)
  for section in (config.teacher, config.student):
    section.seed = seed
  return pipeline.run(config, workdir / f"seed{seed}")


def table(reports: dict[int, dict]) -> str:
  seeds = sorted(reports)
  lines = ["| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | paper |",
           "| --- |" + " --- |" * (len(seeds) + 2)]
  for role, name in ROLES:
    errors = [reports[s][role]["test_errors"] for s in seeds]
    spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
    lines.append(f"| {name} | " + " | ".join(str(e) for e in errors) +
                 f" | {statistics.mean(errors):.1f} ± {spread:.1f} | {PAPER[role]} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/mnist_hinton"))
  args = parser.parse_args()
  reports = {seed: run_seed(seed, args.workdir) for seed in args.seeds}
  (args.workdir / "summary.json").write_text(json.dumps(reports, indent=2))
  readme = HERE / "README.md"
  text = readme.read_text()
  start, end = "<!-- table -->", "<!-- /table -->"
  readme.write_text(text[:text.index(start) + len(start)] + "\n" + table(reports) + "\n" +
                    text[text.index(end):])
  print(table(reports))


if __name__ == "__main__":
  main()
