"""CRD: the NCE loss, the memory banks as functional running state, resume with them."""

import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import user_net_configs
from test_distill_features import UserNet  # noqa: F401  (registers test_user_net)

from jaxkd.run import train
from jaxkd.run.checkpoint import Checkpointer
from jaxkd.errors import JaxkdError
from jaxkd.distill.crd import CRDHeads, nce_loss
from jaxkd.run.metrics import read_metrics

RNG = np.random.default_rng(2)


def test_nce_loss_matches_numpy():
  scores = RNG.uniform(0.1, 3.0, size=(4, 6)).astype(np.float32)
  noise = 5 / 100
  expected = -(np.log(scores[:, 0] / (scores[:, 0] + noise + 1e-7)).sum() +
               np.log(noise / (scores[:, 1:] + noise + 1e-7)).sum()) / 4
  np.testing.assert_allclose(nce_loss(scores, noise), expected, rtol=1e-5)


def _normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_heads_score_the_positive_update_memory_and_fix_z():
  heads = CRDHeads(num_examples=20, feat_dim=4, num_negatives=5, nce_temperature=0.5, momentum=0.5)
  student = jnp.asarray(RNG.normal(size=(3, 6)), jnp.float32)
  teacher = jnp.asarray(RNG.normal(size=(3, 8)), jnp.float32)
  index = jnp.array([2, 7, 11])
  variables = heads.init({"params": jax.random.PRNGKey(0), "negatives": jax.random.PRNGKey(1)},
                         student, teacher, index)
  params, memory = variables["params"], variables["memory"]
  scores, updated = heads.apply(variables, student, teacher, index,
                                rngs={"negatives": jax.random.PRNGKey(2)}, mutable=["memory"])
  dense = lambda x, p: np.asarray(x) @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
  v_s = _normalize(dense(student, params["embed_student"]))
  v_t = _normalize(dense(teacher, params["embed_teacher"]))
  raw_positive = np.exp(np.sum(np.asarray(memory["teacher"])[index] * v_s, -1) / 0.5)
  z = float(updated["memory"]["z_student"])
  np.testing.assert_allclose(scores["student"][:, 0], raw_positive / z, rtol=1e-4)
  # Z is the first batch's mean score times N: the normalised scores then average 1/N.
  np.testing.assert_allclose(np.mean(scores["student"]), 1 / 20, rtol=1e-4)
  new_rows = _normalize(0.5 * np.asarray(memory["student"])[index] + 0.5 * v_s)
  np.testing.assert_allclose(updated["memory"]["student"][index], new_rows, rtol=1e-4, atol=1e-6)
  untouched = np.setdiff1d(np.arange(20), index)
  np.testing.assert_array_equal(updated["memory"]["teacher"][untouched], memory["teacher"][untouched])
  np.testing.assert_allclose(updated["memory"]["teacher"][index],
                             _normalize(0.5 * np.asarray(memory["teacher"])[index] + 0.5 * v_t),
                             rtol=1e-4, atol=1e-6)
  _, again = heads.apply({"params": params, **updated}, student, teacher, index,
                         rngs={"negatives": jax.random.PRNGKey(3)}, mutable=["memory"])
  assert float(again["memory"]["z_student"]) == z  # Fixed after the first step.

  def loss(params, student, teacher):
    scores, _ = heads.apply({"params": params, **updated}, student, teacher, index,
                            rngs={"negatives": jax.random.PRNGKey(4)}, mutable=["memory"])
    return nce_loss(scores["student"], 0.25) + nce_loss(scores["teacher"], 0.25)

  grads = jax.grad(loss, argnums=(0, 1, 2))(params, student, teacher)
  assert float(jnp.abs(grads[1]).sum()) > 0  # Reaches the student's features...
  assert float(jnp.abs(grads[0]["embed_teacher"]["kernel"]).sum()) > 0  # ...and both heads.
  assert float(jnp.abs(grads[0]["embed_student"]["kernel"]).sum()) > 0


def test_crd_run_resumes_with_its_memory_banks(tmp_path):
  student = user_net_configs(tmp_path, teacher_steps=4, num_steps=8, checkpoint_every_steps=4,
                             log_every_steps=4)
  student.distill.terms = ml_collections.ConfigDict({
      "ce": {"weight": 1.0},
      "crd": {"weight": 0.8, "student": "block", "teacher": "block", "num_negatives": 64,
              "feat_dim": 16}})
  whole = train.train_and_evaluate(student, tmp_path / "whole")
  assert all(np.isfinite(r["loss/crd"]) for r in read_metrics(tmp_path / "whole") if r["split"] == "train")

  train.train_and_evaluate(student, tmp_path / "crashed")
  shutil.rmtree(tmp_path / "crashed" / "checkpoints" / "8")
  resumed = train.train_and_evaluate(student, tmp_path / "crashed")
  assert resumed["test_accuracy"] == whole["test_accuracy"]

  def final(workdir):
    ckpt = Checkpointer(workdir, every_steps=1)
    tree = ckpt.manager.restore(ckpt.latest_step())
    ckpt.close()
    return tree

  a, b = final(tmp_path / "whole"), final(tmp_path / "crashed")
  assert set(a["aux_state"]["crd"]["memory"]) == {"student", "teacher", "z_student", "z_teacher"}
  assert float(a["aux_state"]["crd"]["memory"]["z_student"]) > 0
  for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(leaf_a, leaf_b)  # Memory banks resumed bitwise too.


def test_negatives_come_from_other_classes_uniformly():
  from jaxkd.distill.crd import ClassLayout, sample_other_class

  labels = np.array([2, 0, 1, 0, 2, 1, 1, 0])  # class 0: {1, 3, 7}; 1: {2, 5, 6}; 2: {0, 4}
  layout = ClassLayout(labels)
  index = jnp.array([1, 2, 0])  # one example of each class
  drawn = np.asarray(sample_other_class(jax.random.PRNGKey(0), index, layout, 6000))
  for row, own in zip(drawn, labels[np.asarray(index)]):
    others = np.flatnonzero(labels != own)
    assert set(row) == set(others)  # Never its own class; every other example drawn.
    counts = np.bincount(row, minlength=8)[others]
    np.testing.assert_allclose(counts / len(row), 1 / len(others), atol=0.03)
  with pytest.raises(JaxkdError, match="at least two classes"):
    ClassLayout(np.zeros(5, np.int32))
