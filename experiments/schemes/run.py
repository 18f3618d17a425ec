"""Who teaches whom, on MNIST: one student architecture (the demo's 2x100 MLP) alone, taught
by the LeNet teacher (kd), by a teacher assistant (TAKD), by three born-again generations and
their ensemble, by a cohort partner (DML), by Tf-KD's virtual teacher, by its own same-class
predictions (CS-KD) and by its moving average (mean teacher): the graph of
configs/mnist/schemes.py, its report's table written into README.md.

  python experiments/schemes/run.py [--seeds=3] [--workdir=runs/schemes]

Every run is evaluated at its last step on the whole test split (nothing is chosen on it);
the gain of each over `alone` is a 95 % Welch interval over the seeds. Finished runs are
reused, so a stopped run of this script continues where it stopped.
"""

import pathlib
import time

from absl import flags

from jaxkd.cli import common
from jaxkd.config import load_config_file
from jaxkd.jobs import graph
from jaxkd.jobs.tables import write_between_markers
from jaxkd.jobs.timing import cpu_model

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = HERE.parents[1] / "configs" / "mnist" / "schemes.py"

_FLAGS = {}


def define_flags():
  _FLAGS["seeds"] = flags.DEFINE_integer("seeds", 3, "Seeds per run.", lower_bound=2)
  _FLAGS["workdir"] = common.path_flag("workdir", "runs/schemes", "Root of the runs.")
  _FLAGS["steps"] = flags.DEFINE_integer("steps", 0, "Steps per run, batches of 64 in "
                                         "evaluation (0: the config's; the tests' smoke run).",
                                         lower_bound=0)
  _FLAGS["no_readme"] = flags.DEFINE_boolean("no_readme", False, "Print the table only.")


def schemes_config(seeds: int, steps: int):
  config = load_config_file(CONFIG)
  config.seeds = seeds
  if steps:
    for run in config.runs.values():
      run.train.update(num_steps=steps, eval_every_steps=steps, checkpoint_every_steps=steps,
                       eval_batch_size=64)
  return config


def main():
  main_with(common.values(_FLAGS))


def main_with(args) -> str:
  start = time.perf_counter()
  report = graph.run(schemes_config(args.seeds, args.steps), args.workdir)
  table = graph.render_table(report)
  body = "\n".join([table, "", f"Seeds {list(range(args.seeds))} per run (seed i of a student "
                    "taught by seed i of its teachers); test errors of 10,000 at the last step; "
                    f"{time.perf_counter() - start:.0f} s on {cpu_model()} (finished runs "
                    "reused)."])
  print(body)
  if not args.no_readme:
    write_between_markers(HERE / "README.md", body)
  return body


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
