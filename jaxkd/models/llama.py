"""The Llama family's layout (Llama 2 and 3, Mistral, Qwen2): pre-norm decoder blocks of
RMSNorm, grouped-query attention with rotary positions, and a SwiGLU MLP; a final RMSNorm
and an output layer tied to the token embedding or its own.

The parameters carry transformers' names (embed_tokens, layers_<i>/self_attn/q_proj, ...:
jaxkd.models.hf maps them to and from a checkpoint's tensors), so a Hugging Face directory
loads into it and a trained one is written back. The options cover what the family's
configs vary: grouped-query heads, head_dim, the rotary base and its scalings ('linear',
'llama3'), biases on the attention projections (Qwen2's q/k/v) or on the MLP, a sliding
attention window on some or all layers (Mistral, Qwen2), tied embeddings. Called as
model(tokens [B, T], train, mask=None, segments=None, decode=False) -> logits [B, T, V]
(decode: incremental, with the key/value cache of jaxkd.models.attention); feature paths
layers_<i> (the residual stream after block i) and norm.
"""

from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models.attention import (apply_rotary, attend, attention_mask, cached,
                                    decode_mask, positions_of, rope_frequencies)
from jaxkd.models.registry import MODELS


class RMSNorm(nn.Module):
  """x / sqrt(mean(x^2) + eps) * weight, normalised in float32 (as transformers does)."""

  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    weight = self.param("weight", nn.initializers.ones, (x.shape[-1],))
    normed = x.astype(jnp.float32)
    normed = normed * jax.lax.rsqrt(jnp.mean(normed * normed, axis=-1, keepdims=True) + self.eps)
    return weight * normed.astype(x.dtype)


ACTIVATIONS = {"silu": nn.silu, "gelu": lambda x: nn.gelu(x, approximate=False),
               "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True), "relu": nn.relu}


class Attention(nn.Module):
  num_heads: int
  num_kv_heads: int
  head_dim: int
  qkv_bias: bool
  o_bias: bool

  @nn.compact
  def __call__(self, x: jax.Array, allowed, frequencies: jax.Array, positions: jax.Array,
               decode: bool) -> jax.Array:
    batch, length, width = x.shape
    project = lambda heads, name: nn.Dense(heads * self.head_dim, use_bias=self.qkv_bias,
                                           name=name)(x).reshape(batch, length, heads, -1)
    q = apply_rotary(project(self.num_heads, "q_proj"), frequencies, positions)
    k = apply_rotary(project(self.num_kv_heads, "k_proj"), frequencies, positions)
    v = project(self.num_kv_heads, "v_proj")
    if decode:  # the cache's keys and values; `allowed` a function of its length
      k, v = cached(self, k, v, positions[0])
      allowed = allowed(k.shape[1])
    attended = attend(q, k, v, allowed, scale=self.head_dim ** -0.5)
    return nn.Dense(width, use_bias=self.o_bias, name="o_proj")(
        attended.reshape(batch, length, -1))


class MLP(nn.Module):
  intermediate_size: int
  bias: bool
  activation: str

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dense = lambda features, name: nn.Dense(features, use_bias=self.bias, name=name)
    gate = ACTIVATIONS[self.activation](dense(self.intermediate_size, "gate_proj")(x))
    return dense(x.shape[-1], "down_proj")(gate * dense(self.intermediate_size, "up_proj")(x))


class DecoderLayer(nn.Module):
  num_heads: int
  num_kv_heads: int
  head_dim: int
  intermediate_size: int
  eps: float
  qkv_bias: bool
  o_bias: bool
  mlp_bias: bool
  activation: str

  @nn.compact
  def __call__(self, x: jax.Array, allowed, frequencies: jax.Array, positions: jax.Array,
               decode: bool) -> jax.Array:
    x = x + Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.qkv_bias,
                      self.o_bias, name="self_attn")(
                          RMSNorm(self.eps, name="input_layernorm")(x), allowed, frequencies,
                          positions, decode)
    return x + MLP(self.intermediate_size, self.mlp_bias, self.activation, name="mlp")(
        RMSNorm(self.eps, name="post_attention_layernorm")(x))


@MODELS.register("llama")
class Llama(nn.Module):
  """A Llama-family causal language model (num_classes: the vocabulary)."""

  num_classes: int
  num_layers: int = 2
  hidden_size: int = 128
  intermediate_size: int = 344
  num_heads: int = 4
  num_kv_heads: int = 0  # 0: as many as num_heads (no grouping)
  head_dim: int = 0  # 0: hidden_size // num_heads
  max_len: int = 2048
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_type: str = "default"  # default | linear | llama3
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max: int = 8192
  qkv_bias: bool = False  # Qwen2: True
  o_bias: bool = False
  mlp_bias: bool = False
  tie_embeddings: bool = False
  activation: str = "silu"
  sliding_window: int = 0  # 0: none
  sliding_layers: Sequence[int] = ()  # the layers that use it; () with a window: all
  traced_fields: ClassVar[tuple[str, ...]] = ()

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def dim(self) -> int:
    return self.head_dim or self.hidden_size // self.num_heads

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False, mask: jax.Array | None = None,
               segments: jax.Array | None = None, decode: bool = False) -> jax.Array:
    length = tokens.shape[1]
    if length > self.max_len:
      raise ValueError(f"sequences of {length} tokens exceed max_len {self.max_len}.")
    positions = positions_of(self, length, decode)
    embed = nn.Embed(self.num_classes, self.hidden_size, name="embed_tokens",
                     embedding_init=nn.initializers.normal(0.02))
    x = embed(tokens)
    frequencies = rope_frequencies(self.dim, self.rope_theta, self.rope_type, self.rope_factor,
                                   self.rope_low_freq_factor, self.rope_high_freq_factor,
                                   self.rope_original_max)
    if decode:  # over the cache, whose length the layers know
      full = lambda cache_length: decode_mask(positions, cache_length)
      windowed = lambda cache_length: decode_mask(positions, cache_length, self.sliding_window)
    else:
      full = attention_mask(length, mask, segments)
      windowed = (attention_mask(length, mask, segments, self.sliding_window)
                  if self.sliding_window else full)
    for i in range(self.num_layers):
      use_window = self.sliding_window and (not self.sliding_layers or i in self.sliding_layers)
      x = DecoderLayer(self.num_heads, self.kv_heads, self.dim, self.intermediate_size,
                       self.rms_norm_eps, self.qkv_bias, self.o_bias, self.mlp_bias,
                       self.activation, name=f"layers_{i}")(
                           x, windowed if use_window else full, frequencies, positions, decode)
    x = RMSNorm(self.rms_norm_eps, name="norm")(x)
    if self.tie_embeddings:
      return embed.attend(x)
    return nn.Dense(self.num_classes, use_bias=False, name="lm_head")(x)

  def logical_axes(self, params) -> dict:
    """Each parameter's logical axis names (tensor-parallel: heads, MLP units and the
    vocabulary split; norms whole)."""

    def axes(path, x):
      names = [jax.tree_util.keystr((k,), simple=True) for k in path]
      if names[-2:] == ["embed_tokens", "embedding"]:
        return ("vocab", "embed")
      if names[-2] in ("q_proj", "k_proj", "v_proj"):
        return ("embed", "heads") if names[-1] == "kernel" else ("heads",)
      if names[-2] == "o_proj":
        return ("heads", "embed") if names[-1] == "kernel" else ("embed",)
      if names[-2] in ("gate_proj", "up_proj"):
        return ("embed", "mlp") if names[-1] == "kernel" else ("mlp",)
      if names[-2] == "down_proj":
        return ("mlp", "embed") if names[-1] == "kernel" else ("embed",)
      if names[-2] == "lm_head":
        return ("embed", "vocab")
      return ("embed",) * x.ndim

    return jax.tree_util.tree_map_with_path(axes, params)
