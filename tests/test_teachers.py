"""Teachers online and from cached soft labels; the pipeline end to end on toy data."""

import json

import jax
import ml_collections
import numpy as np
import optax
import pytest
from conftest import toy_arrays, toy_config

from jaxkd.jobs import pipeline
from jaxkd.run import train
from jaxkd.data import ArrayDataset, Preprocess, TrainBatches, load_split, preprocessing
from jaxkd.distill import build_objective
from jaxkd.errors import JaxkdError
from jaxkd.run.metrics import read_metrics
from jaxkd.run.saved import load_run
from jaxkd.engine.sharding import make_mesh, shard_batch
from jaxkd.run.soft_labels import load_soft_labels, write_soft_labels
from jaxkd.engine.state import init_train_state
from jaxkd.engine.step import StepSpec, make_train_step


def _npz_config(path, widths=(32,), num_steps=30):
  config = toy_config(num_steps=num_steps, log_every_steps=10)
  config.dataset.path = str(path)
  config.model.widths = widths
  return config


@pytest.fixture(scope="module")
def toy_teacher(tmp_path_factory):
  """A small teacher trained on toy data saved as .npz (so runs can reload it by config)."""
  root = tmp_path_factory.mktemp("teacher")
  train_x, train_y = toy_arrays(512, 0)
  test_x, test_y = toy_arrays(203, 1)
  path = root / "toy.npz"
  np.savez(path, x_train=train_x, y_train=train_y, x_test=test_x, y_test=test_y)
  config = _npz_config(path, widths=(64,))
  train.train_and_evaluate(config, root / "run")
  return root / "run", path


def _distill_config(npz_path, **distill):
  config = _npz_config(npz_path)
  config.distill.terms = ml_collections.ConfigDict(
      {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 2.0}})
  config.distill.update(distill)
  return config


def test_cached_and_online_give_the_same_loss_and_cached_runs_no_teacher(toy_teacher, tmp_path):
  teacher_dir, npz_path = toy_teacher
  cache = write_soft_labels(teacher_dir, tmp_path / "soft.npz", dtype="float32", batch_size=64)
  config = _distill_config(npz_path)
  data = load_split(config.dataset, "train")
  fields = preprocessing(config.dataset, 1)
  assert fields["crop_padding"] == 0 and not fields["flip"]  # Augmentation off.
  mesh = make_mesh()
  teacher = load_run(teacher_dir, mesh)
  objective = build_objective(config.distill, 16, 30)
  model = teacher.model.clone(widths=(32,))
  tx = optax.sgd(0.1)
  state = init_train_state(model, tx, data.input_shape, 0, mesh)
  batches = TrainBatches(data, 32, seed=0)
  batches.add_extra("teacher_logits", load_soft_labels(cache, data, fields)[:, None])
  batch = batches.batch(3)
  online_batch = {k: v for k, v in batch.items() if k != "teacher_logits"}

  online = make_train_step(StepSpec(model, tx, objective, Preprocess(**fields), 4,
                                    teachers=[teacher.model]), mesh)
  cached = make_train_step(StepSpec(model, tx, objective, Preprocess(**fields), 4), mesh)
  _, online_metrics = online(state, [teacher.variables], shard_batch(online_batch, mesh))
  state = init_train_state(model, tx, data.input_shape, 0, mesh)  # The first was donated.
  _, cached_metrics = cached(state, [], shard_batch(batch, mesh))
  np.testing.assert_allclose(cached_metrics["loss/kd"], online_metrics["loss/kd"], rtol=1e-5)
  np.testing.assert_allclose(cached_metrics["loss"], online_metrics["loss"], rtol=1e-5)

  def matmuls(step, teacher_variables, batch):
    text = step.lower(state, teacher_variables, shard_batch(batch, mesh)).as_text()
    return text.count("dot_general")

  ce_only = make_train_step(StepSpec(model, tx, build_objective(toy_config().distill, 16, 30),
                                     Preprocess(**fields), 4), mesh)
  # The cached step has exactly the student's matmuls; the online one adds the teacher's.
  assert matmuls(cached, [], batch) == matmuls(ce_only, [], online_batch)
  assert matmuls(online, [teacher.variables], online_batch) > matmuls(cached, [], batch)


def test_cache_that_does_not_match_the_data_is_refused(toy_teacher, tmp_path):
  teacher_dir, npz_path = toy_teacher
  cache = write_soft_labels(teacher_dir, tmp_path / "soft.npz", batch_size=64, top_k=2)
  config = _distill_config(npz_path)
  data = load_split(config.dataset, "train")
  fields = preprocessing(config.dataset, 1)
  logits = load_soft_labels(cache, data, fields)  # Top-2: the rest have probability 0.
  assert ((jax.nn.softmax(logits) > 0).sum(-1) == 2).all()
  relabelled = ArrayDataset(data.inputs, (data.labels + 1) % 4, 4, name="npz", split="train")
  with pytest.raises(JaxkdError, match="does not match the data: its fingerprint"):
    load_soft_labels(cache, relabelled, fields)
  fewer = ArrayDataset(data.inputs[:100], data.labels[:100], 4, name="npz", split="train")
  with pytest.raises(JaxkdError, match="its count is 512, this run has 100"):
    load_soft_labels(cache, fewer, fields)
  with pytest.raises(JaxkdError, match="its mean is"):
    load_soft_labels(cache, data, {**fields, "mean": (0.1,)})
  with pytest.raises(JaxkdError, match="does not exist; write it with"):
    load_soft_labels(tmp_path / "missing.npz", data, fields)


def test_teacher_errors_are_clear(toy_teacher, tmp_path):
  teacher_dir, npz_path = toy_teacher
  with pytest.raises(JaxkdError, match=r"need a teacher: set distill.teachers"):
    train.train_and_evaluate(_distill_config(npz_path), tmp_path / "a")
  config = _distill_config(npz_path, teachers=(str(tmp_path / "nowhere"),))
  with pytest.raises(JaxkdError, match="is not a jaxkd run directory"):
    train.train_and_evaluate(config, tmp_path / "b")
  (tmp_path / "empty").mkdir()
  for name in ("config.json", "run_info.json"):
    (tmp_path / "empty" / name).write_text((teacher_dir / name).read_text())
  config = _distill_config(npz_path, teachers=(str(tmp_path / "empty"),))
  with pytest.raises(JaxkdError, match="has no checkpoint yet"):
    train.train_and_evaluate(config, tmp_path / "c")
  three = tmp_path / "three.npz"
  x, y = toy_arrays(64, 2, num_classes=3)
  np.savez(three, x_train=x, y_train=y, x_test=x, y_test=y)
  config = _distill_config(three, teachers=(str(teacher_dir),))
  with pytest.raises(JaxkdError, match="predicts 4 classes but the student's dataset npz has 3"):
    train.train_and_evaluate(config, tmp_path / "d")


@pytest.mark.parametrize("combine", ["average", "sum"])
def test_several_online_teachers_with_mixup(toy_teacher, tmp_path, combine):
  teacher_dir, npz_path = toy_teacher
  config = _distill_config(npz_path, teachers=(str(teacher_dir), str(teacher_dir)),
                           teacher_combine=combine)
  config.dataset.mixup_alpha = 0.4
  config.train.num_steps = 10
  result = train.train_and_evaluate(config, tmp_path)
  kd = [r["loss/kd"] for r in read_metrics(tmp_path) if r["split"] == "train"]
  assert result["step"] == 10 and all(np.isfinite(kd)) and kd[-1] > 0


def test_pipeline_writes_the_report(toy_teacher, tmp_path):
  teacher_dir, npz_path = toy_teacher
  config = ml_collections.ConfigDict()
  config.job = "pipeline"
  config.teacher = _npz_config(npz_path)
  config.teacher_workdir = str(teacher_dir)
  config.student = _npz_config(npz_path, widths=(8,))
  config.student.seeds = 2
  config.distill = ml_collections.ConfigDict(dict(
      terms={"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}},
      teacher_combine="average", mode="cached", soft_label_dtype="float16", top_k=0))
  config.report = ml_collections.ConfigDict(dict(latency_batch_size=64, latency_repeats=3))
  report = pipeline.run(config, tmp_path)
  for role in ("teacher", "baseline", "distilled"):
    for key in ("test_accuracy", "test_errors", "params", "bytes", "latency_ms"):
      assert key in report[role], (role, key)
  assert report["distilled"]["params"] == report["baseline"]["params"] < report["teacher"]["params"]
  # Each arm over seeds 0 and 1: per-seed numbers, their mean and sample std.
  for role in ("baseline", "distilled"):
    entry = report[role]
    assert entry["seeds"] == [0, 1] and [r["seed"] for r in entry["per_seed"]] == [0, 1]
    errors = [r["test_errors"] for r in entry["per_seed"]]
    for r in entry["per_seed"]:
      metrics = read_metrics(tmp_path / role / f"seed={r['seed']}")
      assert r["test_errors"] == [m for m in metrics if m["split"] == "test"][-1]["errors"]
      assert 0 <= r["agreement_with_teacher"] <= 1
    assert entry["test_errors"] == np.mean(errors)
    assert entry["test_errors_std"] == pytest.approx(np.std(errors, ddof=1))
    assert entry["test_accuracy"] == pytest.approx(1 - np.mean(errors) / 203)
  # The gain: baseline minus distilled errors, with Welch's 95% interval (as scipy has it).
  from scipy import stats

  base = [r["test_errors"] for r in report["baseline"]["per_seed"]]
  dist = [r["test_errors"] for r in report["distilled"]["per_seed"]]
  gain = report["gain"]
  assert gain["errors_mean"] == pytest.approx(np.mean(base) - np.mean(dist))
  if np.std(base) + np.std(dist) > 0:
    interval = stats.ttest_ind(base, dist, equal_var=False).confidence_interval(0.95)
    assert (gain["ci95_low"], gain["ci95_high"]) == pytest.approx((interval.low, interval.high))
  assert (tmp_path / "soft_labels.npz").exists() and (tmp_path / "accuracy.png").exists()
  markdown = (tmp_path / "report.md").read_text()
  assert "Distillation" in markdown and "| seed | baseline errors |" in markdown
  assert json.loads((tmp_path / "distilled" / "seed=1" / "config.json").read_text())["seed"] == 1
  assert json.loads((tmp_path / "distilled" / "seed=0" / "config.json").read_text())["distill"]["soft_labels"]
  # The seeds trained as one population per arm; one by one, each seed's run is the same.
  assert (tmp_path / "distilled" / "population").is_dir()
  config.vectorize_seeds = False
  sequential = pipeline.run(config, tmp_path / "sequential")
  assert not (tmp_path / "sequential" / "distilled" / "population").exists()
  for role in ("baseline", "distilled"):
    assert ([r["test_errors"] for r in sequential[role]["per_seed"]] ==
            [r["test_errors"] for r in report[role]["per_seed"]])
    for seed in (0, 1):
      for a, b in zip(*(jax.tree.leaves(load_run(root / role / f"seed={seed}",
                                                 make_mesh()).variables["params"])
                        for root in (tmp_path, tmp_path / "sequential"))):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_sharded_bfloat16_teacher_from_the_config(toy_teacher, tmp_path, monkeypatch):
  """distill.teacher_layout='sharded' and precision.teacher reach the run: the teacher's large arrays
  are split over the 8 devices and kept in bfloat16, and the student trains on it."""
  from jaxkd.engine import sharding
  from jaxkd.run.teachers import prepare_teachers

  monkeypatch.setattr(sharding, "SPLIT_MIN_ELEMENTS", 1024)  # The toy teacher is small.
  teacher_dir, npz_path = toy_teacher
  config = _distill_config(npz_path, teachers=(str(teacher_dir),),
                           teacher_layout="sharded")
  config.precision.teacher = "bfloat16"
  config.train.num_steps = 4
  data = load_split(config.dataset, "train")
  _, (variables,), _, _ = prepare_teachers(config.distill, build_objective(config.distill, 16, 4),
                                        data, preprocessing(config.dataset, 1), make_mesh(),
                                        config.precision.teacher)
  kernel = variables["params"]["dense0"]["kernel"]  # [64, 64]: 8 rows on each device.
  assert kernel.dtype == np.dtype("bfloat16") and kernel.addressable_shards[0].data.shape == (8, 64)
  assert variables["params"]["head"]["kernel"].sharding.is_fully_replicated  # [64, 4]: whole.
  result = train.train_and_evaluate(config, tmp_path)
  kd = [r["loss/kd"] for r in read_metrics(tmp_path) if r["split"] == "train"]
  assert result["step"] == 4 and all(np.isfinite(kd)) and kd[-1] > 0
