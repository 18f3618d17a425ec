"""Each logit term against an independent numpy computation or a known identity."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxkd.distill import TermInputs, build_objective
from jaxkd.distill import ce, dist, dkd, kd, logit_matching
from jaxkd.distill.terms import standardize
from jaxkd.errors import JaxkdError

RNG = np.random.default_rng(0)
B, C = 6, 5
STUDENT = RNG.normal(size=(B, C)).astype(np.float32) * 2
TEACHERS = RNG.normal(size=(2, B, C)).astype(np.float32) * 3
LABELS = RNG.integers(0, C, B).astype(np.int32)


def _inputs(student=STUDENT, teachers=TEACHERS[:1], labels=LABELS, step=0, steps_per_epoch=1):
  return TermInputs(jnp.asarray(student), None if teachers is None else jnp.asarray(teachers),
                    jnp.asarray(labels), jax.nn.one_hot(labels, C), jnp.asarray(step),
                    steps_per_epoch)


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_kl(p, q):
  return np.sum(np.where(p > 0, p * (np.log(np.maximum(p, 1e-30)) - np.log(q)), 0.0), -1)


def test_ce_with_label_smoothing_matches_numpy():
  eps = 0.1
  targets = np.eye(C)[LABELS] * (1 - eps) + eps / C
  expected = -np.mean(np.sum(targets * np.log(np_softmax(STUDENT.astype(np.float64))), -1))
  np.testing.assert_allclose(ce.ce(_inputs(), label_smoothing=eps), expected, rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_kd_matches_numpy_and_is_zero_for_identical_logits(temperature):
  p_t = np_softmax(TEACHERS[0] / temperature)
  p_s = np_softmax(STUDENT / temperature)
  expected = temperature**2 * np.mean(np_kl(p_t, p_s))
  np.testing.assert_allclose(kd.kd(_inputs(), temperature=temperature), expected, rtol=1e-4)
  same = _inputs(teachers=STUDENT[None])
  assert abs(float(kd.kd(same, temperature=temperature))) < 1e-5


def test_kd_gradient_is_temperature_times_probability_gap():
  temperature = 4.0
  grad = jax.grad(lambda s: kd.kd(_inputs(student=s), temperature=temperature))(jnp.asarray(STUDENT))
  expected = temperature * (np_softmax(STUDENT / temperature) - np_softmax(TEACHERS[0] / temperature)) / B
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_standardize_divides_by_the_unbiased_std_as_the_authors_code():
  z = np.array([[1.0, 2.0, 4.0, 7.0]])
  # Hand-worked: mean 3.5, unbiased variance (6.25 + 2.25 + 0.25 + 12.25) / 3 = 7.
  np.testing.assert_allclose(standardize(jnp.asarray(z)), (z - 3.5) / (np.sqrt(7.0) + 1e-7),
                             rtol=1e-6)


def test_kd_with_standardized_logits_ignores_logit_scale_and_shift():
  plain = kd.kd(_inputs(), temperature=2.0, standardize=True)
  rescaled = _inputs(student=STUDENT * 7.0 + 3.0, teachers=TEACHERS[:1] * 0.5 - 1.0)
  np.testing.assert_allclose(kd.kd(rescaled, temperature=2.0, standardize=True), plain, rtol=1e-4)
  z = (STUDENT - STUDENT.mean(-1, keepdims=True)) / STUDENT.std(-1, ddof=1, keepdims=True)
  t = (TEACHERS[0] - TEACHERS[0].mean(-1, keepdims=True)) / TEACHERS[0].std(-1, ddof=1, keepdims=True)
  expected = 4.0 * np.mean(np_kl(np_softmax(t / 2.0), np_softmax(z / 2.0)))
  np.testing.assert_allclose(plain, expected, rtol=1e-4)


def test_soft_and_logit_mse_match_numpy():
  expected = np.mean((np_softmax(STUDENT / 2.0) - np_softmax(TEACHERS[0] / 2.0)) ** 2)
  np.testing.assert_allclose(logit_matching.soft_mse(_inputs(), temperature=2.0), expected, rtol=1e-5)
  np.testing.assert_allclose(logit_matching.logit_mse(_inputs()), np.mean((STUDENT - TEACHERS[0]) ** 2), rtol=1e-5)


def _np_dkd_parts(student, teacher, labels, temperature):
  p_s, p_t = np_softmax(student / temperature), np_softmax(teacher / temperature)
  rows = np.arange(len(labels))
  b_s = np.stack([p_s[rows, labels], 1 - p_s[rows, labels]], -1)
  b_t = np.stack([p_t[rows, labels], 1 - p_t[rows, labels]], -1)
  mask = np.eye(p_s.shape[1])[labels] == 0
  q_s = np.where(mask, p_s, 0) / (1 - p_s[rows, labels])[:, None]
  q_t = np.where(mask, p_t, 0) / (1 - p_t[rows, labels])[:, None]
  return np_kl(b_t, b_s), np_kl(q_t, np.where(mask, q_s, 1.0)), p_t[rows, labels]


def test_dkd_parts_match_numpy_and_recombine_into_kd():
  temperature = 3.0
  tckd, nckd, target = dkd.dkd_parts(_inputs(), temperature)
  np_tckd, np_nckd, np_target = _np_dkd_parts(STUDENT, TEACHERS[0], LABELS, temperature)
  np.testing.assert_allclose(tckd, np_tckd, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(nckd, np_nckd, rtol=1e-4, atol=1e-6)
  # Zhao et al. 2022, eq. (1): KD = TCKD + (1 - p_target^teacher) * NCKD.
  kd_per_example = np_kl(np_softmax(TEACHERS[0] / temperature), np_softmax(STUDENT / temperature))
  np.testing.assert_allclose(tckd + (1 - target) * nckd, kd_per_example, rtol=1e-4)
  value = dkd.dkd(_inputs(step=10, steps_per_epoch=1), alpha=1.0, beta=8.0, temperature=temperature,
                warmup_epochs=5.0)
  np.testing.assert_allclose(value, temperature**2 * np.mean(np_tckd + 8 * np_nckd), rtol=1e-4)
  grads = jax.grad(lambda s: dkd.dkd(_inputs(student=s, step=10), warmup_epochs=0.0))(jnp.asarray(STUDENT))
  assert np.all(np.isfinite(grads)) and np.any(grads != 0)


def test_dkd_warms_up_by_whole_epochs_from_epoch_one_as_mdistiller():
  def at(step):  # 10 steps per epoch, 20 warm-up epochs.
    return float(dkd.dkd(_inputs(step=step, steps_per_epoch=10), warmup_epochs=20.0))

  full = at(500)
  assert full > 0
  # mdistiller: min(epoch / warmup, 1) with epoch = 1, 2, ... during training.
  assert at(0) == pytest.approx(full / 20, rel=1e-5) == pytest.approx(at(9), rel=1e-6)
  assert at(95) == pytest.approx(0.5 * full, rel=1e-5)  # Epoch 10 of 20.
  assert at(190) == pytest.approx(full, rel=1e-6)  # Epoch 20: full weight.


def test_dist_matches_numpy_pearson():
  temperature = 4.0
  p_s, p_t = np_softmax(STUDENT / temperature), np_softmax(TEACHERS[0] / temperature)
  inter = 1 - np.mean([np.corrcoef(p_s[i], p_t[i])[0, 1] for i in range(B)])
  intra = 1 - np.mean([np.corrcoef(p_s[:, c], p_t[:, c])[0, 1] for c in range(C)])
  expected = temperature**2 * (2.0 * inter + 0.5 * intra)
  np.testing.assert_allclose(dist.dist(_inputs(), beta=2.0, gamma=0.5, temperature=temperature),
                             expected, rtol=1e-4)
  assert abs(float(dist.dist(_inputs(teachers=STUDENT[None] * 1.0)))) < 1e-4


def _objective(terms, combine="average", steps_per_epoch=10, total_steps=100):
  config = ml_collections.ConfigDict({"terms": terms, "teacher_combine": combine})
  return build_objective(config, steps_per_epoch, total_steps)


def test_objective_weights_terms_and_combines_teachers():
  objective = _objective({"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}})
  loss, metrics, _ = objective(_inputs(teachers=TEACHERS))
  averaged = np.mean([np_softmax(t / 4.0) for t in TEACHERS], axis=0)
  kd_avg = 16.0 * np.mean(np_kl(averaged, np_softmax(STUDENT / 4.0)))
  np.testing.assert_allclose(metrics["loss/kd"], kd_avg, rtol=1e-4)
  np.testing.assert_allclose(loss, 0.1 * metrics["loss/ce"] + 0.9 * kd_avg, rtol=1e-4)
  summed = _objective({"kd": {"weight": 1.0, "temperature": 4.0}}, combine="sum")
  _, sum_metrics, _ = summed(_inputs(teachers=TEACHERS))
  per_teacher = [16.0 * np.mean(np_kl(np_softmax(t / 4.0), np_softmax(STUDENT / 4.0))) for t in TEACHERS]
  np.testing.assert_allclose(sum_metrics["loss/kd"], sum(per_teacher), rtol=1e-4)


def test_weight_and_temperature_schedules():
  objective = _objective({
      "kd": {"weight": 1.0, "weight_schedule": "warmup", "weight_warmup_epochs": 2.0,
             "temperature": 8.0, "temperature_schedule": "cosine", "temperature_end": 2.0}})
  _, at_0, _ = objective(_inputs(step=0))
  _, at_10, _ = objective(_inputs(step=10))
  _, at_100, _ = objective(_inputs(step=100))
  assert float(at_0["weight/kd"]) == 0.0 and float(at_10["weight/kd"]) == pytest.approx(0.5)
  expected_end = 4.0 * np.mean(np_kl(np_softmax(TEACHERS[0] / 2.0), np_softmax(STUDENT / 2.0)))
  np.testing.assert_allclose(at_100["loss/kd"], expected_end, rtol=1e-4)  # T reached 2.


def test_objective_errors_name_the_problem():
  with pytest.raises(JaxkdError, match="unknown objective term 'kld'.*Did you mean 'kd'"):
    _objective({"kld": {"weight": 1.0}})
  with pytest.raises(JaxkdError, match=r"'kd' has no option\(s\) \['alpha'\]"):
    _objective({"kd": {"weight": 1.0, "alpha": 0.5}})
  with pytest.raises(JaxkdError, match="needs a weight"):
    _objective({"kd": {"temperature": 4.0}})
  assert _objective({"kd2": {"term": "kd", "weight": 1.0}}).needs_teacher
  assert not _objective({"ce": {"weight": 1.0}}).needs_teacher
