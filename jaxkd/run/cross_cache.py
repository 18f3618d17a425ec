"""A cached teacher for students of any tokenizer: the teacher's predictions for every one of
its own tokens of a text corpus, keyed by where each token ends in the corpus (document,
byte), so that a student of another tokenizer lines them up with its windows by bytes.

  python -m jaxkd soft_labels --teacher=T --out=C --top_k=16 --config=<a student's config
      with a cross-tokenizer term (uld)>

The teacher reads each training document of the student's corpus through its own tokenizer
(documents packed into windows of its max_len, at most 1,024 tokens; attention never
crosses a document) and keeps, for each token it predicts, its top-k log-probabilities
and the log-probability of the token itself. A student with distill.soft_labels = (C,)
and the uld term then runs no teacher: each training window gets the teacher's tokens that
lie inside its bytes, their spans, and the teacher's distributions rebuilt from the top-k
(the tail mass spread evenly over the other ids: uld sorts whole distributions), the
probability of each of the teacher's own tokens exact.
"""

import hashlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.config.checks import SOFT_LABEL_DTYPES, one_of
from jaxkd.data import ArrayDataset, alignment, text, tokenizers
from jaxkd.data.arrays import UNLABELED
from jaxkd.engine.evaluation import make_predict, predict_all
from jaxkd.engine.sharding import check_batch_size, make_mesh
from jaxkd.errors import JaxkdError
from jaxkd.files import atomic_path
from jaxkd.run.saved import load_run
from jaxkd.run.soft_labels import read_cache as read_soft_label_file

KIND = "cross_tokenizer"
LONGEST = 1024  # the teacher's windows: its max_len, at most this


def _documents(dataset) -> tuple[list[tuple[int, str, str]], list[list[str]]]:
  """(corpus index, name, text) of the training documents (to dataset.max_chars), and
  [name, sha256 of the whole text] of every document of the corpus."""
  found = text.documents(dataset)
  train = text.split_documents(dataset, found)["train"]
  if dataset.max_chars:
    train = text.first_characters(train, dataset.max_chars)
  index = {name: i for i, (name, _) in enumerate(found)}
  digests = [[name, hashlib.sha256(body.encode()).hexdigest()] for name, body in found]
  return [(index[name], name, body) for name, body in train], digests


def write_cache(teacher: str | pathlib.Path, out: str | pathlib.Path, dataset, top_k: int,
                dtype: str = "float16", batch_size: int = 16,
                teacher_tokenizer: str = "") -> pathlib.Path:
  """Writes the cache of `teacher` (a workdir or Hugging Face directory) over the training
  documents of `dataset` (a text dataset config: the student's corpus)."""
  one_of("dtype", dtype, SOFT_LABEL_DTYPES)
  if dataset.name != "text":
    raise JaxkdError("a cross-tokenizer cache covers a text corpus (dataset.name='text'); the "
                     f"student's dataset is '{dataset.name}'.")
  mesh = make_mesh()
  check_batch_size(batch_size, mesh, "batch_size")
  run = load_run(teacher, mesh)
  path = pathlib.Path(teacher_tokenizer) if teacher_tokenizer else (
      pathlib.Path(teacher) / tokenizers.FILE)
  tokenizer = tokenizers.load(path)
  if not alignment.is_byte_level(tokenizer):
    raise JaxkdError(f"the teacher's tokenizer {path} is not a byte-level BPE; a cache for "
                     "students of other tokenizers is keyed by bytes, which needs one.")
  classes = tokenizer.get_vocab_size()
  top_k = top_k or classes  # 0: every id (no approximation, V times the storage)
  if not 0 < top_k <= classes:
    raise JaxkdError(f"top_k={top_k}: it must be between 1 and the teacher's {classes} ids.")
  docs, digests = _documents(dataset)
  end = tokenizers.end_of_text(tokenizer)
  encoded = tokenizer.encode_batch([body for _, _, body in docs], add_special_tokens=False)
  ids = np.concatenate([np.asarray(e.ids + [end], np.int32) for e in encoded])
  document = np.concatenate([np.full(len(e.ids) + 1, i, np.int32)
                             for (i, _, _), e in zip(docs, encoded)])
  ends = np.concatenate([np.append(alignment.byte_ends(e, body, True), len(body.encode()) + 1)
                         for (_, _, body), e in zip(docs, encoded)]).astype(np.int32)
  length = min(getattr(run.model, "max_len", LONGEST), LONGEST)
  window = text.windows(len(ids), length)
  segments = document[window]
  labels = np.where(segments[:, 1:] == segments[:, :-1], ids[window][:, 1:], UNLABELED)
  data = ArrayDataset(ids[window][:, :-1], labels.astype(np.int32), classes, name="text",
                      split="train", kind="tokens",
                      extras={"segments": segments[:, :-1] - segments[:, :1]})

  def outputs(logits, labels):
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    values, top = jax.lax.top_k(log_probs, top_k)
    own = jnp.take_along_axis(log_probs, jnp.maximum(labels, 0)[..., None], -1)[..., 0]
    return values, top, own

  predict = make_predict(run.model, run.preprocess(), mesh, "tokens", outputs=outputs,
                         num_classes=classes)
  values, top, own = predict_all(predict, run.variables, data, batch_size, mesh, labels=True)
  # Token j of the stream is predicted at position j - 1 of the window holding it as a label.
  predicted = np.zeros(len(ids), bool)
  flat = window[:, 1:].reshape(-1)
  predicted[flat] = labels.reshape(-1) != UNLABELED
  arrays = {"token_id": ids, "token_document": document, "token_end": ends,
            "predicted": predicted,
            "topk_logprobs": np.zeros((len(ids), top_k), dtype),
            "topk_ids": np.zeros((len(ids), top_k), np.int32),
            "own_logprob": np.zeros(len(ids), np.float32)}
  arrays["topk_logprobs"][flat] = values.reshape(-1, top_k).astype(dtype)
  arrays["topk_ids"][flat] = top.reshape(-1, top_k)
  arrays["own_logprob"][flat] = own.reshape(-1)
  meta = {"kind": KIND, "teacher_workdir": str(pathlib.Path(teacher).absolute()),
          "teacher_step": run.step, "teacher_tokenizer": str(path.absolute()),
          "teacher_num_classes": classes, "top_k": top_k, "dtype": dtype,
          "window": length, "documents": digests}
  out = pathlib.Path(out)
  with atomic_path(out, suffix=".npz") as partial:
    np.savez(partial, meta=json.dumps(meta), **arrays)
  return out


def read_cache(path: str | pathlib.Path, dataset) -> tuple[dict, dict]:
  """(meta, arrays) of a cross-tokenizer cache, after checking it covers `dataset`'s corpus."""
  meta, arrays = read_soft_label_file(pathlib.Path(path))
  if meta.get("kind") != KIND:
    raise JaxkdError(f"soft label cache {path} holds a teacher's outputs on the student's own "
                     "tokens; the uld term needs a cross-tokenizer cache: write one with python "
                     "-m jaxkd soft_labels --teacher=<teacher> --out=<file> --top_k=16 "
                     "--config=<this student's config>.")
  _, digests = _documents(dataset)
  if meta["documents"] != digests:
    raise JaxkdError(f"soft label cache {path} was written for another corpus than "
                     f"dataset.path {dataset.path} (its documents or their texts differ); "
                     "write it again for this one.")
  return meta, arrays


def line_up(meta: dict, arrays: dict, data) -> dict[str, np.ndarray]:
  """The batch extras of the student's windows `data` from the cache: the teacher's
  predicted tokens inside each window's bytes (its tokens, labels, top-k and own
  log-probabilities, [N, Tt, ...]) and the spans of both sides."""
  keys = arrays["token_document"].astype(np.int64) * alignment.SPAN + arrays["token_end"]
  student = (data.extras["token_document"].astype(np.int64) * alignment.SPAN
             + data.extras["token_end"])
  ranges = []
  for row in student:
    first = int(np.searchsorted(keys, row[0], side="left"))
    same_start = first < len(keys) and keys[first] == row[0]
    first += int(same_start)
    ranges.append((first, int(np.searchsorted(keys, row[-1], side="right")), same_start))
  longest = max(max(stop - start for start, stop, _ in ranges), 1)
  width = -(-longest // 8) * 8
  count, k = len(student), arrays["topk_ids"].shape[1]
  out = {"teacher_tokens": np.zeros((count, width), np.int32),
         "teacher_labels": np.full((count, width), UNLABELED, np.int32),
         "teacher_segments": np.zeros((count, width), np.int32),
         "student_span": np.full(data.labels.shape, -1, np.int32),
         "teacher_span": np.full((count, width), -1, np.int32),
         "teacher_topk_logprobs": np.zeros((count, width, k), np.float32),
         "teacher_topk_ids": np.zeros((count, width, k), np.int32),
         "teacher_own_logprobs": np.zeros((count, width), np.float32)}
  for w, (start, stop, same_start) in enumerate(ranges):
    n = stop - start
    if n < 1:
      continue
    taken = np.arange(start, stop)
    labels = np.where(arrays["predicted"][taken], arrays["token_id"][taken], UNLABELED)
    out["teacher_tokens"][w, :n] = arrays["token_id"][np.maximum(taken - 1, 0)]
    out["teacher_labels"][w, :n] = labels
    out["teacher_topk_logprobs"][w, :n] = arrays["topk_logprobs"][taken]
    out["teacher_topk_ids"][w, :n] = arrays["topk_ids"][taken]
    out["teacher_own_logprobs"][w, :n] = arrays["own_logprob"][taken]
    span_s, span_t = alignment.spans(student[w, 1:], keys[taken], same_start)
    alignment.drop_spans(span_s, span_t, np.concatenate(
        [span_s[data.labels[w] == UNLABELED], span_t[labels == UNLABELED]]))
    alignment.renumber(span_s, span_t)
    out["student_span"][w] = span_s
    out["teacher_span"][w, :n] = span_t
  return out
