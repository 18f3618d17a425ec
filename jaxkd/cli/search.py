"""python -m jaxkd search --config=configs/mnist/student_kd.py --workdir=runs/search \
    --space 'distill.terms.kd.temperature=loguniform(1,32)' [--space ...] [--trials=8]
    [--eta=2] [--rungs=3] [--min_epochs=1] [--search_seed=0] [--config.<field>=V]

Successive halving over populations, ranked on the validation split (jaxkd.jobs.search);
writes WORKDIR/trials.md, trials.csv, search.png, summary.json and best_config.py.
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from jaxkd.cli import common
from jaxkd.errors import JaxkdError

_FLAGS: dict = {}


def define_flags() -> None:
  _FLAGS["config"] = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                                     lock_config=True)
  _FLAGS["workdir"] = common.path_flag("workdir", None, "Root directory of the search.")
  _FLAGS["space"] = flags.DEFINE_multi_string("space", [], "KEY=uniform(a,b) | loguniform(a,b) "
                                              "| choice(v1,...): a searched field.")
  _FLAGS["trials"] = flags.DEFINE_integer("trials", 8, "Trials drawn.", lower_bound=2)
  _FLAGS["eta"] = flags.DEFINE_integer("eta", 2, "Keep 1/eta per rung; epochs grow by eta.",
                                       lower_bound=2)
  _FLAGS["rungs"] = flags.DEFINE_integer("rungs", 3, "Rungs of successive halving.",
                                         lower_bound=1)
  _FLAGS["min_epochs"] = common.positive_float_flag("min_epochs", 1.0,
                                                    "Epochs of the first rung.")
  _FLAGS["search_seed"] = flags.DEFINE_integer("search_seed", 0, "Seed of the drawn values.")
  flags.mark_flags_as_required(["config", "workdir"])


def main() -> None:
  from jaxkd.jobs.search import parse_space, search

  args = common.values(_FLAGS)
  if not args.space:
    raise JaxkdError("give at least one --space KEY=distribution(...).")
  spaces = [parse_space(s) for s in args.space]
  how = common.start_distributed(args.config)
  summary = search(args.config, args.workdir, spaces, args.trials,
                   args.eta, args.rungs, args.min_epochs, args.search_seed)
  workdir = pathlib.Path(args.workdir)
  import jax

  if jax.process_index() == 0:
    print((workdir / "trials.md").read_text())
    print(f"best config: {workdir / 'best_config.py'} (trial {summary['best_trial']}); plot: "
          f"{workdir / 'search.png'}")
  if how:
    from jaxkd.run import distributed

    distributed.shutdown()
