"""A text corpus from a user's own files (dataset.name = 'text'), as token windows.

dataset.path: a folder (each *.txt file one document, named by its stem) or one file
(documents separated by dataset.document_separator, named doc0, doc1, ...). The split is by
document: dataset.validation_documents and dataset.test_documents name them, or else
dataset.validation_count and dataset.test_count documents are drawn by dataset.split_seed;
the rest train. dataset.tokenizer: a tokenizer.json or a model directory with one (a
pretrained teacher's), or empty to train a byte-level BPE of dataset.vocab_size tokens on
the training documents (jaxkd.data.tokenizers; cached, and copied beside each run). The
vocabulary size is the tokenizer's.

Each split's documents, each followed by the end-of-text token, are packed into
non-overlapping windows of seq_len + 1 tokens: tokens = window[:-1], labels = window[1:],
and segments [N, T] the document of every position. The model attends only inside a
document (jaxkd.models.attention), and a label that would cross into the next document is
-1. token_bytes gives each token's UTF-8 bytes, for bits per byte.
"""

import pathlib

import ml_collections
import numpy as np

from jaxkd.data import alignment, tokenizers
from jaxkd.data.arrays import UNLABELED, ArrayDataset
from jaxkd.errors import JaxkdError

SPLITS = ("train", "validation", "test")


def documents(config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """(name, text) of every document of dataset.path, in name order."""
  if not config.path:
    raise JaxkdError("dataset 'text' needs dataset.path: a folder of .txt files (one document "
                     "each) or one text file.")
  path = pathlib.Path(config.path)
  if path.is_dir():
    files = sorted(path.glob("*.txt"))
    if not files:
      raise JaxkdError(f"dataset.path {path} holds no .txt file.")
    found = [(file.stem, file.read_text(errors="replace")) for file in files]
  elif path.is_file():
    parts = path.read_text(errors="replace").split(config.document_separator)
    found = [(f"doc{i}", part) for i, part in enumerate(parts)]
  else:
    raise JaxkdError(f"dataset.path {path} does not exist.")
  found = [(name, text.replace("\r\n", "\n").strip()) for name, text in found]
  return [(name, text) for name, text in found if text]


def split_documents(config: ml_collections.ConfigDict, found: list | None = None
                    ) -> dict[str, list[tuple[str, str]]]:
  """{split: [(name, text)]}: the named validation and test documents, or drawn by seed
  (found: documents(config), when the caller has read them)."""
  found = documents(config) if found is None else found
  names = [name for name, _ in found]
  chosen = {}
  order = list(np.random.default_rng(config.split_seed).permutation(len(found)))
  for split, given, count in (("validation", config.validation_documents,
                               config.validation_count),
                              ("test", config.test_documents, config.test_count)):
    if given:
      missing = sorted(set(given) - set(names))
      if missing:
        raise JaxkdError(f"dataset.{split}_documents names {missing}, not among the documents "
                         f"of {config.path} (e.g. {names[:3]}).")
      chosen[split] = set(given)
    else:
      taken = set().union(*chosen.values()) if chosen else set()
      drawn = [names[i] for i in order if names[i] not in taken][:count]
      chosen[split] = set(drawn)
  if chosen["validation"] & chosen["test"]:
    raise JaxkdError(f"documents {sorted(chosen['validation'] & chosen['test'])} are in both the "
                     "validation and the test split.")
  held = chosen["validation"] | chosen["test"]
  result = {"train": [d for d in found if d[0] not in held],
            **{split: [d for d in found if d[0] in chosen[split]] for split in ("validation",
                                                                                 "test")}}
  for split, docs in result.items():
    if not docs:
      raise JaxkdError(f"dataset 'text' has no {split} document ({len(found)} documents in all); "
                       "give more documents or fewer held out.")
  return result


def windows(length: int, seq_len: int) -> np.ndarray:
  """The flat positions [N, seq_len + 1] of the non-overlapping windows (each sharing its
  last position with the next one's first) that a stream of `length` tokens makes."""
  count = (length - 1) // seq_len
  if count < 1:
    raise JaxkdError(f"{length} tokens make no window of {seq_len + 1}; lower "
                     "dataset.seq_len.")
  return (np.arange(count) * seq_len)[:, None] + np.arange(seq_len + 1)


def pack(ids: list[np.ndarray], seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(tokens, labels, segments) [N, seq_len] of documents' ids (each ending in its
  end-of-text token) joined and cut into windows of seq_len + 1."""
  flat = np.concatenate(ids).astype(np.int32)
  document = np.concatenate([np.full(len(d), i, np.int32) for i, d in enumerate(ids)])
  window = windows(len(flat), seq_len)
  tokens, segments = flat[window], document[window]
  labels = np.where(segments[:, 1:] == segments[:, :-1], tokens[:, 1:], UNLABELED)
  return tokens[:, :-1], labels.astype(np.int32), segments[:, :-1] - segments[:, :1]


def tokenizer_of(config: ml_collections.ConfigDict, train: list[tuple[str, str]]):
  """(tokenizer, the path of its tokenizer.json) for the corpus."""
  if config.tokenizer:
    path = pathlib.Path(config.tokenizer)
    return tokenizers.load(path), path / tokenizers.FILE if path.is_dir() else path
  return tokenizers.train_bpe([text for _, text in train], config.vocab_size)


def load(config: ml_collections.ConfigDict, split: str) -> ArrayDataset:
  if split not in SPLITS:
    raise JaxkdError(f"dataset 'text' has splits {SPLITS}, not '{split}'.")
  found = documents(config)
  docs = split_documents(config, found)
  tokenizer, path = tokenizer_of(config, docs["train"])
  end = tokenizers.end_of_text(tokenizer)
  named = docs[split]
  if config.max_chars:  # A smaller run: the split's first max_chars characters.
    named = first_characters(named, config.max_chars)
  texts = [text for _, text in named]
  encoded = tokenizer.encode_batch(texts, add_special_tokens=False)
  tokens, labels, segments = pack([np.asarray(e.ids + [end], np.int32) for e in encoded],
                                  config.seq_len)
  # Where each window's tokens (and its last label) end in the corpus: the document (its
  # index among all of dataset.path's) and the byte; a document's end of text one byte
  # past its text. A cached teacher of another tokenizer is lined up by them.
  corpus = {name: index for index, (name, _) in enumerate(found)}
  byte_level = alignment.is_byte_level(tokenizer)
  places = [(np.full(len(e.ids) + 1, corpus[name], np.int32),
             np.append(alignment.byte_ends(e, text, byte_level), len(text.encode()) + 1))
            for (name, text), e in zip(named, encoded)]
  window = windows(sum(len(d) for d, _ in places), config.seq_len)
  extras = {"segments": segments,
            "token_document": np.concatenate([d for d, _ in places])[window],
            "token_end": np.concatenate([e for _, e in places]).astype(np.int32)[window]}
  return ArrayDataset(tokens, labels, tokenizer.get_vocab_size(), name="text", split=split,
                      kind="tokens", extras=extras,
                      token_bytes=tokenizers.token_bytes(tokenizer), tokenizer=str(path))


def first_characters(named: list[tuple[str, str]], limit: int) -> list[tuple[str, str]]:
  """The documents' first `limit` characters in all, (name, text) for those left."""
  kept, total = [], 0
  for name, text in named:
    kept.append((name, text[:max(limit - total, 0)]))
    total += len(kept[-1][1])
  return [(name, text) for name, text in kept if text]
