"""A user's own corpus (dataset.name = 'text') through a real tokenizer: documents split by
name or by seed, packed into windows whose attention and labels never cross a document,
bits per byte from the bytes each token stands for, and a teacher whose vocabulary is
padded past the tokenizer's compared on the shared ids."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import toy_config, write_corpus

from jaxkd.data import load_split, text, tokenizers
from jaxkd.data.arrays import UNLABELED
from jaxkd.engine.sharding import make_mesh
from jaxkd.errors import JaxkdError
from jaxkd.models import create_model, hf
from jaxkd.run import train
from jaxkd.run.saved import load_run

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Eight documents of a few hundred words each (with non-ASCII characters)."""
  return write_corpus(tmp_path_factory.mktemp("corpus"))


def _data_config(corpus, **dataset):
  config = toy_config(num_steps=6, log_every_steps=2, checkpoint_every_steps=6)
  config.dataset.update({"name": "text", "path": str(corpus), "vocab_size": 300, "seq_len": 32,
                         "validation_documents": ("play1",), "test_documents": ("play2",),
                         **dataset})
  config.train.update(batch_size=8, eval_batch_size=16)
  return config


def _llama(**fields):
  return {"name": "llama", "num_layers": 1, "hidden_size": 32, "intermediate_size": 64,
          "num_heads": 4, "num_kv_heads": 2, "head_dim": 8, "max_len": 32, **fields}


def test_documents_are_split_by_name_and_packed_without_crossing(corpus):
  config = _data_config(corpus).dataset
  data = {split: load_split(config, split) for split in ("train", "validation", "test")}
  tokenizer, path = text.tokenizer_of(config, [(p.stem, p.read_text().strip()) for p in
                                               sorted(corpus.glob("*.txt"))
                                               if p.stem not in ("play1", "play2")])
  assert data["train"].num_classes == tokenizer.get_vocab_size() == 300
  assert data["train"].tokenizer == str(path)  # the BPE trained on the training documents
  given = _data_config(corpus, tokenizer=str(path.parent)).dataset  # a user's tokenizer
  np.testing.assert_array_equal(load_split(given, "test").inputs, data["test"].inputs)
  end = tokenizer.token_to_id(tokenizers.END_OF_TEXT)
  # The validation split is play1 alone: its tokens, then the end of text, in windows.
  expected = tokenizer.encode((corpus / "play1.txt").read_text().strip()).ids + [end]
  windows = len(expected[:-1]) // 32
  np.testing.assert_array_equal(data["validation"].inputs.reshape(-1), expected[:windows * 32])
  np.testing.assert_array_equal(data["validation"].labels.reshape(-1), expected[1:windows * 32 + 1])
  # Training windows cross document boundaries; labels there are -1, segments restart.
  train_data = data["train"]
  segments = train_data.extras["segments"]
  crossing = np.nonzero(segments.max(1) > 0)[0]
  assert len(crossing) >= 3
  for row in crossing[:3]:
    tokens, labels, segment = train_data.inputs[row], train_data.labels[row], segments[row]
    boundary = np.nonzero(np.diff(segment))[0]  # the last position of a document
    assert tokens[boundary[0]] == end and np.all(labels[boundary] == UNLABELED)
    inside = np.ones(32, bool)
    inside[boundary] = False
    assert np.all(labels[:-1][inside[:-1]] >= 0)  # (the last label's is the next window's)


def test_a_model_attends_only_inside_its_document(corpus):
  """The logits of the second document of a window do not change when the first one's
  tokens do; without segments they would."""
  config = _data_config(corpus)
  data = load_split(config.dataset, "train")
  row = int(np.nonzero(data.extras["segments"].max(1) > 0)[0][0])
  tokens, segments = data.inputs[row:row + 1], data.extras["segments"][row:row + 1]
  cut = int(np.argmax(segments[0] > 0))
  changed = tokens.copy()
  changed[0, :cut] = (changed[0, :cut] + 7) % 300
  for name, fields in (("llama", _llama()), ("gpt2", {"name": "gpt2", "num_layers": 1,
                                                      "hidden_size": 32, "num_heads": 4,
                                                      "max_len": 32})):
    model = create_model(ml_collections.ConfigDict(fields), 300)
    variables = model.init(jax.random.PRNGKey(0), jnp.asarray(tokens))
    run = lambda t, s: np.asarray(model.apply(variables, jnp.asarray(t), segments=s))
    np.testing.assert_allclose(run(tokens, segments)[0, cut:], run(changed, segments)[0, cut:],
                               rtol=1e-6, atol=1e-6, err_msg=name)
    assert np.abs(run(tokens, None)[0, cut:] - run(changed, None)[0, cut:]).max() > 1e-3, name


def test_token_bytes_add_up_to_the_text_s_utf8_bytes(corpus):
  config = _data_config(corpus).dataset
  tokenizer, _ = text.tokenizer_of(config, [("all", (corpus / "play0.txt").read_text())])
  sizes = tokenizers.token_bytes(tokenizer)
  for file in sorted(corpus.glob("*.txt"))[:3]:
    content = file.read_text().strip()
    ids = tokenizer.encode(content).ids
    assert sizes[ids].sum() == len(content.encode("utf-8")), file.name
  assert sizes[tokenizer.token_to_id(tokenizers.END_OF_TEXT)] == 0


def test_a_run_reports_bits_per_byte_of_its_held_out_text(corpus, tmp_path):
  config = _data_config(corpus)
  config.model = _llama()
  result = train.train_and_evaluate(config, tmp_path / "run")
  assert (tmp_path / "run" / "tokenizer.json").is_file()  # kept beside the run
  # bits per byte by hand: the summed cross-entropy of the counted labels (from the model's
  # logits here) over the bytes of their text (token_bytes, checked against UTF-8 above).
  run = load_run(tmp_path / "run", make_mesh(jax.devices()[:1]))
  data = load_split(config.dataset, "test")
  tokenizer = tokenizers.load(tmp_path / "run" / "tokenizer.json")
  logits = run.model.apply(run.variables, jnp.asarray(data.inputs),
                           segments=jnp.asarray(data.extras["segments"]))
  counted = data.labels >= 0
  losses = np.asarray(optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.maximum(jnp.asarray(data.labels), 0)))[counted]
  text_bytes = tokenizers.token_bytes(tokenizer)[data.labels[counted]].sum()
  expected = losses.sum() / math.log(2) / text_bytes
  assert result["test_bits_per_byte"] == pytest.approx(expected, rel=1e-4)
  assert result["test_perplexity"] == pytest.approx(math.exp(losses.mean()), rel=1e-4)
  line = train.summary_line(result, tmp_path / "run")
  assert line.startswith(f"final test bits per byte {expected:.4f} (perplexity") and (
      "best validation bits per byte" in line), line


def test_held_out_documents_drawn_by_seed_and_clear_errors(corpus, tmp_path):
  config = _data_config(corpus, validation_documents=(), test_documents=(),
                        validation_count=2, test_count=1, split_seed=3).dataset
  splits = text.split_documents(config)
  assert [len(splits[s]) for s in ("train", "validation", "test")] == [5, 2, 1]
  assert text.split_documents(config) == splits  # the same seed, the same documents
  config.split_seed = 4
  assert text.split_documents(config) != splits
  for change, message in ((dict(validation_documents=("play9",)), r"names \['play9'\], not among"),
                          (dict(path=str(tmp_path / "none")), "does not exist"),
                          (dict(path=str(tmp_path)), "holds no .txt file"),
                          (dict(tokenizer=str(tmp_path)), "no tokenizer at"),
                          (dict(validation_count=6, test_count=2), "has no train document")):
    broken = _data_config(corpus, validation_documents=(), test_documents=()).dataset
    broken.update(change)
    with pytest.raises(JaxkdError, match=message):
      load_split(broken, "train")


def test_a_teacher_with_a_padded_vocabulary_is_compared_on_the_shared_ids(corpus, tmp_path,
                                                                           capsys):
  """A Hugging Face teacher with 300 + 20 output ids distils the same student as the same
  teacher cut to the tokenizer's 300, and says so."""
  tokens = jnp.zeros((1, 8), jnp.int32)
  padded_model = create_model(ml_collections.ConfigDict(_llama(tie_embeddings=False)), 320)
  params = padded_model.init(jax.random.PRNGKey(1), tokens)["params"]
  cut = dict(params, embed_tokens={"embedding": params["embed_tokens"]["embedding"][:300]},
             lm_head={"kernel": params["lm_head"]["kernel"][:, :300]})
  hf.save_params(params, padded_model, tmp_path / "padded")
  hf.save_params(cut, create_model(ml_collections.ConfigDict(_llama(tie_embeddings=False)), 300),
                 tmp_path / "cut")
  assert json.loads((tmp_path / "padded" / "config.json").read_text())["vocab_size"] == 320
  students = {}
  for name in ("padded", "cut"):
    student = _data_config(corpus)
    student.model = _llama(hidden_size=16, head_dim=4)
    student.distill.terms = {"fkl": {"weight": 1.0}}
    student.distill.teachers = (str(tmp_path / name),)
    train.train_and_evaluate(student, tmp_path / f"student_{name}")
    students[name] = load_run(tmp_path / f"student_{name}", make_mesh(jax.devices()[:1]))
    if name == "padded":
      assert "has 320 output ids, the tokenizer 300: compared on the tokenizer's ids" in (
          capsys.readouterr().out)
  for a, b in zip(jax.tree.leaves(students["padded"].variables),
                  jax.tree.leaves(students["cut"].variables)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_teacher_with_another_tokenizer_is_refused_before_any_work(corpus, tmp_path):
  from jaxkd.run.assemble import assemble

  model = create_model(ml_collections.ConfigDict(_llama()), 300)
  hf.save_params(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"],
                 model, tmp_path / "teacher")
  config = _data_config(corpus)
  config.model = _llama(hidden_size=16, head_dim=4)
  config.distill.terms = {"fkl": {"weight": 1.0}}
  config.distill.teachers = (str(tmp_path / "teacher"),)
  own = load_split(config.dataset, "train").tokenizer
  (tmp_path / "teacher" / "tokenizer.json").write_text(pathlib.Path(own).read_text())
  assemble(config, None)  # the data's own tokenizer: fine
  other, _ = tokenizers.train_bpe(["an entirely different corpus of other words"] * 20, 300)
  (tmp_path / "teacher" / "tokenizer.json").write_text(other.to_str())
  with pytest.raises(JaxkdError, match=r"has another tokenizer .* its ids stand for other "
                                       r"tokens. Set dataset.tokenizer="):
    assemble(config, tmp_path / "student")
  assert not (tmp_path / "student").exists()
