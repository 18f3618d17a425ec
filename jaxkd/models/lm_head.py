"""The output layer of jaxkd's language models, apart from the network: where its input
is (the final norm's feature path) and the logits it makes of it, so that a loss can make
the logits a chunk of positions at a time (jaxkd.engine.chunked) instead of all at once."""

import flax.linen as nn
import jax
import jax.numpy as jnp

# The final norm (the output layer's input) and the output layer's parameters, per family.
FINAL = {"TransformerLM": "final_norm", "GPT2": "ln_f", "Llama": "norm"}


def final_path(model: nn.Module) -> str | None:
  """The feature path of the output layer's input, or None for a model without one here."""
  return FINAL.get(type(model).__name__)


def head_params(model: nn.Module, params: dict) -> dict:
  """The output layer's parameters in `params`: the embedding when tied, else its own."""
  name = type(model).__name__
  if name == "GPT2" or getattr(model, "tie_embeddings", False):
    table = {"TransformerLM": "embed", "GPT2": "wte", "Llama": "embed_tokens"}[name]
    return {"embedding": params[table]["embedding"]}
  return dict(params["head" if name == "TransformerLM" else "lm_head"])


def apply_head(head: dict, hidden: jax.Array) -> jax.Array:
  """Logits [..., V] of the final hidden states [..., H] (as nn.Embed.attend or nn.Dense
  computes them)."""
  if "embedding" in head:
    table = head["embedding"]
    return jnp.dot(hidden, table.astype(hidden.dtype).T)
  logits = jnp.dot(hidden, head["kernel"].astype(hidden.dtype))
  return logits + head["bias"].astype(hidden.dtype) if "bias" in head else logits


def check(model: nn.Module) -> None:
  if final_path(model) is None:
    from jaxkd.errors import JaxkdError

    raise JaxkdError(f"train.loss_chunk computes the logits of jaxkd's language models "
                     f"({', '.join(FINAL)}) a chunk at a time; {type(model).__name__} is not "
                     "one: set train.loss_chunk=0.")

