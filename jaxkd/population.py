"""Populations: S students of one architecture trained in one compiled step.

The members' train states are stacked on a leading axis and one jitted step updates them
all (jax.vmap of jaxkd.step's update). Members may differ in their seed and in scalar
hyperparameters that change no shape (jaxkd.population_fields); each member's values reach
the step as traced numbers, so one compilation serves every value:
  - term weights, temperatures and label smoothing (constant schedules): the objective's
    overrides;
  - the learning rate: each member's updates scaled by its rate over the first member's
    (exact for sgd, adam and adamw, whose updates are linear in the rate; refused with
    optimizer.max_norm, which is not);
  - the weight decay: in each member's optimizer state (optax.inject_hyperparams);
  - mixup alpha, and the model fields it lists in traced_fields (e.g. dropout rates).
Members that share the seed (and mixup) share the batch sequence, the augmentation and the
teacher: the teacher runs once per batch for all of them (prepare, outside the vmap).
Members with their own seed get their own batches, gathered on the device from the
training data held there (train.population_split: members or batch over the devices).

train_population(configs, workdirs, population_dir) trains them: one checkpoint of the
stacked state in population_dir (atomic, resumable after SIGTERM like any run), and in
each member's workdir its own metrics.jsonl, TensorBoard events, config and, at the end,
its final state as an ordinary run checkpoint (so load_run, export, reports and sweeps
read a member as a run of its own).
"""

import dataclasses
import pathlib
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from jaxkd import config_base
from jaxkd.assemble import Run, assemble, say
from jaxkd.checkpoint import Checkpointer
from jaxkd.data.batches import take
from jaxkd.data.catalog import load_source_split
from jaxkd.errors import JaxkdError
from jaxkd.evaluation import evaluate, select_on_validation
from jaxkd.interrupt import stop_on_signals
from jaxkd.loop import check_finite, write_run_files
from jaxkd.metric_writer import MetricWriter, read_metrics
from jaxkd.population_fields import check_population, population_differences
from jaxkd.sharding import DATA_AXIS, batch_sharding, replicated
from jaxkd.step import prepare, update

DEVICE_TABLE_LIMIT_BYTES = 2 << 30  # Seed populations gather batches on device below this.


def hyperparameters(runs: Sequence[Run]) -> dict:
  """Each member's traced values: {'learning_rate_scale': [S], 'terms': {label: {...: [S]}},
  and where members differ in them 'mixup_alpha': [S], 'model': {field: [S]}}."""
  varied = set(population_differences([r.config for r in runs]))
  vector = lambda values: jnp.asarray(values, jnp.float32)
  first = runs[0].config.optimizer.get("learning_rate") or 1.0
  terms = {}
  for term in runs[0].spec.objective.terms:
    specs = [r.config.distill.terms[term.label] for r in runs]
    values = {"weight": [spec["weight"] for spec in specs]}
    if term.temperature is not None:
      default = float(term.temperature(0))
      values["temperature"] = [spec.get("temperature", default) for spec in specs]
    if f"distill.terms.{term.label}.label_smoothing" in varied:
      default = getattr(term.method, "label_smoothing", 0.0)
      values["label_smoothing"] = [spec.get("label_smoothing", default) for spec in specs]
    terms[term.label] = {k: vector(v) for k, v in values.items()}
  scale = [(r.config.optimizer.get("learning_rate") or 1.0) / first for r in runs]
  hparams = {"learning_rate_scale": vector(scale), "terms": terms}
  if "dataset.mixup_alpha" in varied:
    hparams["mixup_alpha"] = vector([r.config.dataset.get("mixup_alpha", 0.0) for r in runs])
  model_fields = sorted(k.split(".", 1)[1] for k in varied if k.startswith("model."))
  if model_fields:
    model = runs[0].spec.model
    hparams["model"] = {f: vector([r.config.model.get(f, getattr(model, f)) for r in runs])
                        for f in model_fields}
  return hparams


def with_weight_decay(states, runs: Sequence[Run]):
  """The stacked states with each member's optimizer.weight_decay in its optimizer state."""
  values = jnp.asarray([r.config.optimizer.get("weight_decay", 0.0) for r in runs], jnp.float32)
  if optax.tree.get(states.opt_state, "weight_decay", None) is None:
    raise JaxkdError("members differ in optimizer.weight_decay, but this optimizer keeps no "
                     "weight_decay in its state (jaxkd.optim.decayed_weights does): fix the "
                     "decay, or build the optimizer with jaxkd.optim.")
  return states.replace(opt_state=optax.tree.set(states.opt_state, weight_decay=values))


def member_sharding(mesh) -> NamedSharding:
  """The member axis (leading) split over the mesh's devices."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def batch_layout(mesh, shared_batch: bool, split: str) -> NamedSharding:
  """Where a step's batch lives: one batch for all (shared_batch) or one per member
  ([S, B, ...]), split over the devices by batch or, with split='member', whole on the
  devices holding the members that read it."""
  if split == "member":
    return replicated(mesh) if shared_batch else member_sharding(mesh)
  return batch_sharding(mesh) if shared_batch else NamedSharding(mesh,
                                                                 PartitionSpec(None, DATA_AXIS))


def make_population_step(run: Run, shared_batch: bool, shared_prepare: bool,
                         split: str = "batch", gather: bool = False):
  """step(states, hparams, teacher_variables, batch, table) -> (states, metrics [S, ...]),
  jitted. shared_prepare: members share batch, augmentation and mixup, so the teachers run
  once per step for all (outside the vmap); otherwise each member prepares its own view.
  split: the member axis ('member') or the batch axis ('batch') over the devices. gather:
  `batch` holds only each member's example indices [S, B] and `table` the training data on
  device, from which the step gathers the members' batches."""
  spec, mesh = run.spec, run.mesh

  def step(states, hparams, teacher_variables, batch, table):
    if gather:
      batch = take(table, batch)
    if shared_prepare:
      first = jax.tree.map(lambda x: x[0], (states.rng, states.step))
      prepared = prepare(spec, *first, teacher_variables, batch)
      return jax.vmap(lambda s, h: update(spec, s, prepared, batch, h))(states, hparams)

    def member(s, h, b):
      return update(spec, s, prepare(spec, s.rng, s.step, teacher_variables, b,
                                     h.get("mixup_alpha"), s.variables()), b, h)

    return jax.vmap(member, in_axes=(0, 0, None if shared_batch else 0))(states, hparams, batch)

  members = member_sharding(mesh) if split == "member" else replicated(mesh)
  teacher_shardings = jax.tree.map(lambda x: x.sharding, run.teacher_variables)
  return jax.jit(step, in_shardings=(members, members, teacher_shardings,
                                     batch_layout(mesh, shared_batch, split), replicated(mesh)),
                 out_shardings=(members, members), donate_argnums=0)


def device_table(run: Run):
  """The training data on the devices (replicated), for gathering batches there; None where
  it cannot be (streamed data, or larger than DEVICE_TABLE_LIMIT_BYTES)."""
  if not hasattr(run.batches, "columns"):
    return None
  host = run.batches.columns()
  if sum(np.asarray(v).nbytes for v in host.values()) > DEVICE_TABLE_LIMIT_BYTES:
    return None
  return {k: jax.device_put(np.asarray(v), replicated(run.mesh)) for k, v in host.items()}


def _member_start(run: Run):
  """A member's state to start from: its own workdir's last checkpoint where it has one (a
  member continued in a new population, e.g. the next rung of a search), else fresh."""
  member = Checkpointer(run.workdir, 1, run.config.train.keep_checkpoints)
  try:
    return run.state if member.latest_step() is None else member.restore(run.state)
  finally:
    member.close()


def _member(tree, index: int):
  return jax.tree.map(lambda x: x[index], tree)


def train_population(configs: Sequence[ml_collections.ConfigDict],
                     workdirs: Sequence[str | pathlib.Path], population_dir: str | pathlib.Path,
                     mesh=None, evaluate_test: bool = True) -> list[dict]:
  """Trains the members (configs[i] in workdirs[i]) as one population; returns each one's
  final test metrics, as train_and_evaluate would. evaluate_test=False evaluates the
  validation split only (a search, whose test set is measured once, at its end); the
  results then hold validation metrics ('validation_*') instead."""
  for config in configs:
    config_base.validate(config)
  check_population(configs)
  raw = (load_source_split(configs[0].dataset, "train"),
         load_source_split(configs[0].dataset, "test"))
  shared = len({c.seed for c in configs}) == 1
  first = assemble(configs[0], workdirs[0], raw, mesh)
  if shared:  # One seed: the same data, teacher and initial state; only the values differ.
    for workdir in workdirs[1:]:
      pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    runs = [first] + [dataclasses.replace(first, config=c, workdir=pathlib.Path(w))
                      for c, w in zip(configs[1:], workdirs[1:])]
  else:
    runs = [first] + [assemble(c, w, raw, mesh) for c, w in zip(configs[1:], workdirs[1:])]
  eval_step = first.eval_step  # One architecture: one compiled evaluation for every member.
  varied = population_differences(configs)
  shared_prepare = (shared and "dataset.mixup_alpha" not in varied
                    and first.spec.on_policy is None)  # Each member generates its own.
  split = configs[0].train.get("population_split", "batch")
  devices = first.mesh.devices.size
  if split == "member" and len(runs) % devices:
    raise JaxkdError(f"train.population_split='member' puts whole members on each of the "
                     f"{devices} devices: give a multiple of {devices} members (not "
                     f"{len(runs)}), or split by batch.")
  table = None if shared else device_table(first)
  if {"teacher_logits", "teacher_topk_ids"} & set(getattr(first.batches, "extras", {})):
    teacher = "cached soft labels, no teacher forward"
  elif first.spec.objective.needs_teacher:
    teacher = ("one teacher forward per step for all" if shared_prepare else
               "a teacher forward per member")
  else:
    teacher = "no teacher"
  say(f"population of {len(runs)} {configs[0].model.name} students, split over {devices} "
      f"device(s) by {split}; "
      + ("one batch sequence for all (shared seed)" if shared_prepare else
         "one batch sequence, each member its own mixup" if shared else
         "each member its own seed and batches, gathered "
         + ("on the device from the data held there" if table is not None else "on the host"))
      + f"; {teacher}")
  starts = [_member_start(r) for r in runs]
  if len({int(s.step) for s in starts}) > 1:
    raise JaxkdError(f"the members' workdirs hold checkpoints at steps "
                     f"{[int(s.step) for s in starts]}; a population steps its members together: "
                     "finish them one by one (jaxkd.sweep --novectorize) or start fresh workdirs.")
  states = jax.tree.map(lambda *xs: jnp.stack(xs), *starts)
  if "optimizer.weight_decay" in varied:
    states = with_weight_decay(states, runs)
  members = member_sharding(first.mesh) if split == "member" else replicated(first.mesh)
  states, hparams = jax.device_put((states, hyperparameters(runs)), members)
  step_fn = make_population_step(first, shared, shared_prepare, split, table is not None)
  layout = batch_layout(first.mesh, shared, split)

  def batch_at(step: int):
    if shared:
      host = first.batches.batch(step)
    elif table is not None:
      host = np.stack([r.batches.indices(step) for r in runs]).astype(np.int32)
      return jax.make_array_from_process_local_data(layout, host)
    else:
      each = [r.batches.batch(step) for r in runs]
      host = {k: np.stack([h[k] for h in each]) for k in each[0]}
    return {k: jax.make_array_from_process_local_data(layout, v) for k, v in host.items()}

  config = first.config
  checkpointer = Checkpointer(population_dir, config.train.checkpoint_every_steps
                              or first.steps_per_epoch, config.train.keep_checkpoints)
  if checkpointer.latest_step() is not None:
    states = checkpointer.restore(states)
    say(f"resuming the population at step {int(states.step[0])} in {checkpointer.directory}")
  start = int(states.step[0])
  writers = [MetricWriter(r.workdir, resume_step=start) for r in runs]
  for run, writer in zip(runs, writers):
    write_run_files(run.workdir, run.config, run.mesh, run.train_data)
    writer.write_hparams(run.config)
  eval_every = config.train.eval_every_steps or first.steps_per_epoch
  pending, last, stopped = [], time.perf_counter(), None
  with stop_on_signals(jax.process_count()) as stop:
    for step in range(start + 1, first.total_steps + 1):
      states, metrics = step_fn(states, hparams, first.teacher_variables, batch_at(step - 1),
                                table)
      pending.append(metrics)
      final = step == first.total_steps
      if (step % config.train.log_every_steps == 0 or step % checkpointer.every_steps == 0
          or final):
        check_finite(pending, step - len(pending) + 1, checkpointer)  # Before any save.
      if step % config.train.log_every_steps == 0 or final:
        means = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *jax.device_get(pending))
        now = time.perf_counter()
        for i, writer in enumerate(writers):
          writer.write(step, "train", {**{k: float(v[i]) for k, v in means.items()},
                                       "examples_per_sec": len(pending) * config.train.batch_size
                                       / (now - last), "epoch": step / first.steps_per_epoch})
        pending, last = [], now
      if step % eval_every == 0 or final:
        for i, (run, writer) in enumerate(zip(runs, writers)):
          variables = _member(states, i).variables()
          for name, data in (("validation", run.validation_data),
                             ("test", run.test_data if evaluate_test else None)):
            if data is not None:
              writer.write(step, name, evaluate(eval_step, variables, data,
                                                config.train.eval_batch_size, run.mesh))
      checkpointer.save(step, states)
      if stop.stop_now():
        stopped = stop.reason
        break
  check_finite(pending, int(states.step[0]) - len(pending) + 1, checkpointer)  # Stopped early.
  checkpointer.save(int(states.step[0]), states, force=True)
  checkpointer.close()
  for writer in writers:
    writer.close()
  if stopped:
    say(f"population stopped by {stopped} at step {int(states.step[0])}; run again to resume.")
    return [{"step": int(states.step[0]), "interrupted": True} for _ in runs]
  return _finish(runs, states, eval_step, evaluate_test)


def _finish(runs: Sequence[Run], states, eval_step, evaluate_test: bool = True) -> list[dict]:
  """Each member's final state as an ordinary checkpoint in its workdir; its test metrics."""
  results = []
  for i, run in enumerate(runs):
    state = _member(states, i)
    member = Checkpointer(run.workdir, 1, run.config.train.keep_checkpoints)
    member.save(int(state.step), state, force=True)
    member.close()
    split, data = ("test", run.test_data) if evaluate_test else ("validation", run.validation_data)
    metrics = evaluate(eval_step, state.variables(), data, run.config.train.eval_batch_size,
                       run.mesh)
    summary = {"step": int(state.step), "interrupted": False,
               "num_params": sum(x.size for x in jax.tree.leaves(state.params)),
               **{f"{split}_{k}": v for k, v in metrics.items()}}
    if run.validation_data is not None and jax.process_index() == 0:
      summary.update(select_on_validation(read_metrics(run.workdir)))
    results.append(summary)
  return results
