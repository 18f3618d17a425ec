"""The CIFAR model zoo against the parameter counts published with the CRD benchmark."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from jaxkd.models import create_model

# Millions of parameters for CIFAR-100 (Tian et al. 2020, CRD, tables 1-2 and code).
PUBLISHED = {"resnet8": 0.08, "resnet20": 0.28, "resnet32": 0.47, "resnet56": 0.86,
             "resnet110": 1.74, "resnet8x4": 1.23, "resnet32x4": 7.43, "wrn_16_2": 0.70,
             "wrn_40_1": 0.57, "wrn_40_2": 2.26, "vgg8": 3.96, "vgg13": 9.46}


def _count(name, num_classes=100):
  model = create_model(ml_collections.ConfigDict({"name": name}), num_classes)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
  return sum(x.size for x in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_the_published_ones(name):
  # The published figures are rounded or truncated to 0.01M (vgg8: 3,965,028 -> 3.96).
  assert _count(name) / 1e6 == pytest.approx(PUBLISHED[name], abs=0.006)


def test_depths_and_widths_change_the_model():
  counts = [_count(f"resnet{d}") for d in (8, 14, 20, 32, 44, 56, 110)]
  assert counts == sorted(counts) and len(set(counts)) == 7
  assert _count("vgg11") < _count("vgg13") < _count("vgg16") < _count("vgg19")
  assert _count("wrn_16_1") < _count("wrn_16_2")


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1"])
def test_forward_and_batch_statistics(name):
  model = create_model(ml_collections.ConfigDict({"name": name}), 10)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)))
  logits, updates = model.apply(variables, jnp.ones((2, 32, 32, 3)), train=True,
                                mutable=["batch_stats"])
  assert logits.shape == (2, 10) and set(updates) == {"batch_stats"}


def test_inspect_lists_paths_shapes_and_parameter_count():
  import subprocess
  import sys

  result = subprocess.run([sys.executable, "-m", "jaxkd", "inspect", "--model", "resnet8",
                           "--num_classes", "100"], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.splitlines()
  assert lines[-1] == f"params: {_count('resnet8')}"
  assert any(line.split() == ["layer3_0", "(8,", "8,", "64)"] for line in lines)
  assert lines[0].startswith("conv1")  # Execution order, not alphabetical.
