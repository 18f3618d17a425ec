"""Universal logit distillation between a teacher and a student with different tokenizers.

Boizard et al. 2024 (ULD): the two next-token distributions live on different
vocabularies, so ULD compares them through their sorted probabilities, an optimal-transport
bound: sum_i |p_(i) - q_(i)| over both distributions sorted in decreasing order, the
shorter vocabulary padded with zeros. Where the two tokenizers cut the text differently, a
span of several tokens becomes one distribution by the chain rule (TRL's GOLD trainer,
"extended ULD"), and tokens whose strings both vocabularies hold can be compared directly
(GOLD's hybrid). The spans come from the input pipeline (jaxkd.data.alignment): the step
only gathers and sorts fixed-shape arrays.

Values equal those of TRL's GOLD ULDLoss (trl.experimental.gold) on the same logits and
offsets (fixtures: tests/reference/make_gold_fixtures.py), including its reduction: each
sequence's sum over its spans divided by its number of spans, then the mean over the
batch's sequences. Only the default merge differs: `merge='bayesian'` (GOLD's option) by
default, because it is the chain rule (the distribution of a span's last token given the
earlier ones, times their probabilities), where GOLD's default 'observed' multiplies the
distribution after a span's first token by the probabilities each later position gives its
own input token; `merge='observed'` gives GOLD's default.
"""

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.distill.terms import Method, TermInputs, register_method
from jaxkd.distill.token_divergences import generalized_jsd
from jaxkd.errors import JaxkdError

MERGES = ("bayesian", "observed")
ALIGNMENTS = ("spans", "positions")
EPS = 1e-8  # GOLD's floor on a token's probability (clamp_min) and on matched probabilities


def _segment(fn, values: jax.Array, ids: jax.Array, count: int) -> jax.Array:
  """fn (jax.ops.segment_sum / segment_max) per row of [B, L] values by ids [B, L] (-1:
  none) into [B, count]."""
  ids = jnp.where(ids >= 0, ids, count)
  return jax.vmap(lambda v, i: fn(v, i, num_segments=count + 1)[:count])(values, ids)


def span_log_probs(log_probs: jax.Array, span: jax.Array, ids: jax.Array, base_last: bool,
                   count: int, picked: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(log-probabilities [B, S, V] of each span, present [B, S]) from per-position
  log_probs [B, L, V], each position's span [B, L] (-1: none) and the token `ids` [B, L]
  whose probabilities are multiplied in: the base position's distribution (the span's
  last position, or its first) times the floored probabilities of the span's other
  positions' tokens (`picked` [B, L]: those log-probabilities as given, e.g. a cache's)."""
  inside = span >= 0
  neighbour = (jnp.pad(span[:, 1:], ((0, 0), (0, 1)), constant_values=-2) if base_last else
               jnp.pad(span[:, :-1], ((0, 0), (1, 0)), constant_values=-2))
  base = inside & (span != neighbour)
  if picked is None:
    picked = jnp.take_along_axis(log_probs, jnp.maximum(ids, 0)[..., None], -1)[..., 0]
  picked = jnp.maximum(picked, jnp.log(EPS))
  others = _segment(jax.ops.segment_sum, jnp.where(inside & ~base, picked, 0.0), span, count)
  positions = jnp.broadcast_to(jnp.arange(span.shape[1]), span.shape)
  where = _segment(jax.ops.segment_max, jnp.where(base, positions, -1), span, count)
  gathered = jnp.take_along_axis(log_probs, jnp.maximum(where, 0)[..., None], axis=1)
  return gathered + others[..., None], where >= 0


def _host_order(values: np.ndarray) -> np.ndarray:
  return np.argsort(-values, axis=-1).astype(np.int32)


def descending(x: jax.Array) -> jax.Array:
  """x sorted in decreasing order along its last axis, differentiably. On a CPU the order
  comes from NumPy's argsort through a host callback and the values are gathered in JAX:
  XLA:CPU's sort is several times slower at a vocabulary's size (2,048 rows of 4,096:
  1.6 s against 0.24 s, AMD EPYC), and uld sorts every span's distribution each step.
  Elsewhere, and on a CPU split into several devices (a host callback under a sharded
  computation aborted the process there), lax's sort."""

  def on_cpu(x):
    order = jax.pure_callback(_host_order, jax.ShapeDtypeStruct(x.shape, jnp.int32),
                              jax.lax.stop_gradient(x), vmap_method="expand_dims")
    return jnp.take_along_axis(x, order, axis=-1)

  by_lax = lambda x: -jnp.sort(-x, axis=-1)
  if jax.device_count() > 1:
    return by_lax(x)
  return jax.lax.platform_dependent(x, cpu=on_cpu, default=by_lax)


def _sorted_l1(p: jax.Array, q: jax.Array) -> jax.Array:
  """sum_i |p_(i) - q_(i)| over the last axis, both sorted in decreasing order, the
  shorter padded with zeros."""
  size = max(p.shape[-1], q.shape[-1])
  ordered = lambda x: jnp.pad(descending(x), [(0, 0)] * (x.ndim - 1) + [(0, size - x.shape[-1])])
  return jnp.sum(jnp.abs(ordered(p) - ordered(q)), axis=-1)


def uld_per_span(student: jax.Array, teacher: jax.Array, vocab_map: jax.Array | None,
                 hybrid: bool, matched_weight: float, beta: float) -> jax.Array:
  """The distance [B, S] between the student's and the teacher's span probabilities
  [B, S, Vs] and [B, S, Vt]: the sorted L1; or, hybrid, matched_weight times the
  generalized JSD(beta) over the tokens both vocabularies hold (vocab_map [Vt]: the
  student id of each teacher id, -1 none; probabilities floored at EPS, not renormalised)
  plus (1 - matched_weight) times the sorted L1 over the others (0, as GOLD has it, when
  one vocabulary has no other token). matched_weight < 0: the matched tokens' share of the
  teacher's vocabulary (GOLD's adaptive weight)."""
  if not hybrid:
    return _sorted_l1(student, teacher)
  teacher_ids = np.nonzero(np.asarray(vocab_map) >= 0)[0]  # a constant of the run
  student_ids = vocab_map[teacher_ids]
  matched_s, matched_t = student[..., student_ids], teacher[..., teacher_ids]
  matched = generalized_jsd(jnp.log(jnp.maximum(matched_t, EPS)),
                            jnp.log(jnp.maximum(matched_s, EPS)), beta)
  if len(student_ids) == student.shape[-1] or len(teacher_ids) == teacher.shape[-1]:
    unmatched = 0.0  # one side has no other token: GOLD leaves this part out
  else:
    unmatched = _sorted_l1(student.at[..., student_ids].set(0.0),
                           teacher.at[..., teacher_ids].set(0.0))
  weight = len(teacher_ids) / teacher.shape[-1] if matched_weight < 0 else matched_weight
  return weight * matched + (1 - weight) * unmatched


@register_method("uld")
class ULD(Method):
  """Universal logit distillation (Boizard et al. 2024) between different tokenizers:
  per span, sum_i |p_(i) - q_(i)| of the teacher's and the student's sorted span
  probabilities (see the module docstring); each sequence's mean over its spans, then the
  mean over sequences (GOLD's reduction).

  alignment: 'spans' (byte-offset spans, GOLD's extended ULD) or 'positions' (the i-th
    predicted token of one side against the i-th of the other, the paper's ULD).
  merge: 'bayesian' (chain rule) or 'observed' (GOLD's default), for spans of several
    tokens.
  hybrid: GOLD's hybrid: tokens both vocabularies hold compared directly by the
    generalized JSD(beta) (with matched_weight, < 0: adaptive), the rest by sorted L1.
  student_temperature, teacher_temperature: softmax temperatures of each side.
  """

  cross_tokenizer: ClassVar[bool] = True

  alignment: str = "spans"
  merge: str = "bayesian"
  hybrid: bool = False
  matched_weight: float = -1.0
  beta: float = 0.5
  student_temperature: float = 1.0
  teacher_temperature: float = 1.0

  def __post_init__(self):
    if self.alignment not in ALIGNMENTS or self.merge not in MERGES:
      raise JaxkdError(f"uld: alignment must be one of {ALIGNMENTS} and merge one of {MERGES}, "
                       f"got {self.alignment!r} and {self.merge!r}.")
    if not 0 <= self.beta <= 1 or self.matched_weight > 1:
      raise JaxkdError(f"uld: beta must be in [0, 1] and matched_weight at most 1 (< 0: "
                       f"adaptive), got {self.beta} and {self.matched_weight}.")
    super().__post_init__()

  def __call__(self, inputs: TermInputs):
    cross = inputs.cross
    if cross is None or inputs.teacher_logits is None:
      raise JaxkdError("uld compares a teacher and a student of different tokenizers: it needs "
                       "an online teacher (distill.teachers) and text data (dataset.name='text').")
    if inputs.teacher_logits.shape[0] != 1:
      raise JaxkdError("uld takes one teacher (its tokenizer lines the spans up); give one "
                       "distill.teachers entry.")
    student = jax.nn.log_softmax(inputs.student_logits / self.student_temperature, -1)
    teacher = jax.nn.log_softmax(jax.lax.stop_gradient(inputs.teacher_logits[0])
                                 / self.teacher_temperature, -1)
    spans_s, spans_t = cross["student_span"], cross["teacher_span"]
    labels_s, labels_t = inputs.labels, cross["teacher_labels"]
    if self.alignment == "positions":  # the i-th predicted token against the i-th
      count = min(spans_s.shape[1], spans_t.shape[1])
      both = (labels_s[:, :count] >= 0) & (labels_t[:, :count] >= 0)
      index = jnp.where(both, jnp.arange(count), -1)
      pad = lambda x, width: jnp.pad(x, ((0, 0), (0, width - count)), constant_values=-1)
      spans_s, spans_t = pad(index, spans_s.shape[1]), pad(index, spans_t.shape[1])
    count = spans_s.shape[1]
    if self.merge == "bayesian":  # position t predicts labels[t]: the span's last is the base
      span_s, present_s = span_log_probs(student, spans_s, labels_s, True, count)
      span_t, present_t = span_log_probs(teacher, spans_t, labels_t, True, count,
                                         cross.get("teacher_own_logprobs"))
    else:  # GOLD's 'observed': groups over input tokens, the first position the base
      shift = lambda x: jnp.pad(x[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
      span_s, present_s = span_log_probs(student, shift(spans_s), cross["student_tokens"], False,
                                         count)
      span_t, present_t = span_log_probs(teacher, shift(spans_t), cross["teacher_tokens"],
                                         False, count)
    per_span = uld_per_span(jnp.exp(span_s), jnp.exp(span_t), cross.get("vocab_map"),
                            self.hybrid, self.matched_weight, self.beta)
    paired = (present_s & present_t).astype(jnp.float32)
    per_sequence = jnp.sum(per_span * paired, -1) / jnp.maximum(jnp.sum(paired, -1), 1.0)
    mask = jnp.ones(per_sequence.shape) if inputs.mask is None else inputs.mask
    loss = jnp.sum(per_sequence * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    return loss, {"spans": jnp.sum(paired) / jnp.maximum(jnp.sum(mask), 1.0)}


def cached_teacher_log_probs(topk_log_probs: jax.Array, topk_ids: jax.Array, classes: int) -> jax.Array:
  """[..., classes] log-probabilities of a cached teacher (jaxkd.run.cross_cache) from its
  top-k ([..., k] log-probabilities and ids): the mass outside the top-k spread evenly over
  the other ids (at least 1e-30 each), an approximation the sorted distance needs."""
  top = topk_log_probs.astype(jnp.float32)
  rest = jnp.clip(1.0 - jnp.sum(jnp.exp(top), -1, keepdims=True), 0.0, 1.0)
  fill = jnp.log(jnp.maximum(rest / max(classes - top.shape[-1], 1), 1e-30))
  dense = jnp.broadcast_to(fill, (*top.shape[:-1], classes))
  return jnp.put_along_axis(dense, topk_ids, top, axis=-1, inplace=False)
