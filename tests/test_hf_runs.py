"""Hugging Face directories in runs: a model started from one (model.name 'hf',
model.init_from) and exported back as one that reads back with the same logits and
transformers' own tensor names; a teacher read sharded over 8 fake devices, one device's
slice per read, distilling the same student as the replicated teacher."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_script, toy_config
from safetensors import safe_open

from jaxkd.engine import sharding
from jaxkd.engine.sharding import make_mesh
from jaxkd.errors import JaxkdError
from jaxkd.jobs.export import HF_DIR, export
from jaxkd.models import hf
from jaxkd.run import train
from jaxkd.run.saved import load_run

FIXTURES = pathlib.Path(__file__).resolve().parent / "reference" / "fixtures" / "hf"
V, T = 128, 16  # the fixtures' vocabulary


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
  rng = np.random.default_rng(0)
  splits = {}
  for split, n in (("train", 64), ("test", 16)):
    sequences = (rng.integers(0, V, (n, 1)) + np.arange(T + 1)) % V
    splits[f"x_{split}"], splits[f"y_{split}"] = sequences[:, :-1], sequences[:, 1:]
  path = tmp_path_factory.mktemp("tokens") / "tokens.npz"
  np.savez(path, **splits)
  return str(path)


def _config(tokens, steps=2, **model):
  config = toy_config(num_steps=steps, log_every_steps=1, checkpoint_every_steps=steps)
  config.dataset.update(path=tokens, input_kind="tokens", num_classes=V)
  config.train.update(batch_size=16, eval_batch_size=16)
  config.optimizer.update(name="adam", learning_rate=1e-3)
  config.model = model
  return config


def _tensors(path: pathlib.Path) -> dict[str, tuple]:
  with safe_open(str(path / "model.safetensors"), framework="numpy") as f:
    return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}


@pytest.mark.parametrize("name", ["gpt2", "qwen2", "llama3"])
def test_a_student_from_a_checkpoint_exports_as_one_with_the_same_logits(name, tokens,
                                                                         tmp_path):
  fixture = FIXTURES / name
  config = _config(tokens, name="hf", path=str(fixture), init_from=str(fixture))
  train.train_and_evaluate(config, tmp_path / "run")
  info = export(tmp_path / "run", tmp_path / "export", latency_repeats=1, latency_batch_size=2)
  out = tmp_path / "export" / HF_DIR
  assert info["hf"] == HF_DIR
  # transformers' own names, shapes and architecture: those of the directory it wrote.
  assert _tensors(out) == _tensors(fixture)
  theirs, ours = (json.loads((d / "config.json").read_text()) for d in (fixture, out))
  assert ours["architectures"] == theirs["architectures"]
  # Trained away from the fixture, and read back with the run's logits.
  mesh = make_mesh(jax.devices()[:1])
  trained, back, start = (load_run(d, mesh) for d in (tmp_path / "run", out, fixture))
  batch = jnp.asarray(np.load(tokens)["x_test"][:4], jnp.int32)
  logits = [np.asarray(r.model.apply(r.variables, batch)) for r in (trained, back, start)]
  np.testing.assert_allclose(logits[1], logits[0], rtol=1e-6, atol=1e-6)
  assert np.abs(logits[0] - logits[2]).max() > 1e-4  # it did train


def test_model_hf_needs_a_hugging_face_directory(tokens, tmp_path):
  config = _config(tokens, name="hf", path=str(tmp_path))
  with pytest.raises(JaxkdError, match="model.name='hf' needs model.path, a Hugging Face"):
    train.train_and_evaluate(config, tmp_path / "run")


def test_a_teacher_read_sharded_over_8_devices_distils_the_same_student(tokens, tmp_path,
                                                                         monkeypatch):
  """Each array the layout splits is read as 8 slices of 1/8, one per device (the hook sees
  every read: its tensor name and the shape of the block read); none is read whole."""
  assert jax.device_count() == 8
  monkeypatch.setattr(sharding, "SPLIT_MIN_ELEMENTS", 512)  # the fixture's arrays are small
  reads: dict[str, list] = {}
  load = hf.load_params

  def recorded(*args, **kwargs):
    kwargs["on_read"] = lambda name, shape: reads.setdefault(name, []).append(shape)
    return load(*args, **kwargs)

  monkeypatch.setattr(hf, "load_params", recorded)
  shapes = _tensors(FIXTURES / "llama")
  students = {}
  for layout in ("replicated", "sharded"):
    reads.clear()
    config = _config(tokens, steps=3, name="llama", num_layers=1, hidden_size=16,
                     intermediate_size=32, num_heads=2, num_kv_heads=1, head_dim=8, max_len=T)
    config.distill.terms = {"fkl": {"weight": 1.0}}
    config.distill.teachers = (str(FIXTURES / "llama"),)
    config.distill.teacher_layout = layout
    train.train_and_evaluate(config, tmp_path / layout)
    students[layout] = load_run(tmp_path / layout, make_mesh(jax.devices()[:1])).variables
    assert set(reads) == set(shapes)
    if layout == "sharded":
      split = {n for n, blocks in reads.items() if blocks[0] != shapes[n]}
      # Every matrix of 512 values or more: the projections, the MLP, embedding, output.
      assert split == {n for n, s in shapes.items() if np.prod(s) >= 512}, split
      for name in split:
        assert len(reads[name]) == 8, name
        assert all(np.prod(b) == np.prod(shapes[name]) // 8 for b in reads[name]), name
  for a, b in zip(jax.tree.leaves(students["replicated"]), jax.tree.leaves(students["sharded"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_pretrained_experiment_runs_small(tmp_path):
  """experiments/lm_pretrained/run.py end to end, tiny (its --smoke): teacher, export and
  re-import, cache, every arm over two seeds as populations, the best student exported;
  then experiments/cross_tokenizer/run.py on its teacher."""
  import argparse

  module = load_script("experiments", "lm_pretrained", "run.py")
  module.main_with(argparse.Namespace(seeds=2, workdir=tmp_path, teacher_steps=4,
                                      student_steps=2, no_readme=True, smoke=True))
  table = json.loads((tmp_path / "table.json").read_text())
  assert set(table["rows"]) == set(module.LABELS)
  for row in table["rows"].values():
    assert len(row["validation"]) == 2 and np.all(np.isfinite(row["test"]))
  for name in ("config.json", "model.safetensors", "tokenizer.json", "jaxkd_logits.npz"):
    assert (tmp_path / "best_export" / HF_DIR / name).is_file(), name
  assert (tmp_path / "teacher_export" / HF_DIR / "tokenizer.json").is_file()
  # experiments/cross_tokenizer on this teacher: students of another tokenizer; the
  # reference arm (the teacher's tokenizer, forward KL) is the fkl arm above, reused.
  cross = load_script("experiments", "cross_tokenizer", "run.py")
  cross.main_with(argparse.Namespace(seeds=2, workdir=tmp_path / "cross", pretrained=tmp_path,
                                     student_steps=2, no_readme=True, smoke=True))
  table = json.loads((tmp_path / "cross" / "table.json").read_text())
  assert set(table["rows"]) == set(cross.LABELS) and table["rows"]["reference"]["reused"]
  assert all(np.all(np.isfinite(row["test"])) for row in table["rows"].values())
  assert 0.5 < table["alignment"]["aligned"] <= 1
