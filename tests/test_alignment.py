"""How jaxkd.data.alignment lines up two tokenizations of one text, worked by hand on the
tokenizers of tests/byte_bpe.py: spans close at the bytes where both sides end a token
(unicode, whitespace and word boundaries split differently), a window that starts inside a
teacher token, documents packed in one window, the shared vocabulary, and the refusal of a
tokenizer that is not byte level."""

import numpy as np
import pytest

from byte_bpe import END, STUDENT_MERGES, TEACHER_MERGES, TEXT, byte_bpe, named_spans
from jaxkd.data import alignment
from jaxkd.errors import JaxkdError


def _spans_as_text(student, teacher, seq_len, window=0):
  """{span: (student's predicted tokens, teacher's)} of one window of TEXT (and its end of
  text) cut into windows of seq_len by the student's tokenizer."""
  from jaxkd.data import text

  ids = np.asarray(student.encode(TEXT).ids + [student.token_to_id(END)], np.int32)
  tokens, labels, _ = text.pack([ids], seq_len)
  out = alignment.cross_tokenize(tokens, labels, student, teacher, 64)
  return named_spans(out, labels, student, teacher, window)


def test_the_hand_made_tokenizers_cut_the_text_as_designed():
  assert byte_bpe(STUDENT_MERGES).encode(TEXT).tokens == [
      "#", "fa", "ir", "Ġis", "Ġfoul", "Ċĉ", "caf", "Ã", "©", "Ġmy", "Ġlord"]
  assert byte_bpe(TEACHER_MERGES).encode(TEXT).tokens == [
      "#", "fair", "Ġi", "sĠ", "fo", "ul", "Ċ", "ĉc", "a", "fÃ©", "Ġmy", "Ġl", "ord"]


def test_spans_by_hand_merges_splits_unicode_whitespace_and_a_word_boundary():
  """Byte ends: student 3 5 8 13 15 18 19 20 23 28, teacher 5 7 9 11 13 14 16 17 20 23 25 28;
  spans close at the common ends 5, 13, 20, 23, 28 and at the end of text."""
  student, teacher = byte_bpe(STUDENT_MERGES), byte_bpe(TEACHER_MERGES)
  expected = {
      0: (("fa", "ir"), ("fair",)),  # two student tokens, one teacher token
      1: (("Ġis", "Ġfoul"), ("Ġi", "sĠ", "fo", "ul")),  # 'sĠ' spans a word boundary
      2: (("Ċĉ", "caf", "Ã", "©"), ("Ċ", "ĉc", "a", "fÃ©")),  # whitespace; é's two bytes split
      3: (("Ġmy",), ("Ġmy",)),  # one to one
      4: (("Ġlord",), ("Ġl", "ord")),  # one student token, two teacher tokens
      5: ((END,), (END,)),
  }
  assert _spans_as_text(student, teacher, 11) == expected
  # The other direction: the teacher's tokenizer for the student and the other way round.
  mirrored = {k: (t, s) for k, (s, t) in expected.items()}
  assert _spans_as_text(teacher, student, 13) == mirrored


def test_a_window_that_starts_inside_a_teacher_token_drops_the_first_span():
  """Windows of 3 student tokens: the third reads 'café my' (student caf|Ã|©|Ġmy, teacher
  c|a|fÃ©|Ġmy). Both first tokens are input only, and they end at other bytes (3 and 1):
  the span of é is cut on the teacher's side and counts for nothing; ' my' remains."""
  student, teacher = byte_bpe(STUDENT_MERGES), byte_bpe(TEACHER_MERGES)
  assert _spans_as_text(student, teacher, 3, window=2) == {0: (("Ġmy",), ("Ġmy",))}


def test_documents_in_one_window_are_kept_apart_for_the_teacher_too():
  """Two documents packed in one window: the teacher reads each with its own end of text
  and segment, the label across the boundary counts on neither side."""
  from jaxkd.data import text

  student, teacher = byte_bpe(STUDENT_MERGES), byte_bpe(TEACHER_MERGES)
  end_s = student.token_to_id(END)
  docs = [np.asarray(student.encode(t).ids + [end_s], np.int32) for t in ("#fair", "# my lord")]
  tokens, labels, _ = text.pack(docs, 7)
  out = alignment.cross_tokenize(tokens, labels, student, teacher, 64)
  assert [teacher.id_to_token(int(i)) for i in out["teacher_tokens"][0, :7]] == [
      "#", "fair", END, "#", "Ġmy", "Ġl", "ord"]
  np.testing.assert_array_equal(out["teacher_segments"][0, :7], [0, 0, 0, 1, 1, 1, 1])
  assert out["teacher_labels"][0, 2] == -1 and labels[0, 3] == -1  # across the boundary
  assert list(named_spans(out, labels, student, teacher, 0).values()) == [
      (("fa", "ir"), ("fair",)), ((END,), (END,)), (("Ġmy",), ("Ġmy",)),
      (("Ġlord",), ("Ġl", "ord")), ((END,), (END,))]


def test_the_shared_vocabulary_maps_equal_strings():
  student, teacher = byte_bpe(STUDENT_MERGES), byte_bpe(TEACHER_MERGES)
  mapping = alignment.vocabulary_map(student, teacher, teacher.get_vocab_size())
  for name in ("Ġmy", "Ġl", "or", "a", END):
    assert mapping[teacher.token_to_id(name)] == student.token_to_id(name)
  for name in ("fair", "sĠ", "fÃ©", "ord"):  # only the teacher has these
    assert mapping[teacher.token_to_id(name)] == -1


def test_a_tokenizer_that_is_not_byte_level_is_refused():
  from tokenizers import Tokenizer, models, pre_tokenizers

  words = Tokenizer(models.WordLevel({"a": 0, "<|endoftext|>": 1}, unk_token="a"))
  words.pre_tokenizer = pre_tokenizers.Whitespace()
  with pytest.raises(JaxkdError, match="not a byte-level BPE"):
    alignment.cross_tokenize(np.zeros((1, 2), np.int32), np.zeros((1, 2), np.int32), words,
                             byte_bpe(TEACHER_MERGES), 8)
