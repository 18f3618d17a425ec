import jax
import jax.numpy as jnp
import ml_collections
import pytest

from jaxkd.errors import JaxkdError
from jaxkd.models import MODELS, create_model


def _params(model, shape):
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, *shape)), train=False)
  return variables, sum(x.size for x in jax.tree.leaves(variables["params"]))


def test_mlp_shapes_and_parameter_count():
  model = create_model(ml_collections.ConfigDict({"name": "mlp", "widths": [1200, 1200]}), 10)
  variables, count = _params(model, (28, 28, 1))
  # Dense layers: (784*1200 + 1200) + (1200*1200 + 1200) + (1200*10 + 10).
  assert count == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10 == 2_395_210
  assert model.apply(variables, jnp.zeros((5, 28, 28, 1))).shape == (5, 10)


def test_mlp_dropout_is_active_only_in_training():
  model = create_model(ml_collections.ConfigDict({"name": "mlp", "widths": (64,), "dropout": 0.5}), 3)
  variables, _ = _params(model, (4, 4, 1))
  x = jnp.ones((8, 4, 4, 1))
  assert jnp.allclose(model.apply(variables, x), model.apply(variables, x))
  a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
  assert not jnp.allclose(a, b)


def test_lenet_with_batch_norm_keeps_batch_statistics():
  model = create_model(ml_collections.ConfigDict({"name": "lenet", "batch_norm": True}), 10)
  variables, count = _params(model, (28, 28, 1))
  assert set(variables) == {"params", "batch_stats"}
  # conv 5*5*1*6 (no bias with BN) + BN 12 + conv 5*5*6*16 + BN 32 + 400*120+120 + 120*84+84 + 84*10+10
  assert count == 150 + 12 + 2400 + 32 + 48120 + 10164 + 850
  logits, updates = model.apply(variables, jnp.ones((4, 28, 28, 1)), train=True,
                                mutable=["batch_stats"])
  assert logits.shape == (4, 10)
  assert not jnp.allclose(updates["batch_stats"]["bn0"]["mean"], variables["batch_stats"]["bn0"]["mean"])


def test_unknown_model_and_option_are_clear_errors():
  with pytest.raises(JaxkdError, match=r"unknown model 'mpl'.*Did you mean 'mlp'.*Known models: .*lenet.*mlp"):
    create_model(ml_collections.ConfigDict({"name": "mpl"}), 10)
  with pytest.raises(JaxkdError, match=r"model 'mlp' has no option\(s\) \['width'\]"):
    create_model(ml_collections.ConfigDict({"name": "mlp", "width": 3}), 10)
  assert {"mlp", "lenet"} <= set(MODELS.names())
