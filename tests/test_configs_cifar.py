"""The CIFAR-100 recipe grid: every config's paths and connectors (runs: test_configs_smoke)."""

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxkd import config as config_base
from jaxkd.config import load_config_file
from jaxkd.distill import build_objective
from jaxkd.engine.features import list_features
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
      objective.with_shapes(_shapes(student), _shapes(teacher), num_examples=50000,
                            train_labels=np.arange(50000) % 100)


def test_methods_a_pair_cannot_use_are_refused_by_name():
  with pytest.raises(ValueError, match="fsp needs equal channels"):
    load_config_file(DISTILL, "wrn_40_2,wrn_40_1,fsp")
  with pytest.raises(ValueError, match="different architectures"):
    load_config_file(DISTILL, "vgg13,mobilenetv2,fitnet")


def test_recipes_follow_the_reference_training_scripts():
  """What RepDistiller's train_student.py / helper/pretrain.py and mdistiller's configs
  do, read from their code: see the docstring of configs/cifar100/distill.py."""
  grid = _grid()
  config = load_config_file(DISTILL, "resnet32x4,resnet8x4,ab")
  # The benchmark's SGD decays every parameter.
  assert config.optimizer.decay_biases_and_norms and config.optimizer.weight_decay == 5e-4
  (init,) = config.stages
  # AB: pre-activation features of both sides, layers weighted 1/4, 1/2, 1, the student's
  # classifier out of the init optimizer, the student in inference mode.
  assert [(t.student, t.teacher, t.weight) for t in init.terms.values()] == [
      ("layer1_0/preact", "layer1_4/preact", 0.25), ("layer2_0/preact", "layer2_4/preact", 0.5),
      ("layer3_0/preact", "layer3_4/preact", 1.0)]
  assert tuple(init.freeze) == ("params/fc",) and init.student_eval_mode
  assert config.distill.terms.to_dict() == {"ce": {"weight": 1.0}}
  assert grid.preact_stages("vgg13") == ["block1/bn1", "block2/bn1", "block3/bn1", "block4/bn1"]
  assert grid.preact_stages("wrn_40_2") == ["block2_0/bn1", "block3_0/bn1", "bn"]
  # FSP: feat[:-1] (the stem and every stage), weight 1 (the sum of the pair losses).
  (init,) = load_config_file(DISTILL, "resnet110,resnet32,fsp").stages
  assert init.terms.fsp.student == ("stem", "layer1_4", "layer2_4", "layer3_4")
  assert init.terms.fsp.teacher == ("stem", "layer1_17", "layer2_17", "layer3_17")
  assert init.terms.fsp.weight == 1.0 and tuple(init.freeze) == ("params/fc",)
  # FT's paraphraser: lr 0.01 for ResNet/WRN students, the recipe's lr for VGG.
  assert load_config_file(DISTILL, "resnet56,resnet20,ft").stages[0].optimizer.learning_rate == 0.01
  assert "optimizer" not in load_config_file(DISTILL, "vgg13,vgg8,ft").stages[0]
  # FitNets: feat[2] through ConvReg; CRD: negatives from other classes by default.
  hint = load_config_file(DISTILL, "resnet110,resnet32,fitnet").distill.terms.fitnet
  assert (hint.student, hint.teacher, hint.weight) == ("layer2_4", "layer2_17", 100.0)
  assert "negatives" not in load_config_file(DISTILL, "resnet56,resnet20,crd").distill.terms.crd
  # DKD: mdistiller's beta per pair; ReviewKD: weight 5, the teacher's preact features.
  beta = lambda arg: load_config_file(DISTILL, arg).distill.terms.dkd.beta
  assert (beta("resnet56,resnet20,dkd"), beta("vgg13,vgg8,dkd"), beta("resnet32x4,resnet8x4,dkd")
          ) == (2.0, 6.0, 8.0)
  review = load_config_file(DISTILL, "resnet32x4,resnet8x4,reviewkd").distill.terms.reviewkd
  assert review.student == ("layer1_0", "layer2_0", "layer3_0", "pool")
  assert review.teacher == ("layer1_4/preact", "layer2_4/preact", "layer3_4/preact", "pool")
  assert (review.weight, review.weight_schedule) == (5.0, "epoch_warmup")
  assert set(grid.REFERENCES) == set(grid.METHODS)
