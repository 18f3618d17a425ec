"""Models against the reference PyTorch definitions: the CIFAR zoo against the CRD
benchmark's (RepDistiller models/), the ImageNet ResNets against torchvision's.

Both sides are filled with the same seeded weights (tests/reference/seeded.py). For
the CIFAR models the fixture holds the reference's logits and the features it distils
from: feat[0..] (stem, stage outputs, pooled embedding) and, for the ResNets, WRNs and
VGGs, the pre-activation ones (preact=True). Our side reads them at the paths the
CIFAR-100 recipes use (configs/cifar100/distill.py), so this also checks that those
paths are the benchmark's features. Tolerance: 1e-4 of the largest reference value.
"""

import re

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxkd.engine.features import apply_with_features
from jaxkd.models import create_model
from tests.reference import fixtures
from tests.reference.seeded import seeded_state
from tests.test_configs_smoke import GRID

MODELS = list(fixtures.load()[1]["models"])
MOBILE = ("mobilenetv2", "shufflenetv1", "shufflenetv2")


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
  if model == "mobilenetv2":
    if torch_name == "classifier.0":
      return "fc"
    if torch_name.startswith("conv"):  # conv1.0 / conv1.1, conv2.0 / conv2.1
      head, index = torch_name.split(".")
      return f"{head}/{('conv', 'bn')[int(index)]}"
    stage, block, index = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.conv\.(\d+)", torch_name).groups()
    layer = {0: "conv1", 1: "bn1", 3: "conv2", 4: "bn2", 6: "conv3", 7: "bn3"}[int(index)]
    return f"blocks_{stage}/block{block}/{layer}"
  if model.startswith("shufflenet"):
    if torch_name == "linear":
      return "fc"
    match = re.fullmatch(r"layer(\d)\.(\d+)\.(\w+)", torch_name)
    if not match:
      return torch_name  # conv1, bn1 (and ShuffleV2's conv2, bn2)
    stage, block, layer = match.groups()
    if model == "shufflenetv2":  # Block 0 of each stage is the down-sampling block.
      return f"layer{stage}/" + ("down" if block == "0" else f"block{int(block) - 1}") + f"/{layer}"
    return f"layer{stage}/block{block}/{layer}"
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


def _paths(model: str) -> tuple[list, list]:
  """Our paths of the benchmark's feat[0..] and of its preact=True features (None: not
  compared: the mobile models' stems and pre-activation features, which no recipe uses)."""
  stages = GRID.stages(model)
  if model in MOBILE:
    feats = [None if model != "mobilenetv2" else "conv1", *stages, "pool"]
    return feats, [None] * len(feats)
  feats = [GRID.stem(model), *stages, "pool"]
  return feats, [GRID.stem(model), *GRID.preact_stages(model), "pool"]


@pytest.mark.parametrize("model", MODELS)
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
  logits, features, _ = apply_with_features(network, variables, images,
                                            [p for p in feats + preacts if p])
  scale = lambda x: np.max(np.abs(x))
  np.testing.assert_allclose(logits, arrays[f"models/{model}/logits"], rtol=0,
                             atol=1e-4 * scale(arrays[f"models/{model}/logits"]))
  for i in range(info["num_feats"]):
    for kind, path in (("feat", feats[i]), ("preact", preacts[i])):
      if path is None:
        continue
      want = arrays.get(f"models/{model}/{kind}{i}", arrays[f"models/{model}/feat{i}"])
      got = fixtures.subsample(np.asarray(features[path]))
      assert got.shape == want.shape, (kind, i, path)
      np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale(want),
                                 err_msg=f"{model} {kind}[{i}] at '{path}'")


@pytest.mark.parametrize("model", ["resnet18", "resnet50"])
def test_imagenet_resnets_equal_torchvision(model):
  arrays, meta = fixtures.load()
  network = create_model(ml_collections.ConfigDict({"name": model}), 10)
  images = jnp.asarray(arrays["imagenet/input"])
  expected = jax.eval_shape(lambda: network.init(jax.random.PRNGKey(0), images[:1]))
  variables = to_flax("resnet", seeded_state(meta["seed"], meta["imagenet"][model]["state_dict"]))
  assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda x: x.shape, dict(expected))
  last = {"resnet18": (1, 1, 1, 1), "resnet50": (2, 3, 5, 2)}[model]
  paths = [f"layer{i + 1}_{b}" for i, b in enumerate(last)]
  logits, features, _ = apply_with_features(network, variables, images, paths)
  scale = lambda x: np.max(np.abs(x))
  want = arrays[f"imagenet/{model}/logits"]
  np.testing.assert_allclose(logits, want, rtol=0, atol=1e-4 * scale(want))
  for i, path in enumerate(paths, start=1):
    want = arrays[f"imagenet/{model}/layer{i}"]
    np.testing.assert_allclose(fixtures.subsample(np.asarray(features[path])), want, rtol=0,
                               atol=1e-4 * scale(want), err_msg=f"{model} layer{i} at '{path}'")
