"""python -m jaxkd train --config=configs/mnist/teacher.py --workdir=DIR [--config.<field>=V]

Trains the config in DIR (config.job 'pipeline' runs the whole pipeline: jaxkd.jobs.pipeline;
'graph' runs named runs that teach each other: jaxkd.jobs.graph).
Any config field can be overridden: --config.train.epochs=3 --config.seed=1. Running again
with the same workdir resumes from its latest checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from jaxkd.cli import common
from jaxkd.errors import JaxkdError

_FLAGS = {}


def define_flags() -> None:
  _FLAGS["config"] = config_flags.DEFINE_config_file(
      "config", None, "Experiment config file (get_config()).", lock_config=True)
  _FLAGS["workdir"] = common.path_flag("workdir", None,
                                          "Directory for checkpoints, logs and reports.")
  flags.mark_flags_as_required(["config", "workdir"])


def main() -> None:
  args = common.values(_FLAGS)
  config, workdir = args.config, args.workdir
  how = common.start_distributed(config)  # Before any device is used.
  import jax

  from jaxkd.log import say
  from jaxkd.run import distributed, train

  if how:
    say(f"distributed ({how}): {jax.process_count()} processes x {jax.local_device_count()} "
        f"devices = {jax.device_count()} devices")
  if config.job == "pipeline":
    from jaxkd.jobs import pipeline

    if jax.process_count() > 1:
      raise JaxkdError("the pipeline job runs in one process (soft labels and the report are "
                       "computed on one host); run its stages as separate training jobs.")
    pipeline.run(config, workdir)
    return
  if config.job == "graph":
    from jaxkd.jobs import graph

    graph.run(config, workdir)
    return
  result = train.train_and_evaluate(config, workdir)
  say(train.summary_line(result, workdir))
  if how:
    distributed.shutdown()  # Every process leaves together (jax would also do it at exit).
