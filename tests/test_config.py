import pathlib
import re
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from jaxkd import config as config_base
from jaxkd.jobs import pipeline
from jaxkd.errors import JaxkdError

REPO = pathlib.Path(__file__).resolve().parents[1]
TEACHER = str(REPO / "configs" / "mnist" / "teacher.py")


def _parse(*overrides):
  """Parses argv like the CLI does, with its own flag registry."""
  argv = ["prog", f"--config={TEACHER}", *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


def _cli_error(*args):
  """Runs the CLI; config errors must come before any training, as one line."""
  result = subprocess.run([sys.executable, "-m", "jaxkd", "train", f"--config={TEACHER}",
                           "--workdir=/nonexistent/never-created", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  return result.stderr.strip().splitlines()[-1]


def test_overrides_apply_with_types():
  config = _parse("--config.train.epochs=3", "--config.model.widths=(800,800)", "--config.seed=7")
  assert config.train.epochs == 3.0 and tuple(config.model.widths) == (800, 800) and config.seed == 7
  config_base.validate(config)


def test_cli_config_mistakes_are_one_line_errors():
  assert re.search(r"jaxkd: error: --config.train.epoch=3: unknown config field 'epoch' in "
                   r"config.train .*did you mean 'epochs'\?", _cli_error("--config.train.epoch=3"))
  assert re.search(r"jaxkd: error: .*batch_size=big.*invalid literal for int",
                   _cli_error("--config.train.batch_size=big"))
  assert re.search(r"jaxkd: error: unknown dataset 'imagenet'.*Known datasets",
                   _cli_error("--config.dataset.name=imagenet"))


def test_missing_required_field_is_an_error():
  config = config_base.base_config()
  config.dataset.name, config.model.name = "mnist", "mlp"
  config.train.epochs = 1
  config.optimizer.learning_rate = 0.1
  with pytest.raises(JaxkdError, match=r"'train.batch_size' is required.*--config.train.batch_size"):
    config_base.validate(config)


def test_unknown_names_list_the_known_ones():
  config = _parse("--config.dataset.name=imagenet")
  with pytest.raises(JaxkdError, match="unknown dataset 'imagenet'.*Known datasets: cifar10, cifar100"):
    config_base.validate(config)
  config = _parse("--config.schedule.name=cosine_decay")
  with pytest.raises(JaxkdError, match="Did you mean 'cosine'"):
    config_base.validate(config)


def test_every_config_file_loads_and_validates():
  paths = sorted((REPO / "configs").rglob("*.py"))
  assert paths
  for path in paths:
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values)
    values(["prog", f"--config={path}"])
    if values.config.get("job") == "pipeline":
      pipeline.validate(values.config)
    else:
      config_base.validate(values.config)


def test_pipeline_student_seeds_must_be_a_positive_count():
  from jaxkd.config import load_config_file

  config = load_config_file(REPO / "configs" / "mnist" / "pipeline.py")
  assert pipeline.student_seeds(config) == [0, 1, 2]
  config.student.seed = 3
  assert pipeline.student_seeds(config) == [3, 4, 5]
  config.student.seeds = 0
  with pytest.raises(JaxkdError, match="student.seeds must be a positive number"):
    pipeline.validate(config)
