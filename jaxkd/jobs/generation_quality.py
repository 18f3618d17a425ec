"""The quality of a student's generated text, as MiniLLM, GKD and DistiLLM report it: the
student continues held-out prompts (jaxkd.engine.generation, with the cache), and its
continuations are scored by

  rouge_l      ROUGE-L F1 against the reference continuation (the longest common
               subsequence of words; Lin 2004), as the rouge-score package computes it
               without stemming (tests/reference/make_rouge_fixtures.py checks it);
  teacher_nll  the teacher's mean negative log-likelihood (nats per token) of the
               student's generated tokens: how likely the teacher finds them;
  distinct_n   distinct-1/2/3 (Li et al. 2016): the share of distinct token n-grams among
               all n-grams of the continuations (low: repetitive text).

Prompts are the first `prompt_len` tokens of `count` windows spread evenly over a held-out
split (every part of it, not only its first document); the reference is the window's next
`horizon` tokens.
"""

import re
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.engine.generation import generate
from jaxkd.engine.sharding import make_mesh
from jaxkd.jobs.stats import mean_std, plus_minus
from jaxkd.jobs.tables import markdown_table
from jaxkd.run.saved import load_run

WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
  """rouge-score's tokenization without a stemmer: lower case, runs of [a-z0-9]."""
  return WORD.findall(text.lower())


def _lcs(a: list[str], b: list[str]) -> int:
  previous = [0] * (len(b) + 1)
  for x in a:
    current = [0]
    for j, y in enumerate(b):
      current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
    previous = current
  return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
  """ROUGE-L F1 of `prediction` against `reference` (0 when either has no word)."""
  ours, theirs = words(prediction), words(reference)
  if not ours or not theirs:
    return 0.0
  common = _lcs(ours, theirs)
  precision, recall = common / len(ours), common / len(theirs)
  return 0.0 if common == 0 else 2 * precision * recall / (precision + recall)


def distinct_n(sequences: list[list[int]], n: int) -> float:
  """Distinct n-grams over all n-grams of `sequences` (token ids)."""
  grams = [tuple(s[i:i + n]) for s in sequences for i in range(len(s) - n + 1)]
  return len(set(grams)) / len(grams) if grams else 0.0


def decoder_for(data) -> Callable[[list[int]], str]:
  """Token ids -> text: the data's tokenizer, Shakespeare's characters, or the ids."""
  if getattr(data, "tokenizer", None):
    from jaxkd.data import tokenizers

    tokenizer = tokenizers.load(data.tokenizer)
    return lambda ids: tokenizer.decode([int(i) for i in ids])
  if data.name == "shakespeare_char":
    from jaxkd.data import shakespeare

    return shakespeare.decode
  return lambda ids: " ".join(str(int(i)) for i in ids)


def score(student, teacher, data, prompt_len: int, horizon: int, count: int = 64,
          temperature: float = 1.0, seed: int = 0, batch_size: int = 64) -> dict:
  """{'rouge_l', 'teacher_nll', 'distinct_1', 'distinct_2', 'distinct_3', 'count'} of the
  student's continuations (student, teacher: jaxkd.run.saved.SavedRun, or anything with
  .model and .variables; teacher None: no teacher_nll)."""
  length = prompt_len + horizon
  if length > data.inputs.shape[1]:
    raise ValueError(f"prompt_len + horizon = {length} exceeds the windows' {data.inputs.shape[1]} "
                     "tokens.")
  picked = np.linspace(0, len(data) - 1, min(count, len(data))).round().astype(int)
  windows = np.asarray(data.inputs[picked, :length], np.int32)
  decode = decoder_for(data)
  vocabulary = data.num_classes
  kept = slice(prompt_len - 1, length - 1)  # labels of positions prompt_len .. length - 1

  @jax.jit
  def continue_and_score(tokens, key):
    sequence, labels = generate(student.model, student.variables, tokens, prompt_len,
                                temperature, key, num_classes=vocabulary)
    if teacher is None:
      return labels, jnp.zeros(())
    logits = teacher.model.apply(teacher.variables, sequence)[..., :vocabulary]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    picked = jnp.take_along_axis(log_probs, jnp.maximum(labels, 0)[..., None], -1)[..., 0]
    return labels, -jnp.sum(picked[:, kept])

  generated, nll = [], 0.0
  for start in range(0, len(windows), batch_size):
    labels, total = continue_and_score(jnp.asarray(windows[start:start + batch_size]),
                                       jax.random.fold_in(jax.random.PRNGKey(seed), start))
    generated += [list(row) for row in np.asarray(labels)[:, kept]]
    nll += float(total)
  rouge = [rouge_l(decode(g), decode(r[prompt_len:])) for g, r in zip(generated, windows)]
  result = {"rouge_l": float(np.mean(rouge)), "count": len(generated),
            **{f"distinct_{n}": distinct_n(generated, n) for n in (1, 2, 3)}}
  if teacher is not None:
    result["teacher_nll"] = nll / max(len(generated) * horizon, 1)
  return result


def score_runs(workdirs, teacher, data, prompt_len: int, horizon: int, count: int) -> list[dict]:
  """score() of each finished run in `workdirs` (read on one device), sampled at
  temperature 1 with seed 0, so that runs differ only by their weights."""
  mesh = make_mesh(jax.devices()[:1])
  return [score(load_run(w, mesh), teacher, data, prompt_len, horizon, count) for w in workdirs]


METRICS = (("rouge_l", "ROUGE-L", 3), ("teacher_nll", "teacher NLL", 2),
           ("distinct_2", "distinct-2", 3))


def table(results: dict[str, list[dict]]) -> str:
  """A markdown table of score()'s results: a row per label, each cell the mean ± sample std
  over the label's results (its seeds), or the one value."""
  rows = [[label, *(plus_minus(*mean_std([r[key] for r in runs]), digits=digits)
                    for key, _, digits in METRICS)] for label, runs in results.items()]
  return markdown_table(["model", *(name for _, name, _ in METRICS)], rows, align="lrrr")
