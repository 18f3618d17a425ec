"""Bad inputs not covered elsewhere: each error names the problem and the fix.

Covered in other files (not repeated here):
  unknown model ............... test_models.py::test_unknown_model_and_option_are_clear_errors
  unknown objective term ...... test_distill_logits.py::test_objective_errors_name_the_problem
  unknown optimizer, schedule . test_optim.py::test_unknown_optimizer_and_bad_learning_rate,
                                test_config.py::test_unknown_names_list_the_known_ones
  unknown dataset ............. test_config.py::test_unknown_names_list_the_known_ones
  teacher/student classes ..... test_teachers.py::test_teacher_errors_are_clear
  feature path (in the step) .. test_distill_features.py::test_unknown_feature_path_lists_near_matches
  batch over devices .......... test_train.py::test_batch_that_does_not_divide_over_devices_is_refused
  batch over processes (data) . test_data.py::test_processes_split_the_global_batch
  teacher without checkpoint .. test_teachers.py::test_teacher_errors_are_clear
  checkpoint of another model . test_checkpoint.py::test_restore_without_checkpoint_or_from_another_
                                model_is_a_clear_error, test_preemption.py::test_another_model_is_
                                not_mistaken_for_damage
  cache not matching the data . test_teachers.py::test_cache_that_does_not_match_the_data_is_refused
  non-finite loss (message) ... test_train.py::test_nan_loss_stops_the_run_and_names_the_step
"""

import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import toy_config
from test_preemption import _damage_arrays

from jaxkd.engine import sharding
from jaxkd.run import train
from jaxkd.run.checkpoint import CORRUPT_SUFFIX, Checkpointer
from jaxkd.data import ArrayDataset
from jaxkd.errors import JaxkdError
from jaxkd.engine.features import feature_shapes
from jaxkd.models import create_model
from jaxkd.run.saved import load_run

# Reading damaged files on purpose leaves orbax callbacks on a closed event loop: noise.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")


def test_a_feature_path_in_a_config_that_the_model_lacks_lists_near_matches():
  # The check a training run makes (jaxkd.run.assemble.connect_features) before anything compiles.
  model = create_model(toy_config().model, 4)
  images = jnp.zeros((1, 8, 8, 1))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images))
  with pytest.raises(JaxkdError, match=r"no module at feature path 'dense_0' in MLP; near "
                                       r"matches: \['dense0'.*python -m jaxkd inspect"):
    feature_shapes(model, variables, (8, 8, 1), ["dense_0"])


def test_train_and_test_splits_with_different_classes_are_refused(tmp_path, toy_datasets):
  train_data, test_data = toy_datasets
  fewer = ArrayDataset(test_data.inputs, np.minimum(test_data.labels, 2), num_classes=3,
                       name="toy", split="test")  # e.g. an .npz test split without class 3
  with pytest.raises(JaxkdError, match=r"train and test splits have 4 and 3 classes.*set "
                                       r"dataset.num_classes"):
    train.train_and_evaluate(toy_config(), tmp_path, datasets=(train_data, fewer))


def test_a_global_batch_over_several_processes_names_the_split(monkeypatch):
  mesh = sharding.make_mesh()  # 8 devices, as if 2 processes x 4.
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(JaxkdError, match=r"train.eval_batch_size=100 does not divide over 8 devices "
                                       r"\(2 processes x 4 devices; train.eval_batch_size is the "
                                       r"global batch.*use a multiple of 8 \(e.g. 104\)"):
    sharding.check_batch_size(100, mesh, "train.eval_batch_size")
  sharding.check_batch_size(64, mesh)  # Divides over both: fine.


def test_a_non_finite_loss_stops_at_its_step_and_keeps_only_finite_checkpoints(tmp_path,
                                                                              toy_datasets):
  # Saves every step but checks no log in between: the check before each save must catch it.
  config = toy_config(num_steps=20, log_every_steps=100, checkpoint_every_steps=1,
                      keep_checkpoints=2)
  config.optimizer.learning_rate = 1e30  # Step 1 is finite; its huge update diverges.
  with pytest.raises(JaxkdError) as error:
    train.train_and_evaluate(config, tmp_path, datasets=toy_datasets)
  message = str(error.value)
  found = re.search(r"the training (loss|gradient norm) became (nan|-?inf) at step (\d+); training "
                    r"stopped without saving that state: the last good checkpoint \(step (\d+)\) is "
                    r"kept in .*Lower optimizer.learning_rate or set optimizer.grad_clip_norm",
                    message)
  assert found, message
  bad, kept = int(found[3]), int(found[4])
  assert kept == bad - 1 >= 1, message

  ckpt = Checkpointer(tmp_path, every_steps=1)
  steps = ckpt.manager.all_steps()
  assert max(steps) == kept, steps  # Nothing of the bad step or later.
  for step in steps:
    state = ckpt.manager.restore(step)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state)), f"step {step} not finite"
  ckpt.close()


def test_a_damaged_newest_teacher_checkpoint_is_skipped_with_a_warning(tmp_path, toy_datasets,
                                                                       caplog):
  config = toy_config(num_steps=4, log_every_steps=2, checkpoint_every_steps=2)
  train.train_and_evaluate(config, tmp_path, datasets=toy_datasets)
  directory = tmp_path / "checkpoints"
  _damage_arrays(directory / "4")
  with caplog.at_level(logging.WARNING):
    run = load_run(tmp_path, sharding.make_mesh())  # As a teacher (or a report) loads it.
  assert run.step == 2
  assert f"checkpoint {directory}/4 is damaged" in caplog.text
  assert "using the checkpoint at step 2" in caplog.text
  # Another run's directory: read, never changed.
  assert (directory / "4").is_dir() and not list(directory.glob(f"*{CORRUPT_SUFFIX}*"))
  ckpt = Checkpointer(tmp_path, every_steps=1)
  saved = ckpt.manager.restore(2)
  ckpt.close()
  for a, b in zip(jax.tree.leaves(run.variables["params"]), jax.tree.leaves(saved["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  _damage_arrays(directory / "2")
  with pytest.raises(JaxkdError, match=f"every checkpoint in {directory} is damaged.*train that "
                                       "run again"):
    load_run(tmp_path, sharding.make_mesh())
