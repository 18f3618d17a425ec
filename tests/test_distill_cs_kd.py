"""CS-KD (Yun et al. 2020): the loss equals the authors' KDLoss on their batch halves
(fixtures of tests/reference/make_self_kd_fixtures.py), value and gradient, the partner
held fixed; batches pair each example with one of its class, drawn by seed and step; a
student trains on ce + cs_kd end to end, and what cannot work is refused."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import toy_arrays, toy_config

from jaxkd.data import ArrayDataset
from jaxkd.distill import TermInputs
from jaxkd.distill.cs_kd import CSKD
from jaxkd.errors import JaxkdError

FIXTURE = pathlib.Path(__file__).resolve().parent / "reference" / "fixtures" / "self_kd.json"


@pytest.mark.parametrize("case", range(2))
def test_cs_kd_equals_the_authors_kd_loss(case):
  fixture = json.loads(FIXTURE.read_text())["cs_kd"]
  expected = fixture["cases"][case]
  examples, partners = np.asarray(fixture["examples"]), np.asarray(fixture["partners"])
  count = len(examples)

  def loss(examples):  # interleaved as the batches come: example, partner, example, ...
    logits = jnp.stack([examples, jnp.asarray(partners, jnp.float32)], 1).reshape(2 * count, -1)
    mask = jnp.tile(jnp.array([1.0, 0.0]), count)
    inputs = TermInputs(logits, None, jnp.zeros(2 * count, jnp.int32), None,
                        jnp.zeros((), jnp.int32), mask=mask)
    return CSKD(temperature=expected["temperature"]).apply({}, inputs)

  value, grad = jax.value_and_grad(loss)(jnp.asarray(examples, jnp.float32))
  assert float(value) == pytest.approx(expected["loss"], rel=1e-5)
  np.testing.assert_allclose(np.asarray(grad), expected["grad"], rtol=1e-4, atol=1e-7)


def test_batches_pair_each_example_with_one_of_its_class():
  x, y = toy_arrays(64, 0)
  data = ArrayDataset(x, y, int(y.max()) + 1, name="toy")
  batches = data.train_batches(8, seed=3)
  batches.pair_by_class()
  for step in range(5):
    batch = batches.batch(step)
    labels, index = batch["label"], batch["index"]
    assert len(labels) == 16 and np.all(labels[0::2] == labels[1::2])  # same class
    np.testing.assert_array_equal(batch["mask"], np.tile([1.0, 0.0], 8))
    np.testing.assert_array_equal(index, batches.batch(step)["index"])  # by seed and step
  plain = data.train_batches(8, seed=3)
  np.testing.assert_array_equal(batches.batch(2)["index"][0::2], plain.batch(2)["index"])


def test_a_student_trains_on_ce_and_cs_kd(tmp_path, toy_datasets):
  from jaxkd.run import train
  from jaxkd.run.metrics import read_metrics

  config = toy_config(num_steps=4)
  config.distill.terms = {"ce": {"weight": 1.0}, "cs_kd": {"weight": 1.0, "temperature": 4.0}}
  train.train_and_evaluate(config, tmp_path / "run", datasets=toy_datasets)
  records = [r for r in read_metrics(tmp_path / "run") if r["split"] == "train"]
  assert records and all(np.isfinite(r["loss/cs_kd"]) and r["loss/cs_kd"] >= 0 for r in records)


def test_cs_kd_in_a_population_is_refused():
  from jaxkd.config.population import check_population

  config = toy_config()
  config.distill.terms = {"ce": {"weight": 1.0}, "cs_kd": {"weight": 1.0}}
  second = toy_config()
  second.distill.terms = config.distill.terms
  second.seed = 1
  with pytest.raises(JaxkdError, match="partner of its class"):
    check_population([config, second])
