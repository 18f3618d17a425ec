"""Evaluation: the jitted eval step, a pass over a split, and model selection on the
validation split."""

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxkd.data import ArrayDataset, Preprocess
from jaxkd.data.arrays import has_token_labels
from jaxkd.data.augment import model_input
from jaxkd.data.batches import counted
from jaxkd.sharding import batch_sharding, replicated, shard_batch

Batch = dict[str, jax.Array]


def make_eval_step(model: nn.Module, preprocess: Preprocess, mesh: Mesh
                   ) -> Callable[[dict, Batch], dict]:
  """Returns eval(variables, batch) -> sums over the real (mask == 1) examples, or over
  their tokens that count (label >= 0) for per-token labels [B, T]."""

  def step(variables: dict, batch: Batch):
    logits = model.apply(variables, model_input(batch, preprocess), train=False)
    labels = batch["label"]
    mask = counted(labels, batch["mask"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"loss_sum": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask),
            "count": jnp.sum(mask)}

  return jax.jit(step, in_shardings=(replicated(mesh), batch_sharding(mesh)),
                 out_shardings=replicated(mesh))


def evaluate(eval_step: Callable, variables: dict, data: ArrayDataset, batch_size: int,
             mesh: Mesh) -> dict:
  """Loss, accuracy and error count over every example of `data`, each counted once."""
  totals = None
  for batch in data.eval_batches(batch_size, jax.process_index(), jax.process_count()):
    sums = eval_step(variables, shard_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = int(round(float(totals["count"])))
  correct = int(round(float(totals["correct"])))
  metrics = {"loss": float(totals["loss_sum"]) / count, "accuracy": correct / count,
             "errors": count - correct, "count": count}
  if has_token_labels(data):  # A language model: per token (count, errors are tokens).
    metrics.update(perplexity=math.exp(metrics["loss"]), bits_per_token=metrics["loss"] / math.log(2))
  return metrics


def select_on_validation(records: list[dict]) -> dict:
  """The evaluation step with the best validation accuracy (the earliest of ties) and the
  test metrics logged at that step: model selection that never looks at the test set."""
  validation = [r for r in records if r["split"] == "validation"]
  if not validation:
    return {}
  best = max(validation, key=lambda r: (r["accuracy"], -r["step"]))
  test = {r["step"]: r for r in records if r["split"] == "test"}.get(best["step"], {})
  return {"best_step": best["step"], "best_validation_accuracy": best["accuracy"],
          **({"selected_test_accuracy": test["accuracy"], "selected_test_errors": test["errors"]}
             if test else {})}
