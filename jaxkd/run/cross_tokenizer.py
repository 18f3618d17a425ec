"""A teacher whose tokenizer is not the student's: what a run needs to distil from it.

With a cross-tokenizer term (uld) in the objective, the teacher's tokenizer is
distill.teacher_tokenizer, or else the tokenizer.json in the teacher's directory (a
workdir keeps a copy, a Hugging Face directory has one). The student's training windows
are read back as text and cut by the teacher's tokenizer once, before training
(jaxkd.data.alignment), and the result rides along with the batches.

On-policy (distill.on_policy.fraction > 0): the steps drawn for it take the student's
continuations of the batch's prompts (jaxkd.engine.generation, jitted), which the host
reads back as text and cuts with the teacher's tokenizer (to the training windows' fixed
teacher length) before the train step runs on them; the step's metrics say which steps
did (`on_policy`) and what the re-tokenization cost (`retokenize_ms`)."""

import pathlib
import time

import jax
import ml_collections
import numpy as np

from jaxkd.data import alignment, tokenizers
from jaxkd.engine.generation import generate
from jaxkd.engine.on_policy import OnPolicy
from jaxkd.engine.sharding import shard_batch
from jaxkd.engine.state import stream
from jaxkd.engine.step import CrossTokenizer
from jaxkd.errors import JaxkdError
from jaxkd.log import say
from jaxkd.run import cross_cache
from jaxkd.run.saved import TOKENIZER_FILE


def in_objective(config: ml_collections.ConfigDict) -> bool:
  """Whether config.distill.terms holds a cross-tokenizer term (uld)."""
  from jaxkd.distill.terms import TERMS

  return any(TERMS.get(dict(spec).get("term", label)).cross_tokenizer
             for label, spec in config.distill.terms.items())


def teacher_tokenizer_path(distill: ml_collections.ConfigDict) -> pathlib.Path:
  """distill.teacher_tokenizer, or the tokenizer.json beside the (one) teacher."""
  if distill.teacher_tokenizer:
    return pathlib.Path(distill.teacher_tokenizer)
  path = pathlib.Path(distill.teachers[0]) / TOKENIZER_FILE
  if not path.is_file():
    raise JaxkdError(f"the teacher {distill.teachers[0]} has no {TOKENIZER_FILE}; name its "
                     "tokenizer with distill.teacher_tokenizer (a tokenizer.json or a directory "
                     "with one).")
  return path


def check(config: ml_collections.ConfigDict, objective, data) -> None:
  """Refuses, before any work, what a cross-tokenizer objective cannot compute."""
  distill = config.distill
  cross = [t.label for t in objective.terms if t.method.cross_tokenizer]
  same = [t.label for t in objective.terms if t.method.uses_teacher
          and not t.method.cross_tokenizer]
  if same:
    raise JaxkdError(f"terms {same} compare teacher and student token by token, which needs one "
                     f"tokenizer; beside {cross} (a teacher with its own tokenizer) use only "
                     "cross-tokenizer terms and ce.")
  if data.kind != "tokens" or not getattr(data, "tokenizer", None):
    raise JaxkdError(f"terms {cross} line up two tokenizers on text: they need a text dataset "
                     "(dataset.name='text'), whose windows can be read back as text.")
  if len(distill.soft_labels or distill.teachers) != 1:
    raise JaxkdError(f"terms {cross} take one teacher: one distill.teachers entry (online) or "
                     "one distill.soft_labels cache (python -m jaxkd soft_labels with this "
                     "config).")
  if distill.soft_labels:
    uld = [t.method for t in objective.terms if t.method.cross_tokenizer]
    if any(m.merge == "observed" or m.teacher_temperature != 1 for m in uld):
      raise JaxkdError(f"terms {cross} on a cached teacher: the cache holds temperature-1 "
                       "log-probabilities and each teacher token's own, which merge='bayesian' "
                       "reads; set teacher_temperature=1 and merge='bayesian', or teach online.")
    if distill.on_policy.fraction:
      raise JaxkdError(f"terms {cross} on a cached teacher cannot score the student's own "
                       "samples; set distill.on_policy.fraction=0, or teach online.")
  if distill.on_policy.fraction and distill.on_policy.generator != "student":
    raise JaxkdError(f"terms {cross} with on-policy batches re-tokenize the student's samples "
                     "for the teacher; a teacher's samples are in its own tokenizer: set "
                     "distill.on_policy.generator='student' (or fraction=0).")
  if config.train.loss_chunk:
    raise JaxkdError(f"terms {cross} sort whole distributions per span; set "
                     "train.loss_chunk=0.")


def prepare(config: ml_collections.ConfigDict, data, teacher) -> tuple[CrossTokenizer, dict]:
  """(the step's CrossTokenizer, the batch extras [N, ...] for `data`) for the teacher
  module `teacher`, or (teacher None) the cache distill.soft_labels names."""
  student_tokenizer = tokenizers.load(data.tokenizer)
  if teacher is None:  # a cached teacher (jaxkd.run.cross_cache)
    meta, arrays = cross_cache.read_cache(config.distill.soft_labels[0], config.dataset)
    teacher_tokenizer = tokenizers.load(meta["teacher_tokenizer"])
    extras = cross_cache.line_up(meta, arrays, data)
  else:
    teacher_tokenizer = tokenizers.load(teacher_tokenizer_path(config.distill))
    extras = alignment.cross_tokenize(data.inputs, data.labels, student_tokenizer,
                                      teacher_tokenizer, getattr(teacher, "max_len", 1 << 30))
  teacher_size = teacher_tokenizer.get_vocab_size()
  vocab_map = alignment.vocabulary_map(student_tokenizer, teacher_tokenizer, teacher_size)
  counted = extras["student_span"] >= 0
  say(f"teacher tokenizer: {teacher_size:,} ids ({int(np.sum(vocab_map >= 0)):,} shared with "
      f"the student's {student_tokenizer.get_vocab_size():,}); the training windows read back "
      f"as {extras['teacher_tokens'].shape[1]} teacher tokens at most; "
      f"{np.mean(counted[data.labels >= 0]):.1%} of the student's predicted tokens lie in "
      "aligned spans.")
  return CrossTokenizer(teacher_size, vocab_map), extras


def _local_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in order."""
  shards = sorted(array.addressable_shards, key=lambda shard: shard.index[0].start or 0)
  rows, seen = [], set()
  for shard in shards:
    start = shard.index[0].start or 0
    if start not in seen:  # replicas of one block on several local devices
      seen.add(start)
      rows.append(np.asarray(shard.data))
  return np.concatenate(rows)


def on_policy_step(run, train_step):
  """step(state, (host batch, device batch)) -> (state, metrics): `train_step` on the batch,
  or, on the steps distill.on_policy.fraction draws (by seed and step, so a resume draws
  the same), on the student's continuations of its prompts re-tokenized for the teacher."""
  config = run.config
  on_policy = OnPolicy.from_config(config.distill.on_policy, run.train_data.kind)
  student_tokenizer = tokenizers.load(run.train_data.tokenizer)
  teacher_tokenizer = tokenizers.load(teacher_tokenizer_path(config.distill))
  length = run.batches.extras["teacher_tokens"].shape[1]
  model, classes = run.spec.model, run.spec.num_classes
  continue_prompts = jax.jit(lambda variables, tokens, key: generate(
      model, variables, tokens, on_policy.prompt_len, on_policy.temperature, key,
      num_classes=classes))

  def step(state, batches):
    host, device = batches
    index = int(state.step)
    if np.random.default_rng([config.seed, index]).random() >= on_policy.fraction:
      state, metrics = train_step(state, device)
      return state, {**metrics, "on_policy": 0.0, "retokenize_ms": 0.0}
    key = stream(jax.random.fold_in(state.rng, state.step), "on_policy")
    tokens, labels = continue_prompts(state.variables(), device["tokens"], key)
    began = time.perf_counter()
    tokens, labels = _local_rows(tokens), _local_rows(labels)
    extras = alignment.cross_tokenize(tokens, labels, student_tokenizer, teacher_tokenizer,
                                      length, length=length, specials="break")
    batch = {**host, "tokens": tokens, "label": labels, **extras}
    if "segments" in batch:  # a generated sequence is one document
      batch["segments"] = np.zeros_like(batch["segments"])
    cost = (time.perf_counter() - began) * 1000
    state, metrics = train_step(state, shard_batch(batch, run.mesh))
    return state, {**metrics, "on_policy": 1.0, "retokenize_ms": cost}

  return step
