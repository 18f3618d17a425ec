"""train.loss_chunk: a language model's loss made a chunk of positions at a time gives the
dense loss's value, metrics and gradient (one step's update), for ce and every divergence,
with a teacher online (several, with a padded vocabulary) and from a cached top-k; and
refuses what it cannot compute."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import toy_config

from jaxkd.engine.sharding import shard_batch
from jaxkd.engine.step import make_train_step
from jaxkd.errors import JaxkdError
from jaxkd.models import create_model, hf
from jaxkd.run.assemble import assemble, transfer_set_of
from jaxkd.run.soft_labels import write_soft_labels

V, T = 40, 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """Token data and two Hugging Face teachers (random Llama weights; one with 8 ids of
  vocabulary padding)."""
  root = tmp_path_factory.mktemp("chunked")
  rng = np.random.default_rng(0)
  data = {}
  for split, n in (("train", 32), ("test", 8)):
    sequences = (rng.integers(0, V, (n, 1)) + np.arange(T + 1)) % V
    sequences = np.where(rng.random(sequences.shape) < 0.3, rng.integers(0, V, sequences.shape),
                         sequences)
    labels = sequences[:, 1:].copy()
    labels[:, :3] = -1  # a prompt that counts for nothing
    data[f"x_{split}"], data[f"y_{split}"] = sequences[:, :-1], labels
  np.savez(root / "tokens.npz", **data)
  for name, vocabulary, seed in (("teacher", V, 1), ("padded", V + 8, 2)):
    model = create_model(ml_collections.ConfigDict(
        {"name": "llama", "num_layers": 1, "hidden_size": 32, "intermediate_size": 48,
         "num_heads": 4, "num_kv_heads": 2, "max_len": T, "init_from": ""}), vocabulary)
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, T), jnp.int32))["params"]
    params = jax.tree.map(lambda x: x * 4.0, params)  # sharper than the initialisation
    hf.save_params(params, model, root / name)
  return root


def _config(root, terms, teachers=("teacher",), chunk=0, model="transformer_lm", **distill):
  config = toy_config(num_steps=1)
  config.dataset.update(path=str(root / "tokens.npz"), input_kind="tokens", num_classes=V)
  config.train.update(batch_size=8, loss_chunk=chunk)
  config.model = ({"name": "transformer_lm", "num_layers": 1, "embed_dim": 16, "num_heads": 2,
                   "mlp_dim": 32, "max_len": T, "tie_embeddings": False}
                  if model == "transformer_lm" else
                  {"name": "llama", "num_layers": 1, "hidden_size": 16, "intermediate_size": 24,
                   "num_heads": 2, "max_len": T, "tie_embeddings": True})
  config.optimizer.update(name="sgd", learning_rate=1.0)
  config.distill.terms = terms
  config.distill.teachers = tuple(str(root / t) for t in teachers)
  config.distill.update(distill)
  return config


def _one_step(config):
  run = assemble(config, None)
  step = make_train_step(run.spec, run.mesh, jax.tree.map(lambda x: x.sharding,
                                                          run.teacher_variables))
  state, metrics = step(run.state, run.teacher_variables,
                        shard_batch(run.batches.batch(0), run.mesh))
  return jax.device_get(state.params), jax.device_get(metrics)


def _same(root, terms, **options):
  dense, dense_metrics = _one_step(_config(root, terms, **options))
  chunked, chunked_metrics = _one_step(_config(root, terms, chunk=4, **options))
  assert set(dense_metrics) == set(chunked_metrics)
  for key in dense_metrics:
    np.testing.assert_allclose(chunked_metrics[key], dense_metrics[key], rtol=2e-5, atol=1e-7,
                               err_msg=key)
  for a, b in zip(jax.tree.leaves(dense), jax.tree.leaves(chunked)):
    np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-7)
  assert dense_metrics["grad_norm"] > 1e-3


@pytest.mark.parametrize("terms", [
    {"ce": {"weight": 0.5}, "fkl": {"weight": 1.0, "temperature": 2.0}},
    {"rkl": {"weight": 1.0}, "tv": {"weight": 0.3}},
    {"gjsd": {"weight": 1.0, "beta": 0.3}},
    {"skew_kl": {"weight": 1.0}, "skew_rkl": {"weight": 0.5, "alpha": 0.2}},
])
def test_a_chunked_loss_is_the_dense_loss(setup, terms):
  _same(setup, terms)


def test_several_teachers_a_padded_vocabulary_and_a_tied_llama_student(setup):
  _same(setup, {"fkl": {"weight": 1.0}, "ce": {"weight": 1.0}}, teachers=("teacher", "padded"),
        model="llama")


def test_a_cached_top_k_teacher_chunked_is_the_dense_one(setup, tmp_path):
  config = _config(setup, {"fkl": {"weight": 1.0}})
  cache = write_soft_labels(setup / "teacher", tmp_path / "top8.npz", "float32", top_k=8,
                            batch_size=8, data=transfer_set_of(config))
  _same(setup, {"fkl": {"weight": 1.0}, "gjsd": {"weight": 0.5}}, teachers=(),
        soft_labels=(str(cache),))


def test_what_a_chunked_loss_cannot_compute_is_refused(setup, toy_datasets):
  with pytest.raises(JaxkdError, match=r"train.loss_chunk=5 does not divide the sequence "
                                       r"length 16"):
    assemble(_config(setup, {"fkl": {"weight": 1.0}}, chunk=5), None)
  with pytest.raises(JaxkdError, match=r"terms \['kd'\] are not means over tokens"):
    assemble(_config(setup, {"kd": {"weight": 1.0}}, chunk=4), None)
  config = toy_config(num_steps=1)
  config.train.loss_chunk = 4
  with pytest.raises(JaxkdError, match="chunks a language model's positions"):
    from jaxkd.run import train

    train.train_and_evaluate(config, None, datasets=toy_datasets)


def test_the_memory_benchmark_runs_small_and_chunks_use_less(tmp_path):
  from conftest import load_script

  bench = load_script("experiments", "bench_lm", "run.py")
  rows = bench.memory(tmp_path, [512], chunk=8, batch=4, length=64)
  dense, chunked = rows
  assert chunked["temp_bytes"] < dense["temp_bytes"]
