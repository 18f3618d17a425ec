"""python -m jaxkd sweep --config=configs/mnist/student_kd.py --workdir=runs/sweep_t \
    --sweep 'distill.terms.kd.temperature=1,2,4,8' [--sweep ...] [--seeds=3] [--config.<f>=V]

A training config over a grid of overrides and seeds (jaxkd.jobs.sweep.grid), then
WORKDIR/results.md, .csv, .json and .png. Finished cells are skipped when run again.
--list prints the cells; --cell=K runs only cell K (one cluster job per cell); --report only
aggregates the finished cells.
"""

from absl import flags
from ml_collections import config_flags

from jaxkd.cli import common

_FLAGS: dict = {}


def define_flags() -> None:
  _FLAGS["config"] = config_flags.DEFINE_config_file(
      "config", None, "Training config file (get_config()); --config.<field>=<value> overrides "
      "apply to every cell.", lock_config=True)
  _FLAGS["workdir"] = common.path_flag("workdir", None, "Root directory of the sweep.")
  _FLAGS["sweep"] = flags.DEFINE_multi_string(
      "sweep", [], "KEY=V1,V2,...: a config field and its values (repeat for a grid).")
  _FLAGS["seeds"] = flags.DEFINE_integer("seeds", 1, "Seeds per setting: config.seed + 0..N-1.",
                                         lower_bound=1)
  _FLAGS["list"] = flags.DEFINE_boolean("list", False, "Print the cells and their workdirs.")
  _FLAGS["cell"] = flags.DEFINE_multi_integer("cell", [], "Run only these cells (see --list).")
  _FLAGS["report"] = flags.DEFINE_boolean("report", False, "Only aggregate finished cells.")
  _FLAGS["vectorize"] = flags.DEFINE_boolean(
      "vectorize", True, "Train the cells that differ only in seed and scalar hyperparameters "
      "as populations, in one compiled step each (jaxkd.run.population); --novectorize: one by "
      "one.")
  flags.mark_flags_as_required(["config", "workdir"])


def main() -> None:
  from jaxkd.jobs.sweep.grid import RESULTS, Sweep

  args = common.values(_FLAGS)
  command = ["python", "-m", "jaxkd", "sweep", *common.ARGS]
  sweep = Sweep(args.config, args.workdir, args.sweep, args.seeds)
  if args.list:
    print(sweep.listing(common.ARGS))
    return
  if args.report:
    print(sweep.write_report(command))
    return
  how = common.start_distributed(args.config)
  import jax

  from jaxkd.run import distributed

  sweep.run_cells(args.cell or None, vectorize=args.vectorize)
  if args.cell:
    print(f"cell(s) {', '.join(map(str, args.cell))} done; aggregate with --report.")
  elif jax.process_index() == 0:
    print("\n" + sweep.write_report(command))
    print(f"results: {', '.join(str(sweep.workdir / n) for n in RESULTS)}")
  if how:
    distributed.shutdown()
