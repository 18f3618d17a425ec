"""ImageNet ResNets against torchvision's parameter counts; the ImageNet configs."""

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from jaxkd import config as config_base
from jaxkd.config import load_config_file
from jaxkd.distill import build_objective
from jaxkd.models import create_model

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs" / "imagenet"


@pytest.mark.parametrize("name,count", [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                        ("resnet50", 25_557_032)])
def test_parameter_counts_match_torchvision(name, count):
  model = create_model(ml_collections.ConfigDict({"name": name}), 1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
  assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == count


def test_imagenet_configs_validate():
  for arg in ("resnet18", "resnet34", "resnet50", "resnet34,smoke"):
    config_base.validate(load_config_file(CONFIGS / "teacher.py", arg))
  for arg in ("", "smoke"):
    config = load_config_file(CONFIGS / "distill.py", arg)
    config_base.validate(config)
    assert config.model.name == "resnet18" and config.optimizer.learning_rate == 0.1
    assert build_objective(config.distill, 5004, 500400).needs_teacher
  assert load_config_file(CONFIGS / "distill.py", "smoke").dataset.image_size == 32
