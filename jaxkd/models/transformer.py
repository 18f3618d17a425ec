"""A decoder-only Transformer language model (GPT-style, pre-norm).

Called on token ids [B, T] (int), it returns next-token logits [B, T, V] (V = the
vocabulary, the dataset's num_classes). Options: depth, width, heads, MLP width,
RMSNorm (Zhang & Sennrich 2019) or LayerNorm, rotary (Su et al. 2021) or learned
positions, the output layer tied to the token embedding or its own, dropout. Attention is
causal, and stays inside a document of a packed window (jaxkd.models.attention); with
decode=True a call is one step of incremental decoding over the key/value cache (ibid.).
Feature paths for hidden-state matching:
`block<i>` (the residual stream after block i) and `final_norm`.

Logical axes (LOGICAL_AXES, param_logical_axes): each parameter's axes by name
('vocab', 'embed', 'heads', 'head_dim', 'mlp', 'position'), for laying a large model out
over a mesh (jaxkd.engine.sharding.logical_shardings).
"""

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models.attention import (apply_rotary, attend, attention_mask, cached,
                                    decode_mask, positions_of, rope_frequencies)
from jaxkd.models.mlp import RateDropout
from jaxkd.models.registry import MODELS


def _norm(kind: str, name: str) -> nn.Module:
  if kind == "rmsnorm":
    return nn.RMSNorm(name=name)
  if kind == "layernorm":
    return nn.LayerNorm(name=name)
  raise ValueError(f"norm must be 'rmsnorm' or 'layernorm', not '{kind}'.")


class Block(nn.Module):
  """x + attention(norm(x)), then x + MLP(norm(x)) (GELU)."""

  num_heads: int
  mlp_dim: int
  norm: str
  positions: str
  dropout: float

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, allowed, positions: jax.Array,
               decode: bool) -> jax.Array:
    width = x.shape[-1]
    head_dim = width // self.num_heads
    h = _norm(self.norm, "attention_norm")(x)
    q, k, v = (nn.DenseGeneral((self.num_heads, head_dim), use_bias=False, name=name)(h)
               for name in ("query", "key", "value"))
    if self.positions == "rotary":
      frequencies = rope_frequencies(head_dim)
      q, k = apply_rotary(q, frequencies, positions), apply_rotary(k, frequencies, positions)
    if decode:  # the cache's keys and values; `allowed` a function of its length
      k, v = cached(self, k, v, positions[0])
      allowed = allowed(k.shape[1])
    attended = attend(q, k, v, allowed)
    h = nn.DenseGeneral(width, axis=(-2, -1), use_bias=False, name="out")(attended)
    x = x + RateDropout(self.dropout, deterministic=not train)(h)
    h = _norm(self.norm, "mlp_norm")(x)
    h = nn.Dense(self.mlp_dim, name="mlp_in")(h)
    h = nn.Dense(width, name="mlp_out")(nn.gelu(h))
    return x + RateDropout(self.dropout, deterministic=not train)(h)


@MODELS.register("transformer_lm")
class TransformerLM(nn.Module):
  """Decoder-only Transformer: token (and learned position) embeddings, num_layers
  blocks, a final norm and the output layer (the embedding's transpose when tied)."""

  num_classes: int  # The vocabulary size.
  num_layers: int = 2
  num_heads: int = 4
  embed_dim: int = 128
  mlp_dim: int = 512
  max_len: int = 256
  norm: str = "rmsnorm"  # rmsnorm | layernorm
  positions: str = "rotary"  # rotary | learned
  tie_embeddings: bool = True
  dropout: float = 0.0
  traced_fields: ClassVar[tuple[str, ...]] = ("dropout",)

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False, mask: jax.Array | None = None,
               segments: jax.Array | None = None, decode: bool = False) -> jax.Array:
    """Logits [B, T, V] of tokens [B, T]; mask [B, T] (0: padding) and segments [B, T] (the
    document of each token in a packed window) keep attention off padding and inside a
    document."""
    if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 2:
      raise ValueError(f"embed_dim {self.embed_dim} must split into {self.num_heads} heads of "
                       "an even width.")
    if tokens.shape[1] > self.max_len:
      raise ValueError(f"sequences of {tokens.shape[1]} tokens exceed max_len {self.max_len}.")
    positions = positions_of(self, tokens.shape[1], decode)
    embed = nn.Embed(self.num_classes, self.embed_dim, name="embed",
                     embedding_init=nn.initializers.normal(0.02))
    x = embed(tokens)
    if self.positions == "learned":
      x = x + nn.Embed(self.max_len, self.embed_dim, name="position",
                       embedding_init=nn.initializers.normal(0.02))(positions)
    elif self.positions != "rotary":
      raise ValueError(f"positions must be 'rotary' or 'learned', not '{self.positions}'.")
    allowed = ((lambda cache_length: decode_mask(positions, cache_length)) if decode
               else attention_mask(tokens.shape[1], mask, segments))
    for i in range(self.num_layers):
      x = Block(self.num_heads, self.mlp_dim, self.norm, self.positions, self.dropout,
                name=f"block{i}")(x, train, allowed, positions, decode)
    x = _norm(self.norm, "final_norm")(x)
    return embed.attend(x) if self.tie_embeddings else nn.Dense(self.num_classes,
                                                                name="head")(x)

  def logical_axes(self, params) -> dict:
    """Each parameter's logical axis names (param_logical_axes), for a teacher laid out by
    them (distill.teacher_layout='logical')."""
    return param_logical_axes(params)


# Each parameter's logical axes, by its name in the tree (the last one or two keys).
LOGICAL_AXES = {
    ("embed", "embedding"): ("vocab", "embed"),
    ("position", "embedding"): ("position", "embed"),
    ("query", "kernel"): ("embed", "heads", "head_dim"),
    ("key", "kernel"): ("embed", "heads", "head_dim"),
    ("value", "kernel"): ("embed", "heads", "head_dim"),
    ("out", "kernel"): ("heads", "head_dim", "embed"),
    ("mlp_in", "kernel"): ("embed", "mlp"),
    ("mlp_in", "bias"): ("mlp",),
    ("mlp_out", "kernel"): ("mlp", "embed"),
    ("head", "kernel"): ("embed", "vocab"),
    ("head", "bias"): ("vocab",),
}


def param_logical_axes(params) -> dict:
  """A tree like `params` of logical axis names (a tuple per array; norms' scales and
  biases ('embed',))."""

  def axes(path, x):
    keys = tuple(jax.tree_util.keystr((k,), simple=True) for k in path)
    return LOGICAL_AXES.get(keys[-2:], ("embed",) * x.ndim)

  return jax.tree_util.tree_map_with_path(axes, params)
