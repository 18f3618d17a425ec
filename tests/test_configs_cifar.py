"""The CIFAR-100 recipe grid: every config's paths and connectors (runs: test_configs_smoke)."""

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from jaxkd import config_base
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
  assert len(grid.PAIRS) == 7 and len(grid.METHODS) == 15
  for teacher in ("resnet56", "resnet110", "resnet32x4", "wrn_40_2", "vgg13"):
    config_base.validate(load_config_file(CONFIGS / "teacher.py", teacher))
  args = grid.grid()
  assert len(args) == 7 * 15 - 1 + 4 * 8  # FSP cannot bridge wrn_40_2 -> wrn_40_1.
  for arg in args:
    teacher, student, method = arg.split(",")
    config = load_config_file(DISTILL, arg)
    assert config.train.epochs == 240
    assert config.optimizer.learning_rate == (0.01 if student in grid.SMALL_LR_STUDENTS else 0.05)
    assert len(config.stages) == (method in ("ab", "fsp", "ft"))
    for stage in [*config_base.stage_configs(config), config]:  # init stage, then main
      config_base.validate(stage)
      objective = build_objective(stage.distill, steps_per_epoch=782, total_steps=782 * 240)
      # Every path exists and every connector can be built for these shapes.
      objective.with_shapes(_shapes(student), _shapes(teacher), num_examples=50000)


def test_methods_a_pair_cannot_use_are_refused_by_name():
  with pytest.raises(ValueError, match="fsp needs equal channels"):
    load_config_file(DISTILL, "wrn_40_2,wrn_40_1,fsp")
  with pytest.raises(ValueError, match="different architectures"):
    load_config_file(DISTILL, "vgg13,mobilenetv2,fitnet")
