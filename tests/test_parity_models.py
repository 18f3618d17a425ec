"""CIFAR models against the CRD benchmark's PyTorch definitions (RepDistiller models/).

Both sides are filled with the same seeded weights (tests/reference/seeded.py); the
fixture holds the reference's logits and every feature it distils from: feat[0..4]
(stem, stage outputs, pooled embedding) and the pre-activation ones (preact=True).
Our side reads them at the paths the CIFAR-100 recipes use (configs/cifar100/distill.py),
so this also checks that those paths are the benchmark's features.
"""

import re

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxkd.features import apply_with_features
from jaxkd.models import create_model
from tests.reference import fixtures
from tests.reference.seeded import seeded_state
from tests.test_configs_smoke import GRID

NUMERIC = [m for m in fixtures.load()[1]["models"] if not m.startswith(("mobilenet", "shuffle"))]


def _flax_name(model: str, torch_name: str) -> str:
  """Our module path for a reference module path (without the tensor name)."""
  if model.startswith("resnet"):
    name = re.sub(r"^layer(\d)\.(\d+)\.", r"layer\1_\2/", torch_name)
    return name.replace("downsample.0", "downsample_conv").replace("downsample.1", "downsample_bn")
  if model.startswith("wrn"):
    if torch_name == "bn1":
      return "bn"
    name = re.sub(r"^block(\d)\.layer\.(\d+)\.", r"block\1_\2/", torch_name)
    return name.replace("convShortcut", "shortcut")
  if model.startswith("vgg"):
    if torch_name == "classifier":
      return "fc"
    block, index = re.fullmatch(r"block(\d)\.(\d+)", torch_name).groups()
    return f"block{block}/{'conv' if int(index) % 3 == 0 else 'bn'}{int(index) // 3}"
  raise ValueError(model)


def to_flax(model: str, state: dict) -> dict:
  """The reference's state_dict as Flax variables: OIHW -> HWIO kernels, (out, in) ->
  (in, out) dense kernels, BatchNorm weight/bias/running stats -> scale/bias/mean/var."""
  flat = {}
  for key, value in state.items():
    module, tensor = key.rsplit(".", 1)
    path = _flax_name(model, module)
    if tensor == "running_mean":
      flat[("batch_stats", *path.split("/"), "mean")] = value
    elif tensor == "running_var":
      flat[("batch_stats", *path.split("/"), "var")] = value
    elif tensor == "bias":
      flat[("params", *path.split("/"), "bias")] = value
    elif value.ndim == 4:
      flat[("params", *path.split("/"), "kernel")] = np.transpose(value, (2, 3, 1, 0))
    elif value.ndim == 2:
      flat[("params", *path.split("/"), "kernel")] = value.T
    else:
      flat[("params", *path.split("/"), "scale")] = value
  return flax.traverse_util.unflatten_dict(flat)


def _paths(model: str) -> tuple[list[str], list[str]]:
  """Our paths of the benchmark's feat[0..] and of its preact=True features."""
  stages = GRID.stages(model)
  feats = [GRID.stem(model), *stages, "pool"]
  return feats, [GRID.stem(model), *GRID.preact_stages(model), "pool"]


@pytest.mark.parametrize("model", NUMERIC)
def test_model_logits_and_features_equal_the_reference(model):
  arrays, meta = fixtures.load()
  info = meta["models"][model]
  network = create_model(ml_collections.ConfigDict({"name": model}), 100)
  images = jnp.asarray(arrays["models/input"])
  expected = jax.eval_shape(lambda: network.init(jax.random.PRNGKey(0), images[:1]))
  variables = to_flax(model, seeded_state(meta["seed"], info["state_dict"]))
  # Every one of our variables comes from the reference, with its shape.
  assert jax.tree.structure(variables) == jax.tree.structure(jax.tree.map(lambda x: 0, dict(expected)))
  assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda x: x.shape, dict(expected))
  feats, preacts = _paths(model)
  logits, features, _ = apply_with_features(network, variables, images, feats + preacts)
  scale = lambda x: np.max(np.abs(x))
  np.testing.assert_allclose(logits, arrays[f"models/{model}/logits"], rtol=0,
                             atol=1e-4 * scale(arrays[f"models/{model}/logits"]))
  for i in range(info["num_feats"]):
    for kind, path in (("feat", feats[i]), ("preact", preacts[i])):
      want = arrays.get(f"models/{model}/{kind}{i}", arrays[f"models/{model}/feat{i}"])
      got = fixtures.subsample(np.asarray(features[path]))
      assert got.shape == want.shape, (kind, i, path)
      np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale(want),
                                 err_msg=f"{model} {kind}[{i}] at '{path}'")


@pytest.mark.parametrize("model", [m for m in fixtures.load()[1]["models"] if m not in NUMERIC])
def test_mobile_models_feature_shapes_equal_the_reference(model):
  """MobileNetV2 and ShuffleNets: parameter counts (tests/test_models_cifar_mobile.py),
  and here the shapes of the logits and of the features the recipes distil."""
  arrays, meta = fixtures.load()
  network = create_model(ml_collections.ConfigDict({"name": model}), 100)
  images = jnp.zeros((2, 32, 32, 3))
  variables = network.init(jax.random.PRNGKey(0), images[:1])
  paths = GRID.MOBILE_STAGES[model]
  logits, features, _ = apply_with_features(network, variables, images, [*paths, "pool"])
  assert logits.shape == arrays[f"models/{model}/logits"].shape
  num_feats = meta["models"][model]["num_feats"]
  for i, path in enumerate([*paths, "pool"][-(num_feats - 1):], start=1):
    assert fixtures.subsample(np.asarray(features[path])).shape == \
        arrays[f"models/{model}/feat{i}"].shape, (model, i, path)
