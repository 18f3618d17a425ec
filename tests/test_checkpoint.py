import pathlib
import shutil

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from conftest import toy_config

from jaxkd.run import train
from jaxkd.run.checkpoint import Checkpointer
from jaxkd.errors import JaxkdError
from jaxkd.run.metrics import read_metrics
from jaxkd.models import create_model
from jaxkd.engine.sharding import make_mesh
from jaxkd.engine.state import init_train_state


def _latest_checkpoint(workdir):
  """The raw tree of the latest checkpoint in `workdir`."""
  ckpt = Checkpointer(workdir, every_steps=1)
  restored = ckpt.manager.restore(ckpt.latest_step())
  ckpt.close()
  return restored


def test_round_trip_restores_every_array(tmp_path, toy_datasets):
  config = toy_config()
  model = create_model(config.model, 4)
  mesh = make_mesh()
  tx = optax.adam(1e-3)
  state = init_train_state(model, tx, (8, 8, 1), 0, mesh)
  state = state.replace(step=state.step + 5)
  ckpt = Checkpointer(tmp_path, every_steps=10)
  assert not ckpt.save(5, state)  # Not a multiple of every_steps.
  assert ckpt.save(5, state, force=True)
  ckpt.close()
  fresh = init_train_state(model, tx, (8, 8, 1), 1, mesh)
  restored = Checkpointer(tmp_path, every_steps=10).restore(fresh)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, b)
  assert restored.params["dense0"]["kernel"].sharding.is_fully_replicated


def test_restore_without_checkpoint_or_from_another_model_is_a_clear_error(tmp_path):
  config = toy_config()
  mesh = make_mesh()
  tx = optax.sgd(0.1)
  small = init_train_state(create_model(config.model, 4), tx, (8, 8, 1), 0, mesh)
  with pytest.raises(JaxkdError, match="no checkpoint in"):
    Checkpointer(tmp_path / "empty", every_steps=1).restore(small)
  ckpt = Checkpointer(tmp_path, every_steps=1)
  ckpt.save(1, small, force=True)
  ckpt.close()
  config.model.widths = (64,)
  big = init_train_state(create_model(config.model, 4), tx, (8, 8, 1), 0, mesh)
  with pytest.raises(JaxkdError, match="does not fit this model"):
    Checkpointer(tmp_path, every_steps=1).restore(big)


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, toy_datasets):
  config = toy_config(num_steps=12, checkpoint_every_steps=4, log_every_steps=2, eval_every_steps=4)
  config.model.dropout = 0.2
  config.dataset.crop_padding = 1
  whole = train.train_and_evaluate(config, tmp_path / "whole", datasets=toy_datasets)

  crashed = tmp_path / "crashed"
  train.train_and_evaluate(config, crashed, datasets=toy_datasets)
  for step in (8, 12):  # As if the process died after the checkpoint at step 4.
    shutil.rmtree(crashed / "checkpoints" / str(step))
  resumed = train.train_and_evaluate(config, crashed, datasets=toy_datasets)

  assert resumed["step"] == whole["step"] == 12
  assert resumed["test_accuracy"] == whole["test_accuracy"]
  whole_state, resumed_state = _latest_checkpoint(tmp_path / "whole"), _latest_checkpoint(crashed)
  for x, y in zip(jax.tree.leaves(whole_state), jax.tree.leaves(resumed_state)):
    np.testing.assert_array_equal(x, y)  # Same data order and random state: bitwise equal.
  steps = [(r["step"], r["split"]) for r in read_metrics(crashed)]
  assert steps == [(r["step"], r["split"]) for r in read_metrics(tmp_path / "whole")]
  assert len(steps) == len(set(steps))  # Records after step 4 were replaced, not duplicated.


# SIGTERM, SIGKILL and damaged checkpoints, with whole CLI runs compared bitwise with an
# uninterrupted one: tests/test_preemption.py.


def test_half_written_checkpoints_are_removed_at_start(tmp_path):
  config = toy_config()
  state = init_train_state(create_model(config.model, 4), optax.sgd(0.1), (8, 8, 1), 0,
                                 make_mesh())
  ckpt = Checkpointer(tmp_path, every_steps=1)
  ckpt.save(3, state, force=True)
  ckpt.close()
  unfinished = tmp_path / "checkpoints" / "7.orbax-checkpoint-tmp"  # A crash mid-save.
  (unfinished / "default").mkdir(parents=True)
  ckpt = Checkpointer(tmp_path, every_steps=1)
  assert not unfinished.exists() and ckpt.latest_step() == 3
  ckpt.close()


def test_an_error_raised_in_orbax_is_not_logged_again_by_asyncio(tmp_path):
  """A failed background save is reported once, as a one-line JaxkdError; asyncio's
  "exception was never retrieved" log of the same orbax error (a traceback, printed at an
  unpredictable moment) is left out, while an asyncio error from other code still shows."""
  import asyncio
  import gc
  import logging

  orbax_file = pathlib.Path(ocp.__file__).parent / "_src" / "serialization" / "serialization.py"
  namespace = {}
  exec(compile("def fail():\n  raise ValueError('RESOURCE_EXHAUSTED')\n", str(orbax_file), "exec"),
       namespace)

  async def in_orbax():
    namespace["fail"]()

  async def elsewhere():
    raise ValueError("a bug of ours")

  records = []

  class Keep(logging.Handler):
    def emit(self, record):
      records.append(record)

  handler = Keep()
  logging.getLogger().addHandler(handler)
  try:
    for coroutine in (in_orbax, elsewhere):
      async def main():
        asyncio.gather(coroutine())  # Never awaited: its error is never retrieved.
        await asyncio.sleep(0.01)

      loop = asyncio.new_event_loop()
      loop.run_until_complete(main())
      loop.close()
      gc.collect()
  finally:
    logging.getLogger().removeHandler(handler)
  logged = [r.exc_info[1] for r in records if r.name == "asyncio" and r.exc_info]
  assert [str(e) for e in logged] == ["a bug of ours"]
