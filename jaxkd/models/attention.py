"""What the language models share: rotary position embeddings (with the scalings
pretrained checkpoints use), the attention mask (causal, padding, documents, sliding
window), grouped-query attention, and the key/value cache of incremental decoding.

Decoding (a model called with decode=True; jaxkd.engine.generation drives it): each
attention layer keeps the keys and values of every position so far in the flax 'cache'
collection ([B, L, N_kv, D], L the length of the call that created it), and the model a
position counter; a call with T new tokens writes their keys and values at the counter,
attends over the cache up to each token's own position, and advances the counter by T.

Computed as transformers computes them (the inverse frequencies 1 / theta^(2i/d) in
float32, the half-split rotation of GPT-NeoX and LLaMA, softmax in float32), so a model
imported from a Hugging Face checkpoint gives its logits (tests/test_hf.py).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

ROPE_TYPES = ("default", "linear", "llama3")


def rope_frequencies(head_dim: int, theta: float = 10000.0, rope_type: str = "default",
                     factor: float = 1.0, low_freq_factor: float = 1.0,
                     high_freq_factor: float = 4.0, original_max: int = 8192) -> jax.Array:
  """Inverse frequencies [head_dim / 2] of the rotary embedding: 'default' (Su et al.
  2021), 'linear' (positions interpolated by `factor`), 'llama3' (Llama 3.1's: low
  frequencies divided by `factor`, high ones kept, a smooth ramp between)."""
  if rope_type not in ROPE_TYPES:
    raise ValueError(f"rope type '{rope_type}' is not one of {ROPE_TYPES}")
  inverse = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  if rope_type == "linear":
    return inverse / factor
  if rope_type == "llama3":
    low_wavelength, high_wavelength = original_max / low_freq_factor, original_max / high_freq_factor
    wavelength = 2 * math.pi / inverse
    scaled = jnp.where(wavelength > low_wavelength, inverse / factor, inverse)
    smooth = (original_max / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelength >= high_wavelength) & (wavelength <= low_wavelength)
    return jnp.where(medium, smoothed, scaled)
  return inverse


def apply_rotary(x: jax.Array, inverse_frequencies: jax.Array,
                 positions: jax.Array | None = None) -> jax.Array:
  """x [B, T, N, D] rotated by position: the pairs (x_i, x_{i + D/2}) by the angle
  position * inverse_frequencies[i]; positions [T] (default 0 .. T - 1)."""
  positions = jnp.arange(x.shape[1]) if positions is None else positions
  angles = positions.astype(jnp.float32)[:, None] * inverse_frequencies[None, :]  # [T, D/2]
  angles = jnp.concatenate([angles, angles], axis=-1)
  cos, sin = (f(angles)[None, :, None, :].astype(x.dtype) for f in (jnp.cos, jnp.sin))
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin


def attention_mask(length: int, mask: jax.Array | None = None,
                   segments: jax.Array | None = None,
                   sliding_window: int | None = None) -> jax.Array:
  """Which keys each query sees, [B or 1, 1, T, T] bools: itself and earlier positions
  (causal), only real tokens (mask [B, T], 1 = a token, 0 = padding), only its own
  document (segments [B, T]: packed documents never attend across), and with a sliding
  window only the last `sliding_window` positions."""
  query, key = jnp.arange(length)[:, None], jnp.arange(length)[None, :]
  allowed = (key <= query)[None, None]
  if sliding_window:
    allowed = allowed & (query - key < sliding_window)[None, None]
  if mask is not None:
    allowed = allowed & (mask[:, None, None, :] > 0)
  if segments is not None:
    allowed = allowed & (segments[:, None, :, None] == segments[:, None, None, :])
  return allowed


def attend(query: jax.Array, key: jax.Array, value: jax.Array, allowed: jax.Array,
           scale: float | None = None) -> jax.Array:
  """Softmax attention [B, T, N, D] (float32 softmax); key and value may have fewer heads
  than the query (grouped-query attention: each serves N / N_kv query heads). A query that
  sees no key (a padding position) gets a finite, unused output."""
  return jax.nn.dot_product_attention(query, key, value, mask=allowed, scale=scale)


def positions_of(module: nn.Module, length: int, decode: bool) -> jax.Array:
  """The positions [T] of a call's T tokens: 0 .. T - 1, or when decoding the T after
  those already in the cache (the counter in `module`'s 'cache' collection, advanced by T;
  the call that creates the cache starts at 0 and does not advance it)."""
  if not decode:
    return jnp.arange(length)
  initialized = module.has_variable("cache", "decoded")
  counter = module.variable("cache", "decoded", lambda: jnp.zeros((), jnp.int32))
  start = counter.value
  if initialized:
    counter.value = start + length
  return start + jnp.arange(length)


def decode_mask(positions: jax.Array, cache_length: int, sliding_window: int = 0) -> jax.Array:
  """Which cache slots [1, 1, T, L] the tokens at `positions` see: their own and earlier
  positions (slots past them are not yet written), within the sliding window if any."""
  query, key = positions[:, None], jnp.arange(cache_length)[None, :]
  allowed = key <= query
  if sliding_window:
    allowed = allowed & (query - key < sliding_window)
  return allowed[None, None]


def cached(module: nn.Module, key: jax.Array, value: jax.Array, start: jax.Array
           ) -> tuple[jax.Array, jax.Array]:
  """(keys, values) [B, L, N_kv, D] of the whole cache with this call's [B, T, N_kv, D]
  written from position `start`; the call that creates the cache (of this call's length)
  returns them as they are."""
  initialized = module.has_variable("cache", "cached_key")
  keys = module.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
  values = module.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
  if not initialized:
    return key, value
  keys.value = jax.lax.dynamic_update_slice_in_dim(keys.value, key.astype(keys.value.dtype),
                                                   start, axis=1)
  values.value = jax.lax.dynamic_update_slice_in_dim(
      values.value, value.astype(values.value.dtype), start, axis=1)
  return keys.value, values.value
