"""A teacher whose tokenizer is not the student's: what a run needs to distil from it.

With a cross-tokenizer term (uld) in the objective, the teacher's tokenizer is
distill.teacher_tokenizer, or else the tokenizer.json in the teacher's directory (a
workdir keeps a copy, a Hugging Face directory has one). The student's training windows
are read back as text and cut by the teacher's tokenizer once, before training
(jaxkd.data.alignment), and the result rides along with the batches."""

import pathlib

import ml_collections
import numpy as np

from jaxkd.data import alignment, tokenizers
from jaxkd.engine.step import CrossTokenizer
from jaxkd.errors import JaxkdError
from jaxkd.log import say
from jaxkd.run.saved import TOKENIZER_FILE


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
  if len(distill.teachers) != 1 or distill.soft_labels:
    raise JaxkdError(f"terms {cross} need exactly one teacher online (distill.teachers), "
                     "not a cache (distill.soft_labels).")
  if distill.on_policy.fraction:
    raise JaxkdError(f"terms {cross} read the teacher's tokens of the training windows, made "
                     "before training; on-policy batches would need them remade every step, "
                     "which jaxkd does not do yet: set distill.on_policy.fraction=0.")
  if config.train.loss_chunk:
    raise JaxkdError(f"terms {cross} sort whole distributions per span; set "
                     "train.loss_chunk=0.")


def prepare(config: ml_collections.ConfigDict, data, teacher) -> tuple[CrossTokenizer, dict]:
  """(the step's CrossTokenizer, the batch extras [N, ...] for `data`) for the teacher
  module `teacher`."""
  student_tokenizer = tokenizers.load(data.tokenizer)
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
