"""Two hand-made byte-level BPE tokenizers that cut one text differently (the merges alone
decide every token), and the spans of jaxkd.data.alignment read back as strings: shared by
tests/test_alignment.py and tests/test_uld.py."""

# Hand-made byte-level BPEs (no pre-tokenizer splits: merges alone decide every token).
STUDENT_MERGES = [("f", "a"), ("i", "r"), ("Ġ", "i"), ("Ġi", "s"), ("Ġ", "f"), ("o", "u"),
                  ("Ġf", "ou"), ("Ġfou", "l"), ("Ċ", "ĉ"), ("c", "a"), ("ca", "f"),
                  ("Ġ", "m"), ("Ġm", "y"), ("Ġ", "l"), ("o", "r"), ("Ġl", "or"), ("Ġlor", "d")]
TEACHER_MERGES = [("a", "i"), ("f", "ai"), ("fai", "r"), ("Ġ", "i"), ("s", "Ġ"), ("f", "o"),
                  ("u", "l"), ("ĉ", "c"), ("Ã", "©"), ("f", "Ã©"), ("Ġ", "m"), ("Ġm", "y"),
                  ("Ġ", "l"), ("o", "r"), ("or", "d")]
TEXT = "#fair is foul\n\tcafé my lord"
END = "<|endoftext|>"


def byte_bpe(merges):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers

  vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
  vocab[END] = len(vocab)
  for a, b in merges:
    vocab.setdefault(a + b, len(vocab))
  tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.add_special_tokens([END])
  return tokenizer


def named_spans(out, labels, student, teacher, window):
  """{span: (the student's predicted tokens, the teacher's)} of one window, as strings."""
  found = {}
  for side, tokenizer, predicted, span in (
      (0, student, labels[window], out["student_span"][window]),
      (1, teacher, out["teacher_labels"][window], out["teacher_span"][window])):
    for token, s in zip(predicted, span):
      if s >= 0:
        found.setdefault(int(s), ([], []))[side].append(tokenizer.id_to_token(int(token)))
  return {s: tuple(map(tuple, sides)) for s, sides in sorted(found.items())}
