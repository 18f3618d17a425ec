"""Every CIFAR-100 and ImageNet config runs 2 steps of its `smoke` variant on
tfds.testing.mock_data: teacher online, feature paths, connectors, stages.

One representative config runs in `make test`; a subset that covers every method,
every model of the grid, the stages and the ImageNet pair (CI_SUBSET, 17 runs) with
`make test-configs-ci`, which CI runs; all of them (145 runs) with `make test-configs`.
"""

import pathlib

import jax
import pytest
import tensorflow_datasets as tfds

from jaxkd.run import train
from jaxkd.config import load_config_file
from jaxkd.engine.sharding import make_mesh

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
# In CI: every method and every model of the grid at least once, the three methods with
# stages, the pre-activation paths of each family (ab, reviewkd).
CI_SUBSET = tuple(f"{pair},smoke" for pair in (
    "wrn_40_2,wrn_16_2,ab", "vgg13,vgg8,ab", "resnet32x4,resnet8x4,reviewkd", "vgg13,vgg8,fsp",
    "resnet110,resnet32,fitnet", "wrn_40_2,wrn_40_1,vid", "resnet110,resnet20,at",
    "vgg13,mobilenetv2,crd", "resnet32x4,shufflenetv1,cc", "resnet32x4,shufflenetv2,rkd",
    "wrn_40_2,shufflenetv1,pkt", "resnet32x4,resnet8x4,sp", "vgg13,vgg8,nst",
    "resnet56,resnet20,dkd", "wrn_40_2,wrn_16_2,kd"))


def _marks(arg: str) -> tuple:
  if arg in QUICK:
    return ()
  return (pytest.mark.all_configs,) + ((pytest.mark.ci_configs,) if arg in CI_SUBSET else ())


CIFAR = [pytest.param(arg, marks=_marks(arg)) for arg in GRID.grid(smoke=True)]
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


def test_ci_subset_covers_every_method_and_model_of_the_grid():
  grid = GRID.grid(smoke=True)
  assert set(CI_SUBSET) <= set(grid)
  covered = [arg.split(",") for arg in CI_SUBSET + QUICK]
  assert {m for _, _, m, _ in covered} == set(GRID.METHODS)
  assert ({t for t, _, _, _ in covered} | {s for _, s, _, _ in covered}
          == {name for arg in grid for name in arg.split(",")[:2]})


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
@pytest.mark.ci_configs
def test_imagenet_configs_run_two_steps(teacher_runs, one_device, tmp_path):
  teacher = teacher_runs(CONFIGS / "imagenet" / "teacher.py", "resnet34")
  config = load_config_file(CONFIGS / "imagenet" / "distill.py", "smoke")
  config.distill.teachers = (str(teacher),)
  result = train.train_and_evaluate(config, tmp_path, mesh=one_device)
  assert result["step"] == 2 and result["test_count"] == 16
