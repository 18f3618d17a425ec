"""Training-loop behaviour the reference recipes rely on: stage hand-over of connectors
and their running state, a student trained in inference mode, frozen parameters left out
of grad_norm, throughput without evaluation time, and refused option combinations."""

import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from conftest import toy_arrays, toy_config, user_net_configs

import test_distill_features  # noqa: F401  (registers the user model 'test_user_net')
from jaxkd import config as config_base
from jaxkd.run import loop
from jaxkd.run import train
from jaxkd.run.checkpoint import Checkpointer
from jaxkd.data import ArrayDataset
from jaxkd.errors import JaxkdError
from jaxkd.run.metrics import read_metrics
from jaxkd.models import create_model
from jaxkd.run.saved import load_run
from jaxkd.engine.sharding import make_mesh
from jaxkd.engine.state import init_train_state
from test_stages import same


def _crd_stage_config(tmp_path, main_feat_dim: int):
  config = user_net_configs(tmp_path, teacher_steps=4, num_steps=2, log_every_steps=1,
                            checkpoint_every_steps=1)
  crd = lambda feat_dim: {"weight": 0.8, "student": "block", "teacher": "block",
                          "num_negatives": 8, "feat_dim": feat_dim}
  config.stages = (ml_collections.ConfigDict({"name": "warm", "num_steps": 2,
                                              "terms": {"ce": {"weight": 1.0}, "crd": crd(16)}}),)
  config.distill.terms = ml_collections.ConfigDict({"ce": {"weight": 1.0}, "crd": crd(main_feat_dim)})
  return config


def test_a_stage_hands_over_connectors_with_their_running_state(tmp_path):
  config = _crd_stage_config(tmp_path, main_feat_dim=16)
  config.train.num_steps = 1
  train.train_and_evaluate(config, tmp_path / "run")

  def memory(workdir, step):
    checkpointer = Checkpointer(workdir, every_steps=1)
    tree = checkpointer.manager.restore(step, args=ocp.args.StandardRestore())
    checkpointer.close()
    return np.asarray(tree["aux_state"]["crd"]["memory"]["student"]), float(
        tree["aux_state"]["crd"]["memory"]["z_student"])

  stage_memory, stage_z = memory(tmp_path / "run" / "stages" / "warm", 2)
  main_memory, main_z = memory(tmp_path / "run", 1)
  # The main run went on from the stage's memory bank and Z (a fresh bank would be a new
  # random draw, and Z would be set again from the main run's first batch).
  assert main_z == stage_z > 0
  changed = np.any(main_memory != stage_memory, axis=1)
  assert 0 < changed.sum() <= 32  # Only the rows of the main run's one batch moved.


def test_a_connector_whose_shapes_changed_between_stages_is_an_error(tmp_path):
  config = _crd_stage_config(tmp_path, main_feat_dim=32)
  with pytest.raises(JaxkdError, match="connector of term 'crd' has other shapes"):
    train.train_and_evaluate(config, tmp_path / "run")


def test_student_eval_mode_trains_parameters_and_keeps_batch_statistics(tmp_path):
  """The benchmark's AB/FSP initialisation: the student runs with model_s.eval(), its
  feature layers train, its classifier is left out of the optimizer."""
  data = (ArrayDataset(*toy_arrays(128, 0, size=28), num_classes=4),
          ArrayDataset(*toy_arrays(64, 1, size=28), num_classes=4))
  config = toy_config(num_steps=3)
  config.model = ml_collections.ConfigDict({"name": "lenet", "batch_norm": True})
  config.train.freeze = ("params/head",)
  train.train_and_evaluate(config, tmp_path / "train_mode", datasets=data)
  config.train.student_eval_mode = True
  train.train_and_evaluate(config, tmp_path / "eval_mode", datasets=data)
  initial = init_train_state(create_model(config.model, 4), optax.sgd(0.1), (28, 28, 1), 0,
                                   make_mesh())
  for name, statistics_move in (("train_mode", True), ("eval_mode", False)):
    run = load_run(tmp_path / name, make_mesh())
    unchanged = same(run.variables["batch_stats"], initial.model_state["batch_stats"])
    assert unchanged != statistics_move, name
    assert not same(run.variables["params"]["conv0"], initial.params["conv0"]), name
    assert same(run.variables["params"]["head"], initial.params["head"]), name


def test_grad_norm_counts_only_what_trains(tmp_path, toy_datasets):
  config = toy_config(num_steps=1, log_every_steps=1)
  config.model.widths = (32, 32)
  train.train_and_evaluate(config, tmp_path / "all", datasets=toy_datasets)
  config.train.freeze = ("params/dense0",)
  train.train_and_evaluate(config, tmp_path / "frozen", datasets=toy_datasets)
  norm = lambda d: [r for r in read_metrics(d) if r["split"] == "train"][0]["grad_norm"]
  # Same first step (same init, same batch): the frozen layer's gradient is dropped, so
  # the norm is smaller, and it is the norm of the other layers' gradients.
  assert 0 < norm(tmp_path / "frozen") < norm(tmp_path / "all")


def test_examples_per_sec_leaves_evaluation_time_out(tmp_path, toy_datasets, monkeypatch):
  """A fake clock: each train step takes 1 s, each evaluation 1000 s. Every logged
  throughput is then exactly batch_size / 1 s, also in windows that held an evaluation."""
  clock = [0.0]
  monkeypatch.setattr(loop.time, "perf_counter", lambda: clock[0])
  real_make_step, real_evaluate = loop.make_train_step, loop.evaluate

  def make_step(*args, **kwargs):
    step = real_make_step(*args, **kwargs)

    def timed(*a):
      clock[0] += 1.0
      return step(*a)

    return timed

  def evaluate(*args, **kwargs):
    clock[0] += 1000.0
    return real_evaluate(*args, **kwargs)

  monkeypatch.setattr(loop, "make_train_step", make_step)
  monkeypatch.setattr(loop, "evaluate", evaluate)
  config = toy_config(num_steps=8, log_every_steps=4, eval_every_steps=3)
  train.train_and_evaluate(config, tmp_path, datasets=toy_datasets)
  rates = [r["examples_per_sec"] for r in read_metrics(tmp_path) if r["split"] == "train"]
  assert rates == pytest.approx([32.0, 32.0])


def test_cached_soft_labels_with_mixup_are_refused():
  config = toy_config()
  config.distill.soft_labels = ("labels.npz",)
  config.dataset.mixup_alpha = 0.2
  with pytest.raises(JaxkdError, match="soft_labels with dataset.mixup_alpha > 0"):
    config_base.validate(config)
