"""GPT-2's layout (Radford et al. 2019): learned positions, pre-norm blocks of LayerNorm,
fused-QKV attention and a GELU MLP, a final LayerNorm and the output layer tied to the
token embedding.

The parameters carry transformers' names (wte, wpe, h_<i>/attn/c_attn, ...; its Conv1D
weights are [in, out], as a Dense kernel is: jaxkd.models.hf maps them), so a Hugging Face
GPT-2 directory loads into it. Called as model(tokens [B, T], train, mask=None,
segments=None, decode=False) -> logits [B, T, V] (decode: incremental, with the key/value
cache of jaxkd.models.attention); feature paths h_<i> and ln_f.
"""

from typing import ClassVar

import flax.linen as nn
import jax

from jaxkd.models.attention import attend, attention_mask, cached, decode_mask, positions_of
from jaxkd.models.registry import MODELS

ACTIVATIONS = {"gelu_new": lambda x: nn.gelu(x, approximate=True),
               "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
               "gelu": lambda x: nn.gelu(x, approximate=False), "relu": nn.relu,
               "silu": nn.silu}


class Attention(nn.Module):
  num_heads: int
  scale: float

  @nn.compact
  def __call__(self, x: jax.Array, allowed, positions: jax.Array, decode: bool) -> jax.Array:
    batch, length, width = x.shape
    heads = lambda y: y.reshape(batch, length, self.num_heads, width // self.num_heads)
    q, k, v = (heads(y) for y in jax.numpy.split(nn.Dense(3 * width, name="c_attn")(x), 3,
                                                 axis=-1))
    if decode:  # the cache's keys and values; `allowed` a function of its length
      k, v = cached(self, k, v, positions[0])
      allowed = allowed(k.shape[1])
    attended = attend(q, k, v, allowed, scale=self.scale)
    return nn.Dense(width, name="c_proj")(attended.reshape(batch, length, width))


class MLP(nn.Module):
  inner: int
  activation: str

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = ACTIVATIONS[self.activation](nn.Dense(self.inner, name="c_fc")(x))
    return nn.Dense(x.shape[-1], name="c_proj")(h)


class Block(nn.Module):
  num_heads: int
  inner: int
  eps: float
  activation: str
  scale: float

  @nn.compact
  def __call__(self, x: jax.Array, allowed, positions: jax.Array, decode: bool) -> jax.Array:
    x = x + Attention(self.num_heads, self.scale, name="attn")(
        nn.LayerNorm(self.eps, name="ln_1")(x), allowed, positions, decode)
    return x + MLP(self.inner, self.activation, name="mlp")(nn.LayerNorm(self.eps, name="ln_2")(x))


@MODELS.register("gpt2")
class GPT2(nn.Module):
  """A GPT-2 causal language model (num_classes: the vocabulary)."""

  num_classes: int
  num_layers: int = 2
  hidden_size: int = 128
  num_heads: int = 4
  inner_size: int = 0  # 0: 4 * hidden_size
  max_len: int = 1024
  layer_norm_eps: float = 1e-5
  activation: str = "gelu_new"
  scale_attn_by_inverse_layer_idx: bool = False
  traced_fields: ClassVar[tuple[str, ...]] = ()

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False, mask: jax.Array | None = None,
               segments: jax.Array | None = None, decode: bool = False) -> jax.Array:
    length = tokens.shape[1]
    if length > self.max_len:
      raise ValueError(f"sequences of {length} tokens exceed max_len {self.max_len}.")
    positions = positions_of(self, length, decode)
    embed = nn.Embed(self.num_classes, self.hidden_size, name="wte",
                     embedding_init=nn.initializers.normal(0.02))
    x = embed(tokens) + nn.Embed(self.max_len, self.hidden_size, name="wpe",
                                 embedding_init=nn.initializers.normal(0.01))(positions)
    allowed = ((lambda cache_length: decode_mask(positions, cache_length)) if decode
               else attention_mask(length, mask, segments))
    head_dim = self.hidden_size // self.num_heads
    for i in range(self.num_layers):
      scale = head_dim ** -0.5 / (i + 1 if self.scale_attn_by_inverse_layer_idx else 1)
      x = Block(self.num_heads, self.inner_size or 4 * self.hidden_size, self.layer_norm_eps,
                self.activation, scale, name=f"h_{i}")(x, allowed, positions, decode)
    return embed.attend(nn.LayerNorm(self.layer_norm_eps, name="ln_f")(x))
