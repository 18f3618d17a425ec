"""Tabular distillation over seeds: a 2x512 MLP teacher into a linear model and into a
1x8 MLP, on scikit-learn's breast cancer and wine tables; writes the table into README.md.

  python experiments/tabular/run.py [--workdir runs/tabular]

Four pipeline runs of configs/tabular/pipeline.py (DATASET,STUDENT), each one teacher and
5 student seeds alone and distilled (ce 0.5 + kd 0.5 at T=4, cached soft labels).
Finished runs are reused.
"""

import json
import pathlib
import time

from jaxkd.cli import common
from jaxkd.files import write_text
from jaxkd.jobs import pipeline
from jaxkd.config import load_config_file
from jaxkd.data import load_split
from jaxkd.jobs.tables import markdown_table, write_between_markers

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = HERE.parents[1] / "configs" / "tabular" / "pipeline.py"
RUNS = [("breast_cancer", "linear"), ("breast_cancer", "mlp"), ("wine", "linear"),
        ("wine", "mlp")]


def row(dataset: str, student: str, report: dict) -> list[str]:
  def cell(role):
    entry = report[role]
    return f"{entry['test_errors']:.1f} ± {entry['test_errors_std']:.1f}"

  gain = report["gain"]
  per_seed = ", ".join(f"{b['test_errors']}->{d['test_errors']}" for b, d in
                       zip(report["baseline"]["per_seed"], report["distilled"]["per_seed"]))
  return [f"{dataset} ({report['test_count']} test)",
          f"{student} ({report['baseline']['params']:,} params)",
          f"{report['teacher']['test_errors']} ({report['teacher']['params']:,})", cell("baseline"),
          cell("distilled"),
          f"{gain['errors_mean']:.1f} [{gain['ci95_low']:.1f}, {gain['ci95_high']:.1f}]", per_seed]


_FLAGS = {}


def define_flags():
  _FLAGS["workdir"] = common.path_flag("workdir", "runs/tabular", "Root of the pipelines.")


def main():
  args = common.values(_FLAGS)
  args.workdir = pathlib.Path(args.workdir)
  start = time.perf_counter()
  rows = []
  for dataset, student in RUNS:
    workdir = args.workdir / f"{dataset}_{student}"
    config = load_config_file(CONFIG, f"{dataset},{student}")
    report = pipeline.run(config, workdir)
    report["test_count"] = len(load_split(config.student.dataset, "test"))
    write_text(workdir / "summary.json", json.dumps(report, indent=2))
    rows.append(row(dataset, student, report))
  minutes = (time.perf_counter() - start) / 60
  header = ["dataset", "student", "teacher errors (params)", "student alone: errors",
            "distilled: errors", "gain [95% interval]", "per seed, alone->distilled"]
  body = markdown_table(header, rows) + f"\n\nThis run: {minutes:.0f} minutes (finished stages reused)."
  write_between_markers(HERE / "README.md", body)
  print(body)


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
