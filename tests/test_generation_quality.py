"""Generation-quality metrics: ROUGE-L equal to the rouge-score package's (fixtures of
tests/reference/make_rouge_fixtures.py), distinct-n and the teacher's NLL by hand, and the
scoring of a student's continuations end to end."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxkd.data import ArrayDataset
from jaxkd.jobs import generation_quality as quality
from jaxkd.models import create_model

FIXTURE = pathlib.Path(__file__).resolve().parent / "reference" / "fixtures" / "rouge_l.json"


def test_rouge_l_equals_the_rouge_score_package():
  pairs = json.loads(FIXTURE.read_text())["pairs"]
  assert len(pairs) > 100
  for pair in pairs:
    assert quality.rouge_l(pair["prediction"], pair["reference"]) == pytest.approx(
        pair["rouge_l"], abs=1e-12), pair


def test_distinct_n_by_hand():
  sequences = [[1, 2, 1, 2], [3, 3]]
  assert quality.distinct_n(sequences, 1) == 3 / 6  # {1, 2, 3} of 6 tokens
  assert quality.distinct_n(sequences, 2) == 3 / 4  # (1,2) (2,1) (1,2) (3,3): 3 distinct
  assert quality.distinct_n(sequences, 3) == 2 / 2
  assert quality.distinct_n([[1]], 2) == 0.0


class _Model:
  """A model and its variables, as score() takes them."""

  def __init__(self, name, seed, vocabulary):
    fields = {"name": name, "num_layers": 1, "hidden_size": 16, "num_heads": 2, "max_len": 16,
              "init_from": "", **({"intermediate_size": 32} if name == "llama" else {})}
    self.model = create_model(ml_collections.ConfigDict(fields), vocabulary)
    self.variables = self.model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 16), jnp.int32))


def test_scores_of_continuations_greedy_by_hand():
  """Greedy continuations (temperature 0) of the student, scored again here: the teacher's
  NLL from its logits, ROUGE-L and distinct-n on the decoded ids."""
  vocabulary, prompt, horizon = 30, 4, 8
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, vocabulary, (6, 16))
  data = ArrayDataset(tokens, np.roll(tokens, -1, 1), vocabulary, name="ids", split="test",
                      kind="tokens")
  student, teacher = _Model("llama", 0, vocabulary), _Model("gpt2", 1, vocabulary)
  result = quality.score(student, teacher, data, prompt, horizon, count=6, temperature=0.0,
                         batch_size=4)
  # By hand: greedy decoding with the full forward, then the teacher's log-probabilities.
  sequence = tokens[:, :prompt + horizon].copy()
  for position in range(prompt, prompt + horizon + 1):
    window = np.concatenate([sequence, np.zeros((6, 1), int)], 1)[:, :prompt + horizon]
    logits = student.model.apply(student.variables, jnp.asarray(window))
    token = np.argmax(np.asarray(logits[:, position - 1]), -1)
    if position < prompt + horizon:
      sequence[:, position] = token
  continuations = sequence[:, prompt:]
  log_probs = jax.nn.log_softmax(teacher.model.apply(teacher.variables, jnp.asarray(sequence)))
  picked = np.take_along_axis(np.asarray(log_probs)[:, prompt - 1:-1],
                              continuations[..., None], -1)[..., 0]
  assert result["teacher_nll"] == pytest.approx(-picked.mean(), rel=1e-5)
  text = lambda ids: " ".join(str(int(i)) for i in ids)
  rouge = np.mean([quality.rouge_l(text(c), text(r)) for c, r in
                   zip(continuations, tokens[:, prompt:prompt + horizon])])
  assert result["rouge_l"] == pytest.approx(rouge)
  assert result["distinct_2"] == quality.distinct_n([list(c) for c in continuations], 2)
  assert result["count"] == 6 and 0 < result["distinct_1"] <= 1
  assert not math.isnan(result["rouge_l"])
