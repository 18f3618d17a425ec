import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import toy_config
from jaxkd.config import base_config, validate
from jaxkd.errors import JaxkdError
from jaxkd.engine.optim import make_optimizer, make_schedule


def _schedule(**fields):
  config = base_config().schedule
  config.update(fields)
  return config


def test_step_schedule_divides_at_epoch_boundaries():
  schedule = make_schedule(_schedule(name="step", boundaries_epochs=(2, 3)), 0.5, 10, 50)
  assert [float(schedule(s)) for s in (0, 19, 20, 29, 30, 49)] == pytest.approx(
      [0.5, 0.5, 0.05, 0.05, 0.005, 0.005])


def test_warmup_then_cosine():
  schedule = make_schedule(_schedule(name="cosine", warmup_epochs=1), 1.0, 10, 110)
  assert float(schedule(0)) == 0.0 and float(schedule(5)) == pytest.approx(0.5)
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(60)) == pytest.approx(0.5)  # Halfway through the 100 cosine steps.
  assert float(schedule(110)) == pytest.approx(0.0, abs=1e-7)


def test_warmup_keeps_step_boundaries_absolute():
  schedule = make_schedule(_schedule(name="step", warmup_epochs=1, boundaries_epochs=(3,)), 1.0, 10, 50)
  assert [float(schedule(s)) for s in (5, 10, 29, 30)] == pytest.approx([0.5, 1.0, 1.0, 0.1])


def _optimizer(**fields):
  config = base_config().optimizer
  config.update({"momentum": 0.0, **fields})
  return config


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_weight_decay_skips_biases_unless_asked(name):
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
  zero_grads = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros((2,))}
  for decay_all, bias_changes in ((False, False), (True, True)):
    tx = make_optimizer(_optimizer(name=name, learning_rate=0.1, weight_decay=0.5,
                                   decay_biases_and_norms=decay_all), optax.constant_schedule(0.1))
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert float(new["kernel"][0, 0]) < 1.0
    assert (float(new["bias"][0]) < 1.0) == bias_changes


def test_sgd_weight_decay_is_l2_on_the_gradient():
  params = {"kernel": jnp.full((1, 1), 2.0)}
  tx = make_optimizer(_optimizer(name="sgd", learning_rate=0.1, weight_decay=0.01),
                      optax.constant_schedule(0.1))
  updates, _ = tx.update({"kernel": jnp.full((1, 1), 1.0)}, tx.init(params), params)
  np.testing.assert_allclose(updates["kernel"], -0.1 * (1.0 + 0.01 * 2.0), rtol=1e-6)


def test_unknown_optimizer_and_bad_learning_rate():
  with pytest.raises(JaxkdError, match="unknown optimizer 'lamb'.*Known optimizers: adam, adamw, sgd"):
    make_optimizer(_optimizer(name="lamb", learning_rate=0.1), optax.constant_schedule(0.1))
  config = toy_config()
  config.optimizer.learning_rate = 0.0
  with pytest.raises(JaxkdError, match=r"optimizer.learning_rate=0.0 is out of range: it must "
                                       r"be > 0"):
    validate(config)  # Checked with the config, before any work.
  with pytest.raises(JaxkdError, match="unknown schedule 'linear'"):
    make_schedule(_schedule(name="linear"), 0.1, 10, 100)


def test_max_norm_projects_each_units_incoming_weights():
  params = {"kernel": jnp.array([[3.0, 0.1], [4.0, 0.2]]), "bias": jnp.array([10.0, -10.0])}
  tx = make_optimizer(_optimizer(name="sgd", learning_rate=1.0, momentum=0.0, max_norm=2.0),
                      optax.constant_schedule(1.0))
  grads = {"kernel": jnp.zeros((2, 2)), "bias": jnp.array([1.0, 1.0])}
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  # Hand-worked: column 0 has norm 5 -> scaled to norm 2 (1.2, 1.6); column 1 (norm 0.22)
  # stays; biases are not constrained, only updated.
  np.testing.assert_allclose(new["kernel"], [[1.2, 0.1], [1.6, 0.2]], rtol=1e-6)
  np.testing.assert_allclose(new["bias"], [9.0, -11.0])


def test_momentum_schedule_rises_linearly_to_the_momentum():
  from jaxkd.engine.optim import momentum_schedule

  config = _optimizer(name="sgd", learning_rate=0.1, momentum=0.9, momentum_start=0.5,
                      momentum_warmup_epochs=2.0)
  schedule = momentum_schedule(config, steps_per_epoch=10)
  assert [float(schedule(s)) for s in (0, 10, 20, 50)] == pytest.approx([0.5, 0.7, 0.9, 0.9])
  # In the optimizer: the first step's update is -lr * g, the second -lr * (g + m_1 g).
  tx = make_optimizer(config, optax.constant_schedule(0.1), steps_per_epoch=10)
  params, grads = {"w": jnp.zeros(1)}, {"w": jnp.ones(1)}
  state = tx.init(params)
  first, state = tx.update(grads, state, params)
  second, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(first["w"], [-0.1])
  np.testing.assert_allclose(second["w"], [-0.1 * (1 + 0.52)], rtol=1e-6)
