"""Weights and inputs from a seed, the same on both sides of a parity check.

make_fixtures.py fills the reference PyTorch model's state_dict with these arrays and
the tests fill the Flax model with the same ones, so a fixture stores the names and
shapes of the reference's tensors, never the weights. numpy's PCG64 streams are the
same on every machine and version of numpy 2.
"""

import numpy as np


def seeded_tensor(seed: int, position: int, name: str, shape: tuple) -> np.ndarray:
  """The value of state_dict entry number `position` named `name`: scales that keep a
  deep network's activations of order one (He-like weights, BatchNorm near identity)."""
  rng = np.random.default_rng([seed, position])
  if name.endswith("running_var"):
    return (1.0 + 0.5 * rng.random(shape)).astype(np.float32)
  if name.endswith("running_mean") or name.endswith("bias"):
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)
  if len(shape) == 1:  # A norm's scale (biases are handled above).
    return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
  fan_in = int(np.prod(shape[1:]))
  return (rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)).astype(np.float32)


def seeded_state(seed: int, names_shapes: list) -> dict:
  """{name: array} for the (name, shape) list of a state_dict (integer counters skipped)."""
  return {name: seeded_tensor(seed, i, name, tuple(shape))
          for i, (name, shape) in enumerate(names_shapes) if not name.endswith("num_batches_tracked")}


def seeded_input(seed: int, shape: tuple) -> np.ndarray:
  return np.random.default_rng([seed, 10**6]).standard_normal(shape).astype(np.float32)
