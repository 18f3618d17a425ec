"""CC and ReviewKD: values against numpy, their learnable parts and their gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_distill_init_stage_methods import nonzero, np_pool, objective_and_grads

from jaxkd.distill import cc, reviewkd
from jaxkd.errors import JaxkdError

RNG = np.random.default_rng(1)


def test_cc_gaussian_series_converges_to_the_exact_rbf_correlation():
  s = RNG.normal(size=(5, 7)).astype(np.float32)
  t = RNG.normal(size=(5, 7)).astype(np.float32)
  gamma = 0.4

  def rbf(x):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    return np.exp(-gamma * ((u[:, None] - u[None]) ** 2).sum(-1))

  exact = np.mean((rbf(s) - rbf(t)) ** 2)
  np.testing.assert_allclose(cc.cc(s, t, gamma=gamma, order=12), exact, rtol=1e-4)
  # The paper's order 2 is an approximation of it, close but not equal.
  assert float(cc.cc(s, t, gamma=gamma)) == pytest.approx(exact, rel=0.5)


def test_cc_crd_code_form_matches_a_loop_and_trains_both_embeddings():
  s = RNG.normal(size=(4, 3)).astype(np.float32)
  t = RNG.normal(size=(4, 3)).astype(np.float32)
  d = np.abs(s - t)
  expected = sum(d[i] @ d[i + 1] for i in range(3)) / 3
  np.testing.assert_allclose(cc.cc(s, t, form="crd_code"), expected, rtol=1e-5)
  terms = {"cc": {"weight": 1.0, "student": "s", "teacher": "t", "feat_dim": 5}}
  _, aux, value, (g_student, g_aux) = objective_and_grads(
      terms, {"s": RNG.normal(size=(4, 6)).astype(np.float32)},
      {"t": RNG.normal(size=(4, 9)).astype(np.float32)})
  assert aux["cc"]["embed_teacher"]["kernel"].shape == (9, 5)
  assert nonzero(g_student) and nonzero(g_aux)
  with pytest.raises(JaxkdError, match="form 'exact' is not one of"):
    cc.CC(form="exact").check_shapes((6,), (9,))


def np_hcl(s, t):
  loss, weight, total = np.mean((s - t) ** 2), 1.0, 1.0
  for size in (4, 2, 1):
    if size < s.shape[1]:
      weight /= 2
      loss += weight * np.mean((np_pool(s, size) - np_pool(t, size)) ** 2)
      total += weight
  return loss / total


def test_hierarchical_context_loss_matches_numpy():
  for size in (8, 4, 1):
    s = RNG.normal(size=(2, size, size, 3)).astype(np.float32)
    t = RNG.normal(size=(2, size, size, 3)).astype(np.float32)
    np.testing.assert_allclose(reviewkd.hierarchical_context_loss(s, t), np_hcl(s, t), rtol=1e-5)


def test_reviewkd_fuses_every_level_to_the_teachers_shapes():
  student = {"a": RNG.normal(size=(2, 8, 8, 4)), "b": RNG.normal(size=(2, 4, 4, 8)),
             "pool": RNG.normal(size=(2, 8))}
  teacher = {"a": RNG.normal(size=(2, 8, 8, 6)), "b": RNG.normal(size=(2, 4, 4, 12)),
             "pool": RNG.normal(size=(2, 12))}
  student = {k: v.astype(np.float32) for k, v in student.items()}
  teacher = {k: v.astype(np.float32) for k, v in teacher.items()}
  terms = {"reviewkd": {"weight": 1.0, "student": ("a", "b", "pool"), "teacher": ("a", "b", "pool")}}
  objective, aux, value, (g_student, g_aux) = objective_and_grads(terms, student, teacher)
  assert set(aux["reviewkd"]) == {"abf0", "abf1", "abf2"}
  assert "att_conv" not in aux["reviewkd"]["abf2"] and "att_conv" in aux["reviewkd"]["abf0"]
  assert aux["reviewkd"]["abf0"]["conv1"]["kernel"].shape == (1, 1, 4, 8)  # mid = min(512, 8)
  assert nonzero(g_student) and nonzero(g_aux)
  # The value is the sum of the per-level losses of the heads' outputs.
  shapes = lambda features: tuple(features[k].shape[1:] for k in ("a", "b", "pool"))
  heads = reviewkd.review_heads_for(shapes(student), shapes(teacher))
  _, state = objective.init_aux(jax.random.PRNGKey(0), {k: v.shape[1:] for k, v in student.items()},
                                {k: v.shape[1:] for k, v in teacher.items()})
  outputs, _ = heads.apply({"params": aux["reviewkd"], **state["reviewkd"]},
                           (student["a"], student["b"], student["pool"]), mutable=["batch_stats"])
  targets = [teacher["a"], teacher["b"], teacher["pool"][:, None, None, :]]  # Embeddings as maps.
  assert [o.shape for o in outputs] == [(2, 8, 8, 6), (2, 4, 4, 12), (2, 1, 1, 12)]
  np.testing.assert_allclose(value, sum(np_hcl(np.asarray(o), np.asarray(t))
                                        for o, t in zip(outputs, targets)), rtol=1e-5)
  with pytest.raises(JaxkdError, match="same number of layers"):
    reviewkd.review_heads_for(((8, 8, 4),), ((8, 8, 6), (4, 4, 12)))
