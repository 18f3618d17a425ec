"""The LM divergence family against numpy written from the papers' formulas (probabilities,
not log-space): per token over [B, T, V], masked means, several teachers, and the cached
top-k form with its tail bucket (equal to the dense loss when k = V)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.distill import TERMS, TermInputs
from jaxkd.errors import JaxkdError

B, T, V = 3, 5, 11


def softmax(x, temperature=1.0):
  e = np.exp((x - x.max(-1, keepdims=True)) / temperature)
  return e / e.sum(-1, keepdims=True)


def kl(p, q):
  return np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0.0), -1)


def numpy_divergence(name, p, q, **options):
  """Per-token divergence of teacher p and student q, from each paper's definition."""
  if name == "fkl":
    value = kl(p, q)
    return value + (np.sum(-p * np.log(p), -1) if options.get("cross_entropy_form") else 0)
  if name == "rkl":
    return kl(q, p)
  if name == "gjsd":
    beta = options["beta"]
    if beta == 0:
      return kl(p, q)
    if beta == 1:
      return kl(q, p)
    m = beta * p + (1 - beta) * q
    return beta * kl(p, m) + (1 - beta) * kl(q, m)
  if name == "skew_kl":
    m = options["alpha"] * p + (1 - options["alpha"]) * q
    return -np.sum(p * np.log(m), -1) if options.get("cross_entropy_form") else kl(p, m)
  if name == "skew_rkl":
    return kl(q, options["alpha"] * q + (1 - options["alpha"]) * p)
  if name == "tv":
    return 0.5 * np.abs(p - q).sum(-1)
  raise ValueError(name)


def masked_mean(per_token, labels, mask):
  weights = (labels >= 0) * mask[:, None]
  return np.sum(per_token * weights) / weights.sum()


CASES = [("fkl", {}), ("fkl", {"cross_entropy_form": True}), ("rkl", {}),
         ("gjsd", {"beta": 0.0}), ("gjsd", {"beta": 0.5}), ("gjsd", {"beta": 0.9}),
         ("gjsd", {"beta": 1.0}), ("skew_kl", {"alpha": 0.1}),
         ("skew_kl", {"alpha": 0.1, "cross_entropy_form": True}), ("skew_rkl", {"alpha": 0.1}),
         ("tv", {})]


@pytest.fixture
def batch():
  rng = np.random.default_rng(0)
  student = rng.normal(0, 2, (B, T, V)).astype(np.float32)
  teachers = rng.normal(0, 3, (2, B, T, V)).astype(np.float32)
  labels = rng.integers(0, V, (B, T)).astype(np.int32)
  labels[0, :2] = -1  # A prompt or padding: not counted.
  mask = np.array([1.0, 1.0, 0.0], np.float32)  # The last example is padding.
  return student, teachers, labels, mask


def _inputs(student, teacher_logits, labels, mask, topk=None):
  return TermInputs(jnp.asarray(student), None if teacher_logits is None else
                    jnp.asarray(teacher_logits), jnp.asarray(labels), jnp.zeros(()),
                    jnp.zeros((), jnp.int32), mask=jnp.asarray(mask), teacher_topk=topk)


def _apply(name, inputs, **options):
  method = TERMS.get(name)(**options)
  return float(method.apply({}, inputs))


@pytest.mark.parametrize("name,options", CASES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_each_divergence_matches_numpy_with_masking(batch, name, options, temperature):
  student, teachers, labels, mask = batch
  q = softmax(student.astype(np.float64), temperature)
  p = softmax(teachers[:1].astype(np.float64), temperature)[0]
  expected = masked_mean(numpy_divergence(name, p, q, **options), labels, mask)
  got = _apply(name, _inputs(student, teachers[:1], labels, mask), temperature=temperature,
               **options)
  np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


def test_several_teachers_give_the_average_distribution(batch):
  student, teachers, labels, mask = batch
  p = softmax(teachers.astype(np.float64)).mean(0)
  expected = masked_mean(kl(p, softmax(student.astype(np.float64))), labels, mask)
  np.testing.assert_allclose(_apply("fkl", _inputs(student, teachers, labels, mask)), expected,
                             rtol=2e-5)


def _topk(teacher, k):
  """The cache's form: the teacher's k largest log-probabilities and their token ids."""
  log_p = np.log(softmax(teacher.astype(np.float64)))
  ids = np.argsort(-log_p, axis=-1)[..., :k]
  return np.take_along_axis(log_p, ids, -1).astype(np.float32), ids.astype(np.int32)


@pytest.mark.parametrize("name,options", CASES)
def test_cached_top_k_equals_the_dense_loss_when_k_is_the_vocabulary(batch, name, options):
  student, teachers, labels, mask = batch
  dense = _apply(name, _inputs(student, teachers[:1], labels, mask), **options)
  log_p, ids = _topk(teachers[0], V)
  cached = _apply(name, _inputs(student, None, labels, mask, (jnp.asarray(log_p),
                                                              jnp.asarray(ids))), **options)
  np.testing.assert_allclose(cached, dense, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,options", CASES)
def test_cached_top_k_compares_k_tokens_and_one_tail_bucket(batch, name, options):
  student, teachers, labels, mask = batch
  k = 4
  log_p, ids = _topk(teachers[0], k)
  p_top = np.exp(log_p.astype(np.float64))
  q = softmax(student.astype(np.float64))
  q_top = np.take_along_axis(q, ids, -1)
  p_buckets = np.concatenate([p_top, 1 - p_top.sum(-1, keepdims=True)], -1)
  q_buckets = np.concatenate([q_top, 1 - q_top.sum(-1, keepdims=True)], -1)
  expected = masked_mean(numpy_divergence(name, p_buckets, q_buckets, **options), labels, mask)
  got = _apply(name, _inputs(student, None, labels, mask, (jnp.asarray(log_p), jnp.asarray(ids))),
               **options)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_a_cached_teacher_refuses_another_temperature(batch):
  student, teachers, labels, mask = batch
  log_p, ids = _topk(teachers[0], 4)
  with pytest.raises(JaxkdError, match="temperature-1"):
    _apply("fkl", _inputs(student, None, labels, mask, (jnp.asarray(log_p), jnp.asarray(ids))),
           temperature=2.0)


def test_gjsd_refuses_beta_outside_the_unit_interval(batch):
  student, teachers, labels, mask = batch
  with pytest.raises(JaxkdError, match="beta must be in"):
    _apply("gjsd", _inputs(student, teachers[:1], labels, mask), beta=1.5)


@pytest.mark.parametrize("k", [4, V])
def test_gradients_through_the_cached_form_are_finite(batch, k):
  import jax

  student, teachers, labels, mask = batch
  log_p, ids = _topk(teachers[0], k)
  for name, options in CASES:
    method = TERMS.get(name)(**options)
    grads = jax.grad(lambda s: method.apply({}, _inputs(s, None, labels, mask, (
        jnp.asarray(log_p), jnp.asarray(ids)))))(jnp.asarray(student))
    assert np.all(np.isfinite(grads)), name
    assert np.all(np.asarray(grads)[2] == 0)  # The padded example gets no gradient.


@pytest.mark.parametrize("name,options", CASES)
def test_logits_of_minus_infinity_give_finite_values_and_gradients(batch, name, options):
  """A padded vocabulary: the last 3 ids can never be emitted (logits -inf, teacher and
  student). Each divergence is then finite, equals numpy's over the other V - 3 ids, and its
  gradient is finite, and zero at those ids. (Before the floor in log_probs, rkl, gjsd
  and skew_rkl gave nan gradients here.)"""
  import jax

  student, teachers, labels, mask = batch
  padded_s, padded_t = student.copy(), teachers[:1].copy()
  padded_s[..., -3:], padded_t[..., -3:] = -np.inf, -np.inf
  labels = np.minimum(labels, V - 4)
  p = softmax(teachers[:1, ..., :-3].astype(np.float64))[0]
  q = softmax(student[..., :-3].astype(np.float64))
  expected = masked_mean(numpy_divergence(name, p, q, **options), labels, mask)
  method = TERMS.get(name)(**options)
  loss = lambda s: method.apply({}, _inputs(s, padded_t, labels, mask))
  value, grads = jax.value_and_grad(loss)(jnp.asarray(padded_s))
  np.testing.assert_allclose(float(value), expected, rtol=2e-5, atol=1e-6)
  assert np.all(np.isfinite(grads)), name
  assert np.all(np.asarray(grads)[..., -3:] == 0)
