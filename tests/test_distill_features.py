"""Feature terms (FitNets, AT): values against numpy, connectors, paths on a user's own model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import user_net_configs

from jaxkd.run import train
from jaxkd.distill import TERMS, TermInputs, build_objective
from jaxkd.distill import at, fitnet, vid
from jaxkd.errors import JaxkdError
from jaxkd.engine.features import apply_with_features
from jaxkd.run.metrics import read_metrics
from jaxkd.models import MODELS

RNG = np.random.default_rng(0)
STUDENT = RNG.normal(size=(3, 4, 4, 6)).astype(np.float32)
TEACHER = RNG.normal(size=(3, 4, 4, 8)).astype(np.float32)


def np_attention(feature, p=2.0):
  spatial = (np.abs(feature) ** p).mean(-1).reshape(len(feature), -1)
  return spatial / np.linalg.norm(spatial, axis=-1, keepdims=True)


def test_fitnet_and_its_regressor_match_numpy():
  """The benchmark's regressor for equal sizes: 1x1 conv, BatchNorm on the batch's
  statistics (biased variance, eps 1e-5; scale 1 and offset 0 at init), ReLU."""
  regressor = fitnet.regressor_for(STUDENT.shape[1:], TEACHER.shape[1:])
  variables = regressor.init(jax.random.PRNGKey(0), STUDENT)
  mapped, _ = regressor.apply(variables, STUDENT, mutable=["batch_stats"])
  # The registered method regresses the student only: the teacher's feature reaches the loss as is.
  inputs = TermInputs(jnp.zeros((3, 4)), None, jnp.zeros(3, int), jnp.zeros((3, 4)), jnp.asarray(0),
                      student=jnp.asarray(STUDENT), teacher=jnp.asarray(TEACHER))
  value, _ = TERMS.get("fitnet")().apply(variables, inputs, mutable=["batch_stats"])
  np.testing.assert_allclose(value, np.mean((np.asarray(mapped) - TEACHER) ** 2), rtol=1e-5)
  params = variables["params"]
  kernel, bias = np.asarray(params["conv"]["kernel"])[0, 0], np.asarray(params["conv"]["bias"])
  conv = np.einsum("bhwc,cd->bhwd", STUDENT, kernel) + bias
  normed = (conv - conv.mean((0, 1, 2))) / np.sqrt(conv.var((0, 1, 2)) + 1e-5)
  np.testing.assert_allclose(mapped, np.maximum(normed, 0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(fitnet.fitnet(mapped, TEACHER), np.mean((np.asarray(mapped) - TEACHER) ** 2), rtol=1e-5)
  with pytest.raises(JaxkdError, match=r"\(4, 4, 6\) is smaller than teacher feature \(6, 6, 8\)"):
    fitnet.regressor_for((4, 4, 6), (6, 6, 8))


def test_attention_transfer_matches_numpy_and_ignores_channel_count():
  expected = np.mean((np_attention(STUDENT) - np_attention(TEACHER)) ** 2)
  np.testing.assert_allclose(at.at(STUDENT, TEACHER), expected, rtol=1e-5)
  doubled = np.concatenate([TEACHER, TEACHER], axis=-1)  # Same channel mean of squares.
  assert float(at.at(doubled, TEACHER)) < 1e-12
  with pytest.raises(JaxkdError, match="same spatial size"):
    at.check_same_spatial((4, 4, 6), (2, 2, 6))


class UserNet(nn.Module):
  """A model written here, not in jaxkd: features are taken from it by path only."""

  num_classes: int
  width: int = 8

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(self.width, (3, 3), name="stem")(x))
    x = nn.relu(nn.Conv(2 * self.width, (3, 3), name="block")(x))
    return nn.Dense(self.num_classes, name="head")(jnp.mean(x, axis=(1, 2)))


MODELS.register("test_user_net")(UserNet)


def _feature_objective():
  config = ml_collections.ConfigDict({"teacher_combine": "average",
                                      "terms": _feature_objective_config()})
  return build_objective(config, steps_per_epoch=10, total_steps=10)


def test_gradient_reaches_the_student_and_the_connector():
  student, teacher = UserNet(4, width=4), UserNet(4, width=8)
  images = jnp.asarray(RNG.normal(size=(2, 8, 8, 1)), jnp.float32)
  s_vars = student.init(jax.random.PRNGKey(0), images)
  t_vars = teacher.init(jax.random.PRNGKey(1), images)
  objective = _feature_objective().with_shapes({"block": (8, 8, 8), "stem": (8, 8, 4)},
                                               {"block": (8, 8, 16), "stem": (8, 8, 8)})
  aux, aux_state = objective.init_aux(jax.random.PRNGKey(2), {"block": (8, 8, 8), "stem": (8, 8, 4)},
                                      {"block": (8, 8, 16), "stem": (8, 8, 8)})
  assert set(aux) == {"hint"} and set(aux_state) == {"hint"}  # AT has no learnable part.
  assert set(aux_state["hint"]) == {"batch_stats"}  # The regressor's BatchNorm.
  t_logits, t_features, _ = apply_with_features(teacher, t_vars, images, objective.teacher_paths)

  def loss(params, aux):
    logits, features, _ = apply_with_features(student, {"params": params}, images,
                                              objective.student_paths)
    inputs = TermInputs(logits, t_logits[None], jnp.array([0, 1]), jax.nn.one_hot(jnp.array([0, 1]), 4),
                        jnp.asarray(0), 10, features, {k: v[None] for k, v in t_features.items()})
    return objective(inputs, aux, aux_state)[0]

  grads = jax.grad(loss, argnums=(0, 1))(s_vars["params"], aux)
  for tree in grads:
    assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(tree))


def test_unknown_feature_path_lists_near_matches():
  model = UserNet(4)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
  with pytest.raises(JaxkdError, match=r"no module at feature path\(s\) \['blok'\].*'block'"):
    apply_with_features(model, variables, jnp.zeros((1, 8, 8, 1)), ["blok"])


def test_user_model_as_teacher_and_student_through_paths(tmp_path):
  student = user_net_configs(tmp_path, teacher_steps=10, num_steps=6, log_every_steps=3)
  student.distill.terms = _feature_objective_config()
  result = train.train_and_evaluate(student, tmp_path / "student")
  records = [r for r in read_metrics(tmp_path / "student") if r["split"] == "train"]
  assert result["step"] == 6 and records[-1]["loss/hint"] > 0 and records[-1]["loss/at"] > 0

  student.distill.teachers = ()
  student.distill.soft_labels = (str(tmp_path / "none.npz"),)
  with pytest.raises(JaxkdError, match="feature terms .* need the teacher online"):
    train.train_and_evaluate(student, tmp_path / "cached")


def _feature_objective_config():
  return ml_collections.ConfigDict({
      "ce": {"weight": 1.0},
      "hint": {"term": "fitnet", "weight": 1.0, "student": "block", "teacher": "block"},
      "at": {"weight": 100.0, "student": "stem", "teacher": "stem"}})


def test_relation_terms_through_paths_on_a_user_model():
  student, teacher = UserNet(4, width=4), UserNet(4, width=8)
  images = jnp.asarray(RNG.normal(size=(4, 8, 8, 1)), jnp.float32)
  s_vars = student.init(jax.random.PRNGKey(0), images)
  t_vars = teacher.init(jax.random.PRNGKey(1), images)
  terms = {name: {"weight": 1.0, "student": "block", "teacher": "block"}
           for name in ("sp", "rkd", "pkt", "nst")}
  objective = build_objective(ml_collections.ConfigDict({"teacher_combine": "average", "terms": terms}),
                              10, 10).with_shapes({"block": (8, 8, 8)}, {"block": (8, 8, 16)})
  assert objective.init_aux(jax.random.PRNGKey(2), {"block": (8, 8, 8)}, {"block": (8, 8, 16)}) == ({}, {})
  _, t_features, _ = apply_with_features(teacher, t_vars, images, ["block"])

  def loss(params):
    logits, features, _ = apply_with_features(student, {"params": params}, images, ["block"])
    inputs = TermInputs(logits, None, jnp.zeros(4, jnp.int32), jnp.zeros((4, 4)), jnp.asarray(0),
                        10, features, {"block": t_features["block"][None]})
    total, metrics, _ = objective(inputs)
    return total, metrics

  (total, metrics), grads = jax.value_and_grad(loss, has_aux=True)(s_vars["params"])
  assert all(float(metrics[f"loss/{name}"]) > 0 for name in terms) and np.isfinite(float(total))
  assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads["block"]))


def test_vid_matches_numpy_and_learns_its_variance():
  head = vid.vid_head_for(STUDENT.shape[1:], TEACHER.shape[1:])
  params = head.init(jax.random.PRNGKey(0), STUDENT)["params"]
  mean, variance = head.apply({"params": params}, STUDENT)
  np.testing.assert_allclose(variance, 5.0, rtol=1e-5)  # The paper's initial variance.
  relu = lambda x: np.maximum(x, 0)
  layer = lambda x, name: np.einsum("bhwc,cd->bhwd", x, np.asarray(params[name]["kernel"])[0, 0])
  expected_mean = layer(relu(layer(relu(layer(STUDENT, "conv1")), "conv2")), "conv3")
  np.testing.assert_allclose(mean, expected_mean, rtol=1e-3, atol=1e-4)
  expected = np.mean(0.5 * ((expected_mean - TEACHER) ** 2 / 5.0 + np.log(5.0)))
  np.testing.assert_allclose(vid.vid((mean, variance), TEACHER), expected, rtol=1e-4)
  grads = jax.grad(lambda p: vid.vid(head.apply({"params": p}, STUDENT), TEACHER))(params)
  assert float(jnp.abs(grads["alpha"]).sum()) > 0 and float(jnp.abs(grads["conv1"]["kernel"]).sum()) > 0
  with pytest.raises(JaxkdError, match="vid: student feature"):
    vid.vid_head_for((4, 4, 6), (2, 2, 8))


def test_regressors_follow_the_benchmarks_conv_reg_rules():
  """RepDistiller's ConvReg: 3x3 stride 2 for a map twice the teacher's, a transposed
  4x4 stride-2 convolution for half, a valid (1 + s - t) kernel otherwise; FitNets' ends in
  BatchNorm + ReLU, AB's in BatchNorm, and AB's is absent when the shapes agree."""
  from jaxkd.distill.ab import ab_connector_for
  from jaxkd.distill.fitnet import regressor_for

  for student, teacher in (((8, 8, 4), (4, 4, 6)), ((4, 4, 4), (8, 8, 6)),
                           ((8, 8, 4), (6, 6, 6)), ((8, 8, 4), (8, 8, 4))):
    x = jnp.asarray(RNG.normal(size=(3, *student)), jnp.float32)
    regressor = regressor_for(student, teacher)
    variables = regressor.init(jax.random.PRNGKey(0), x)
    out = regressor.apply(variables, x, mutable=["batch_stats"])[0]
    assert out.shape == (3, *teacher) and float(out.min()) >= 0.0  # ReLU at the end
    kernel = variables["params"]["conv"]["kernel"].shape[:2]
    assert kernel == {8: {4: (3, 3), 6: (3, 3), 8: (1, 1)}, 4: {8: (4, 4)}}[student[0]][teacher[0]]
  with pytest.raises(JaxkdError, match="smaller than teacher feature"):
    regressor_for((4, 4, 4), (6, 6, 6))
  assert ab_connector_for((8, 8, 4), (8, 8, 4)) is None
  connector = ab_connector_for((8, 8, 4), (8, 8, 6))
  x = jnp.asarray(RNG.normal(size=(3, 8, 8, 4)), jnp.float32)
  out = connector.apply(connector.init(jax.random.PRNGKey(0), x), x, mutable=["batch_stats"])[0]
  assert out.shape == (3, 8, 8, 6) and float(out.min()) < 0.0  # No ReLU: AB needs the sign.
