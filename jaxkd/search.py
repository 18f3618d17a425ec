"""Automated distillation search: successive halving over populations.

  python -m jaxkd.search --config=configs/mnist/student_kd.py --workdir=runs/search \\
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
config and length: a file to run with jaxkd.main).
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
from absl import flags

from jaxkd import cli
from jaxkd.errors import JaxkdError

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


def _set(config: ml_collections.ConfigDict, key: str, value) -> None:
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  if leaf not in node:
    raise JaxkdError(f"--space {key}: the config has no field '{key}'.")
  node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], (int, float)) else value


def _trial_config(base: ml_collections.ConfigDict, values: dict, epochs: float):
  config = ml_collections.ConfigDict(base.to_dict())
  for key, value in values.items():
    _set(config, key, value)
  config.train.epochs, config.train.num_steps = float(epochs), 0
  config.train.eval_every_steps = 0  # Once per epoch.
  return config


def search(base: ml_collections.ConfigDict, workdir: str | pathlib.Path, spaces: Sequence[Space],
           trials: int = 8, eta: int = 2, rungs: int = 3, min_epochs: float = 1.0,
           search_seed: int = 0) -> dict:
  """Runs the search (see the module docstring); returns its summary."""
  from jaxkd import config_base
  from jaxkd.assemble import say
  from jaxkd.population import train_population

  workdir = pathlib.Path(workdir)
  if not base.dataset.get("validation_size"):
    raise JaxkdError("a search ranks trials on the validation split: set "
                     "--config.dataset.validation_size > 0 (never the test set).")
  if trials < 2 or eta < 2 or rungs < 1:
    raise JaxkdError("a search needs --trials >= 2, --eta >= 2 and --rungs >= 1.")
  rng = np.random.default_rng(search_seed)
  drawn = [{s.key: s.sample(rng) for s in spaces} for _ in range(trials)]
  control = {s.key: _get(base, s.key) for s in spaces}
  config_base.validate(_trial_config(base, drawn[0], min_epochs))
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
  _write_outputs(workdir, spaces, summary, _trial_config(base, values[best], final_epochs))
  return summary


def _get(config, key):
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _test_once(base, values, epochs, workdir) -> float:
  """The trial's test accuracy, measured once from its final checkpoint."""
  from jaxkd.assemble import assemble
  from jaxkd.checkpoint import Checkpointer
  from jaxkd.evaluation import evaluate

  config = _trial_config(base, values, epochs)
  run = assemble(config, workdir)
  checkpointer = Checkpointer(workdir, 1, read_only=True)
  try:
    state = checkpointer.restore(run.state)
  finally:
    checkpointer.close()
  return evaluate(run.eval_step, state.variables(), run.test_data, config.train.eval_batch_size,
                  run.mesh)["accuracy"]


def _write_outputs(workdir: pathlib.Path, spaces: Sequence[Space], summary: dict,
                   best_config: ml_collections.ConfigDict) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  keys = [s.key for s in spaces]
  rungs = max(len(t["rungs"]) for t in summary["trials"])
  header = ["trial", *keys, *[f"validation accuracy at rung {r + 1}" for r in range(rungs)]]
  rows = [[t["trial"], *[f"{t[k]:.4g}" if isinstance(t[k], float) else t[k] for k in keys],
           *[f"{acc:.4f} ({epochs:g} ep)" for epochs, acc in t["rungs"]]]
          for t in summary["trials"]]
  lines = ["| " + " | ".join(map(str, header)) + " |", "|" + " --- |" * len(header)]
  lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
  lines += ["", f"Best: trial {summary['best_trial']} ({summary['best_values']}) at "
            f"{summary['epochs']:g} epochs, validation accuracy "
            f"{summary['validation_accuracy']:.4f} (the control: "
            f"{summary['control_validation_accuracy']:.4f}); test accuracy, measured once: "
            f"{summary['test_accuracy']:.4f} (the control: "
            f"{summary['control_test_accuracy']:.4f})."]
  (workdir / "trials.md").write_text("\n".join(lines) + "\n")
  text = io.StringIO()
  csv.writer(text).writerows([header, *rows])
  (workdir / "trials.csv").write_text(text.getvalue())
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  figure, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5), squeeze=False)
  for axis, space in zip(axes[0], spaces):
    for t in summary["trials"]:
      reached = len(t["rungs"])
      axis.scatter([t[space.key]], [t["rungs"][-1][1]], c=f"C{reached - 1}",
                   marker="*" if t["trial"] == "control" else "o", s=60)
    axis.set_xscale("log" if space.kind == "loguniform" else "linear")
    axis.set_xlabel(space.key)
    axis.set_ylabel("validation accuracy (last rung reached)")
  figure.tight_layout()
  figure.savefig(workdir / "search.png", dpi=120)
  plt.close(figure)
  (workdir / "best_config.json").write_text(best_config.to_json_best_effort(indent=2) + "\n")
  (workdir / "best_config.py").write_text(
      f'"""The best trial of the search in {workdir.absolute()} (jaxkd.search): its whole config,\n'
      'best_config.json beside this file.\n\n'
      f'  python -m jaxkd.main --config={workdir / "best_config.py"} --workdir=runs/best\n"""\n\n'
      "import json\nimport pathlib\n\nimport ml_collections\n\n\n"
      "def get_config():\n"
      '  path = pathlib.Path(__file__).with_name("best_config.json")\n'
      "  return ml_collections.ConfigDict(json.loads(path.read_text()))\n")


# -- command line ------------------------------------------------------------------------------

_FLAGS: dict = {}


def define_flags() -> None:
  from ml_collections import config_flags

  _FLAGS["config"] = config_flags.DEFINE_config_file("config", None, "Training config file.")
  _FLAGS["workdir"] = flags.DEFINE_string("workdir", None, "Root directory of the search.")
  _FLAGS["space"] = flags.DEFINE_multi_string("space", [], "KEY=uniform(a,b) | loguniform(a,b) "
                                              "| choice(v1,...): a searched field.")
  _FLAGS["trials"] = flags.DEFINE_integer("trials", 8, "Trials drawn.")
  _FLAGS["eta"] = flags.DEFINE_integer("eta", 2, "Keep 1/eta per rung; epochs grow by eta.")
  _FLAGS["rungs"] = flags.DEFINE_integer("rungs", 3, "Rungs of successive halving.")
  _FLAGS["min_epochs"] = flags.DEFINE_float("min_epochs", 1.0, "Epochs of the first rung.")
  _FLAGS["search_seed"] = flags.DEFINE_integer("search_seed", 0, "Seed of the drawn values.")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  from absl import logging

  if len(argv) > 1:
    cli.fail("jaxkd.search", f"unexpected arguments {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  values = {name: holder.value for name, holder in _FLAGS.items()}
  try:
    if not values["space"]:
      raise JaxkdError("give at least one --space KEY=distribution(...).")
    spaces = [parse_space(s) for s in values["space"]]
    summary = search(values["config"], values["workdir"], spaces, values["trials"],
                     values["eta"], values["rungs"], values["min_epochs"], values["search_seed"])
  except JaxkdError as e:
    cli.fail("jaxkd.search", str(e))
  workdir = pathlib.Path(values["workdir"])
  print((workdir / "trials.md").read_text())
  print(f"best config: {workdir / 'best_config.py'} (trial {summary['best_trial']}); plot: "
        f"{workdir / 'search.png'}")


if __name__ == "__main__":
  from absl import app

  define_flags()
  app.run(main, flags_parser=cli.flags_parser("jaxkd.search"))
