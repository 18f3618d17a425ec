"""On-policy distillation of language models (GKD, Agarwal et al. 2024), in the train step.

With probability `fraction` (GKD's lambda) a step's batch is replaced by sequences the
student generates: each sequence keeps its first `prompt_len` tokens from the data and the
student samples the rest at `temperature` (jitted: a prefill of the prompt, then one
decoding step per new token over a key/value cache, jaxkd.engine.generation). The teachers then score the generated sequences in the same step, and the
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

from jaxkd.engine.generation import generate
from jaxkd.engine.state import stream
from jaxkd.errors import JaxkdError


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


def on_policy_batch(on_policy: OnPolicy, key: jax.Array, batch: dict, student: tuple,
                    teacher: tuple, num_classes: int) -> dict:
  """The batch, or with probability on_policy.fraction one of generated sequences;
  student and teacher: (model, variables), the generator's decoded with its key/value cache
  (jaxkd.engine.generation) among the tokenizer's num_classes ids."""
  use_key, sample_key = jax.random.split(stream(key, "on_policy"))
  model, variables = student if on_policy.generator == "student" else teacher
  length = batch["tokens"].shape[1]
  if not 0 < on_policy.prompt_len < length:
    raise JaxkdError(f"distill.on_policy.prompt_len={on_policy.prompt_len}: it must be between "
                     f"1 and the sequence length {length} - 1.")

  def generated(batch):
    tokens, labels = generate(model, jax.lax.stop_gradient(variables), batch["tokens"],
                              on_policy.prompt_len, on_policy.temperature, sample_key,
                              num_classes=num_classes)
    # A generated sequence is one document: it is read (and scored) whole.
    same = {name: jnp.zeros_like(batch[name]) for name in ("segments",) if name in batch}
    return {**batch, "tokens": tokens, "label": labels, **same}

  if on_policy.fraction >= 1:
    return generated(batch)
  return jax.lax.cond(jax.random.bernoulli(use_key, on_policy.fraction), generated,
                      lambda batch: batch, batch)
