"""On-policy distillation of language models (GKD, Agarwal et al. 2024), in the train step.

With probability `fraction` (GKD's lambda) a step's batch is replaced by sequences the
student generates: each sequence keeps its first `prompt_len` tokens from the data and the
student samples the rest at `temperature` (jitted: one causal forward per new token, no
cache). The teachers then score the generated sequences in the same step, and the
objective's terms compare teacher and student there; positions whose next token belongs to
the prompt count for nothing (label -1). generator='teacher' samples from the (first)
teacher instead: sequence-level KD (Kim & Rush 2016), GKD's "supervised KD on teacher
outputs"; fraction 1 trains on generations only.

The generated tokens become the batch's labels, so a `ce` term on such a step would train
the student on its own samples: on-policy objectives are divergence terms (e.g. gjsd).

config.distill.on_policy: fraction (0: off), prompt_len, temperature, generator.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from jaxkd.errors import JaxkdError
from jaxkd.engine.state import stream


@dataclasses.dataclass(frozen=True)
class OnPolicy:
  """config.distill.on_policy (its defaults: jaxkd.config.schema)."""

  fraction: float
  prompt_len: int
  temperature: float
  generator: str  # student | teacher

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, kind: str) -> "OnPolicy | None":
    """None when off (fraction 0). Its values are checked with the config
    (jaxkd.config.checks); here, that the data are tokens."""
    on_policy = cls(**dict(config))
    if not on_policy.fraction:
      return None
    if kind != "tokens":
      raise JaxkdError("distill.on_policy generates token sequences: it needs token data "
                       f"(a language model), not '{kind}' inputs.")
    return on_policy


def generate(apply_fn, tokens: jax.Array, prompt_len: int, temperature: float,
             key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(inputs [B, T], labels [B, T]) of sequences that keep tokens[:, :prompt_len] and
  continue by sampling from apply_fn(tokens) -> logits [B, T, V] at `temperature`; labels
  are -1 where the next token is part of the prompt."""
  batch, length = tokens.shape
  if not 0 < prompt_len < length:
    raise JaxkdError(f"distill.on_policy.prompt_len={prompt_len}: it must be between 1 and "
                     f"the sequence length {length} - 1.")
  sequence = jnp.concatenate([tokens, jnp.zeros((batch, 1), tokens.dtype)], axis=1)

  def sample(position, sequence):
    logits = apply_fn(jax.lax.dynamic_slice_in_dim(sequence, 0, length, axis=1))
    step_logits = jax.lax.dynamic_index_in_dim(logits, position - 1, axis=1, keepdims=False)
    token = jax.random.categorical(jax.random.fold_in(key, position), step_logits / temperature)
    return jax.lax.dynamic_update_index_in_dim(sequence, token.astype(tokens.dtype), position,
                                               axis=1)

  sequence = jax.lax.fori_loop(prompt_len, length + 1, sample, sequence)
  positions = jnp.arange(length)
  labels = jnp.where(positions[None] >= prompt_len - 1, sequence[:, 1:], -1)
  return sequence[:, :length], labels.astype(jnp.int32)


def on_policy_batch(on_policy: OnPolicy, key: jax.Array, batch: dict, student_apply,
                    teacher_apply) -> dict:
  """The batch, or with probability on_policy.fraction one of generated sequences."""
  use_key, sample_key = jax.random.split(stream(key, "on_policy"))
  apply_fn = student_apply if on_policy.generator == "student" else teacher_apply

  def generated(batch):
    tokens, labels = generate(lambda t: jax.lax.stop_gradient(apply_fn(t)), batch["tokens"],
                              on_policy.prompt_len, on_policy.temperature, sample_key)
    # A generated sequence is one document: it is read (and scored) whole.
    same = {name: jnp.zeros_like(batch[name]) for name in ("segments",) if name in batch}
    return {**batch, "tokens": tokens, "label": labels, **same}

  if on_policy.fraction >= 1:
    return generated(batch)
  return jax.lax.cond(jax.random.bernoulli(use_key, on_policy.fraction), generated,
                      lambda batch: batch, batch)
