import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import toy_arrays, toy_config

from jaxkd.run import train
from jaxkd.data import ArrayDataset, Preprocess, TrainBatches
from jaxkd.errors import JaxkdError
from jaxkd.run.metrics import read_metrics
from jaxkd.models import create_model
from jaxkd.distill import build_objective
from jaxkd.engine.evaluation import select_on_validation
from jaxkd.engine.sharding import make_mesh, replicated, shard_batch
from jaxkd.engine.state import init_train_state
from jaxkd.engine.step import StepSpec, make_train_step, train_step


def test_loss_decreases_and_eval_counts_every_test_example(tmp_path, toy_datasets):
  config = toy_config(num_steps=40, log_every_steps=10)
  result = train.train_and_evaluate(config, tmp_path, datasets=toy_datasets)
  losses = [r["loss"] for r in read_metrics(tmp_path) if r["split"] == "train"]
  assert len(losses) == 4 and losses[-1] < 0.5 * losses[0]
  assert result["test_count"] == 203  # 4 batches of 64, the last one padded.
  assert result["test_accuracy"] > 0.9
  assert (tmp_path / "config.json").exists() and (tmp_path / "run_info.json").exists()
  assert list(tmp_path.glob("events.out.tfevents.*"))


def _train_steps(devices, model_config, image_size, num_steps=4):
  """A few distillation steps (ce + kd from an online teacher) on the given devices."""
  train_data = ArrayDataset(*toy_arrays(256, 0, size=image_size), num_classes=4)
  mesh = make_mesh(devices)
  model = create_model(model_config, 4)
  teacher = create_model(ml_collections.ConfigDict({"name": "mlp", "widths": (16,)}), 4)
  teacher_variables = jax.device_put(
      teacher.init(jax.random.PRNGKey(9), jnp.zeros((1, image_size, image_size, 1))), replicated(mesh))
  objective = build_objective(ml_collections.ConfigDict({
      "terms": {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 2.0}},
      "teacher_combine": "average"}), steps_per_epoch=8, total_steps=num_steps)
  tx = optax.sgd(0.1, momentum=0.9)
  state = init_train_state(model, tx, train_data.input_shape, 0, mesh)
  preprocess = Preprocess((0.5,), (0.5,), crop_padding=1, flip=True)
  step = make_train_step(StepSpec(model, tx, objective, preprocess, 4, teachers=[teacher]), mesh)
  batches = TrainBatches(train_data, 32, seed=0)
  for s in range(num_steps):
    state, metrics = step(state, [teacher_variables], shard_batch(batches.batch(s), mesh))
  assert float(metrics["loss/kd"]) > 0
  return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.parametrize("model_config,image_size", [
    ({"name": "mlp", "widths": (32, 32), "dropout": 0.3}, 8),
    ({"name": "lenet", "batch_norm": True}, 16),
])
def test_one_and_eight_devices_give_the_same_parameters(model_config, image_size):
  """Dropout, BatchNorm statistics and augmentation included: the mesh changes nothing."""
  model_config = ml_collections.ConfigDict(model_config)
  assert jax.device_count() == 8
  one, metrics_one = _train_steps(jax.devices()[:1], model_config, image_size)
  eight, metrics_eight = _train_steps(jax.devices(), model_config, image_size)
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics_one["loss"], metrics_eight["loss"], rtol=1e-5)
  assert int(eight.step) == 4


def test_batch_that_does_not_divide_over_devices_is_refused(tmp_path, toy_datasets):
  with pytest.raises(JaxkdError, match=r"train.batch_size=36 does not divide over 8 devices.*e.g. 40"):
    train.train_and_evaluate(toy_config(batch_size=36), tmp_path, datasets=toy_datasets)


def test_nan_loss_stops_the_run_and_names_the_step(tmp_path, toy_datasets):
  config = toy_config(num_steps=20, log_every_steps=5, checkpoint_every_steps=5)
  config.optimizer.learning_rate = 1e30
  with pytest.raises(JaxkdError, match=r"loss became nan at step \d+; training stopped without"):
    train.train_and_evaluate(config, tmp_path, datasets=toy_datasets)


def test_selection_uses_the_validation_split_never_the_test_set(tmp_path, toy_datasets):
  config = toy_config(num_steps=40, log_every_steps=10, eval_every_steps=10)
  config.dataset.validation_size = 100
  result = train.train_and_evaluate(config, tmp_path, datasets=toy_datasets)
  records = read_metrics(tmp_path)
  tests = [r for r in records if r["split"] == "test"]
  validation = [r for r in records if r["split"] == "validation"]
  assert [r["step"] for r in tests] == [r["step"] for r in validation] == [10, 20, 30, 40]
  assert {r["count"] for r in validation} == {100}  # Held out of the 512 training examples.
  best = max(validation, key=lambda r: (r["accuracy"], -r["step"]))
  at_best = [r for r in tests if r["step"] == best["step"]][0]
  assert (result["best_step"], result["selected_test_accuracy"]) == (best["step"], at_best["accuracy"])
  assert result["test_accuracy"] == tests[-1]["accuracy"]
  again = train.train_and_evaluate(config, tmp_path, datasets=toy_datasets)  # Finished: reuse.
  assert again["test_accuracy"] == result["test_accuracy"] and again["step"] == 40
  # Where validation and test disagree, the validation split decides.
  made_up = [{"split": "validation", "step": 1, "accuracy": 0.7},
             {"split": "test", "step": 1, "accuracy": 0.6, "errors": 40},
             {"split": "validation", "step": 2, "accuracy": 0.9},
             {"split": "test", "step": 2, "accuracy": 0.5, "errors": 50},
             {"split": "validation", "step": 3, "accuracy": 0.9},
             {"split": "test", "step": 3, "accuracy": 0.99, "errors": 1}]
  assert select_on_validation(made_up) == {
      "best_step": 2, "best_validation_accuracy": 0.9, "selected_test_accuracy": 0.5,
      "selected_test_errors": 50}
  # Without a validation split nothing is selected.
  plain = train.train_and_evaluate(toy_config(num_steps=4), tmp_path / "plain", datasets=toy_datasets)
  assert "best_step" not in plain and "selected_test_accuracy" not in plain


def test_the_validation_split_is_fixed_by_its_seed_and_disjoint():
  from jaxkd.data import split_validation

  data = ArrayDataset(*toy_arrays(50, 3), num_classes=4)
  train_a, held_a = split_validation(data, 10, seed=0)
  train_b, held_b = split_validation(data, 10, seed=0)
  _, held_c = split_validation(data, 10, seed=1)
  assert len(train_a) == 40 and len(held_a) == 10 and held_a.split == "validation"
  np.testing.assert_array_equal(held_a.inputs, held_b.inputs)
  assert not np.array_equal(held_a.inputs, held_c.inputs)
  rows = lambda d: {x.tobytes() + bytes([y]) for x, y in zip(d.inputs, d.labels)}
  assert rows(train_a) | rows(held_a) == rows(data) and not rows(train_a) & rows(held_a)
  with pytest.raises(JaxkdError, match="validation_size=50"):
    split_validation(data, 50)

def test_the_step_vmaps_over_a_leading_member_axis_of_the_state():
  """Two students (seeds 0 and 1) stacked on a leading axis, one vmapped step over a shared
  batch and teacher: each member equals the same student stepped alone (dropout, BatchNorm
  statistics and augmentation included), so the step holds no Python-side state."""
  data = ArrayDataset(*toy_arrays(64, 0, size=16), num_classes=4)
  mesh = make_mesh(jax.devices()[:1])
  model = create_model(ml_collections.ConfigDict({"name": "lenet", "batch_norm": True}), 4)
  teacher = create_model(ml_collections.ConfigDict({"name": "mlp", "widths": (16,)}), 4)
  teacher_variables = teacher.init(jax.random.PRNGKey(9), jnp.zeros((1, 16, 16, 1)))
  objective = build_objective(ml_collections.ConfigDict({
      "terms": {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 2.0}},
      "teacher_combine": "average"}), steps_per_epoch=2, total_steps=2)
  tx = optax.sgd(0.1, momentum=0.9)
  spec = StepSpec(model, tx, objective, Preprocess((0.5,), (0.5,), crop_padding=1, flip=True), 4,
                  teachers=[teacher])
  members = [init_train_state(model, tx, data.input_shape, seed, mesh) for seed in (0, 1)]
  batches = [{k: jnp.asarray(v) for k, v in TrainBatches(data, 16, seed=0).batch(s).items()}
             for s in range(2)]
  step = jax.jit(jax.vmap(lambda state, batch: train_step(spec, state, [teacher_variables], batch),
                          in_axes=(0, None)))
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
  alone = jax.jit(lambda state, batch: train_step(spec, state, [teacher_variables], batch))
  for batch in batches:
    stacked, metrics = step(stacked, batch)
    members = [alone(member, batch)[0] for member in members]
  for index, member in enumerate(members):
    for got, want in zip(jax.tree.leaves(stacked), jax.tree.leaves(member)):
      np.testing.assert_allclose(got[index], want, rtol=1e-5, atol=1e-6)
  assert metrics["loss"].shape == (2,) and float(metrics["loss"][0]) != float(metrics["loss"][1])
