"""Language-model distillation: the Transformer, token data and metrics, cached top-k
teachers (equal to the online teacher when k = V), on-policy generation, a teacher sharded
over 8 fake devices, and the Shakespeare corpus."""

import copy
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_script, toy_config
from hlo_stats import collective_bytes

from jaxkd.engine import sharding
from jaxkd.run import train
from jaxkd.run.assemble import assemble, transfer_set_of
from jaxkd.data import load_split
from jaxkd.engine.evaluation import evaluate, make_eval_step
from jaxkd.run.metrics import read_metrics
from jaxkd.models.transformer import TransformerLM, param_logical_axes
from jaxkd.run.saved import load_run
from jaxkd.engine.sharding import make_mesh, shard_batch
from jaxkd.run.soft_labels import write_soft_labels
from jaxkd.engine.step import make_train_step, prepare

V, T = 12, 16


def _token_npz(path, seed=0):
  """Sequences that count up mod V from a random start, with one random token in four:
  next-token prediction a small model learns, with uncertainty left for the teacher."""
  rng = np.random.default_rng(seed)
  splits = {}
  for split, n in (("train", 256), ("test", 64)):
    sequences = (rng.integers(0, V, (n, 1)) + np.arange(T + 1)) % V
    noise = rng.random(sequences.shape) < 0.25
    sequences = np.where(noise, rng.integers(0, V, sequences.shape), sequences)
    splits[f"x_{split}"], splits[f"y_{split}"] = sequences[:, :-1], sequences[:, 1:]
  np.savez(path, **splits)
  return str(path)


def _lm_config(path, width=32, layers=2, steps=30, **model):
  config = toy_config(num_steps=steps, log_every_steps=1, checkpoint_every_steps=steps)
  config.dataset.update(path=path, input_kind="tokens", num_classes=V)
  config.model = {"name": "transformer_lm", "num_layers": layers, "embed_dim": width,
                  "num_heads": 2, "mlp_dim": 2 * width, "max_len": T, **model}
  config.optimizer.update(name="adam", learning_rate=3e-3)
  return config


@pytest.fixture(scope="module")
def lm_teacher(tmp_path_factory):
  root = tmp_path_factory.mktemp("lm")
  path = _token_npz(root / "tokens.npz")
  train.train_and_evaluate(_lm_config(path, width=64, steps=60), root / "teacher")
  return root, path


def _student(root, path, **distill):
  config = _lm_config(path, width=16, layers=1, steps=3)
  config.distill.terms = {"fkl": {"weight": 1.0}}
  config.distill.teachers = (str(root / "teacher"),)
  config.distill.update(distill)
  return config


@pytest.mark.parametrize("options", [dict(), dict(positions="learned", norm="layernorm",
                                                  tie_embeddings=False)])
def test_the_transformer_is_causal_and_names_every_parameter_s_axes(options):
  model = TransformerLM(num_classes=V, num_layers=2, embed_dim=16, num_heads=2, mlp_dim=32,
                        max_len=T, **options)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, V, (2, T)))
  variables = model.init(jax.random.PRNGKey(0), tokens)
  logits = model.apply(variables, tokens)
  assert logits.shape == (2, T, V)
  changed = model.apply(variables, tokens.at[:, 9:].set((tokens[:, 9:] + 1) % V))
  np.testing.assert_allclose(changed[:, :9], logits[:, :9], atol=1e-6)  # The past only.
  assert not np.allclose(changed[:, 9:], logits[:, 9:])
  axes = param_logical_axes(variables["params"])
  for (path, x), names in zip(jax.tree_util.tree_leaves_with_path(variables["params"]),
                              jax.tree.leaves(axes, is_leaf=lambda a: isinstance(a, tuple))):
    assert len(names) == x.ndim, path


def test_token_metrics_are_means_over_the_tokens_that_count(lm_teacher):
  root, path = lm_teacher
  run = load_run(root / "teacher", make_mesh())
  data = load_split(run.config.dataset, "test")
  data.labels[:5, :4] = -1  # Masked positions (a prompt).
  got = evaluate(make_eval_step(run.model, run.preprocess(), make_mesh(), run.input_kind),
                 run.variables, data, 64, make_mesh())
  logits = np.asarray(run.model.apply(run.variables, jnp.asarray(data.inputs)), np.float64)
  log_p = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)
                          ) - logits.max(-1, keepdims=True)
  keep = data.labels >= 0
  nll = -np.take_along_axis(log_p, np.maximum(data.labels, 0)[..., None], -1)[..., 0][keep]
  assert got["count"] == keep.sum()
  np.testing.assert_allclose(got["loss"], nll.mean(), rtol=1e-5)
  np.testing.assert_allclose(got["perplexity"], math.exp(nll.mean()), rtol=1e-5)
  np.testing.assert_allclose(got["bits_per_token"], nll.mean() / math.log(2), rtol=1e-5)


@pytest.mark.parametrize("term", ["fkl", "rkl", "gjsd", "tv"])
def test_a_cached_teacher_with_k_equal_v_gives_the_online_loss(lm_teacher, tmp_path, term):
  root, path = lm_teacher
  online = _student(root, path)
  online.distill.terms = {term: {"weight": 1.0}}
  cache = write_soft_labels(root / "teacher", tmp_path / "cache.npz", "float32", top_k=0,
                            data=transfer_set_of(online))
  cached = copy.deepcopy(online)
  cached.distill.teachers, cached.distill.soft_labels = (), (str(cache),)
  losses = []
  for name, config in (("online", online), ("cached", cached)):
    train.train_and_evaluate(config, tmp_path / name)
    losses.append([r["loss"] for r in read_metrics(tmp_path / name) if r["split"] == "train"])
  assert len(losses[0]) == 3
  np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_a_top_k_cache_is_float16_and_trains(lm_teacher, tmp_path):
  root, path = lm_teacher
  config = _student(root, path)
  cache = write_soft_labels(root / "teacher", tmp_path / "cache.npz", "float16", top_k=4,
                            data=transfer_set_of(config))
  with np.load(cache) as stored:
    assert stored["token_top_k_logprobs"].shape == (256, T, 4)
    assert stored["token_top_k_logprobs"].dtype == np.float16
    assert stored["token_top_k_ids"].dtype == np.uint8
  config.distill.teachers, config.distill.soft_labels = (), (str(cache),)
  result = train.train_and_evaluate(config, tmp_path / "student")
  assert np.isfinite(result["test_loss"])


def test_on_policy_batches_are_the_student_s_greedy_continuations(lm_teacher):
  root, path = lm_teacher
  config = _student(root, path)
  config.distill.on_policy.update(fraction=1.0, prompt_len=5, temperature=1e-4)
  run = assemble(config, root / "on_policy")
  batch = shard_batch(run.batches.batch(0), run.mesh)
  variables = run.state.variables()
  prepared = prepare(run.spec, run.state.rng, run.state.step, run.teacher_variables, batch,
                     student_variables=variables)
  inputs, labels = np.asarray(prepared.inputs), np.asarray(prepared.labels)
  np.testing.assert_array_equal(inputs[:, :5], np.asarray(batch["tokens"])[:, :5])
  greedy = np.argmax(np.asarray(run.spec.model.apply(variables, jnp.asarray(inputs))), -1)
  np.testing.assert_array_equal(inputs[:, 5:], greedy[:, 4:-1])  # Each token the argmax.
  np.testing.assert_array_equal(labels[:, 4:], greedy[:, 4:])
  assert np.all(labels[:, :4] == -1)
  teacher = run.spec.teachers[0].apply(run.teacher_variables[0], jnp.asarray(inputs))
  np.testing.assert_allclose(prepared.teacher_logits[0], teacher, rtol=1e-5, atol=1e-5)


def test_a_teacher_sharded_over_8_devices_trains_the_same_student(lm_teacher, tmp_path,
                                                                  monkeypatch):
  root, path = lm_teacher
  monkeypatch.setattr(sharding, "SPLIT_MIN_ELEMENTS", 512)  # The toy teacher is small.
  results = {}
  for shard in (False, True):
    config = _student(root, path, teacher_layout="sharded" if shard else "replicated")
    run = assemble(config, tmp_path / str(shard))
    if shard:
      params = run.teacher_variables[0]["params"]
      for name in ("mlp_in", "mlp_out"):  # [64, 128] and [128, 64]: 1/8 on each device.
        kernel = params["block0"][name]["kernel"]
        assert not kernel.sharding.is_fully_replicated, name
        assert kernel.addressable_shards[0].data.size == kernel.size // 8, name
      assert not params["embed"]["embedding"].sharding.is_fully_replicated  # [12, 64]
    step = make_train_step(run.spec, run.mesh, jax.tree.map(lambda x: x.sharding,
                                                            run.teacher_variables))
    state = run.state
    text = step.lower(state, run.teacher_variables, shard_batch(run.batches.batch(0), run.mesh)
                      ).compile().as_text()
    print(f"\nteacher sharded={shard}: collective bytes {collective_bytes(text)}")
    for s in range(3):
      state, _ = step(state, run.teacher_variables, shard_batch(run.batches.batch(s), run.mesh))
    results[shard] = jax.device_get(state.params)
    if shard:
      assert "all-gather" in collective_bytes(text)  # The teacher, gathered layer by layer.
  for a, b in zip(jax.tree.leaves(results[False]), jax.tree.leaves(results[True])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_shakespeare_is_split_by_play_into_character_windows():
  from jaxkd.data import shakespeare

  texts = {split: shakespeare.split_text(split) for split in ("train", "validation", "test")}
  assert texts["validation"].startswith("MACBETH") and "HAMLET" in texts["test"][:200]
  assert "Enter three Witches" not in texts["train"] and "To be, or not to be" not in texts["train"]
  tokens, labels = shakespeare.load("validation", seq_len=64)
  assert tokens.shape == labels.shape == ((len(texts["validation"]) - 1) // 64, 64)
  np.testing.assert_array_equal(tokens[:, 1:], labels[:, :-1])
  np.testing.assert_array_equal(tokens[1:, 0], labels[:-1, -1])  # Windows continue.
  assert shakespeare.decode(tokens[0, :7]) == "MACBETH" and len(shakespeare.VOCABULARY) == 84


def test_a_tiny_teacher_learns_shakespeare(tmp_path):
  from jaxkd.config import load_config_file

  config = load_config_file("configs/shakespeare/teacher.py")
  config.dataset.update(seq_len=32, max_chars=20000)
  config.model.update(num_layers=1, embed_dim=32, num_heads=2, mlp_dim=64, max_len=32)
  config.train.update(num_steps=20, eval_every_steps=20, checkpoint_every_steps=20,
                      eval_batch_size=64)
  result = train.train_and_evaluate(config, tmp_path)
  assert result["test_bits_per_token"] < math.log2(84)  # Better than uniform characters.


def test_hidden_states_of_other_widths_match_through_a_linear_projection_per_position():
  """fitnet on [B, T, C] hidden states: mean((H_s W + b - H_t)^2) (TinyBERT's hidden-state
  loss), W one matrix for every position."""
  from jaxkd.distill import TERMS, TermInputs

  rng = np.random.default_rng(0)
  student, teacher = rng.normal(size=(2, T, 16)), rng.normal(size=(2, T, 64))
  student, teacher = jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32)
  method = TERMS.get("fitnet")()
  method.check_shapes((T, 16), (T, 64))
  zeros = jnp.zeros((2, T, V))
  inputs = TermInputs(zeros, zeros[None], jnp.zeros((2, T), jnp.int32), zeros,
                      jnp.zeros((), jnp.int32), student=student, teacher=teacher)
  variables = method.init(jax.random.PRNGKey(0), inputs)
  dense = variables["params"]["dense"]
  assert dense["kernel"].shape == (16, 64) and set(variables) == {"params"}  # No BatchNorm.
  projected = np.asarray(student) @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"])
  np.testing.assert_allclose(method.apply(variables, inputs),
                             np.mean((projected - np.asarray(teacher)) ** 2), rtol=1e-5)


def test_bfloat16_compute_for_teacher_and_student(lm_teacher, tmp_path):
  root, path = lm_teacher
  config = _student(root, path)
  config.precision.update(student="bfloat16", teacher="bfloat16")
  config.distill.terms = {"ce": {"weight": 0.5}, "gjsd": {"weight": 0.5, "beta": 0.5}}
  train.train_and_evaluate(config, tmp_path)
  losses = [r["loss"] for r in read_metrics(tmp_path) if r["split"] == "train"]
  assert len(losses) == 3 and np.all(np.isfinite(losses))
  reference = _student(root, path)  # The same in float32: close, not equal.
  reference.distill.terms = config.distill.terms
  train.train_and_evaluate(reference, tmp_path / "float32")
  float32 = [r["loss"] for r in read_metrics(tmp_path / "float32") if r["split"] == "train"]
  np.testing.assert_allclose(losses, float32, rtol=0.05)


def test_the_shakespeare_experiment_runs_small(tmp_path):
  """experiments/lm_shakespeare/run.py end to end, tiny (its --smoke): every arm over two
  seeds as populations, the cache, the speed measurement, the table."""
  import argparse
  import json

  module = load_script("experiments", "lm_shakespeare", "run.py")
  module.main_with(argparse.Namespace(seeds=2, workdir=tmp_path, teacher_steps=4,
                                      student_steps=2, no_readme=True, smoke=True))
  table = json.loads((tmp_path / "table.json").read_text())
  assert set(table["rows"]) == set(module.LABELS)
  for row in table["rows"].values():
    assert len(row["validation"]) == 2 and np.all(np.isfinite(row["test"]))
  assert table["speed"]["cached"] > 0 and table["speed"]["online"] > 0


def test_a_teacher_laid_out_by_logical_axes_trains_the_same_student(lm_teacher, tmp_path):
  """distill.teacher_layout='logical': tensor parallelism from the Transformer's logical axis
  names (sharding.TENSOR_RULES: heads, MLP units and vocabulary split over the devices) on a
  2-device mesh, read from disk into that layout; the student is the replicated run's."""
  root, path = lm_teacher
  mesh = make_mesh(jax.devices()[:2])
  results = []
  for layout in ("replicated", "logical"):
    run = assemble(_student(root, path, teacher_layout=layout), tmp_path / layout, mesh=mesh)
    params = run.teacher_variables[0]["params"]
    if layout == "logical":
      assert params["block0"]["query"]["kernel"].addressable_shards[0].data.shape == (64, 1, 32)
      assert params["block0"]["mlp_in"]["kernel"].addressable_shards[0].data.shape == (64, 64)
      assert params["embed"]["embedding"].addressable_shards[0].data.shape == (6, 64)
      assert params["block0"]["attention_norm"]["scale"].sharding.is_fully_replicated
    else:
      assert params["block0"]["query"]["kernel"].sharding.is_fully_replicated
    step = make_train_step(run.spec, mesh, jax.tree.map(lambda x: x.sharding,
                                                        run.teacher_variables))
    state = run.state
    for s in range(3):
      state, _ = step(state, run.teacher_variables, shard_batch(run.batches.batch(s), mesh))
    results.append(jax.device_get(state.params))
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)