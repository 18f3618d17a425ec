"""Preprocessing on the accelerator, inside the jitted step (no TensorFlow).

The host ships uint8 pixels; this scales them, applies the random crop and flip
of training (keyed, so a step's augmentation is reproducible), and normalises.
Teacher and student can thus be fed the very same augmented view.
"""

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Preprocess:
  mean: tuple[float, ...]
  std: tuple[float, ...]
  crop_padding: int = 0
  flip: bool = False

  def __call__(self, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """images [B, H, W, C]; key None means evaluation (no augmentation)."""
    x = images.astype(jnp.float32)
    if jnp.issubdtype(images.dtype, jnp.integer):
      x = x / 255.0
    if key is not None:
      crop_key, flip_key = jax.random.split(key)
      if self.crop_padding:
        x = random_crop(crop_key, x, self.crop_padding)
      if self.flip:
        x = random_flip(flip_key, x)
    return (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)


def random_crop(key: jax.Array, images: jax.Array, padding: int) -> jax.Array:
  """Zero-pads each side by `padding` and crops back to the size at a random offset."""
  batch, height, width, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = jax.random.randint(key, (batch, 2), 0, 2 * padding + 1)

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, image.shape[-1]))

  return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
  """Mirrors each image left-right with probability 1/2."""
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1], images)


def mixup(key: jax.Array, images: jax.Array, targets: jax.Array, alpha: float
          ) -> tuple[jax.Array, jax.Array]:
  """Zhang et al. 2018: mixes each example with its neighbour in the batch (rolled by
  one) with one Beta(alpha, alpha) ratio; targets are mixed the same way. A traced alpha
  (a population member's) of 0 mixes nothing."""
  if isinstance(alpha, (int, float)):
    ratio = jax.random.beta(key, alpha, alpha)
  else:
    safe = jnp.where(alpha > 0, alpha, 1.0)
    ratio = jnp.where(alpha > 0, jax.random.beta(key, safe, safe), 1.0)
  mix = lambda x: ratio * x + (1.0 - ratio) * jnp.roll(x, 1, axis=0)
  return mix(images), mix(targets)


INPUT_NAMES = ("image", "tokens", "numeric")  # The named inputs a batch may carry.
# What else a model takes from a batch, as keyword arguments: the documents each token of
# a packed text window belongs to (attention stays inside a document).
MODEL_INPUTS = ("segments",)


def model_inputs(batch: dict) -> dict:
  """The batch's entries the model takes besides its input (MODEL_INPUTS), by name."""
  return {name: batch[name] for name in MODEL_INPUTS if name in batch}


def model_input(batch: dict, preprocess: Preprocess, key: jax.Array | None = None) -> jax.Array:
  """The model's input from a batch, preprocessed for its kind: an 'image' is scaled,
  augmented (with `key`) and normalised by `preprocess`; 'tokens' (integer ids) and
  'numeric' (tables, sequences of vectors) pass unchanged, never divided by 255 or
  cropped."""
  present = [name for name in INPUT_NAMES if name in batch]
  if len(present) != 1:
    raise ValueError(f"a batch carries exactly one of {INPUT_NAMES} as the model's input; "
                     f"this one has {sorted(batch)}.")
  name = present[0]
  return preprocess(batch[name], key) if name == "image" else batch[name]
