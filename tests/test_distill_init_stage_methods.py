"""AB, FSP and FT (the methods the CRD benchmark trains with an initialisation stage):
values against numpy, connectors, and where their gradients go."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxkd.distill import TermInputs, build_objective
from jaxkd.distill import ab, fsp, ft
from jaxkd.distill.terms import adaptive_avg_pool
from jaxkd.errors import JaxkdError

RNG = np.random.default_rng(0)


def np_pool(x, size):
  """PyTorch's adaptive average pooling, by explicit windows."""
  b, h, w, c = x.shape
  out = np.zeros((b, size, size, c), np.float32)
  for i in range(size):
    for j in range(size):
      rows = slice(i * h // size, -(-(i + 1) * h // size))
      cols = slice(j * w // size, -(-(j + 1) * w // size))
      out[:, i, j] = x[:, rows, cols].mean(axis=(1, 2))
  return out


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_adaptive_pool_matches_pytorch_windows(size):
  x = RNG.normal(size=(2, 6, 6, 3)).astype(np.float32)
  np.testing.assert_allclose(adaptive_avg_pool(x, size), np_pool(x, size), rtol=1e-5, atol=1e-6)


def objective_and_grads(terms: dict, student: dict, teacher: dict):
  """The loss of `terms` on given features, and its gradients with respect to the
  student's features and the connectors' parameters."""
  config = ml_collections.ConfigDict({"teacher_combine": "average", "terms": terms})
  s_shapes = {k: v.shape[1:] for k, v in student.items()}
  t_shapes = {k: v.shape[1:] for k, v in teacher.items()}
  objective = build_objective(config, 10, 10).with_shapes(s_shapes, t_shapes)
  aux, aux_state = objective.init_aux(jax.random.PRNGKey(0), s_shapes, t_shapes)

  def loss(features, aux):
    batch = next(iter(features.values())).shape[0]
    inputs = TermInputs(jnp.zeros((batch, 3)), jnp.zeros((1, batch, 3)), jnp.zeros(batch, int),
                        jnp.zeros((batch, 3)), jnp.asarray(0), 10, features,
                        {k: jnp.asarray(v)[None] for k, v in teacher.items()})
    return objective(inputs, aux, aux_state)[0]

  value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(
      {k: jnp.asarray(v) for k, v in student.items()}, aux)
  return objective, aux, value, grads


def nonzero(tree) -> bool:
  return all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(tree))


def np_ab(s, t, margin):
  total = 0.0
  for sv, tv in zip(s.ravel(), t.ravel()):
    if tv > 0 and sv <= margin:
      total += (sv - margin) ** 2
    elif tv <= 0 and sv > -margin:
      total += (sv + margin) ** 2
  return total / s.shape[0] * 3e-3


def test_ab_matches_an_element_loop_and_trains_its_connector():
  s = RNG.normal(size=(2, 3, 3, 4)).astype(np.float32)
  t = np.maximum(RNG.normal(size=(2, 3, 3, 4)), 0).astype(np.float32)  # post-ReLU teacher
  for margin in (1.0, 0.5):
    np.testing.assert_allclose(ab.ab(s, t, margin), np_ab(s, t, margin), rtol=1e-5)
  assert ab.ab_connector_for((3, 3, 4), (3, 3, 4)) is None  # same shape: identity
  with pytest.raises(JaxkdError, match="smaller than teacher feature"):
    ab.ab_connector_for((3, 3, 4), (5, 5, 4))
  t8 = np.maximum(RNG.normal(size=(2, 3, 3, 8)), 0).astype(np.float32)
  _, aux, value, (g_student, g_aux) = objective_and_grads(
      {"ab": {"weight": 1.0, "student": "s", "teacher": "t"}}, {"s": s}, {"t": t8})
  assert set(aux["ab"]) == {"conv", "bn"} and aux["ab"]["conv"]["kernel"].shape == (1, 1, 4, 8)
  assert float(value) > 0 and nonzero(g_student) and nonzero(g_aux)


def np_fsp(bottom, top):
  size = min(bottom.shape[1], top.shape[1])
  bottom, top = np_pool(bottom, size), np_pool(top, size)
  return np.stack([b.reshape(-1, b.shape[-1]).T @ t.reshape(-1, t.shape[-1]) / size**2
                   for b, t in zip(bottom, top)])


def test_fsp_matches_numpy_gram_of_consecutive_layers():
  s = [RNG.normal(size=(2, 8, 8, 3)), RNG.normal(size=(2, 4, 4, 5)), RNG.normal(size=(2, 2, 2, 6))]
  t = [RNG.normal(size=x.shape) for x in s]
  s, t = [x.astype(np.float32) for x in s], [x.astype(np.float32) for x in t]
  expected = sum(np.mean((np_fsp(s[i], s[i + 1]) - np_fsp(t[i], t[i + 1])) ** 2) for i in range(2))
  np.testing.assert_allclose(fsp.fsp(tuple(s), tuple(t)), expected, rtol=1e-5)
  terms = {"fsp": {"weight": 1.0, "student": ("a", "b", "c"), "teacher": ("a", "b", "c")}}
  objective, _, value, (g_student, _) = objective_and_grads(
      terms, dict(zip("abc", s)), dict(zip("abc", t)))
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  assert objective.student_paths == ("a", "b", "c") and nonzero(g_student)
  with pytest.raises(JaxkdError, match=r"\(4, 4, 5\) and teacher feature \(4, 4, 7\) need the same"):
    fsp.check_layers(((8, 8, 3), (4, 4, 5)), ((8, 8, 3), (4, 4, 7)))
  with pytest.raises(JaxkdError, match="at least two layers"):
    fsp.check_layers((8, 8, 3), (8, 8, 3))


def test_ft_factor_losses_match_numpy():
  s = RNG.normal(size=(3, 4, 4, 6)).astype(np.float32)
  t = RNG.normal(size=(3, 2, 2, 6)).astype(np.float32)
  unit = lambda x: x.reshape(len(x), -1) / np.linalg.norm(x.reshape(len(x), -1), axis=1, keepdims=True)
  pooled = np_pool(s, 2)
  paper = np.mean(np.abs(unit(pooled) - unit(t)).sum(axis=1))
  np.testing.assert_allclose(ft.ft(s, t), paper, rtol=1e-5)
  attention = lambda x: unit((x**2).mean(-1))
  code = np.mean(np.abs(attention(pooled) - attention(t)) ** 2)
  np.testing.assert_allclose(ft.ft(s, t, p=2.0, form="crd_code"), code, rtol=1e-5)


def test_ft_paraphraser_and_translator_get_the_gradients_of_their_own_stage():
  s = RNG.normal(size=(2, 4, 4, 6)).astype(np.float32)
  t = RNG.normal(size=(2, 4, 4, 8)).astype(np.float32)
  # Stage 1: only the paraphraser learns (it reconstructs the teacher's feature).
  terms = {"ft": {"term": "ft_paraphraser", "weight": 1.0, "student": "s", "teacher": "t"}}
  objective, aux, value, (g_student, g_aux) = objective_and_grads(terms, {"s": s}, {"t": t})
  assert aux["ft"]["paraphraser"]["encoder1"]["kernel"].shape == (3, 3, 8, 4)  # rate 0.5
  assert nonzero(g_aux["ft"]["paraphraser"])
  assert not any(float(jnp.abs(g).sum()) for g in jax.tree.leaves((g_student, g_aux["ft"]["translator"])))
  _, reconstruction = ft.Paraphraser(4).apply({"params": aux["ft"]["paraphraser"]}, t)
  heads = {"reconstruction": reconstruction}
  np.testing.assert_allclose(value, np.mean((np.asarray(heads["reconstruction"]) - t) ** 2), rtol=1e-5)
  # Stage 2: the translator and the student learn; the paraphraser's factor is a fixed target.
  terms = {"ft": {"weight": 1.0, "student": "s", "teacher": "t"}}
  _, _, _, (g_student, g_aux) = objective_and_grads(terms, {"s": s}, {"t": t})
  assert nonzero(g_student) and nonzero(g_aux["ft"]["translator"])
  assert not any(float(jnp.abs(g).sum()) for g in jax.tree.leaves(g_aux["ft"]["paraphraser"]))
