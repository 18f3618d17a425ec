"""Scale and reliability: bfloat16 compute, a teacher sharded over the devices, and what the
distillation step communicates (read from the compiled program for 8 devices)."""

import dataclasses
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from conftest import toy_arrays, toy_config

from jaxkd import config as config_base
from jaxkd.run import teachers
from jaxkd.run import train
from jaxkd.run.assemble import connect_features
from jaxkd.run.checkpoint import Checkpointer
from jaxkd.data import ArrayDataset, Preprocess, TrainBatches, preprocessing
from jaxkd.distill import build_objective
from jaxkd.errors import JaxkdError
from hlo_stats import collective_bytes, collectives
from jaxkd.models import MODELS, create_model
from jaxkd.run.saved import SavedRun, load_run
from jaxkd.engine.sharding import (make_mesh, place, replicated, shard_batch,
                            split_largest_axis)
from jaxkd.engine.state import init_train_state
from jaxkd.engine.step import Precision, StepSpec, make_train_step

KD = {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 2.0}}


@MODELS.register("test_conv_bn_net")
class ConvBNNet(nn.Module):
  """A user's own model (no dtype options): convolution, BatchNorm, dense head."""

  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(8, (3, 3))(x)))
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


@MODELS.register("test_wide_bn_net")
class WideBNNet(nn.Module):
  """A wide hidden layer (a [64, 1024] kernel on 8x8 images: split 8 ways) and BatchNorm
  statistics (a collection besides params)."""

  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dense(1024)(x.reshape(x.shape[0], -1))
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    return nn.Dense(self.num_classes)(x)


@pytest.fixture(scope="module")
def wide_teacher(tmp_path_factory):
  """The workdir of a WideBNNet trained 2 steps with momentum (so its checkpoint holds
  optimizer state as big as its params)."""
  workdir = tmp_path_factory.mktemp("wide_teacher")
  config = toy_config(num_steps=2, log_every_steps=2, checkpoint_every_steps=2)
  config.model = ml_collections.ConfigDict({"name": "test_wide_bn_net"})
  datasets = tuple(ArrayDataset(*toy_arrays(n, seed), num_classes=4, name="toy", split=split)
                   for n, seed, split in ((128, 0, "train"), (64, 1, "test")))
  train.train_and_evaluate(config, workdir, datasets=datasets)
  return workdir


def _array_reads(monkeypatch) -> dict:
  """{name ('params.Dense_0.kernel', ...): sharding read into} of each array orbax reads
  from disk from now on."""
  reads, deserialize = {}, ocp.type_handlers.ArrayHandler.deserialize

  async def recording(self, infos, args=None):
    for info, arg in zip(infos, args or [None] * len(infos)):
      reads[info.name] = getattr(arg, "sharding", None)
    return await deserialize(self, infos, args)

  monkeypatch.setattr(ocp.type_handlers.ArrayHandler, "deserialize", recording)
  return reads


def test_a_sharded_teacher_is_read_straight_into_its_shards_without_optimizer_state(
    wide_teacher, monkeypatch):
  checkpointer = Checkpointer(wide_teacher, every_steps=1, read_only=True)
  stored = checkpointer.manager.item_metadata(checkpointer.latest_step()).tree
  checkpointer.close()
  assert len(jax.tree.leaves(stored["opt_state"])) >= len(jax.tree.leaves(stored["params"]))
  mesh = make_mesh()
  reads = _array_reads(monkeypatch)
  sharded = load_run(wide_teacher, mesh, layout="sharded")
  # Only the variables were read from disk, nothing of the optimizer state or the step's rng.
  assert {f.name for f in dataclasses.fields(SavedRun)}.isdisjoint({"opt_state", "state"})
  assert set(sharded.variables) == {"params", "batch_stats"}
  assert reads and all(name.startswith(("params.", "model_state.")) for name in reads), reads
  assert len(reads) == len(jax.tree.leaves(sharded.variables))
  # The wide kernel was read in 8 column blocks, one per device (never whole on one); the
  # rest (small) whole.
  kernel = sharded.variables["params"]["Dense_0"]["kernel"]
  assert reads["params.Dense_0.kernel"] == kernel.sharding
  assert kernel.shape == (64, 1024) and not kernel.sharding.is_fully_replicated
  assert {shard.data.shape for shard in kernel.addressable_shards} == {(64, 128)}
  assert len({shard.device for shard in kernel.addressable_shards}) == 8
  others = [x for x in jax.tree.leaves(sharded.variables) if x is not kernel]
  assert others and all(x.sharding.is_fully_replicated for x in others)
  # The same values as loaded replicated (the default).
  whole = load_run(wide_teacher, mesh)
  assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(whole.variables))
  assert jax.tree.structure(whole.variables) == jax.tree.structure(sharded.variables)
  for a, b in zip(jax.tree.leaves(whole.variables), jax.tree.leaves(sharded.variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert whole.step == sharded.step == 2
  with pytest.raises(JaxkdError, match=r"layout='diagonal': use one of \['replicated', "):
    load_run(wide_teacher, mesh, layout="diagonal")


def test_a_sharded_teacher_layout_loads_each_teacher_sharded_and_casts_it_in_place(wide_teacher,
                                                                        monkeypatch):
  layouts = []

  def spy(workdir, mesh, layout=None):
    layouts.append(layout)
    return load_run(workdir, mesh, layout)

  monkeypatch.setattr(teachers, "load_run", spy)
  mesh = make_mesh()
  config = ml_collections.ConfigDict({"teachers": (str(wide_teacher),), "soft_labels": (),
                                      "teacher_layout": "sharded"})
  objective = build_objective(ml_collections.ConfigDict({"terms": KD,
                                                         "teacher_combine": "average"}), 8, 8)
  data = ArrayDataset(*toy_arrays(64, 0), num_classes=4, name="toy", split="train")
  fields = preprocessing(toy_config().dataset, 1)
  _, (variables,), _, _ = teachers.prepare_teachers(config, objective, data, fields, mesh,
                                                 dtype="bfloat16")
  assert layouts == ["sharded"]
  kernel = variables["params"]["Dense_0"]["kernel"]
  assert kernel.dtype == jnp.bfloat16
  assert {shard.data.shape for shard in kernel.addressable_shards} == {(64, 128)}

  small = ArrayDataset(*toy_arrays(64, 0, size=4), num_classes=4, name="toy", split="train")
  with pytest.raises(JaxkdError, match=r"takes images \(8, 8, 1\), the student's data \(toy\) "
                                       r"are \(4, 4, 1\).*dataset.name='npz'.*config.json"):
    teachers.prepare_teachers(config, objective, small, fields, mesh)


def _setup(student, teacher_widths, terms=KD):
  """A distillation run on toy data over the 8 devices: its state, teacher variables,
  batches, mesh and make_step(**options); connectors (if any) built as a run builds them."""
  data = ArrayDataset(*toy_arrays(256, 0), num_classes=4)
  mesh = make_mesh()
  model = create_model(ml_collections.ConfigDict(student), 4)
  teacher = create_model(ml_collections.ConfigDict({"name": "mlp", "widths": teacher_widths}), 4)
  teacher_variables = jax.jit(teacher.init, out_shardings=replicated(mesh))(
      jax.random.PRNGKey(9), jnp.zeros((1, *data.input_shape)))
  objective = build_objective(ml_collections.ConfigDict({"terms": terms,
                                                         "teacher_combine": "average"}), 8, 8)
  objective, aux_params, aux_state = connect_features(
      objective, model, [teacher], [teacher_variables], data.input_shape, 0, data)
  tx = optax.sgd(0.05, momentum=0.9)
  state = init_train_state(model, tx, data.input_shape, 0, mesh, aux_params, aux_state)
  def make_step(student_dtype="float32", teacher_dtype="float32", teacher_shardings=None):
    precision = Precision(jnp.dtype(student_dtype), jnp.dtype(teacher_dtype))
    spec = StepSpec(model, tx, objective, Preprocess((0.5,), (0.5,)), 4, teachers=[teacher],
                    precision=precision)
    return make_train_step(spec, mesh, teacher_shardings)
  batches = TrainBatches(data, 32, seed=0)
  return types.SimpleNamespace(state=state, teacher_variables=teacher_variables, mesh=mesh,
                               make_step=make_step, batch=lambda s: shard_batch(batches.batch(s), mesh))


def _matmuls(text: str) -> list[str]:
  return [line for line in text.splitlines() if "dot_general" in line or "convolution" in line]


def test_bfloat16_compute_keeps_float32_state_and_trains():
  """A user's model with no dtype options of its own, student and teacher in bfloat16: the
  matmuls and convolutions asked of XLA are bf16 (the CPU backend may upcast them when it
  compiles; GPUs and TPUs run them in bf16), the state stays float32, the loss goes down."""
  run = _setup({"name": "test_conv_bn_net"}, (64,))
  state, teachers = run.state, [run.teacher_variables]
  lowered = {dtype: _matmuls(run.make_step(student_dtype=dtype, teacher_dtype=dtype).lower(
      state, teachers, run.batch(0)).as_text()) for dtype in ("float32", "bfloat16")}
  assert lowered["bfloat16"] and all("bf16" in line for line in lowered["bfloat16"])
  assert lowered["float32"] and not any("bf16" in line for line in lowered["float32"])
  step = run.make_step(student_dtype="bfloat16", teacher_dtype="bfloat16")
  losses = []
  for s in range(12):
    state, metrics = step(state, teachers, run.batch(s % 8))
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all() and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
  for tree in (state.params, state.opt_state, state.model_state):
    assert {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)} == {
        np.dtype("float32")}


def test_precision_other_than_float32_or_bfloat16_is_refused():
  assert config_base.base_config().precision.to_dict() == {"student": "float32",
                                                           "teacher": "float32"}
  config = toy_config()
  config.precision.teacher = "float16"
  with pytest.raises(JaxkdError, match=r"precision.teacher='float16'.*\['float32', 'bfloat16'\]"):
    config_base.validate(config)


def test_sharded_teacher_splits_its_arrays_and_trains_the_same_student():
  run = _setup({"name": "mlp", "widths": (32,)}, (256, 256))
  initial = jax.device_get(run.state)
  shardings = split_largest_axis(run.teacher_variables, run.mesh)
  sharded = place(run.teacher_variables, shardings)
  kernels = {name: layer["kernel"] for name, layer in sharded["params"].items()}
  for name, shape in (("dense0", (64, 32)), ("dense1", (32, 256))):  # 1/8 on each device
    assert not kernels[name].sharding.is_fully_replicated
    assert kernels[name].addressable_shards[0].data.shape == shape, name
  assert kernels["head"].sharding.is_fully_replicated  # [256, 4], 1024 elements: kept whole.
  results = []
  for step, teacher_variables in ((run.make_step(), run.teacher_variables),
                                  (run.make_step(teacher_shardings=[shardings]), sharded)):
    state = jax.device_put(initial, replicated(run.mesh))
    for s in range(3):
      state, metrics = step(state, [teacher_variables], run.batch(s))
    results.append(jax.device_get((state.params, metrics)))
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_step_all_reduces_the_gradients_and_nothing_of_the_teacher():
  """Data parallelism moves per step the trainable parameters' gradients (the student's and
  the FitNets connector's, float32), plus a few scalars; the teacher, replicated and frozen,
  is never communicated (it is ~15x the gradients here, so any of it would show)."""
  terms = {**KD, "hint": {"term": "fitnet", "weight": 1.0, "student": "dense0",
                          "teacher": "dense1"}}
  run = _setup({"name": "mlp", "widths": (32,)}, (512, 512), terms=terms)
  assert set(run.state.aux_params) == {"hint"}  # The connector: 32 -> 512 features.
  nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree))
  grad_bytes, teacher_bytes = nbytes(run.state.trainable()), nbytes(run.teacher_variables)
  assert teacher_bytes > 10 * grad_bytes
  text = run.make_step().lower(run.state, [run.teacher_variables], run.batch(0)).compile().as_text()
  totals = collective_bytes(text)
  print(f"\ncollectives {totals}; gradients {grad_bytes} B; teacher {teacher_bytes} B")
  assert set(totals) == {"all-reduce"}, collectives(text)
  assert grad_bytes <= totals["all-reduce"] <= grad_bytes + 4096, collectives(text)
  assert totals["all-reduce"] < grad_bytes + teacher_bytes
