"""Automated distillation search: successive halving over populations.

  python -m jaxkd search --config=configs/mnist/student_kd.py --workdir=runs/search \\
      --space 'distill.terms.kd.temperature=loguniform(1,32)' \\
      --space 'distill.terms.kd.weight=uniform(0.1,1)' [--trials=8] [--eta=2] [--rungs=3] \\
      [--min_epochs=1] [--search_seed=0]

Trials draw their values from the spaces (uniform(a,b), loguniform(a,b), choice(v1,...))
with --search_seed. Rung r trains the surviving trials to min_epochs * eta^r epochs as one
population (one compiled step, one teacher forward per batch for all: they share the
seed), continuing each from where the last rung left it; then the best 1/eta on the
validation split survive. The config as given (the hand-set recipe) runs beside them in
every rung as a control, not a contender, so the best trial is compared with it at the
same budget. The test split is measured once, at the end, for the best trial (and the
control), never during the search.

Why successive halving and not Optuna's TPE with pruning: a rung's trials train together
in one vmapped step that shares the teacher, which is where JAX makes a search cheap;
TPE proposes trials one after another, each a run of its own. Successive halving is the
few lines below.

Writes WORKDIR/trials.md, trials.csv, search.png (validation accuracy against each searched
value), summary.json and best_config.py with best_config.json (the best trial's whole
config and length: a file to run with python -m jaxkd train).
"""

import csv
import dataclasses
import io
import json
import math
import pathlib
import re
from typing import Sequence

import ml_collections
import numpy as np

from jaxkd.config import paths
from jaxkd.errors import JaxkdError
from jaxkd.files import write_text
from jaxkd.jobs.tables import figure, markdown_table

DISTRIBUTIONS = ("uniform", "loguniform", "choice")


@dataclasses.dataclass(frozen=True)
class Space:
  key: str
  kind: str
  values: tuple

  def sample(self, rng: np.random.Generator):
    if self.kind == "uniform":
      return float(rng.uniform(*self.values))
    if self.kind == "loguniform":
      return float(math.exp(rng.uniform(math.log(self.values[0]), math.log(self.values[1]))))
    return self.values[int(rng.integers(len(self.values)))]


def parse_space(text: str) -> Space:
  """'key=uniform(a,b)', 'key=loguniform(a,b)' (0 < a) or 'key=choice(v1,v2,...)'."""
  match = re.fullmatch(r"\s*([\w.]+)\s*=\s*(\w+)\((.*)\)\s*", text)
  if not match or match.group(2) not in DISTRIBUTIONS:
    raise JaxkdError(f"--space '{text}': write KEY=uniform(a,b), KEY=loguniform(a,b) or "
                     "KEY=choice(v1,v2,...).")
  key, kind, args = match.groups()
  try:
    values = tuple(json.loads(f"[{args}]"))
  except json.JSONDecodeError:
    raise JaxkdError(f"--space '{text}': the values must be numbers (or quoted strings).") from None
  if kind != "choice" and (len(values) != 2 or values[0] >= values[1]
                           or (kind == "loguniform" and values[0] <= 0)):
    raise JaxkdError(f"--space '{text}': {kind} takes two bounds low < high"
                     + (", low > 0" if kind == "loguniform" else "") + ".")
  return Space(key, kind, values)


def _trial_config(base: ml_collections.ConfigDict, values: dict, epochs: float):
  config = ml_collections.ConfigDict(base.to_dict())
  for key, value in values.items():
    paths.set_value(config, key, value, f"--space {key}")
  config.train.epochs, config.train.num_steps = float(epochs), 0
  config.train.eval_every_steps = 0  # Once per epoch.
  return config


def search(base: ml_collections.ConfigDict, workdir: str | pathlib.Path, spaces: Sequence[Space],
           trials: int = 8, eta: int = 2, rungs: int = 3, min_epochs: float = 1.0,
           search_seed: int = 0) -> dict:
  """Runs the search (see the module docstring); returns its summary."""
  from jaxkd import config as config_checks
  from jaxkd.log import say
  from jaxkd.run.population import train_population

  workdir = pathlib.Path(workdir)
  config_checks.validate(base)
  if not base.dataset.validation_size:
    raise JaxkdError("a search ranks trials on the validation split: set "
                     "--config.dataset.validation_size > 0 (never the test set).")
  if trials < 2 or eta < 2 or rungs < 1:
    raise JaxkdError("a search needs --trials >= 2, --eta >= 2 and --rungs >= 1.")
  rng = np.random.default_rng(search_seed)
  drawn = [{s.key: s.sample(rng) for s in spaces} for _ in range(trials)]
  control = {s.key: paths.get(base, s.key) for s in spaces}
  config_checks.validate(_trial_config(base, drawn[0], min_epochs))
  alive, history = list(range(trials)), {i: [] for i in range(trials + 1)}
  values = drawn + [control]  # The last one is the control: the config as given.
  for rung in range(rungs):
    epochs = min_epochs * eta ** rung
    members = alive + [trials]
    say(f"== rung {rung + 1}/{rungs}: {len(alive)} trial(s) + the control to {epochs:g} epochs")
    outcome = train_population([_trial_config(base, values[i], epochs) for i in members],
                               [workdir / "trials" / str(i) for i in members],
                               workdir / "rungs" / str(rung), evaluate_test=False)
    for i, result in zip(members, outcome):
      history[i].append((epochs, result["validation_accuracy"]))
    if rung < rungs - 1:
      keep = max(1, math.ceil(len(alive) / eta))
      alive = sorted(alive, key=lambda i: -history[i][-1][1])[:keep]
  best = max(alive, key=lambda i: history[i][-1][1])
  final_epochs = min_epochs * eta ** (rungs - 1)
  test = {i: _test_once(base, values[i], final_epochs, workdir / "trials" / str(i))
          for i in (best, trials)}
  summary = {"best_trial": best, "best_values": values[best], "control_values": control,
             "epochs": final_epochs, "validation_accuracy": history[best][-1][1],
             "control_validation_accuracy": history[trials][-1][1],
             "test_accuracy": test[best], "control_test_accuracy": test[trials],
             "trials": [{"trial": i if i < trials else "control", **values[i],
                         "rungs": history[i]} for i in range(trials + 1)]}
  import jax

  if jax.process_index() == 0:  # Several processes: one writes the outputs.
    _write_outputs(workdir, spaces, summary, _trial_config(base, values[best], final_epochs))
  return summary


def _test_once(base, values, epochs, workdir) -> float:
  """The trial's test accuracy, measured once from its final checkpoint."""
  from jaxkd.data import load_split
  from jaxkd.engine.evaluation import evaluate, make_eval_step
  from jaxkd.engine.sharding import make_mesh
  from jaxkd.run.saved import load_run

  config = _trial_config(base, values, epochs)
  mesh = make_mesh()
  run = load_run(workdir, mesh)
  eval_step = make_eval_step(run.model, run.preprocess(), mesh, run.input_kind)
  return evaluate(eval_step, run.variables, load_split(config.dataset, "test"),
                  config.train.eval_batch_size, mesh)["accuracy"]


def _write_outputs(workdir: pathlib.Path, spaces: Sequence[Space], summary: dict,
                   best_config: ml_collections.ConfigDict) -> None:
  keys = [s.key for s in spaces]
  rungs = max(len(t["rungs"]) for t in summary["trials"])
  header = ["trial", *keys, *[f"validation accuracy at rung {r + 1}" for r in range(rungs)]]
  rows = [[t["trial"], *[f"{t[k]:.4g}" if isinstance(t[k], float) else t[k] for k in keys],
           *[f"{acc:.4f} ({epochs:g} ep)" for epochs, acc in t["rungs"]]]
          for t in summary["trials"]]
  lines = [markdown_table(header, rows)]
  lines += ["", f"Best: trial {summary['best_trial']} ({summary['best_values']}) at "
            f"{summary['epochs']:g} epochs, validation accuracy "
            f"{summary['validation_accuracy']:.4f} (the control: "
            f"{summary['control_validation_accuracy']:.4f}); test accuracy, measured once: "
            f"{summary['test_accuracy']:.4f} (the control: "
            f"{summary['control_test_accuracy']:.4f})."]
  write_text(workdir / "trials.md", "\n".join(lines) + "\n")
  text = io.StringIO()
  csv.writer(text).writerows([header, *rows])
  write_text(workdir / "trials.csv", text.getvalue())
  write_text(workdir / "summary.json", json.dumps(summary, indent=2) + "\n")
  with figure(workdir / "search.png", columns=len(keys), size=(4.5 * len(keys), 3.5),
              squeeze=False) as (_, axes):
    for axis, space in zip(axes[0], spaces):
      for t in summary["trials"]:
        reached = len(t["rungs"])
        axis.scatter([t[space.key]], [t["rungs"][-1][1]], c=f"C{reached - 1}",
                     marker="*" if t["trial"] == "control" else "o", s=60)
      axis.set_xscale("log" if space.kind == "loguniform" else "linear")
      axis.set_xlabel(space.key)
      axis.set_ylabel("validation accuracy (last rung reached)")
  write_text(workdir / "best_config.json", best_config.to_json_best_effort(indent=2) + "\n")
  write_text(workdir / "best_config.py",
      f'"""The best trial of the search in {workdir.absolute()} (jaxkd.jobs.search): its whole '
      'config,\nbest_config.json beside this file.\n\n'
      f'  python -m jaxkd train --config={workdir / "best_config.py"} --workdir=runs/best\n"""\n\n'
      "import json\nimport pathlib\n\nimport ml_collections\n\n\n"
      "def get_config():\n"
      '  path = pathlib.Path(__file__).with_name("best_config.json")\n'
      "  return ml_collections.ConfigDict(json.loads(path.read_text()))\n")
