"""Prediction and evaluation: the one inference function every prediction runs (evaluation,
soft labels, reports, export), the jitted eval step, a pass over a split, and model
selection on the validation split."""

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxkd.data import Preprocess
from jaxkd.data.arrays import has_token_labels
from jaxkd.data.augment import model_input, model_inputs
from jaxkd.data.batches import counted
from jaxkd.engine.sharding import batch_sharding, replicated, shard_batch

Batch = dict[str, jax.Array]


def inference(model: nn.Module, preprocess: Preprocess, kind: str = "image",
              logit_bias: Sequence[float] | None = None, num_classes: int | None = None
              ) -> Callable:
  """apply(variables, inputs, **model_inputs) -> logits: `model` in inference mode on
  inputs of `kind`, preprocessed as evaluation preprocesses them (images scaled to [0, 1]
  and normalised with preprocess.mean/std; tokens and numeric inputs as they are), plus
  `logit_bias` (a fitted bias correction) when given; `num_classes`: the logits of a
  vocabulary padded past the tokenizer cut to its ids. model_inputs: the batch's other
  model inputs (data.augment.MODEL_INPUTS: the segments of packed text). Not jitted: callers
  jit it for their devices or export it."""

  def apply(variables, inputs, **model_inputs):
    logits = model.apply(variables, model_input({kind: inputs}, preprocess), train=False,
                         **model_inputs)
    logits = logits if num_classes is None else logits[..., :num_classes]
    return logits if logit_bias is None else logits + jnp.asarray(logit_bias, logits.dtype)

  return apply


def make_predict(model: nn.Module, preprocess: Preprocess, mesh: Mesh, kind: str = "image",
                 outputs: Callable | None = None, num_classes: int | None = None) -> Callable:
  """predict(variables, inputs, model_inputs) -> outputs(logits) (default: the logits),
  jitted over `mesh`: variables replicated, inputs, model_inputs (a dict, {} for none) and
  outputs split on the batch axis. model_inputs['label'], where given, is not the model's:
  outputs(logits, labels) gets it (e.g. the log-probability of each next token)."""
  apply = inference(model, preprocess, kind, num_classes=num_classes)
  then = outputs or (lambda logits: logits)

  def predict(variables, inputs, extra):
    extra = dict(extra)
    labels = extra.pop("label", None)
    logits = apply(variables, inputs, **extra)
    return then(logits) if labels is None else then(logits, labels)

  return jax.jit(predict, in_shardings=(replicated(mesh), batch_sharding(mesh),
                                        batch_sharding(mesh)),
                 out_shardings=batch_sharding(mesh))


def predict_all(predict: Callable, variables: dict, data, batch_size: int, mesh: Mesh,
                labels: bool = False):
  """predict(variables, inputs, model_inputs) over every example of `data` in order,
  gathered on the host (numpy; a tuple of outputs stays a tuple), padding dropped. Whole
  batches on this host. labels: the batches' labels go along (make_predict's outputs)."""
  outputs = []
  for batch in data.eval_batches(batch_size):
    given = {"label": batch["label"]} if labels else {}
    placed = shard_batch({"inputs": batch[data.kind], **model_inputs(batch), **given}, mesh)
    result = predict(variables, placed.pop("inputs"), placed)
    keep = batch["mask"] > 0
    outputs.append(jax.tree.map(lambda x: np.asarray(x)[keep], jax.device_get(result)))
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)


def logits_of(model: nn.Module, variables: dict, preprocess: Preprocess, data, batch_size: int,
              mesh: Mesh) -> np.ndarray:
  """The model's logits [N, C] for every example of `data`, in order (float32, on the host)."""
  predict = make_predict(model, preprocess, mesh, data.kind, num_classes=data.num_classes)
  return predict_all(predict, variables, data, batch_size, mesh).astype(np.float32)


def make_eval_step(model: nn.Module, preprocess: Preprocess, mesh: Mesh, kind: str,
                   num_classes: int | None = None, token_bytes: np.ndarray | None = None
                   ) -> Callable[[dict, Batch], dict]:
  """Returns eval(variables, batch) -> sums over the real (mask == 1) examples, or over
  their tokens that count (label >= 0) for per-token labels [B, T]; inputs of `kind`.
  token_bytes [V]: each token's UTF-8 bytes, summed over the counted labels (bits per byte:
  the loss per byte of the text predicted, comparable across tokenizers)."""
  apply = inference(model, preprocess, kind, num_classes=num_classes)
  table = None if token_bytes is None else jnp.asarray(token_bytes, jnp.float32)

  def step(variables: dict, batch: Batch):
    logits = apply(variables, batch[kind], **model_inputs(batch))
    labels = batch["label"]
    mask = counted(labels, batch["mask"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    sums = {"loss_sum": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask),
            "count": jnp.sum(mask)}
    if table is not None:
      sums["bytes"] = jnp.sum(table[jnp.maximum(labels, 0)] * mask)
    return sums

  return jax.jit(step, in_shardings=(replicated(mesh), batch_sharding(mesh)),
                 out_shardings=replicated(mesh))


def evaluate(eval_step: Callable, variables: dict, data, batch_size: int, mesh: Mesh) -> dict:
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
  if "bytes" in totals:  # Per byte of the text predicted: comparable across tokenizers.
    metrics["bits_per_byte"] = float(totals["loss_sum"]) / math.log(2) / float(totals["bytes"])
  return metrics


def select_on_validation(records: list[dict]) -> dict:
  """The evaluation step best on the validation split (the earliest of ties) and the test
  metrics logged at that step: model selection that never looks at the test set. Best:
  the highest accuracy, or for a language model's text the fewest bits per byte."""
  validation = [r for r in records if r["split"] == "validation"]
  if not validation:
    return {}
  if "bits_per_byte" in validation[0]:
    best = min(validation, key=lambda r: (r["bits_per_byte"], r["step"]))
    test = {r["step"]: r for r in records if r["split"] == "test"}.get(best["step"], {})
    return {"best_step": best["step"], "best_validation_bits_per_byte": best["bits_per_byte"],
            **({"selected_test_bits_per_byte": test["bits_per_byte"]} if test else {})}
  best = max(validation, key=lambda r: (r["accuracy"], -r["step"]))
  test = {r["step"]: r for r in records if r["split"] == "test"}.get(best["step"], {})
  return {"best_step": best["step"], "best_validation_accuracy": best["accuracy"],
          **({"selected_test_accuracy": test["accuracy"], "selected_test_errors": test["errors"]}
             if test else {})}
