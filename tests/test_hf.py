"""Hugging Face checkpoints in and out: every architecture jaxkd imports gives transformers'
logits and hidden states on the same weights (fixtures of tests/reference/
make_hf_fixtures.py), with padding; an exported student reads back with the same logits."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.engine.features import apply_with_features
from jaxkd.engine.sharding import make_mesh
from jaxkd.errors import JaxkdError
from jaxkd.models import hf
from jaxkd.run.saved import load_run

FIXTURES = pathlib.Path(__file__).resolve().parent / "reference" / "fixtures" / "hf"
ARCHITECTURES = ("gpt2", "llama", "llama3", "mistral", "qwen2")


def _paths(model) -> tuple[list[str], str]:
  blocks = "h" if type(model).__name__ == "GPT2" else "layers"
  return [f"{blocks}_{i}" for i in range(model.num_layers)], (
      "ln_f" if blocks == "h" else "norm")


def outputs(name: str):
  """(ours: logits, hidden states at the feature paths; theirs; the real-token mask)."""
  expected = dict(np.load(FIXTURES / name / "expected.npz"))
  run = load_run(FIXTURES / name, make_mesh(jax.devices()[:1]))
  blocks, final = _paths(run.model)
  mask = jnp.asarray(expected["mask"])
  logits, features, _ = apply_with_features(
      run.model, run.variables, jnp.asarray(expected["tokens"], jnp.int32), blocks + [final],
      mask=mask)
  ours = {"logits": np.asarray(logits)}
  theirs = {"logits": expected["logits"]}
  # transformers' hidden states: the embeddings, then each block's output, the last one
  # after the final norm.
  for i, path in enumerate(blocks[:-1]):
    ours[path], theirs[path] = np.asarray(features[path]), expected[f"hidden_{i + 1}"]
  ours[final], theirs[final] = np.asarray(features[final]), expected[f"hidden_{len(blocks)}"]
  return ours, theirs, expected["mask"] > 0


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_logits_and_hidden_states_equal_transformers(name):
  ours, theirs, real = outputs(name)
  for key in ours:
    scale = np.abs(theirs[key][real]).max()
    difference = np.abs(ours[key][real] - theirs[key][real]).max()
    assert difference <= 1e-4 * scale, (key, difference, scale)


def test_an_unsupported_architecture_is_refused_naming_the_supported_ones(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "falcon"}))
  with pytest.raises(JaxkdError, match=r"model_type 'falcon' is not supported: jaxkd imports "
                                       r"\['gpt2', 'llama', 'mistral', 'qwen2'\]"):
    hf.model_config(hf.read_config(tmp_path))


def _rewrite(source: pathlib.Path, out: pathlib.Path, dtype=None, shards: int = 1) -> None:
  """The fixture's checkpoint again, as `dtype` and/or split over `shards` files with a
  shard index (transformers' layout for large models)."""
  from safetensors.numpy import load_file, save_file

  out.mkdir()
  (out / "config.json").write_text((source / "config.json").read_text())
  tensors = load_file(str(source / "model.safetensors"))
  names = sorted(tensors)
  weight_map = {}
  for i in range(shards):
    file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors" if shards > 1 else "model.safetensors"
    part = {n: tensors[n] if dtype is None else tensors[n].astype(dtype)
            for n in names[i::shards]}
    save_file(part, str(out / file))
    weight_map.update({n: file for n in part})
  if shards > 1:
    (out / hf.INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_a_sharded_checkpoint_reads_as_the_single_file(tmp_path):
  _rewrite(FIXTURES / "qwen2", tmp_path / "sharded", shards=3)
  assert len(list((tmp_path / "sharded").glob("*.safetensors"))) == 3
  mesh = make_mesh(jax.devices()[:1])
  whole, split = load_run(FIXTURES / "qwen2", mesh), load_run(tmp_path / "sharded", mesh)
  for a, b in zip(jax.tree.leaves(whole.variables), jax.tree.leaves(split.variables)):
    np.testing.assert_array_equal(a, b)


def test_the_checkpoint_s_dtype_is_kept(tmp_path):
  _rewrite(FIXTURES / "llama", tmp_path / "half", dtype=np.float16)
  run = load_run(tmp_path / "half", make_mesh(jax.devices()[:1]))
  assert {x.dtype for x in jax.tree.leaves(run.variables)} == {jnp.dtype(jnp.float16)}
  expected = dict(np.load(FIXTURES / "llama" / "expected.npz"))
  logits = run.model.apply(jax.tree.map(lambda x: x.astype(jnp.float32), run.variables),
                           jnp.asarray(expected["tokens"], jnp.int32),
                           mask=jnp.asarray(expected["mask"]))
  real = expected["mask"] > 0  # float16 weights: close to the float32 model's logits
  np.testing.assert_allclose(np.asarray(logits)[real], expected["logits"][real], atol=5e-3)
