"""Tabular distillation over seeds: a 2x512 MLP teacher into a linear model and into a
1x8 MLP, on scikit-learn's breast cancer and wine tables; writes the table into README.md.

  python experiments/tabular/run.py [--workdir runs/tabular]

Four pipeline runs of configs/tabular/pipeline.py (DATASET,STUDENT), each one teacher and
5 student seeds alone and distilled (ce 0.5 + kd 0.5 at T=4, cached soft labels).
Finished runs are reused.
"""

import argparse
import json
import pathlib
import time

from jaxkd import pipeline
from jaxkd.config_base import load_config_file
from jaxkd.data import load_split
from jaxkd.report import write_between_markers

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = HERE.parents[1] / "configs" / "tabular" / "pipeline.py"
RUNS = [("breast_cancer", "linear"), ("breast_cancer", "mlp"), ("wine", "linear"),
        ("wine", "mlp")]


def row(dataset: str, student: str, report: dict) -> str:
  def cell(role):
    entry = report[role]
    return f"{entry['test_errors']:.1f} ± {entry['test_errors_std']:.1f}"

  gain = report["gain"]
  per_seed = ", ".join(f"{b['test_errors']}->{d['test_errors']}" for b, d in
                       zip(report["baseline"]["per_seed"], report["distilled"]["per_seed"]))
  return (f"| {dataset} ({report['test_count']} test) | {student} "
          f"({report['baseline']['params']:,} params) | {report['teacher']['test_errors']} "
          f"({report['teacher']['params']:,}) | {cell('baseline')} | {cell('distilled')} | "
          f"{gain['errors_mean']:.1f} [{gain['ci95_low']:.1f}, {gain['ci95_high']:.1f}] | "
          f"{per_seed} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/tabular"))
  args = parser.parse_args()
  start = time.perf_counter()
  lines = ["| dataset | student | teacher errors (params) | student alone: errors | "
           "distilled: errors | gain [95% interval] | per seed, alone->distilled |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  for dataset, student in RUNS:
    workdir = args.workdir / f"{dataset}_{student}"
    config = load_config_file(CONFIG, f"{dataset},{student}")
    report = pipeline.run(config, workdir)
    report["test_count"] = len(load_split(config.student.dataset, "test"))
    (workdir / "summary.json").write_text(json.dumps(report, indent=2))
    lines.append(row(dataset, student, report))
  minutes = (time.perf_counter() - start) / 60
  body = "\n".join(lines) + f"\n\nThis run: {minutes:.0f} minutes (finished stages reused)."
  write_between_markers(HERE / "README.md", body)
  print(body)


if __name__ == "__main__":
  main()
