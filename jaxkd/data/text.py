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

from jaxkd.data import tokenizers
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


def split_documents(config: ml_collections.ConfigDict) -> dict[str, list[tuple[str, str]]]:
  """{split: [(name, text)]}: the named validation and test documents, or drawn by seed."""
  found = documents(config)
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


def pack(ids: list[np.ndarray], seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(tokens, labels, segments) [N, seq_len] of documents' ids (each ending in its
  end-of-text token) joined and cut into windows of seq_len + 1."""
  flat = np.concatenate(ids).astype(np.int32)
  document = np.concatenate([np.full(len(d), i, np.int32) for i, d in enumerate(ids)])
  count = (len(flat) - 1) // seq_len
  if count < 1:
    raise JaxkdError(f"{len(flat)} tokens make no window of {seq_len + 1}; lower "
                     "dataset.seq_len.")
  starts = np.arange(count) * seq_len
  window = starts[:, None] + np.arange(seq_len + 1)
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
  docs = split_documents(config)
  tokenizer, path = tokenizer_of(config, docs["train"])
  end = tokenizers.end_of_text(tokenizer)
  texts = [text for _, text in docs[split]]
  if config.max_chars:  # A smaller run: the split's first max_chars characters.
    texts = _first(texts, config.max_chars)
  encoded = tokenizer.encode_batch(texts, add_special_tokens=False)
  tokens, labels, segments = pack([np.asarray(e.ids + [end], np.int32) for e in encoded],
                                  config.seq_len)
  return ArrayDataset(tokens, labels, tokenizer.get_vocab_size(), name="text", split=split,
                      kind="tokens", extras={"segments": segments},
                      token_bytes=tokenizers.token_bytes(tokenizer), tokenizer=str(path))


def _first(texts: list[str], limit: int) -> list[str]:
  kept, total = [], 0
  for text in texts:
    kept.append(text[:max(limit - total, 0)])
    total += len(kept[-1])
  return [text for text in kept if text]
