"""A language model's loss a chunk of positions at a time (train.loss_chunk = C), so that no
more than [B, C, V] logits are alive at once, in the forward and under the gradient.

The student and the teachers run up to their final norm (the output layer's input; XLA
drops the unused full-vocabulary output layer); then lax.map over the sequence's chunks
makes each chunk's logits from those hidden states (jaxkd.models.lm_head), evaluates the
objective on them and keeps only sums. The chunk's body is rematerialised
(jax.checkpoint), so the backward pass makes each chunk's logits again rather than keeping
them. Every term of such an objective is a mean over the tokens that count (ce and the
divergence family), so the chunks' means weighted by their counted tokens give the whole
sequence's value and gradient (tests: tests/test_chunked.py).
"""

from typing import Callable

import jax
import jax.numpy as jnp

from jaxkd.data.batches import counted
from jaxkd.errors import JaxkdError

# Terms that are means over the counted tokens of per-token values.
TOKEN_TERMS = ("ce", "fkl", "rkl", "gjsd", "skew_kl", "skew_rkl", "tv")


def check(objective, chunk: int, length: int) -> None:
  """Refuses a chunked loss that would not be the dense one."""
  from jaxkd.distill.terms import TERMS

  allowed = {TERMS.get(name) for name in TOKEN_TERMS}
  others = sorted(t.label for t in objective.terms if type(t.method) not in allowed)
  if others:
    raise JaxkdError(f"train.loss_chunk={chunk}: terms {others} are not means over tokens; "
                     f"a chunked loss takes only {list(TOKEN_TERMS)}. Set train.loss_chunk=0.")
  if length % chunk:
    raise JaxkdError(f"train.loss_chunk={chunk} does not divide the sequence length {length}; "
                     "give a divisor of it (or 0: no chunks).")


def _chunks(x: jax.Array | None, axis: int, count: int):
  """x split along `axis` into `count` equal chunks, stacked first."""
  if x is None:
    return None
  shape = x.shape[:axis] + (count, x.shape[axis] // count) + x.shape[axis + 1:]
  return jnp.moveaxis(x.reshape(shape), axis, 0)


def chunked_objective(evaluate: Callable, student_head: Callable, hidden: jax.Array,
                      teacher_heads: tuple, teacher_hidden: tuple, labels: jax.Array,
                      mask: jax.Array | None, topk: tuple | None, chunk: int):
  """(loss, metrics, correct tokens) over the whole sequence.

  evaluate(student_logits [B, C, V], teacher_logits [K, B, C, V] or None, labels [B, C],
  topk chunk or None) -> (loss, metrics): the objective on one chunk, its values means over
  the chunk's counted tokens. student_head / teacher_heads[k]: hidden [B, C, H] -> logits.
  hidden [B, T, H], teacher_hidden[k] [B, T, H_k], labels [B, T], topk ([B, T, k] twice)."""
  count = hidden.shape[1] // chunk
  xs = (_chunks(hidden, 1, count), tuple(_chunks(h, 1, count) for h in teacher_hidden),
        _chunks(labels, 1, count),
        None if topk is None else tuple(_chunks(x, 1, count) for x in topk))

  @jax.checkpoint
  def body(x):
    h, teacher_h, chunk_labels, chunk_topk = x
    logits = student_head(h)
    teacher_logits = (jnp.stack([jax.lax.stop_gradient(head(t)) for head, t in
                                 zip(teacher_heads, teacher_h)]) if teacher_heads else None)
    loss, metrics = evaluate(logits, teacher_logits, chunk_labels, chunk_topk)
    weights = counted(chunk_labels, mask)
    tokens = jnp.sum(weights)
    correct = jnp.sum((jnp.argmax(logits, -1) == chunk_labels) * weights)
    # A weight (weight/<term>) is the same in every chunk; the rest are token means.
    metrics = {k: v if k.startswith("weight/") else v * tokens for k, v in metrics.items()}
    return loss * tokens, metrics, correct, tokens

  losses, metrics, correct, tokens = jax.lax.map(body, xs)
  total = jnp.maximum(jnp.sum(tokens), 1.0)
  metrics = {k: v[0] if k.startswith("weight/") else jnp.sum(v) / total
             for k, v in metrics.items()}
  return jnp.sum(losses) / total, metrics, jnp.sum(correct), jnp.sum(tokens)
