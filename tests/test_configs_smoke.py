"""Every CIFAR-100 and ImageNet config runs 2 steps of its `smoke` variant on
tfds.testing.mock_data: teacher online, feature paths, connectors, stages.

One representative config runs in `make test`; all of them (145 runs) with
`make test-configs`, which CI runs too.
"""

import pathlib

import jax
import pytest
import tensorflow_datasets as tfds

from jaxkd import train
from jaxkd.config_base import load_config_file
from jaxkd.sharding import make_mesh

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def _grid_module():
  import importlib.util

  spec = importlib.util.spec_from_file_location("cifar100_distill", CONFIGS / "cifar100" / "distill.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


GRID = _grid_module()
# In `make test`: an online teacher, a stage with frozen parts, BatchNorm connectors.
QUICK = ("resnet56,resnet20,ft,smoke",)
CIFAR = [pytest.param(arg, marks=() if arg in QUICK else pytest.mark.all_configs)
         for arg in GRID.grid(smoke=True)]
CIFAR_TEACHERS = sorted({t for t, _ in GRID.PAIRS + GRID.CROSS_PAIRS})


@pytest.fixture(scope="module")
def one_device():
  """These runs check configs, not parallelism (tests/test_train.py does): one device
  compiles and runs them faster than eight fake ones on a small CPU."""
  return make_mesh(jax.devices()[:1])


@pytest.fixture(scope="module")
def mock_data():
  with tfds.testing.mock_data(num_examples=16):
    yield


@pytest.fixture(scope="module")
def teacher_runs(mock_data, one_device, tmp_path_factory):
  """Each teacher's smoke run, trained once for the whole module, on first use."""
  root, done = tmp_path_factory.mktemp("teachers"), {}

  def get(config_file: pathlib.Path, model: str) -> pathlib.Path:
    if model not in done:
      result = train.train_and_evaluate(load_config_file(config_file, f"{model},smoke"),
                                        root / model, mesh=one_device)
      assert result["step"] == 2
      done[model] = root / model
    return done[model]

  return get


@pytest.mark.parametrize("arg", CIFAR)
def test_cifar100_distill_config_runs_two_steps(arg, teacher_runs, one_device, tmp_path):
  teacher, student, method, _ = arg.split(",")
  config = load_config_file(CONFIGS / "cifar100" / "distill.py", arg)
  config.distill.teachers = (str(teacher_runs(CONFIGS / "cifar100" / "teacher.py", teacher)),)
  result = train.train_and_evaluate(config, tmp_path, mesh=one_device)
  assert result["step"] == 2 and result["test_count"] == 16
  for stage in config.stages:
    assert (tmp_path / "stages" / stage.name / "checkpoints" / "2").is_dir()


@pytest.mark.all_configs
@pytest.mark.parametrize("model", [m for m in CIFAR_TEACHERS + list(GRID.SMALL_LR_STUDENTS)])
def test_cifar100_teacher_config_runs_two_steps(model, teacher_runs):
  assert (teacher_runs(CONFIGS / "cifar100" / "teacher.py", model) / "checkpoints" / "2").is_dir()


@pytest.mark.all_configs
def test_imagenet_configs_run_two_steps(teacher_runs, one_device, tmp_path):
  teacher = teacher_runs(CONFIGS / "imagenet" / "teacher.py", "resnet34")
  config = load_config_file(CONFIGS / "imagenet" / "distill.py", "smoke")
  config.distill.teachers = (str(teacher),)
  result = train.train_and_evaluate(config, tmp_path, mesh=one_device)
  assert result["step"] == 2 and result["test_count"] == 16
