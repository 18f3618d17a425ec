"""Multi-stage training: FT's paraphraser stage, then the student; frozen parts stay put."""

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import user_net_configs

import test_distill_features  # noqa: F401  (registers the user model 'test_user_net')
from jaxkd import config as config_base
from jaxkd.run import train
from jaxkd.run.checkpoint import Checkpointer
from jaxkd.errors import JaxkdError


def saved(workdir, step=None):
  checkpointer = Checkpointer(workdir, every_steps=1)
  step = checkpointer.latest_step() if step is None else step
  tree = checkpointer.manager.restore(step, args=ocp.args.StandardRestore())
  checkpointer.close()
  return jax.tree.map(np.asarray, {"params": tree["params"], "aux": tree["aux_params"]})


def same(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def ft_config(tmp_path):
  config = user_net_configs(tmp_path, teacher_steps=6, num_steps=4, log_every_steps=2,
                            checkpoint_every_steps=1)
  paths = {"student": "block", "teacher": "block"}
  config.stages = (ml_collections.ConfigDict({
      "name": "paraphraser", "num_steps": 3, "optimizer": {"learning_rate": 0.05},
      "terms": {"ft": {"term": "ft_paraphraser", "weight": 1.0, **paths}},
      "freeze": ("params", "aux/ft/translator")}),)
  config.distill.terms = ml_collections.ConfigDict({"ce": {"weight": 1.0},
                                                    "ft": {"weight": 200.0, **paths}})
  config.train.freeze = ("aux/ft/paraphraser",)
  return config


def test_ft_trains_its_paraphraser_in_a_stage_then_the_student(tmp_path):
  config = ft_config(tmp_path)
  result = train.train_and_evaluate(config, tmp_path / "run")
  assert result["step"] == 4
  stage_dir = tmp_path / "run" / "stages" / "paraphraser"
  first, stage, main = saved(stage_dir, 1), saved(stage_dir), saved(tmp_path / "run")
  # Stage 1 trains the paraphraser only: the student and the translator stay put.
  assert not same(first["aux"]["ft"]["paraphraser"], stage["aux"]["ft"]["paraphraser"])
  assert same(first["params"], stage["params"])
  assert same(first["aux"]["ft"]["translator"], stage["aux"]["ft"]["translator"])
  # The main stage starts from it, trains student and translator, keeps the paraphraser.
  assert same(main["aux"]["ft"]["paraphraser"], stage["aux"]["ft"]["paraphraser"])
  assert not same(main["params"], stage["params"])
  assert not same(main["aux"]["ft"]["translator"], stage["aux"]["ft"]["translator"])
  # Run again: every stage is finished, nothing trains.
  assert train.train_and_evaluate(config, tmp_path / "run")["step"] == 4
  assert same(saved(tmp_path / "run"), main)


def test_stage_and_freeze_mistakes_are_clear_errors(tmp_path):
  config = config_base.base_config()
  config.stages = ({"name": "init", "epoch": 3},)
  with pytest.raises(JaxkdError, match=r"stages\[0\] .* unknown: \['epoch'\]"):
    config_base.stage_configs(config)
  config = ft_config(tmp_path)
  config.stages = ()
  config.train.freeze = ("aux/ft/paraphrasr",)
  with pytest.raises(JaxkdError, match="'aux/ft/paraphrasr' matches no trainable parameter"):
    train.train_and_evaluate(config, tmp_path / "typo")
