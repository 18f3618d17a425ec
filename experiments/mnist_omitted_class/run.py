"""Hinton et al. 2015's omitted class: distil into a student whose transfer set holds no 3,
then correct its logit bias on the validation split; writes the table into README.md.

  python experiments/mnist_omitted_class/run.py [--seeds 3] [--setups demo,paper]
      [--workdir runs/mnist_omitted_class]

Two setups, each a teacher and --seeds students:
- demo: the demo's pair (configs/mnist/pipeline.py): the LeNet teacher, trained in
  WORKDIR/teacher unless it is there, and the 2x100 MLP student, 16 epochs on ce 0.1 +
  kd 0.9 at T=4 (students in WORKDIR/seed=S);
- paper: the paper's pair (configs/mnist/hinton.py): the 2x1200 teacher with dropout,
  max-norm and jitter (150 epochs, in WORKDIR/paper/teacher) and the 2x800 student without
  regularisation, 30 epochs on ce 0.1 + kd 0.9 at T=20 (in WORKDIR/paper/seed=S).
Every student learns from its teacher's soft labels, cached for the transfer set: MNIST's
training split less 5000 validation images, less every 3 (transfer.drop_classes = (3,)).
After training, a per-class logit bias is fitted on the 5000 validation images
(bias_correction.source = 'validation'), never on the test set.
"""

import json
import pathlib
import time

import numpy as np

from absl import flags

from jaxkd.cli import common
from jaxkd.errors import JaxkdError
from jaxkd.files import write_text
from jaxkd.run.assemble import transfer_set_of
from jaxkd.config import load_config_file
from jaxkd.data import load_split
from jaxkd.jobs.tables import markdown_table, write_between_markers
from jaxkd.run.saved import load_run, predict_logits
from jaxkd.engine.sharding import make_mesh
from jaxkd.run.soft_labels import write_soft_labels
from jaxkd.jobs.stats import mean_std, plus_minus
from jaxkd.run.train import train_and_evaluate

HERE = pathlib.Path(__file__).resolve().parent
MNIST = HERE.parents[1] / "configs" / "mnist"
# setup: its pipeline config, its subdirectory of the workdir, its rows' names, and what
# Hinton et al. report for it (test errors, errors on the 3s; teacher, before, after).
SETUPS = {
    "demo": {"pipeline": "pipeline.py", "dir": "", "name": "demo: 2x100 student, T=4, LeNet teacher",
             "paper": None},
    "paper": {"pipeline": "hinton.py", "dir": "paper",
              "name": "paper: 2x800 student, T=20, 2x1200 teacher",
              "paper": {"teacher": "67", "before": "206 (133 on 3s)", "after": "109 (14 on 3s)"}},
}


def student_config(pipeline_file: str, cache: pathlib.Path, seed: int):
  pipeline = load_config_file(MNIST / pipeline_file)
  config = pipeline.student
  config.unlock()
  config.seed = seed
  config.dataset.validation_size = 5000
  config.transfer.drop_classes = (3,)
  config.distill.terms = pipeline.distill.terms
  config.distill.soft_labels = (str(cache),)
  config.bias_correction.source = "validation"
  return config


def run_setup(setup: dict, root: pathlib.Path, seeds: int) -> dict:
  """Trains the setup's teacher (unless there), caches its soft labels on the transfer set
  and trains, corrects and scores each seed's student; returns the teacher's test errors and
  a row per seed."""
  pipeline_file, root = setup["pipeline"], root / setup["dir"]
  train_and_evaluate(load_config_file(MNIST / pipeline_file).teacher, root / "teacher")
  cache = root / "soft_labels_no_threes.npz"
  if not cache.exists():
    write_soft_labels(root / "teacher", cache, "float32",
                      data=transfer_set_of(student_config(pipeline_file, cache, 0)))
  test = load_split(student_config(pipeline_file, cache, 0).dataset, "test")
  threes, mesh = test.labels == 3, make_mesh()
  wrong = lambda z: int(np.sum(z[threes].argmax(-1) != 3))
  rows = []
  for seed in range(seeds):
    workdir = root / f"seed={seed}"
    result = train_and_evaluate(student_config(pipeline_file, cache, seed), workdir)
    fitted = json.loads((workdir / "bias_correction.json").read_text())
    logits = predict_logits(load_run(workdir, mesh), test, 1000, mesh)
    rows.append({"seed": seed, "errors": result["test_errors"],
                 "errors_corrected": result["test_errors_corrected"],
                 "threes_wrong": wrong(logits), "threes_wrong_corrected":
                     wrong(logits + np.asarray(fitted["bias"], np.float32)),
                 "bias_3": fitted["bias"][3]})
  teacher = int(np.sum(predict_logits(load_run(root / "teacher", mesh), test, 1000, mesh)
                       .argmax(-1) != test.labels))
  return {"teacher": teacher, "rows": rows, "test_size": len(test),
          "threes": int(threes.sum())}


def table_rows(setup: dict, measured: dict) -> list[list]:
  rows, paper = measured["rows"], setup["paper"] or {}
  cell = lambda key: plus_minus(*mean_std([r[key] for r in rows]))
  per_seed = lambda key: ", ".join(str(r[key]) for r in rows)
  return [[f"{setup['name']}: teacher (saw every class)", measured["teacher"], "-", "-",
           paper.get("teacher", "-")],
          ["student, no 3 in its transfer set", cell("errors"), cell("threes_wrong"),
           per_seed("errors"), paper.get("before", "-")],
          ["the same, bias corrected on validation", cell("errors_corrected"),
           cell("threes_wrong_corrected"), per_seed("errors_corrected"),
           paper.get("after", "-")]]


_FLAGS = {}


def define_flags():
  _FLAGS["seeds"] = flags.DEFINE_integer("seeds", 3, "Seeds per setup.", lower_bound=2)
  _FLAGS["setups"] = flags.DEFINE_list("setups", ["demo", "paper"],
                                       f"Which setups to run: {', '.join(SETUPS)}.")
  _FLAGS["workdir"] = common.path_flag("workdir", "runs/mnist_omitted_class", "Root of the runs.")


def main():
  args = common.values(_FLAGS)
  unknown = [name for name in args.setups if name not in SETUPS]
  if unknown or not args.setups:
    raise JaxkdError(f"--setups: unknown setup {', '.join(unknown) or '(none given)'}; "
                     f"choose among {', '.join(SETUPS)}.")
  root, start = pathlib.Path(args.workdir).absolute(), time.perf_counter()
  measured = {name: run_setup(SETUPS[name], root, args.seeds) for name in args.setups}
  first = next(iter(measured.values()))
  table = [row for name in args.setups for row in table_rows(SETUPS[name], measured[name])]
  bias = "; ".join(
      f"{name} {plus_minus(*mean_std([r['bias_3'] for r in measured[name]['rows']]))}"
      for name in args.setups)
  body = "\n".join([
      markdown_table(["", f"test errors (of {first['test_size']})",
                      f"errors on the {first['threes']} test 3s", "per seed",
                      "Hinton et al. 2015"], table),
      "", f"Fitted bias of the 3 logit (the biases are centred to mean 0), seeds "
      f"0-{args.seeds - 1}: {bias}.",
      "", f"This run: {(time.perf_counter() - start) / 60:.0f} minutes (finished runs reused)."])
  write_text(root / "summary.json", json.dumps(measured, indent=2))
  write_between_markers(HERE / "README.md", body)
  print(body)


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
