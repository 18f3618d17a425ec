"""Deep mutual learning (Zhang et al. 2018): the dml term against numpy for cohorts of 2 and
3; a cohort's first step against each member's loss and update computed here from the
others' predictions; a cohort stopped halfway resumes to the same parameters; each member
is a run of its own."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import toy_config

from jaxkd.distill import TermInputs
from jaxkd.distill.dml import dml
from jaxkd.errors import JaxkdError


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("cohort", [2, 3])
def test_dml_is_the_mean_kl_to_the_other_members(cohort):
  rng = np.random.default_rng(cohort)
  logits = rng.normal(0, 2, (cohort, 5, 4))
  for k in range(cohort):
    others = [l for l in range(cohort) if l != k]
    q = _softmax(logits[k])
    expected = np.mean([np.mean(np.sum(_softmax(logits[l]) * np.log(_softmax(logits[l]) / q), -1))
                        for l in others])
    inputs = TermInputs(jnp.asarray(logits[k]), jnp.asarray(logits[others]),
                        jnp.zeros(5, jnp.int32), None, jnp.zeros((), jnp.int32))
    assert float(dml(inputs)) == pytest.approx(expected, rel=1e-5)


def _cohort_config(steps):
  config = toy_config(num_steps=steps, checkpoint_every_steps=2)
  config.distill.cohort = 2
  config.distill.terms = {"ce": {"weight": 1.0}, "dml": {"weight": 1.0}}
  return config


def test_a_cohort_step_is_each_member_taught_by_the_other(tmp_path, toy_datasets):
  """Step 1 of a cohort of 2, recomputed here: each member's ce + KL(p_other || p_own) at
  its initial parameters, the other's predictions held fixed, its gradient and the update
  of its own optimizer."""
  from jaxkd.data.augment import model_input
  from jaxkd.run import train
  from jaxkd.run.assemble import assemble
  from jaxkd.run.cohort import member_configs, member_dirs
  from jaxkd.run.metrics import read_metrics
  from jaxkd.run.saved import load_run

  config = _cohort_config(1)
  config.train.log_every_steps = 1
  train.train_and_evaluate(config, tmp_path / "cohort", datasets=toy_datasets)
  runs = [assemble(c, None, toy_datasets) for c in member_configs(config)]
  batch = runs[0].batches.batch(0)  # the first member's batch sequence, for both
  x = model_input(batch, runs[0].spec.preprocess, jax.random.PRNGKey(0))
  labels = jnp.asarray(batch["label"])
  params = [r.state.params for r in runs]
  apply = lambda p: runs[0].spec.model.apply({"params": p}, x, train=True)
  logits = [apply(p) for p in params]

  def loss(p, k):
    own = jax.nn.log_softmax(apply(p))
    other = jax.nn.softmax(logits[1 - k])
    ce = -jnp.mean(jnp.take_along_axis(own, labels[:, None], 1))
    return ce + jnp.mean(jnp.sum(other * (jnp.log(other) - own), -1))

  records = [[r for r in read_metrics(d) if r["split"] == "train"][0]
             for d in member_dirs(tmp_path / "cohort", 2)]
  for k in range(2):
    assert records[k]["loss"] == pytest.approx(float(loss(params[k], k)), rel=1e-5)
    grads = jax.grad(loss)(params[k], k)
    tx = runs[k].spec.tx
    trainable = runs[k].state.trainable()
    updates, _ = tx.update({"params": grads, "aux": {}}, tx.init(trainable), trainable)
    expected = optax.apply_updates(trainable, updates)["params"]
    got = load_run(member_dirs(tmp_path / "cohort", 2)[k], runs[k].mesh).variables["params"]
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_cohort_stopped_halfway_resumes_to_the_same_parameters(tmp_path, toy_datasets):
  from jaxkd.run import train
  from jaxkd.run.cohort import member_dirs
  from jaxkd.run.saved import load_run
  from jaxkd.engine.sharding import make_mesh

  train.train_and_evaluate(_cohort_config(4), tmp_path / "straight", datasets=toy_datasets)
  train.train_and_evaluate(_cohort_config(2), tmp_path / "halves", datasets=toy_datasets)
  train.train_and_evaluate(_cohort_config(4), tmp_path / "halves", datasets=toy_datasets)
  mesh = make_mesh(jax.devices()[:1])
  for a, b in zip(member_dirs(tmp_path / "straight", 2), member_dirs(tmp_path / "halves", 2)):
    for x, y in zip(jax.tree.leaves(load_run(a, mesh).variables),
                    jax.tree.leaves(load_run(b, mesh).variables)):
      np.testing.assert_array_equal(x, y)
  first, second = (load_run(d, mesh).variables for d in member_dirs(tmp_path / "straight", 2))
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(first),
                                                       jax.tree.leaves(second)))


@pytest.mark.parametrize("change, message", [
    (lambda c: setattr(c.distill, "terms", {"ce": {"weight": 1.0}}), "no term reads the other"),
    (lambda c: c.distill.update(teachers=("runs/t",)), "each other's teachers"),
    (lambda c: c.distill.update(cohort=0), "distill.cohort"),
    (lambda c: c.distill.update(cohort_models=({"name": "mlp"},)), "one model section"),
    (lambda c: c.distill.update(cohort_models=({"name": "mlp"}, {"name": "mpl"})), "mpl"),
])
def test_cohort_mistakes_are_one_line(change, message):
  from jaxkd import config as config_checks

  config = _cohort_config(2)
  change(config)
  with pytest.raises(JaxkdError, match=message):
    config_checks.validate(config)


MIXED = ({"name": "mlp", "widths": (16,)}, {"name": "mlp", "widths": (48, 24)})


def test_a_cohort_of_two_architectures_is_each_taught_by_the_other(tmp_path, toy_datasets):
  """Members of different architectures (a tuple of states in one step): step 1 recomputed
  here as for one architecture, each member with its own model; each is a run of its own."""
  from jaxkd.data.augment import model_input
  from jaxkd.run import train
  from jaxkd.run.assemble import assemble
  from jaxkd.run.cohort import member_configs, member_dirs
  from jaxkd.run.metrics import read_metrics
  from jaxkd.run.saved import load_run

  config = _cohort_config(1)
  config.distill.cohort_models = MIXED
  config.train.log_every_steps = 1
  train.train_and_evaluate(config, tmp_path / "cohort", datasets=toy_datasets)
  runs = [assemble(c, None, toy_datasets) for c in member_configs(config)]
  assert [r.config.model.widths for r in runs] == [(16,), (48, 24)]
  batch = runs[0].batches.batch(0)
  x = model_input(batch, runs[0].spec.preprocess, jax.random.PRNGKey(0))
  labels = jnp.asarray(batch["label"])
  apply = lambda k, p: runs[k].spec.model.apply({"params": p}, x, train=True)
  logits = [apply(k, r.state.params) for k, r in enumerate(runs)]

  def loss(p, k):
    own = jax.nn.log_softmax(apply(k, p))
    other = jax.nn.softmax(logits[1 - k])
    ce = -jnp.mean(jnp.take_along_axis(own, labels[:, None], 1))
    return ce + jnp.mean(jnp.sum(other * (jnp.log(other) - own), -1))

  dirs = member_dirs(tmp_path / "cohort", 2)
  for k in range(2):
    record = [r for r in read_metrics(dirs[k]) if r["split"] == "train"][0]
    params = runs[k].state.params
    assert record["loss"] == pytest.approx(float(loss(params, k)), rel=1e-5)
    tx, trainable = runs[k].spec.tx, runs[k].state.trainable()
    grads = jax.grad(loss)(params, k)
    updates, _ = tx.update({"params": grads, "aux": {}}, tx.init(trainable), trainable)
    expected = optax.apply_updates(trainable, updates)["params"]
    got = load_run(dirs[k], runs[k].mesh).variables["params"]
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_cohort_of_two_architectures_stopped_halfway_resumes_to_the_same_parameters(
    tmp_path, toy_datasets):
  from jaxkd.engine.sharding import make_mesh
  from jaxkd.run import train
  from jaxkd.run.cohort import member_dirs
  from jaxkd.run.saved import load_run

  configs = {}
  for steps in (2, 4):
    configs[steps] = _cohort_config(steps)
    configs[steps].distill.cohort_models = MIXED
  train.train_and_evaluate(configs[4], tmp_path / "straight", datasets=toy_datasets)
  train.train_and_evaluate(configs[2], tmp_path / "halves", datasets=toy_datasets)
  train.train_and_evaluate(configs[4], tmp_path / "halves", datasets=toy_datasets)
  mesh = make_mesh(jax.devices()[:1])
  for a, b in zip(member_dirs(tmp_path / "straight", 2), member_dirs(tmp_path / "halves", 2)):
    for x, y in zip(jax.tree.leaves(load_run(a, mesh).variables),
                    jax.tree.leaves(load_run(b, mesh).variables)):
      np.testing.assert_array_equal(x, y)
