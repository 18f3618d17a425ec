"""A teacher and a student with different tokenizers, lined up on the same text.

The student's token windows are turned back into their text (exact for byte-level BPE
tokenizers: GPT-2's, Llama 3's, Qwen2's, Mistral's since v0.3, and the BPEs jaxkd trains),
which the teacher's tokenizer cuts into its own tokens. The two are aligned through their
UTF-8 byte offsets, as TRL's GOLD trainer aligns them: walking both sequences of predicted
tokens, a span closes wherever both tokenizers end a token at the same byte. A span is one
student token and one teacher token (the same string), one and several (one side split
the text finer), or several and several. Spans are numbered 0, 1, ... per window, the same
number on both sides, and -1 marks tokens in no span: those cut by the window's edges
(the first span counts only if both sides start at the same byte), a document boundary
(a label of -1 on either side) or a window's end that the other side does not reach.

Everything is computed once, in NumPy, before training (jaxkd.run.assemble): the step
sees fixed-shape arrays only (jaxkd.distill.uld reads them).
"""

import json

import numpy as np

from jaxkd.data.arrays import UNLABELED
from jaxkd.errors import JaxkdError

# Keys order byte positions across a window's documents: document * SPAN + byte.
SPAN = 1 << 32


def _byte_alphabet() -> dict[str, int]:
  """The byte-level BPE alphabet (GPT-2's): the character that stands for each byte, the
  printable Latin-1 bytes as themselves and the other 68 bytes as 256, 257, ... in order."""
  printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
  others = [b for b in range(256) if b not in set(printable)]
  table = {chr(b): b for b in printable}
  table.update({chr(256 + i): b for i, b in enumerate(others)})
  return table


BYTES_OF = _byte_alphabet()


def is_byte_level(tokenizer) -> bool:
  """Whether `tokenizer` (tokenizers.Tokenizer) is a byte-level BPE: one character of its
  token strings per byte of text."""
  spec = json.loads(tokenizer.to_str())
  kinds = {(spec.get(part) or {}).get("type") for part in ("pre_tokenizer", "decoder")}
  nested = (spec.get("pre_tokenizer") or {}).get("pretokenizers") or []
  return "ByteLevel" in kinds or any(p.get("type") == "ByteLevel" for p in nested)


def _require_byte_level(tokenizer, who: str) -> None:
  if not is_byte_level(tokenizer):
    raise JaxkdError(f"the {who}'s tokenizer is not a byte-level BPE; cross-tokenizer "
                     "alignment reads text back from tokens byte for byte, which only byte-level "
                     "BPE tokenizers allow (GPT-2, Llama 3, Qwen2, Mistral v0.3+, and the BPE "
                     "jaxkd trains when dataset.tokenizer is empty).")


def token_byte_strings(tokenizer) -> list[bytes | None]:
  """Each id's bytes (a byte-level BPE's); None for special tokens (end of text, ...)."""
  special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
  table = []
  for index in range(tokenizer.get_vocab_size()):
    token = tokenizer.id_to_token(index)
    if token is None or token in special or any(c not in BYTES_OF for c in token):
      table.append(None)
    else:
      table.append(bytes(BYTES_OF[c] for c in token))
  return table


def byte_ends(encoding, text: str, byte_level: bool) -> np.ndarray:
  """Where each token of `encoding` (of `text`) ends, in UTF-8 bytes: a byte-level BPE's
  pieces counted byte by byte; another tokenizer's character offsets turned into bytes."""
  if byte_level:
    return np.cumsum([len(token) for token in encoding.tokens], dtype=np.int64)
  to_byte = np.concatenate([[0], np.cumsum([len(c.encode()) for c in text])]).astype(np.int64)
  return to_byte[[end for _, end in encoding.offsets]]


def spans(ends_a: np.ndarray, ends_b: np.ndarray, same_start: bool
          ) -> tuple[np.ndarray, np.ndarray]:
  """Span ids of two sequences of predicted tokens given their end keys (strictly
  increasing): a span closes at every key both sequences end a token at; tokens after the
  last common end are in none (-1), and so is the first span unless both start together."""
  common = np.intersect1d(ends_a, ends_b)

  def ids(ends):
    found = np.searchsorted(common, ends, side="left")
    found = np.where(found < len(common), found, -1)
    if not same_start:
      found = np.where(found > 0, found - 1, -1)
    return found.astype(np.int32)

  return ids(ends_a), ids(ends_b)


def drop_spans(span_a: np.ndarray, span_b: np.ndarray, bad: np.ndarray) -> None:
  """Sets every span in `bad` (span ids, -1 ignored) to -1 on both sides, in place."""
  bad = bad[bad >= 0]
  if len(bad):
    span_a[np.isin(span_a, bad)] = -1
    span_b[np.isin(span_b, bad)] = -1


def renumber(span_a: np.ndarray, span_b: np.ndarray) -> None:
  """Numbers the remaining spans 0, 1, ... in order (both sides alike), in place."""
  kept = np.unique(span_a[span_a >= 0])
  for side in (span_a, span_b):
    side[side >= 0] = np.searchsorted(kept, side[side >= 0])


class _Pieces:
  """A window's text, document by document: the bytes of each document piece and each
  student token's (document, end byte) key."""

  def __init__(self, ids: list[int], table: list[bytes | None], end_id: int,
               specials: str = "error"):
    self.texts, self.keys, current = [], [], bytearray()
    for token in ids:
      piece = table[token] if 0 <= token < len(table) else None
      if token == end_id or (piece is None and specials == "break"):
        # a document ends (or a special token stands for a break): one virtual byte past it
        self.keys.append(len(self.texts) * SPAN + len(current) + 1)
        self.texts.append(bytes(current))
        current = bytearray()
        continue
      if piece is None:
        raise JaxkdError(f"token id {token} of the student's data has no bytes (a special "
                         "token inside the text); cross-tokenizer alignment cannot place it.")
      current += piece
      self.keys.append(len(self.texts) * SPAN + len(current))
    self.texts.append(bytes(current))

  def decoded(self) -> list[tuple[int, str]]:
    """(byte offset, text) of each piece, cut to whole UTF-8 characters at its edges (a
    window may begin or end inside a character)."""
    out = []
    for raw in self.texts:
      start = 0
      while start < len(raw) and raw[start] & 0xC0 == 0x80:  # continuation bytes
        start += 1
      stop = len(raw)
      while stop > start:
        try:
          out.append((start, raw[start:stop].decode("utf-8")))
          break
        except UnicodeDecodeError:
          stop -= 1
      else:
        out.append((start, ""))
    return out


def cross_tokenize(tokens: np.ndarray, labels: np.ndarray, student_tokenizer,
                   teacher_tokenizer, max_len: int, length: int = 0,
                   specials: str = "error") -> dict[str, np.ndarray]:
  """The teacher's view of the student's windows, and the spans that line them up.

  tokens, labels [N, T]: the student's windows (labels[:, t] = tokens[:, t + 1], the last
  one the window's next token, -1 across a document boundary). Returns
    teacher_tokens, teacher_labels, teacher_segments [N, Tt]: the same text through the
      teacher's tokenizer (documents ended by its end-of-text token, kept apart by the
      segments; -1 labels across documents and on padding), Tt the longest window's
      length rounded up to a multiple of 8, at most max_len; or `length`, the windows cut
      to it (the spans of cut tokens count for nothing: a step's fixed shape);
    student_span [N, T], teacher_span [N, Tt]: the span of each predicted token (-1: none).
  """
  from jaxkd.data.tokenizers import end_of_text

  _require_byte_level(student_tokenizer, "student")
  _require_byte_level(teacher_tokenizer, "teacher")
  table = token_byte_strings(student_tokenizer)
  student_end, teacher_end = end_of_text(student_tokenizer), end_of_text(teacher_tokenizer)
  windows = []
  for row, row_labels in zip(np.asarray(tokens), np.asarray(labels)):
    ids = list(row) + ([int(row_labels[-1])] if row_labels[-1] != UNLABELED else [])
    windows.append(_Pieces([int(i) for i in ids], table, student_end, specials))
  flat = [(w, d, start, text) for w, pieces in enumerate(windows)
          for d, (start, text) in enumerate(pieces.decoded())]
  encoded = teacher_tokenizer.encode_batch([text for *_, text in flat], add_special_tokens=False)
  teacher_ids = [[] for _ in windows]
  teacher_keys = [[] for _ in windows]
  teacher_docs = [[] for _ in windows]
  for (w, d, start, text), encoding in zip(flat, encoded):
    ends = start + byte_ends(encoding, text, byte_level=True)
    if len(ends) and ends[-1] != start + len(text.encode()):
      raise JaxkdError("the teacher's tokenizer does not reproduce the text byte for byte (a "
                       "normalizer or an added prefix space); cross-tokenizer alignment needs "
                       "one that does.")
    teacher_ids[w] += encoding.ids
    teacher_keys[w] += list(d * SPAN + ends)
    teacher_docs[w] += [d] * len(ends)
    if d < len(windows[w].texts) - 1:  # the student's window ends this document
      teacher_ids[w].append(teacher_end)
      teacher_keys[w].append(d * SPAN + len(windows[w].texts[d]) + 1)
      teacher_docs[w].append(d)
  longest = max(max(len(ids) - 1 for ids in teacher_ids), 1)
  if not length:
    if longest > max_len:
      raise JaxkdError(f"the teacher's tokenizer makes windows of up to {longest} tokens from "
                       f"the student's, more than the teacher's max_len {max_len}; lower "
                       "dataset.seq_len.")
    length = min(-(-longest // 8) * 8, max_len)
  count, width = tokens.shape
  out = {"teacher_tokens": np.zeros((count, length), np.int32),
         "teacher_labels": np.full((count, length), UNLABELED, np.int32),
         "teacher_segments": np.zeros((count, length), np.int32),
         "student_span": np.full((count, width), -1, np.int32),
         "teacher_span": np.full((count, length), -1, np.int32)}
  for w, pieces in enumerate(windows):
    ids, keys = np.asarray(teacher_ids[w], np.int32), np.asarray(teacher_keys[w], np.int64)
    docs = np.asarray(teacher_docs[w], np.int32)
    if len(ids) < 2:
      continue
    n = min(len(ids) - 1, length)
    crossing = docs[1:] != docs[:-1]
    teacher_labels = np.where(crossing, UNLABELED, ids[1:])
    out["teacher_tokens"][w, :n] = ids[:n]
    out["teacher_labels"][w, :n] = teacher_labels[:n]
    out["teacher_segments"][w, :n] = docs[:n]
    out["teacher_segments"][w, n:] = docs[-1] + 1  # padding: a segment of its own
    student_keys = np.asarray(pieces.keys, np.int64)
    predicted = student_keys[1:]  # the ends of the tokens each position predicts
    student_span, teacher_span = spans(predicted, keys[1:], student_keys[0] == keys[0])
    # A span with a label that does not count (a document boundary), or with a teacher
    # token past the fixed length, counts for nothing.
    student_labels = labels[w, :len(predicted)]
    drop_spans(student_span, teacher_span, np.concatenate(
        [student_span[student_labels == UNLABELED], teacher_span[teacher_labels == UNLABELED],
         teacher_span[n:]]))
    renumber(student_span, teacher_span)
    out["student_span"][w, :len(predicted)] = student_span
    out["teacher_span"][w, :n] = teacher_span[:n]
  return out


def vocabulary_map(student_tokenizer, teacher_tokenizer, teacher_size: int) -> np.ndarray:
  """[teacher_size]: the student's id of each teacher token whose string is also in the
  student's vocabulary (special tokens included, as GOLD maps them), else -1."""
  student = student_tokenizer.get_vocab(with_added_tokens=True)
  mapping = np.full(teacher_size, -1, np.int32)
  for token, index in teacher_tokenizer.get_vocab(with_added_tokens=True).items():
    if index < teacher_size and token in student:
      mapping[index] = student[token]
  return mapping
