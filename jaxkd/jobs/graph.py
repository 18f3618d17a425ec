"""Runs as a graph: named training runs, each naming its teachers among the graph's earlier
runs (or workdirs, or Hugging Face directories), so that chains (born-again networks,
teacher-assistant KD), several teachers and comparisons are one config.

config (job 'graph', jaxkd.config.schema.graph_config):
  runs.<name>   a training config (base_config); a name in its distill.teachers is that run
  seeds         every run trains seeds seed, seed + 1, ... (from its own `seed`); seed i of a
                run is taught by seed i of each teacher run, so a chain's spread includes its
                teachers'
  baseline      the run each other run's gain in test errors is measured against ('' none)

Workdir: <name>/seed=<S>/ for each run and seed, report.md and report.json. The runs train
in an order where each comes after its teachers (jaxkd.config.checks.graph_order); each run
resumes or, when finished, is reused (jaxkd.run.train), so a graph stopped anywhere continues
where it stopped, and a run whose config changed is refused by that run's resume check.
Every config is checked, and every teacher that is not a run found, before any training.
"""

import copy
import json
import pathlib

import jax
import ml_collections
import numpy as np

from jaxkd.config import complete
from jaxkd.config.checks import graph_order, teacher_runs
from jaxkd.data import load_split
from jaxkd.engine.sharding import make_mesh
from jaxkd.errors import JaxkdError
from jaxkd.files import write_text
from jaxkd.jobs.pipeline import train_seeds
from jaxkd.jobs.stats import mean_std, plus_minus, welch_interval
from jaxkd.jobs.tables import markdown_table
from jaxkd.log import say
from jaxkd.run.cohort import member_dirs
from jaxkd.run.saved import load_run, predict_logits
from jaxkd.run.workdir import lock


def seed_dir(workdir: pathlib.Path, name: str, index: int, config) -> pathlib.Path:
  """Where seed number `index` of run `name` trains."""
  return workdir / name / f"seed={config.runs[name].seed + index}"


def seed_config(config: ml_collections.ConfigDict, workdir: pathlib.Path, name: str,
                index: int) -> ml_collections.ConfigDict:
  """Run `name`'s config for its seed number `index`: its seed, and each teacher that names a
  run replaced by that run's directory of the same seed number."""
  run = copy.deepcopy(config.runs[name])
  run.unlock()
  run.seed = run.seed + index
  run.distill.teachers = tuple(str(seed_dir(workdir, t, index, config)) if t in config.runs
                               else t for t in run.distill.teachers)
  return run


def validate(config: ml_collections.ConfigDict) -> list[str]:
  """Every check before any training; returns the order the runs train in."""
  complete(config)
  order = graph_order(config)  # The graph job's whole check (what config.validate runs for it).
  for name in order:
    cohorts = [t for t in teacher_runs(config, name) if config.runs[t].distill.cohort > 1]
    if cohorts:
      raise JaxkdError(f"runs.{name} is taught by the cohort(s) {cohorts}, whose members are "
                       "runs of their own: name a member's directory (<cohort>/seed=S/member_0) "
                       "or train the teacher as an ordinary run.")
    missing = [t for t in config.runs[name].distill.teachers
               if t not in config.runs and not pathlib.Path(t).is_dir()]
    if missing:
      raise JaxkdError(f"runs.{name}.distill.teachers: {missing} is neither a run of this graph "
                       f"({sorted(config.runs)}) nor a directory; name a run or a trained "
                       "run's workdir.")
  return order


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Trains every run of the graph in `workdir` (one graph at a time in it) and returns the
  report's numbers (report.json)."""
  workdir = pathlib.Path(workdir)
  order = validate(config)
  if jax.process_count() > 1:
    raise JaxkdError("the graph job runs in one process (its report is computed on one host); "
                     "run its runs as separate training jobs.")
  with lock([workdir]):
    for number, name in enumerate(order):
      teachers = ", ".join(config.runs[name].distill.teachers) or "no teacher"
      seeds = range(config.seeds)
      train_seeds([seed_config(config, workdir, name, i) for i in seeds],
                  [seed_dir(workdir, name, i, config) for i in seeds], workdir / name / "population",
                  True, f"== {number + 1}/{len(order)} {name} (taught by: {teachers})")
    report = compare(config, workdir, order)
    markdown = render_markdown(report)
    write_text(workdir / "report.json", json.dumps(report, indent=2) + "\n")
    write_text(workdir / "report.md", markdown)
  say("\n" + markdown)
  say(f"report: {workdir / 'report.md'}, {workdir / 'report.json'}")
  return report


def _errors(probabilities: np.ndarray, labels: np.ndarray) -> int:
  return int((probabilities.argmax(-1) != labels).sum())


def compare(config: ml_collections.ConfigDict, workdir: pathlib.Path, order: list[str]) -> dict:
  """Test errors of every run's seeds at their last step (nothing is chosen on the test set),
  of the ensemble of each multi-teacher run's teachers (the mean of their probabilities, per
  seed), and each one's gain over the baseline run (Welch's 95 % interval over seeds)."""
  mesh = make_mesh()
  tests, probabilities, rows = {}, {}, {}
  for name in order:
    dataset = config.runs[name].dataset
    key = json.dumps(dataset.to_dict(), sort_keys=True, default=str)
    if key not in tests:
      tests[key] = load_split(dataset, "test")
    test = tests[key]
    members = config.runs[name].distill.cohort
    for member in range(members):  # A cohort's members (deep mutual learning) are rows each.
      label = f"{name}.member_{member}" if members > 1 else name
      dirs = [seed_dir(workdir, name, i, config) for i in range(config.seeds)]
      runs = [load_run(member_dirs(d, members)[member] if members > 1 else d, mesh)
              for d in dirs]
      probabilities[label] = [np.asarray(jax.nn.softmax(predict_logits(
          r, test, config.runs[name].train.eval_batch_size, mesh))) for r in runs]
      rows[label] = {"teachers": list(config.runs[name].distill.teachers),
                     "model": config.runs[name].model.name, "params": runs[0].num_params,
                     "errors": [_errors(p, test.labels) for p in probabilities[label]],
                     "examples": len(test)}
    members = teacher_runs(config, name)
    if len(members) > 1:
      ensemble = [np.mean([probabilities[m][i] for m in members], 0) for i in range(config.seeds)]
      rows[f"ensemble({', '.join(members)})"] = {
          "teachers": [], "model": "ensemble", "params": sum(rows[m]["params"] for m in members),
          "errors": [_errors(p, test.labels) for p in ensemble], "examples": len(test)}
  for label, row in rows.items():
    row["errors_mean"], row["errors_std"] = mean_std(row["errors"])
    if config.baseline and label != config.baseline:
      row["gain"] = welch_interval(rows[config.baseline]["errors"], row["errors"])
  return {"runs": rows, "baseline": config.baseline, "seeds": config.seeds, "order": order,
          "device": str(jax.devices()[0].device_kind)}


def render_markdown(report: dict) -> str:
  return "\n".join([
      "# Graph report", "", render_table(report), "",
      f"Mean ± sample standard deviation over {report['seeds']} seed(s); seed i of a run is "
      "taught by seed i of each teacher run. Every model is evaluated at its last step on the "
      "whole test split (nothing is chosen on it). An ensemble is the mean of its members' "
      f"probabilities. Evaluated on {report['device']}. The same numbers: report.json.", ""])


def render_table(report: dict) -> str:
  """The report's table: every run's test errors over seeds and its gain over the baseline."""
  header = ["run", "taught by", "model", "params", "test errors", "test accuracy (%)"]
  if report["baseline"]:
    header.append(f"fewer errors than {report['baseline']} (95 % interval)")
  rows = []
  for name, row in report["runs"].items():
    accuracy = [100 * (1 - e / row["examples"]) for e in row["errors"]]
    cells = [name, ", ".join(pathlib.Path(t).name for t in row["teachers"]) or "-", row["model"],
             f"{row['params']:,}", plus_minus(row["errors_mean"], row["errors_std"]),
             plus_minus(*mean_std(accuracy), digits=2)]
    if report["baseline"]:
      gain = row.get("gain")
      cells.append("-" if gain is None else f"{gain['difference']:.1f}" + (
          f" [{gain['low']:.1f}, {gain['high']:.1f}]" if gain["low"] is not None else ""))
    rows.append(cells)
  return markdown_table(header, rows)
