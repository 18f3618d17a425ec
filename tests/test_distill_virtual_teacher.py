"""Tf-KD's manually designed (virtual) teacher against the authors' loss_kd_regularization
(fixtures of tests/reference/make_self_kd_fixtures.py): value and gradient, three settings
of temperature and multiplier; and the batch-mean form by hand."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.distill import TermInputs
from jaxkd.distill.virtual_teacher import virtual_teacher

FIXTURE = pathlib.Path(__file__).resolve().parent / "reference" / "fixtures" / "self_kd.json"


def _inputs(logits, labels):
  logits = jnp.asarray(logits, jnp.float32)
  return TermInputs(logits, None, jnp.asarray(labels), jax.nn.one_hot(labels, logits.shape[-1]),
                    jnp.zeros((), jnp.int32))


@pytest.mark.parametrize("case", range(3))
def test_virtual_teacher_equals_the_authors_code(case):
  fixture = json.loads(FIXTURE.read_text())["tf_kd"]
  expected = fixture["cases"][case]
  loss = lambda logits: virtual_teacher(_inputs(logits, fixture["labels"]),
                                        fixture["correct_prob"], expected["reg_temperature"],
                                        expected["multiplier"])
  value, grad = jax.value_and_grad(loss)(jnp.asarray(fixture["logits"]))
  assert float(value) == pytest.approx(expected["loss"], rel=1e-5)
  np.testing.assert_allclose(np.asarray(grad), expected["grad"], rtol=1e-4, atol=1e-7)


def test_the_batch_mean_form_by_hand():
  """Two examples, three classes, T = 1: the KL of [0.9, 0.05, 0.05] (label 0) and
  [0.05, 0.05, 0.9] (label 2) softened by softmax, from softmax(logits), per example."""
  logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
  labels = np.array([0, 2])
  q = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  u = np.array([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9]])
  p = np.exp(u) / np.exp(u).sum(1, keepdims=True)
  expected = np.mean(np.sum(p * np.log(p / q), 1))
  value = virtual_teacher(_inputs(logits, labels), 0.9, 1.0, 1.0, "batchmean")
  assert float(value) == pytest.approx(expected, rel=1e-6)
