"""Command line: python -m jaxkd.main --config=configs/mnist/teacher.py --workdir=DIR

Any config field can be overridden: --config.train.epochs=3 --config.seed=1.
Running again with the same workdir resumes from its latest checkpoint.
"""

import functools

from absl import app, flags, logging
from ml_collections import config_flags

from jaxkd import cli
from jaxkd.errors import JaxkdError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (get_config()).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
flags.mark_flags_as_required(["config", "workdir"])


_fail = functools.partial(cli.fail, "jaxkd")
parse_flags = cli.flags_parser("jaxkd")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; use --config.<field>=<value>.")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO.
  config = _CONFIG.value
  # Before any device use (and any jaxkd import that might touch one): several processes.
  from jaxkd import distributed
  try:
    how = distributed.initialize(config)
  except JaxkdError as e:
    _fail(str(e))
  # Imported after flag parsing: fast --help and clear flag errors.
  import jax
  from jaxkd import pipeline, train

  if how:
    train.say(f"distributed ({how}): {jax.process_count()} processes x "
              f"{jax.local_device_count()} devices = {jax.device_count()} devices")
  try:
    if config.get("job", "train") == "pipeline":
      if jax.process_count() > 1:
        raise JaxkdError("the pipeline job runs in one process (soft labels and the report are "
                         "computed on one host); run its stages as separate training jobs.")
      pipeline.run(config, _WORKDIR.value)
      return
    result = train.train_and_evaluate(config, _WORKDIR.value)
  except JaxkdError as e:
    _fail(str(e))
  if not result["interrupted"]:
    selected = (f"best validation accuracy {result['best_validation_accuracy']:.4f} at step "
                f"{result['best_step']}, test accuracy there {result['selected_test_accuracy']:.4f}"
                if "selected_test_accuracy" in result else
                "no model selection (set dataset.validation_size to select on a validation split)")
    train.say(f"final test accuracy {result['test_accuracy']:.4f} "
              f"({result['test_errors']} errors of {result['test_count']}) at step {result['step']}; "
              f"{selected}; workdir {_WORKDIR.value}")
  if how:
    distributed.shutdown()  # Every process leaves together (jax would also do it at exit).


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
