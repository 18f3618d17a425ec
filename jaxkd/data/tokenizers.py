"""Tokenizers through the `tokenizers` library: a user's tokenizer.json (or a Hugging Face
model directory's), or a byte-level BPE (GPT-2's scheme) trained offline on a corpus and
cached by the corpus's hash, so every run of one corpus uses the same one."""

import hashlib
import json
import pathlib

import numpy as np

from jaxkd.data.cache import cache_dir
from jaxkd.errors import JaxkdError
from jaxkd.files import write_text

END_OF_TEXT = "<|endoftext|>"  # Appended to every document; id 0 of a trained BPE.
FILE = "tokenizer.json"


def load(path: str | pathlib.Path):
  """The tokenizer in `path`: a tokenizer.json, or a directory holding one."""
  from tokenizers import Tokenizer

  path = pathlib.Path(path)
  file = path / FILE if path.is_dir() else path
  if not file.is_file():
    raise JaxkdError(f"no tokenizer at {path} (no {FILE}); give a tokenizer.json or a model "
                     "directory with one, or leave dataset.tokenizer empty to train a BPE.")
  try:
    return Tokenizer.from_file(str(file))
  except Exception as e:  # The library's own parse error, in its words.
    raise JaxkdError(f"{file} is not a tokenizer the tokenizers library reads ({e}).") from None


def train_bpe(texts: list[str], vocab_size: int):
  """A byte-level BPE of `vocab_size` tokens (the 256 bytes, END_OF_TEXT and merges) trained
  on `texts`, cached by their hash; returns (tokenizer, the path of its tokenizer.json)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  digest = hashlib.sha256(f"bpe:{vocab_size}".encode())
  for text in texts:
    digest.update(hashlib.sha256(text.encode()).digest())
  path = cache_dir("tokenizers", digest.hexdigest()[:16]) / FILE
  if path.is_file():
    return load(path), path
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tokenizer.train_from_iterator(texts, trainer=trainer)
  write_text(path, tokenizer.to_str())
  return tokenizer, path


def same_vocabulary(a: str | pathlib.Path, b: str | pathlib.Path) -> bool:
  """Whether two tokenizers give every id the same token (added tokens included)."""
  if pathlib.Path(a).read_bytes() == pathlib.Path(b).read_bytes():
    return True
  return load(a).get_vocab(with_added_tokens=True) == load(b).get_vocab(with_added_tokens=True)


def end_of_text(tokenizer) -> int:
  """The id that ends a document: END_OF_TEXT, or the tokenizer's own end token."""
  for token in (END_OF_TEXT, "</s>", "<|end_of_text|>", "<eos>", "[SEP]"):
    found = tokenizer.token_to_id(token)
    if found is not None:
      return found
  raise JaxkdError(f"the tokenizer has no end-of-document token ({END_OF_TEXT}, </s>, ...); "
                   "documents cannot be packed without one.")


def token_bytes(tokenizer) -> np.ndarray:
  """Each id's UTF-8 bytes [V] (0 for special tokens): a byte-level token is one byte per
  character of its string; otherwise the bytes of the token decoded alone."""
  vocabulary = tokenizer.get_vocab_size()
  special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
  byte_level = (json.loads(tokenizer.to_str()).get("decoder") or {}).get("type") == "ByteLevel"
  sizes = np.zeros(vocabulary, np.int32)
  for index in range(vocabulary):
    token = tokenizer.id_to_token(index)
    if token is None or token in special:
      continue
    sizes[index] = len(token) if byte_level else len(tokenizer.decode([index]).encode())
  return sizes
