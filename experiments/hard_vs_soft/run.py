"""Hard labels against soft labels: the same student trained on the labels alone, on the
teacher's hard labels (its argmax: hard_kd), on its soft labels at T = 4 (kd), and on both
(ce + kd), on MNIST and on the digits transfer set with 10 % labels; writes one table into
README.md.

  python experiments/hard_vs_soft/run.py [--seeds=3] [--workdir=runs/hard_vs_soft]

MNIST: the 2x100 MLP student of configs/mnist/student_kd.py (the demo's), taught online by
the demo's LeNet teacher (WORKDIR/mnist_teacher, configs/mnist/teacher_lenet.py; trained
unless it is there). Digits: the 2x100 MLP of configs/digits/transfer.py on the 1258
training digits of which 126 are labeled (the labels-alone arm trains on those 126, as
experiments/digits_transfer's student alone; the teacher's terms see all 1258),
taught by the MNIST LeNet adapted on the labeled digits (WORKDIR/digits/teacher). Each
arm's seeds train as one population; the gain of each arm over the labels alone is a 95 %
Welch interval over the seeds. Test errors at the last step (nothing is selected).
"""

import json
import pathlib
import time

import ml_collections
from absl import flags

from jaxkd.cli import common
from jaxkd.config import load_config_file
from jaxkd.files import write_text
from jaxkd.jobs.stats import mean_std, plus_minus, welch_interval
from jaxkd.jobs.tables import markdown_table, write_between_markers
from jaxkd.jobs.timing import cpu_model
from jaxkd.run.population import train_population
from jaxkd.run.train import train_and_evaluate

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = HERE.parents[1] / "configs"
ARMS = {
    "ce": ("labels alone (ce)", {"ce": {"weight": 1.0}}),
    "hard_kd": ("the teacher's hard labels (hard_kd)", {"hard_kd": {"weight": 1.0}}),
    "kd": ("soft labels, T = 4 (kd)", {"kd": {"weight": 1.0, "temperature": 4.0}}),
    "both": ("both (ce + kd, T = 4)", None),  # each dataset's recipe: its own weights
}
BOTH = {"mnist": {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}},
        "digits": {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 4.0}}}


def student(dataset: str, arm: str, root: pathlib.Path, seed: int, steps: int):
  if dataset == "mnist":
    config = load_config_file(CONFIGS / "mnist" / "student_kd.py")
    config.distill.teachers = (str(root / "mnist_teacher"),)
  else:  # The labels alone: the 126 labeled digits (ce over a set of 90 % unlabeled
    # examples at this learning rate sees about 3 labels a batch and collapses).
    arm_config = "alone" if arm == "ce" else "distilled"
    config = load_config_file(CONFIGS / "digits" / "transfer.py", f"{arm_config},{root / 'digits'}")
  terms = ARMS[arm][1] or BOTH[dataset]
  config.distill.terms = ml_collections.ConfigDict(terms)
  if arm == "ce":
    config.distill.teachers = ()
  config.seed = seed
  return shortened(config, steps)


def shortened(config: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
  """`steps` steps in place of the config's length (0: the config's), and an evaluation
  batch that divides over the tests' 8 devices."""
  if steps:
    config.train.update(num_steps=steps, eval_every_steps=steps, checkpoint_every_steps=steps,
                        eval_batch_size=64)
  return config


_FLAGS = {}


def define_flags():
  _FLAGS["seeds"] = flags.DEFINE_integer("seeds", 3, "Seeds per arm.", lower_bound=2)
  _FLAGS["workdir"] = common.path_flag("workdir", "runs/hard_vs_soft", "Root of the runs.")
  _FLAGS["steps"] = flags.DEFINE_integer("steps", 0, "Steps per student and teacher, batches of "
                                         "64 in evaluation (0: the configs'; the tests' smoke "
                                         "run).", lower_bound=0)
  _FLAGS["no_readme"] = flags.DEFINE_boolean("no_readme", False, "Print the table only.")


def main():
  main_with(common.values(_FLAGS))


def main_with(args):
  root, start = pathlib.Path(args.workdir).absolute(), time.perf_counter()
  train_and_evaluate(shortened(load_config_file(CONFIGS / "mnist" / "teacher_lenet.py"),
                               args.steps), root / "mnist_teacher")
  (root / "digits").mkdir(parents=True, exist_ok=True)
  if not (root / "digits" / "mnist_teacher").exists():  # transfer.py reads it there
    (root / "digits" / "mnist_teacher").symlink_to(root / "mnist_teacher")
  train_and_evaluate(shortened(load_config_file(CONFIGS / "digits" / "transfer.py",
                                                f"teacher,{root / 'digits'}"), args.steps),
                     root / "digits" / "teacher")
  seeds, errors = list(range(args.seeds)), {}
  for dataset in ("mnist", "digits"):
    for arm in ARMS:
      configs = [student(dataset, arm, root, s, args.steps) for s in seeds]
      workdirs = [root / dataset / arm / f"seed={s}" for s in seeds]
      results = train_population(configs, workdirs, root / dataset / arm / "population")
      errors[dataset, arm] = [r["test_errors"] for r in results]
  rows = []
  for dataset in ("mnist", "digits"):
    base = errors[dataset, "ce"]
    for arm, (label, _) in ARMS.items():
      found = errors[dataset, arm]
      gain = welch_interval(base, found) if arm != "ce" else None
      rows.append([dataset if arm == "ce" else "", label, plus_minus(*mean_std(found)),
                   ", ".join(map(str, found)),
                   "-" if gain is None else f"{gain['difference']:.1f} [{gain['low']:.1f}, "
                   f"{gain['high']:.1f}]"])
  body = "\n".join([
      markdown_table(["data", "student trained on", "test errors", "per seed",
                      "fewer errors than labels alone, 95% interval"], rows, align="llrrr"),
      "", f"Seeds {seeds}; each arm's seeds as one population; {time.perf_counter() - start:.0f} s "
      f"on {cpu_model()} (finished runs reused)."])
  write_text(root / "table.json", json.dumps(
      {f"{dataset}/{arm}": found for (dataset, arm), found in errors.items()}, indent=1))
  print(body)
  if not args.no_readme:
    write_between_markers(HERE / "README.md", body)


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
