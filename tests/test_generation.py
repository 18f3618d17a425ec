"""Cached generation (jaxkd.engine.generation) against the full causal forward, for every
architecture: the same tokens, greedy and sampled with the same key, and decoding logits
equal to the full forward's on the generated sequence; per-sequence prompt lengths and
stop tokens."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxkd.engine.generation import generate, sample
from jaxkd.models import create_model

V, T, PROMPT = 40, 12, 4
MODELS = {
    "transformer_lm": {"name": "transformer_lm", "num_layers": 2, "embed_dim": 32,
                       "num_heads": 4, "mlp_dim": 64, "max_len": 16},
    "transformer_lm_learned": {"name": "transformer_lm", "num_layers": 1, "embed_dim": 16,
                               "num_heads": 2, "mlp_dim": 32, "max_len": 16,
                               "positions": "learned", "norm": "layernorm"},
    "gpt2": {"name": "gpt2", "num_layers": 2, "hidden_size": 32, "num_heads": 4, "max_len": 16},
    "llama_gqa_window": {"name": "llama", "num_layers": 2, "hidden_size": 32,
                         "intermediate_size": 64, "num_heads": 4, "num_kv_heads": 2,
                         "max_len": 16, "sliding_window": 5, "qkv_bias": True,
                         "rope_type": "llama3", "rope_factor": 8.0, "rope_original_max": 8},
}


def _model(name):
  model = create_model(ml_collections.ConfigDict({**MODELS[name], "init_from": ""}), V)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, V, (3, T)), jnp.int32)
  return model, model.init(jax.random.PRNGKey(1), tokens), tokens


def _reference(model, variables, tokens, lengths, temperature, key, stop=None):
  """Token by token with the whole causal forward each time (no cache)."""
  sequence = np.concatenate([np.asarray(tokens), np.zeros((len(tokens), 1), np.int32)], 1)
  done = np.zeros(len(tokens), bool)
  for position in range(PROMPT, T + 1):
    logits = model.apply(variables, jnp.asarray(sequence[:, :T]))[:, position - 1]
    drawn = np.asarray(sample(logits, temperature, jax.random.fold_in(key, position)))
    given = sequence[:, position]
    token = np.where(position < lengths, given, drawn)
    if stop is not None:
      token = np.where(done, stop, token)
      done = done | ((position >= lengths) & (token == stop))
    sequence[:, position] = token
  return sequence


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_generation_equals_the_full_forward(name, temperature):
  model, variables, tokens = _model(name)
  key = jax.random.PRNGKey(7)
  lengths = np.full(3, PROMPT)
  run = jax.jit(lambda v, t, k: generate(model, v, t, PROMPT, temperature, k,
                                         return_logits=True))
  sequence, labels, logits = run(variables, tokens, key)
  expected = _reference(model, variables, tokens, lengths, temperature, key)
  np.testing.assert_array_equal(sequence, expected[:, :T])
  np.testing.assert_array_equal(labels[:, PROMPT - 1:], expected[:, PROMPT:])
  assert np.all(np.asarray(labels)[:, :PROMPT - 1] == -1)
  full = np.asarray(model.apply(variables, sequence))
  # float32 sums in another order: within 1e-5 of the largest logit
  assert np.abs(np.asarray(logits) - full).max() <= 1e-5 * np.abs(full).max()
  if temperature:  # sampled: not simply the argmax everywhere
    assert np.any(np.asarray(sequence)[:, PROMPT:] != np.argmax(full, -1)[:, PROMPT - 1:-1])


def test_per_sequence_prompts_and_stop_tokens():
  model, variables, tokens = _model("llama_gqa_window")
  key = jax.random.PRNGKey(3)
  lengths = np.array([4, 6, 9])
  free, _ = generate(model, variables, tokens, PROMPT, 1.0, key, lengths=lengths)
  stop = int(free[0, 6])  # a token sequence 0 samples at position 6
  sequence, labels = generate(model, variables, tokens, PROMPT, 1.0, key, lengths=lengths,
                              stop_token=stop)
  expected = _reference(model, variables, tokens, lengths, 1.0, key, stop)
  np.testing.assert_array_equal(sequence, expected[:, :T])
  sequence, labels = np.asarray(sequence), np.asarray(labels)
  for i, length in enumerate(lengths):
    np.testing.assert_array_equal(sequence[i, :length], tokens[i, :length])  # its prompt
    assert np.all(labels[i, :length - 1] == -1)
    generated = np.nonzero(expected[i, length:] == stop)[0]
    end = length + generated[0] if len(generated) else T + 1  # where it stopped
    np.testing.assert_array_equal(labels[i, length - 1:end], expected[i, length:end + 1])
    assert np.all(labels[i, end:] == -1) and np.all(sequence[i, end:] == stop)
  assert np.nonzero(sequence[0, PROMPT:] == stop)[0][0] + PROMPT <= 6


def test_the_on_policy_benchmark_runs_small(tmp_path):
  from conftest import load_script

  bench = load_script("experiments", "bench_lm", "run.py")
  row = bench.on_policy(tmp_path, calls=2, batch=8, length=16, prompt=4, vocabulary=20,
                        small=True)
  assert row["on_policy"] > 0 and row["off_policy"] > 0 and row["generated_tokens"] == 12


def test_the_peer_benchmark_runs_small_where_torch_is(tmp_path):
  """experiments/bench_lm/run.py --part peers, tiny, where a Python with torch, transformers
  and trl is at JAXKD_TORCH_PYTHON (the suite itself needs none): the same first loss."""
  import os

  python = os.environ.get("JAXKD_TORCH_PYTHON")
  if not python:
    pytest.skip("JAXKD_TORCH_PYTHON (a Python with torch, transformers and trl) is not set")
  from conftest import load_script

  bench = load_script("experiments", "bench_lm", "run.py")
  row = bench.peers(tmp_path, python, steps=2, warmup=1, batch=8, length=16, vocabulary=32,
                    small=True)
  assert row["jaxkd_first_loss"] == pytest.approx(row["torch_first_loss"], rel=1e-4)
