"""Mean teacher (Tarvainen & Valpola 2017): the teacher is the exponential moving average of
the student's parameters, kept in the train state: after n steps it equals the average
computed here from the student's parameters at every step, the consistency term reads it
(its value at a step recomputed from the average), and a resumed run keeps it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import toy_config

from jaxkd.errors import JaxkdError

DECAY = 0.9


def _config(steps):
  config = toy_config(num_steps=steps, checkpoint_every_steps=2)
  config.distill.mean_teacher_decay = DECAY
  config.distill.terms = {"ce": {"weight": 1.0}, "soft_mse": {"weight": 1.0}}
  return config


def test_the_mean_teacher_is_the_moving_average_of_the_student(toy_datasets):
  from jaxkd.data.augment import model_input
  from jaxkd.engine.sharding import shard_batch
  from jaxkd.engine.step import MEAN_TEACHER, make_train_step
  from jaxkd.run.assemble import assemble

  run = assemble(_config(4), None, toy_datasets)
  step = make_train_step(run.spec, run.mesh)
  state = run.state
  average = jax.device_get(state.params)
  for s in range(4):
    batch = run.batches.batch(s)
    # The consistency the step computes: the student against the average so far.
    x = model_input(batch, run.spec.preprocess, jax.random.PRNGKey(0))
    probs = lambda p: np.asarray(jax.nn.softmax(run.spec.model.apply({"params": p}, x)))
    expected = np.mean((probs(jax.device_get(state.params)) - probs(average)) ** 2)
    state, metrics = step(state, [], shard_batch(batch, run.mesh))
    assert float(metrics["loss/soft_mse"]) == pytest.approx(expected, rel=1e-4, abs=1e-9)
    new = jax.device_get(state.params)
    average = jax.tree.map(lambda a, p: DECAY * a + (1 - DECAY) * p, average, new)
  kept = jax.device_get(state.aux_state[MEAN_TEACHER]["params"])
  for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(average)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert not np.allclose(jax.tree.leaves(kept)[0], jax.tree.leaves(new)[0])


def test_a_resumed_run_keeps_its_mean_teacher(tmp_path, toy_datasets):
  from jaxkd.engine.sharding import make_mesh
  from jaxkd.engine.step import MEAN_TEACHER
  from jaxkd.run import train
  from jaxkd.run.checkpoint import Checkpointer
  from jaxkd.run.assemble import assemble

  train.train_and_evaluate(_config(4), tmp_path / "straight", datasets=toy_datasets)
  train.train_and_evaluate(_config(2), tmp_path / "halves", datasets=toy_datasets)
  train.train_and_evaluate(_config(4), tmp_path / "halves", datasets=toy_datasets)
  states = []
  for name in ("straight", "halves"):
    run = assemble(_config(4), None, toy_datasets)
    checkpointer = Checkpointer(tmp_path / name, 1, 3, read_only=True)
    states.append(checkpointer.restore(run.state))
    checkpointer.close()
  for a, b in zip(jax.tree.leaves(states[0].aux_state[MEAN_TEACHER]),
                  jax.tree.leaves(states[1].aux_state[MEAN_TEACHER])):
    np.testing.assert_array_equal(a, b)


def test_mean_teacher_mistakes_are_one_line():
  from jaxkd import config as config_checks

  config = _config(2)
  config.distill.teachers = ("runs/teacher",)
  with pytest.raises(JaxkdError, match="moving average"):
    config_checks.validate(config)
  config = _config(2)
  config.distill.terms = {"ce": {"weight": 1.0}}
  with pytest.raises(JaxkdError, match="no term reads the mean teacher"):
    config_checks.validate(config)
