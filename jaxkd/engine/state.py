"""The train state (one pytree: what is checkpointed) and the run's named random streams."""

import zlib
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxkd.engine.sharding import replicated


def stream(root: jax.Array, name: str) -> jax.Array:
  """The random stream `name` of a run whose root key is `root`: fold_in(root, crc32(name)).
  Two names, or two seeds' roots, never give the same stream (unlike PRNGKey(seed + 1),
  which is the next seed's root)."""
  return jax.random.fold_in(root, zlib.crc32(name.encode()))


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as one pytree (what is checkpointed).

  model_state holds the model's non-parameter collections (e.g. batch_stats).
  rng is the run's base key; step s uses fold_in(rng, s). aux_params are the
  objective's learnable parts (connectors), optimised with the student and
  left out of everything that reads the student (teachers, reports, export).
  """

  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rng: jax.Array
  aux_params: Any = flax.struct.field(default_factory=dict)  # connectors, never exported
  aux_state: Any = flax.struct.field(default_factory=dict)  # their running state (memory banks)

  def trainable(self) -> dict:
    return {"params": self.params, "aux": self.aux_params}

  def variables(self) -> dict:
    return {"params": self.params, **self.model_state}


def init_train_state(model: nn.Module, tx: optax.GradientTransformation,
                     input_shape: tuple[int, ...], seed: int, mesh: Mesh,
                     aux_params: dict | None = None, aux_state: dict | None = None,
                     input_dtype=jnp.float32) -> TrainState:
  """The student initialised from the root key PRNGKey(seed) (init, dropout at init, and the
  per-step key are its three splits), the connectors' params and state given (see
  jaxkd.run.assemble), the optimizer state of both; replicated over `mesh`."""

  def init(aux_params, aux_state):
    init_key, dropout_key, state_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    variables = dict(model.init({"params": init_key, "dropout": dropout_key},
                                jnp.zeros((1, *input_shape), input_dtype), train=False))
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                      opt_state=tx.init({"params": params, "aux": aux_params}), rng=state_key,
                      aux_params=aux_params, aux_state=aux_state)

  return jax.jit(init, out_shardings=replicated(mesh))(aux_params or {}, aux_state or {})
