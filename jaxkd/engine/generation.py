"""Generation with a key/value cache, inside jit: one prefill of the prompts, then one
decoding step per new token (lax.scan over a fixed horizon, static shapes), for on-policy
distillation, sequence-level KD and evaluation; any model of jaxkd.models that takes
decode=True (transformer_lm, gpt2, llama).

Sequences are aligned at position 0: sequence i's prompt is tokens[i, :lengths[i]] (at
least `prompt_len`, the static part every prompt shares and the prefill reads); from there
on each position takes the prompt's token where the prompt goes on, and otherwise samples
from the logits of the position before at `temperature` (0: greedy), keyed by
fold_in(key, position), so the tokens do not depend on how the forward is computed. After a
sequence samples `stop_token`, its later positions hold `stop_token` and count for nothing.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def init_cache(model: nn.Module, variables: dict, batch: int, length: int) -> dict:
  """An empty 'cache' collection for `batch` sequences of up to `length` tokens."""
  tokens = jnp.zeros((batch, length), jnp.int32)
  shapes = jax.eval_shape(lambda: model.apply(variables, tokens, decode=True,
                                              mutable=["cache"])[1]["cache"])
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def sample(logits: jax.Array, temperature: float, key: jax.Array) -> jax.Array:
  """Tokens [B] from logits [B, V]: categorical at `temperature`, argmax at 0."""
  if temperature == 0:
    return jnp.argmax(logits, -1)
  return jax.random.categorical(key, logits.astype(jnp.float32) / temperature)


def generate(model: nn.Module, variables: dict, tokens: jax.Array, prompt_len: int,
             temperature: float, key: jax.Array, lengths: jax.Array | None = None,
             stop_token: int | None = None, num_classes: int | None = None,
             return_logits: bool = False) -> tuple[Any, ...]:
  """(sequences [B, T], labels [B, T][, logits [B, T, V]]) continuing tokens [B, T] past
  each prompt (lengths [B], default prompt_len for all) to T + 1 tokens: sequences are the
  first T, labels the next token at each position (-1 inside a prompt and after a stop).
  logits: the decoding steps' (position t: the model's output after tokens[:t + 1]).
  num_classes: sample among the first num_classes ids only (a padded vocabulary)."""
  batch, length = tokens.shape
  lengths = jnp.full((batch,), prompt_len) if lengths is None else jnp.asarray(lengths)
  apply = lambda cache, x: model.apply({**variables, "cache": cache}, x, decode=True,
                                       mutable=["cache"])
  cut = (lambda x: x) if num_classes is None else (lambda x: x[..., :num_classes])
  logits, mutated = apply(init_cache(model, variables, batch, length), tokens[:, :prompt_len])
  pad = jnp.zeros((batch, 1), tokens.dtype)
  padded = jnp.concatenate([tokens, pad], axis=1)

  def next_token(position, last, done):
    drawn = sample(cut(last), temperature, jax.random.fold_in(key, position)).astype(tokens.dtype)
    given = jax.lax.dynamic_index_in_dim(padded, position, axis=1, keepdims=False)
    token = jnp.where(position < lengths, given, drawn)
    if stop_token is None:
      return token, done
    token = jnp.where(done, stop_token, token)
    return token, done | ((position >= lengths) & (token == stop_token))

  def step(carry, position):
    cache, last, done = carry
    token, now_done = next_token(position, last, done)
    out, mutated = apply(cache, token[:, None])
    return (mutated["cache"], out[:, 0], now_done), (token, done, out[:, 0])

  done = jnp.zeros((batch,), bool)
  (_, last, done_end), (made, done_before, steps) = jax.lax.scan(
      step, (mutated["cache"], logits[:, -1], done), jnp.arange(prompt_len, length))
  final, _ = next_token(length, last, done_end)
  sequence = jnp.concatenate([tokens[:, :prompt_len], made.T, final[:, None]], axis=1)
  positions = jnp.arange(length)[None]
  # The label at position t is token t + 1: it counts where that token was generated and
  # the sequence had not stopped before it.
  stopped = jnp.concatenate([jnp.zeros((batch, prompt_len), bool), done_before.T,
                             done_end[:, None]], axis=1)[:, 1:]
  counts = (positions + 1 >= lengths[:, None]) & ~stopped
  labels = jnp.where(counts, sequence[:, 1:], -1).astype(jnp.int32)
  if not return_logits:
    return sequence[:, :length], labels
  every = jnp.concatenate([logits, jnp.moveaxis(steps, 0, 1)], axis=1)
  return sequence[:, :length], labels, every
