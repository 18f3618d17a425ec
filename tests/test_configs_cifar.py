"""The CIFAR-100 recipe grid: every config's paths and connectors, and smoke runs."""

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import pytest
import tensorflow_datasets as tfds

from jaxkd import config_base, train
from jaxkd.config_base import load_config_file
from jaxkd.distill import build_objective
from jaxkd.features import list_features
from jaxkd.models import create_model

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs" / "cifar100"
DISTILL = CONFIGS / "distill.py"


def _grid():
  import importlib.util

  spec = importlib.util.spec_from_file_location("cifar100_distill", DISTILL)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@functools.cache
def _shapes(model_name: str) -> dict:
  model = create_model(ml_collections.ConfigDict({"name": model_name}), 100)
  images = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images))
  return {path: shape[1:] for path, shape in list_features(model, variables, images).items()}


def test_every_pair_and_method_builds_with_its_feature_paths():
  grid = _grid()
  assert len(grid.PAIRS) == 7 and len(grid.METHODS) == 10
  for teacher in ("resnet56", "resnet110", "resnet32x4", "wrn_40_2", "vgg13"):
    config_base.validate(load_config_file(CONFIGS / "teacher.py", teacher))
  for (teacher, student), method in ((p, m) for p in grid.PAIRS for m in grid.METHODS):
    config = load_config_file(DISTILL, f"{teacher},{student},{method}")
    config_base.validate(config)
    assert config.train.epochs == 240 and config.optimizer.learning_rate == 0.05
    objective = build_objective(config.distill, steps_per_epoch=782, total_steps=782 * 240)
    # Every path exists and every connector can be built for these shapes.
    objective.with_shapes(_shapes(student), _shapes(teacher), num_examples=50000)


@pytest.fixture
def mock_cifar100():
  with tfds.testing.mock_data(num_examples=16):
    yield


@pytest.mark.parametrize("method", ["crd"])  # Online teacher, paths, connector, memory.
def test_smoke_runs_two_steps(mock_cifar100, tmp_path, method):
  teacher = load_config_file(CONFIGS / "teacher.py", "resnet20,smoke")
  train.train_and_evaluate(teacher, tmp_path / "teacher")
  student = load_config_file(DISTILL, f"resnet20,resnet8,{method},smoke")
  student.distill.teachers = (str(tmp_path / "teacher"),)
  result = train.train_and_evaluate(student, tmp_path / "student")
  assert result["step"] == 2 and result["test_count"] == 16
