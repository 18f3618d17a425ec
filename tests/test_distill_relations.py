"""SP, RKD, PKT, NST against loop-by-loop numpy computations and their identities."""

import itertools

import jax
import numpy as np
import pytest

from jaxkd.distill import nst, pkt, rkd, sp

RNG = np.random.default_rng(1)
STUDENT = RNG.normal(size=(5, 3, 3, 4)).astype(np.float32)
TEACHER = RNG.normal(size=(5, 3, 3, 6)).astype(np.float32)


def _flat(x):
  return x.reshape(len(x), -1).astype(np.float64)


def np_huber(x):
  return np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5)


def test_sp_matches_numpy_and_ignores_feature_scale():
  def gram(f):
    g = _flat(f) @ _flat(f).T
    return g / np.linalg.norm(g, axis=1, keepdims=True)

  expected = np.sum((gram(STUDENT) - gram(TEACHER)) ** 2) / 25
  np.testing.assert_allclose(sp.sp(STUDENT, TEACHER), expected, rtol=1e-4)
  np.testing.assert_allclose(sp.sp(3.0 * STUDENT, TEACHER), expected, rtol=1e-4)


def test_rkd_matches_explicit_pairs_and_triples():
  s, t = _flat(STUDENT), _flat(TEACHER)
  pairs = [(i, j) for i in range(5) for j in range(5) if i != j]

  def distances(f):
    d = {p: np.linalg.norm(f[p[0]] - f[p[1]]) for p in pairs}
    mean = np.mean(list(d.values()))
    return {p: v / mean for p, v in d.items()}

  ds, dt = distances(s), distances(t)
  # The authors' and the benchmark's smooth_l1_loss averages over all 5 x 5 entries of the
  # distance matrices (the diagonal's zeros included); the mean distance over pairs i != j.
  distance = np.sum([np_huber(ds[p] - dt[p]) for p in pairs]) / 25

  def cosine(f, i, j, k):
    if i == j or k == j:
      return 0.0
    a, b = f[i] - f[j], f[k] - f[j]
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

  angle = np.mean([np_huber(cosine(s, i, j, k) - cosine(t, i, j, k))
                   for i, j, k in itertools.product(range(5), repeat=3)])
  value = rkd.rkd(STUDENT, TEACHER, distance_weight=2.0, angle_weight=3.0)
  np.testing.assert_allclose(value, 2.0 * distance + 3.0 * angle, rtol=1e-4)
  # Relations do not change when the features are shifted and scaled.
  assert float(rkd.rkd(TEACHER * 4.0 + 1.0, TEACHER)) < 1e-6


def test_pkt_matches_numpy():
  def conditional(f):
    f = _flat(f) / np.linalg.norm(_flat(f), axis=1, keepdims=True)
    sim = (f @ f.T + 1) / 2
    return sim / sim.sum(1, keepdims=True)

  p_s, p_t = conditional(STUDENT), conditional(TEACHER)
  expected = np.mean(p_t * np.log((p_t + 1e-7) / (p_s + 1e-7)))
  np.testing.assert_allclose(pkt.pkt(STUDENT, TEACHER), expected, rtol=1e-4)
  assert abs(float(pkt.pkt(TEACHER, TEACHER))) < 1e-7


def test_nst_matches_channel_loops_and_ignores_channel_order():
  def channels(f):
    c = f.reshape(len(f), -1, f.shape[-1]).transpose(0, 2, 1).astype(np.float64)
    return c / np.linalg.norm(c, axis=2, keepdims=True)

  s, t = channels(STUDENT), channels(TEACHER)

  def k(a, b):
    return np.mean([(a[n, i] @ b[n, j]) ** 2 for n in range(5)
                    for i in range(a.shape[1]) for j in range(b.shape[1])])

  expected = k(t, t) + k(s, s) - 2 * k(s, t)
  np.testing.assert_allclose(nst.nst(STUDENT, TEACHER), expected, rtol=1e-4)
  assert abs(float(nst.nst(TEACHER[..., ::-1], TEACHER))) < 1e-6


@pytest.mark.parametrize("term", [sp.sp, rkd.rkd, pkt.pkt, nst.nst])
def test_gradients_reach_the_student_only(term):
  grads = jax.grad(term, argnums=(0, 1))(STUDENT, TEACHER)
  assert np.all(np.isfinite(grads[0])) and np.abs(grads[0]).sum() > 0
  assert np.abs(grads[1]).sum() == 0  # The teacher is a fixed target.
