"""Universal logit distillation across tokenizers: the value and gradient of TRL's GOLD
ULDLoss (fixtures of tests/reference/make_gold_fixtures.py) for every setting, the hybrid's
unmatched part by hand, and a student distilled from a teacher of another tokenizer end to
end, online, on-policy and from a cache (the spans themselves: tests/test_alignment.py)."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byte_bpe import END, STUDENT_MERGES, TEACHER_MERGES, TEXT, byte_bpe, named_spans
from jaxkd.data import alignment
from jaxkd.distill import TermInputs
from jaxkd.distill.uld import ULD
from jaxkd.errors import JaxkdError

GOLD = pathlib.Path(__file__).resolve().parent / "reference" / "fixtures" / "gold"
OPTIONS = {  # GOLD's settings (make_gold_fixtures.SETTINGS) as uld's options
    "positions": dict(alignment="positions", merge="observed"),
    "positions_hybrid": dict(alignment="positions", merge="observed", hybrid=True),
    "observed": dict(merge="observed"),
    "bayesian": dict(merge="bayesian"),
    "hybrid_adaptive": dict(merge="bayesian", hybrid=True),
    "hybrid_fixed_beta0": dict(merge="observed", hybrid=True, matched_weight=0.3, beta=0.0),
    "temperatures": dict(merge="bayesian", student_temperature=2.0, teacher_temperature=0.5),
}


def _ours(arrays: dict, side: str, positional: bool):
  """One side of GOLD's inputs in jaxkd's layout: for each sequence, positions 0..n of the
  logits from the one before its first completion token (GOLD's bayesian slice, plus one
  for its observed slice), tokens, next-token labels (-1 past the completion; its end of
  text skipped, as GOLD's default) and the byte ends of the predicted tokens."""
  ids, labels, offsets = (arrays[f"{side}_{k}"] for k in ("ids", "labels", "offsets"))
  rows = []
  for i in range(len(ids)):
    answer = np.nonzero(labels[i] != -100)[0]
    start, size = answer[0], len(answer) - 1  # without the end of text
    window = np.arange(start - 1, start + size)
    rows.append(dict(positions=window, tokens=ids[i, window],
                     labels=np.append(ids[i, start:start + size], -1),
                     ends=offsets[i, start:start + size, 1]))
  width = max(len(r["positions"]) for r in rows)
  pad = lambda x, value: np.pad(x, (0, width - len(x)), constant_values=value)
  return rows, {"tokens": np.stack([pad(r["tokens"], 0) for r in rows]),
                "labels": np.stack([pad(r["labels"], -1) for r in rows])}


def _spans(student_rows, teacher_rows):
  width_s = max(len(r["positions"]) for r in student_rows)
  width_t = max(len(r["positions"]) for r in teacher_rows)
  spans_s, spans_t = np.full((len(student_rows), width_s), -1), np.full(
      (len(student_rows), width_t), -1)
  for i, (s, t) in enumerate(zip(student_rows, teacher_rows)):
    a, b = alignment.spans(s["ends"], t["ends"], same_start=True)
    spans_s[i, :len(a)], spans_t[i, :len(b)] = a, b
  return spans_s, spans_t


@pytest.mark.parametrize("setting", sorted(OPTIONS))
def test_uld_equals_trl_gold(setting):
  arrays = dict(np.load(GOLD / "uld.npz"))
  meta = json.loads((GOLD / "uld.json").read_text())
  student_rows, student = _ours(arrays, "student", False)
  teacher_rows, teacher = _ours(arrays, "teacher", False)
  spans_s, spans_t = _spans(student_rows, teacher_rows)
  gather = lambda logits, rows, width: np.stack([
      np.pad(logits[i, r["positions"]], ((0, width - len(r["positions"])), (0, 0)))
      for i, r in enumerate(rows)])
  student_logits = gather(arrays["student_logits"], student_rows, spans_s.shape[1])
  teacher_logits = gather(arrays["teacher_logits"], teacher_rows, spans_t.shape[1])
  tokenizers = [alignment_tokenizer(GOLD / f"{side}_tokenizer.json") for side in
                ("student", "teacher")]
  vocab_map = alignment.vocabulary_map(*tokenizers, teacher_logits.shape[-1])
  method = ULD(**OPTIONS[setting])

  def loss(logits):
    cross = {"student_span": jnp.asarray(spans_s), "teacher_span": jnp.asarray(spans_t),
             "teacher_labels": jnp.asarray(teacher["labels"]),
             "teacher_tokens": jnp.asarray(teacher["tokens"]),
             "student_tokens": jnp.asarray(student["tokens"]), "vocab_map": vocab_map}
    inputs = TermInputs(logits, jnp.asarray(teacher_logits)[None], jnp.asarray(student["labels"]),
                        None, jnp.zeros((), jnp.int32), cross=cross)
    return method.apply({}, inputs)[0]

  value, grad = jax.value_and_grad(loss)(jnp.asarray(student_logits))
  assert float(value) == pytest.approx(meta["settings"][setting]["loss"], rel=1e-5)
  expected = arrays[f"grad_{setting}"]
  for i, row in enumerate(student_rows):
    np.testing.assert_allclose(np.asarray(grad[i, :len(row["positions"])]),
                               expected[i, row["positions"]], rtol=1e-4, atol=1e-7)
    rest = np.delete(expected[i], row["positions"], axis=0)
    assert np.all(rest == 0)  # GOLD's loss reads no other position

def alignment_tokenizer(path):
  from tokenizers import Tokenizer

  return Tokenizer.from_file(str(path))


def test_the_hybrid_leaves_out_the_unmatched_part_when_one_side_has_none():
  """GOLD's rule, by hand: every student token is in the teacher's vocabulary, so the
  hybrid is the matched tokens' JSD times their share of the teacher's vocabulary."""
  from jaxkd.distill.uld import uld_per_span

  p_s = np.array([[[0.5, 0.3, 0.2]]])
  p_t = np.array([[[0.1, 0.2, 0.3, 0.4]]])
  vocab_map = np.array([2, 0, 1, -1])  # teacher ids 0, 1, 2 are student ids 2, 0, 1
  s, t = p_s[..., [2, 0, 1]], p_t[..., :3]
  m = 0.5 * s + 0.5 * t
  jsd = 0.5 * np.sum(t * np.log(t / m)) + 0.5 * np.sum(s * np.log(s / m))
  value = uld_per_span(jnp.asarray(p_s), jnp.asarray(p_t), vocab_map, True, -1.0, 0.5)
  assert float(value[0, 0]) == pytest.approx(0.75 * jsd, rel=1e-5)


@pytest.fixture(scope="module")
def bpe_teacher(tmp_path_factory):
  """Eight documents, and a teacher trained on them with a BPE of 400 tokens."""
  from conftest import toy_config, write_corpus

  from jaxkd.run import train

  root = write_corpus(tmp_path_factory.mktemp("cross"))

  def config(vocabulary, **terms):
    c = toy_config(num_steps=4, log_every_steps=2, checkpoint_every_steps=4)
    c.dataset.update({"name": "text", "path": str(root), "vocab_size": vocabulary,
                      "seq_len": 32, "validation_documents": ("play1",),
                      "test_documents": ("play2",)})
    c.train.update(batch_size=8, eval_batch_size=16)
    c.model = {"name": "llama", "num_layers": 1, "hidden_size": 32, "intermediate_size": 64,
               "num_heads": 4, "num_kv_heads": 2, "head_dim": 8, "max_len": 64, "init_from": ""}
    if terms:
      c.distill.terms = terms
      c.distill.teachers = (str(root / "teacher"),)
    return c

  train.train_and_evaluate(config(400), root / "teacher")
  return root, config


def test_a_student_distils_from_a_teacher_of_another_tokenizer(bpe_teacher):
  """The teacher reads the student's windows as its own tokens (the same bytes), the step
  runs uld (hybrid) beside ce, and the run records the loss."""
  from jaxkd.data import tokenizers
  from jaxkd.engine.sharding import make_mesh
  from jaxkd.run import train
  from jaxkd.run.assemble import assemble
  from jaxkd.run.metrics import read_metrics
  from jaxkd.run.saved import load_run

  root, config = bpe_teacher
  student = config(300, ce={"weight": 1.0}, uld={"weight": 1.0, "hybrid": True})
  run = assemble(student, None, mesh=make_mesh(jax.devices()[:1]))
  batch = run.batches.batch(0)
  student_tokenizer = tokenizers.load(run.train_data.tokenizer)
  teacher_tokenizer = tokenizers.load(root / "teacher" / "tokenizer.json")
  assert student_tokenizer.get_vocab_size() != teacher_tokenizer.get_vocab_size()
  for row in range(2):  # the same text, byte for byte, up to the window's last label
    student_text = student_tokenizer.decode(list(map(int, batch["tokens"][row])))
    counted = batch["teacher_labels"][row] >= 0
    teacher_ids = list(map(int, batch["teacher_tokens"][row][:int(np.sum(counted)) + 1]))
    assert teacher_tokenizer.decode(teacher_ids)[:20] == student_text[:20]
  train.train_and_evaluate(student, root / "student")
  records = [r for r in read_metrics(root / "student") if r["split"] == "train"]
  assert records and all(np.isfinite(r["loss/uld"]) and r["uld/spans"] > 0 for r in records)
  alone = config(300, ce={"weight": 1.0})
  alone.distill.teachers = ()
  train.train_and_evaluate(alone, root / "alone")
  mesh = make_mesh(jax.devices()[:1])
  moved = [float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(load_run(root / "student", mesh).variables),
      jax.tree.leaves(load_run(root / "alone", mesh).variables))]
  assert max(moved) > 1e-4  # the teacher's term moved the student


@pytest.mark.parametrize("terms, message", [
    (dict(fkl={"weight": 1.0}), "another tokenizer .*distill.terms.uld"),
    (dict(uld={"weight": 1.0}, fkl={"weight": 1.0}), r"terms \['fkl'\] compare teacher and"),
    (dict(uld={"weight": 1.0, "merge": "chained"}), "merge one of"),
])
def test_mistakes_with_two_tokenizers_are_one_line(bpe_teacher, terms, message):
  from jaxkd.run.assemble import assemble

  _, config = bpe_teacher
  with pytest.raises(JaxkdError, match=message):
    assemble(config(300, **terms), None)


def test_on_policy_samples_are_re_tokenized_for_the_teacher(bpe_teacher, tmp_path):
  """distill.on_policy with a teacher of another tokenizer: the step's batch becomes the
  student's continuations of the prompts, and the teacher's tokens of the same text; the
  prompt's labels count for nothing. The run logs which steps were on-policy and the cost."""
  from jaxkd.data import tokenizers
  from jaxkd.engine.sharding import make_mesh, shard_batch
  from jaxkd.run import cross_tokenizer, train
  from jaxkd.run.assemble import assemble
  from jaxkd.run.metrics import read_metrics

  root, config = bpe_teacher
  student = config(300, uld={"weight": 1.0})
  student.distill.on_policy.update(fraction=1.0, prompt_len=8)
  run = assemble(student, None, mesh=make_mesh(jax.devices()[:1]))
  seen = []
  step = cross_tokenizer.on_policy_step(run, lambda state, batch: (seen.append(batch) or state, {}))
  host = run.batches.batch(0)
  step(run.state, (host, shard_batch(host, run.mesh)))
  batch = jax.device_get(seen[0])
  np.testing.assert_array_equal(batch["tokens"][:, :8], host["tokens"][:, :8])  # the prompts
  assert np.all(batch["label"][:, :7] == -1) and np.all(batch["label"][:, 7:] >= 0)
  assert not np.array_equal(batch["tokens"], host["tokens"])  # sampled, not the data
  student_tokenizer = tokenizers.load(run.train_data.tokenizer)
  teacher_tokenizer = tokenizers.load(root / "teacher" / "tokenizer.json")
  for row in range(2):
    text = student_tokenizer.decode(list(map(int, batch["tokens"][row])))
    used = int(np.sum(batch["teacher_labels"][row] >= 0)) + 1
    read = teacher_tokenizer.decode(list(map(int, batch["teacher_tokens"][row][:used])))
    assert read[:15] == text[:15]
  assert np.all(batch["segments"] == 0)  # one sequence, one document
  train.train_and_evaluate(student, tmp_path / "on_policy")
  records = [r for r in read_metrics(tmp_path / "on_policy") if r["split"] == "train"]
  assert all(r["on_policy"] == 1.0 and r["retokenize_ms"] > 0 for r in records)
  assert all(np.isfinite(r["loss/uld"]) for r in records)


def test_on_policy_across_tokenizers_refuses_the_teacher_as_generator(bpe_teacher):
  from jaxkd.run.assemble import assemble

  _, config = bpe_teacher
  student = config(300, uld={"weight": 1.0})
  student.distill.on_policy.update(fraction=0.5, generator="teacher")
  with pytest.raises(JaxkdError, match="generator='student'"):
    assemble(student, None)


def test_a_cached_teacher_of_another_tokenizer_lines_up_by_bytes(tmp_path):
  """jaxkd.run.cross_cache on hand-made tokenizers: the teacher's predictions of its own
  tokens of each document, found again inside the student's windows by bytes, with the
  spans of the hand-worked case; its top-k and own log-probabilities are the teacher's
  log-softmax computed here; a student then trains on the cache alone."""
  import ml_collections

  from jaxkd.config import base_config
  from jaxkd.data import load_split
  from jaxkd.models import create_model, hf
  from jaxkd.run import cross_cache, train
  from jaxkd.run.metrics import read_metrics

  student, teacher = byte_bpe(STUDENT_MERGES), byte_bpe(TEACHER_MERGES)
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  for name, body in (("a", TEXT), ("b", "# my lord"), ("v", TEXT), ("t", TEXT),
                     *((f"c{i}", TEXT) for i in range(5))):
    (corpus / f"{name}.txt").write_text(body)
  student.save(str(tmp_path / "student.json"))
  fields = {"name": "llama", "num_layers": 1, "hidden_size": 16, "intermediate_size": 32,
            "num_heads": 2, "num_kv_heads": 1, "head_dim": 8, "max_len": 32, "init_from": ""}
  model = create_model(ml_collections.ConfigDict(fields), teacher.get_vocab_size())
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
  hf.save_params(variables["params"], model, tmp_path / "teacher")
  teacher.save(str(tmp_path / "teacher" / "tokenizer.json"))
  config = base_config()
  config.dataset.update(name="text", path=str(corpus), tokenizer=str(tmp_path / "student.json"),
                        seq_len=4, validation_documents=("v",), test_documents=("t",))
  path = cross_cache.write_cache(tmp_path / "teacher", tmp_path / "cache.npz", config.dataset,
                                 top_k=5, dtype="float32", batch_size=8)
  meta, arrays = cross_cache.read_cache(path, config.dataset)
  # The teacher's own view of document 'a', computed here.
  ids = teacher.encode(TEXT).ids + [teacher.token_to_id(END)]
  log_probs = jax.nn.log_softmax(model.apply(variables, jnp.asarray([ids[:-1]]))[0])
  where = np.nonzero(arrays["token_document"] == 0)[0]  # 'a' is the corpus's first document
  np.testing.assert_array_equal(arrays["token_id"][where], ids)
  own = np.take_along_axis(np.asarray(log_probs), np.asarray(ids[1:])[:, None], -1)[:, 0]
  np.testing.assert_allclose(arrays["own_logprob"][where[1:]], own, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(arrays["topk_logprobs"][where[1:]],
                             -np.sort(-np.asarray(log_probs), -1)[:, :5], rtol=1e-5, atol=1e-6)
  assert not arrays["predicted"][where[0]]  # a document's first token: nothing predicts it
  # The student's windows of 4 tokens: 'a' gives '# fa ir Ġis | Ġfoul' and
  # 'Ġfoul Ċĉ caf Ã | ©' (inputs | last label); the spans are the hand-worked ones.
  data = load_split(config.dataset, "train")
  out = cross_cache.line_up(meta, arrays, data)
  assert named_spans(out, data.labels, student, teacher, 0) == {
      0: (("fa", "ir"), ("fair",)), 1: (("Ġis", "Ġfoul"), ("Ġi", "sĠ", "fo", "ul"))}
  assert named_spans(out, data.labels, student, teacher, 1) == {
      0: (("Ċĉ", "caf", "Ã", "©"), ("Ċ", "ĉc", "a", "fÃ©"))}
  row = out["teacher_labels"][1] >= 0  # the teacher's Ċ ĉc a fÃ©: its tokens 6 to 9
  np.testing.assert_allclose(out["teacher_own_logprobs"][1][row], own[5:9], rtol=1e-5)
  # A student on the cache alone (no teacher runs), uld beside ce.
  config.model = {**fields, "max_len": 8}
  config.train.update(batch_size=8, num_steps=2, log_every_steps=1, eval_batch_size=8)
  config.optimizer.learning_rate = 0.01
  config.distill.terms = {"ce": {"weight": 1.0}, "uld": {"weight": 1.0}}
  config.distill.soft_labels = (str(path),)
  train.train_and_evaluate(config, tmp_path / "student")
  records = [r for r in read_metrics(tmp_path / "student") if r["split"] == "train"]
  assert records and all(np.isfinite(r["loss/uld"]) for r in records)


HOST_SORT = """
import jax, jax.numpy as jnp, numpy as np
from jaxkd.distill.uld import descending
assert jax.device_count() == 1
x = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(0), (3, 5, 64)) * 3)
target = jnp.linspace(0.2, 0.0, 64)
loss = lambda order: lambda x: jnp.sum(jnp.abs(order(x) - target) ** 1.5)
ours = jax.jit(jax.value_and_grad(loss(descending)))(x)
by_lax = jax.jit(jax.value_and_grad(loss(lambda x: -jnp.sort(-x, axis=-1))))(x)
jaxpr = str(jax.make_jaxpr(descending)(x))
assert "pure_callback" in jaxpr, jaxpr  # the host's order, on one CPU device
np.testing.assert_array_equal(np.asarray(jax.jit(descending)(x)), -np.sort(-np.asarray(x), -1))
np.testing.assert_allclose(float(ours[0]), float(by_lax[0]), rtol=1e-6)
np.testing.assert_allclose(np.asarray(ours[1]), np.asarray(by_lax[1]), rtol=1e-6, atol=1e-8)
print("ok")
"""


def test_the_host_sorted_order_gives_lax_sort_s_values_and_gradient():
  """descending() on one CPU device (NumPy's order through a host callback, gathered in
  JAX) against lax's sort, on values without ties (with ties both are valid orders); in a
  process of its own, since the suite's eight devices take lax's sort."""
  import os
  import subprocess
  import sys

  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  done = subprocess.run([sys.executable, "-c", HOST_SORT], capture_output=True, text=True,
                        env=env, cwd=pathlib.Path(__file__).resolve().parents[1])
  assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
