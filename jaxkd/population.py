"""Populations: S students of one architecture trained in one compiled step.

The members' train states are stacked on a leading axis and one jitted step updates them
all (jax.vmap of jaxkd.step's update). Members may differ in their seed and in scalar
hyperparameters that change no shape (POPULATION_FIELDS); each member's values reach the
step as traced numbers, so one compilation serves every value:
  - term weights and temperatures (constant schedules): the objective's overrides;
  - the learning rate: each member's updates scaled by its rate over the first member's
    (exact for sgd, adam and adamw, whose updates are linear in the rate; refused with
    optimizer.max_norm, which is not).
Members that share the seed share the batch sequence, the augmentation and the teacher:
the teacher runs once per batch for all of them (prepare, outside the vmap). Members with
their own seed get their own batches, stacked on the member axis.

train_population(configs, workdirs, population_dir) trains them: one checkpoint of the
stacked state in population_dir (atomic, resumable after SIGTERM like any run), and in
each member's workdir its own metrics.jsonl, TensorBoard events, config and, at the end,
its final state as an ordinary run checkpoint (so load_run, export, reports and sweeps
read a member as a run of its own).
"""

import dataclasses
import fnmatch
import pathlib
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxkd import config_base
from jaxkd.assemble import Run, assemble, say
from jaxkd.checkpoint import Checkpointer
from jaxkd.data.catalog import load_source_split
from jaxkd.errors import JaxkdError
from jaxkd.evaluation import evaluate, select_on_validation
from jaxkd.interrupt import stop_on_signals
from jaxkd.loop import check_finite, write_run_files
from jaxkd.metric_writer import MetricWriter, read_metrics
from jaxkd.sharding import DATA_AXIS, batch_sharding, replicated, shard_batch
from jaxkd.step import prepare, update

POPULATION_FIELDS = ("seed", "optimizer.learning_rate", "distill.terms.*.weight",
                     "distill.terms.*.temperature")


def _flat(config: ml_collections.ConfigDict) -> dict:
  flat = {}

  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        walk(value, f"{prefix}{key}.")
      else:
        flat[f"{prefix}{key}"] = value

  walk(config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config, "")
  return flat


def differing_fields(configs: Sequence[ml_collections.ConfigDict]) -> list[str]:
  flats = [_flat(c) for c in configs]
  keys = set().union(*flats)
  return sorted(k for k in keys if len({repr(f.get(k)) for f in flats}) > 1)


def _varies(key: str) -> bool:
  return any(fnmatch.fnmatchcase(key, pattern) for pattern in POPULATION_FIELDS)


def population_differences(configs: Sequence[ml_collections.ConfigDict]) -> list[str]:
  """The population fields in which the configs differ."""
  return [k for k in differing_fields(configs) if _varies(k)]


def fixed_key(config: ml_collections.ConfigDict) -> str:
  """What members of one population must share: every field but the population fields."""
  return repr(sorted((k, repr(v)) for k, v in _flat(config).items() if not _varies(k)))


def check_population(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """Raises JaxkdError unless the configs differ only where a population can."""
  if not configs:
    raise JaxkdError("a population needs at least one member.")
  fixed = [k for k in differing_fields(configs) if not _varies(k)]
  if fixed:
    raise JaxkdError(f"these members differ in {fixed}, which a population cannot vary (its "
                     f"members differ only in {list(POPULATION_FIELDS)}); run them apart.")
  first = configs[0]
  if first.get("stages"):
    raise JaxkdError("populations do not run config.stages; train staged recipes one by one.")
  if first.optimizer.get("max_norm") and "optimizer.learning_rate" in differing_fields(configs):
    raise JaxkdError("a population over optimizer.learning_rate scales each member's updates, "
                     "which optimizer.max_norm's projection does not allow; fix the rate or "
                     "drop max_norm.")
  for label, spec in first.distill.terms.items():
    for name in ("weight", "temperature"):
      kind = spec.get(f"{name}_schedule", "constant")
      if kind != "constant" and f"distill.terms.{label}.{name}" in differing_fields(configs):
        raise JaxkdError(f"distill.terms.{label}.{name} follows a '{kind}' schedule: a "
                         "population varies constant values only.")


def group_populations(configs: Sequence[ml_collections.ConfigDict]) -> list[list[int]]:
  """Positions of `configs` that train together: configs that differ only in population
  fields. Those of one seed share batches and the teacher, so a grid over hyperparameters
  and seeds makes one population per seed; a grid over seeds alone, one population. A
  group that cannot be a population (e.g. a varied field under a schedule) and groups of
  one are left out: those configs train one by one."""
  groups: dict[str, list[int]] = {}
  for position, config in enumerate(configs):
    groups.setdefault(fixed_key(config), []).append(position)
  populations = []
  for members in groups.values():
    varied = any(key != "seed" for key in population_differences([configs[i] for i in members]))
    by_seed: dict[int, list[int]] = {}
    for i in members:
      by_seed.setdefault(configs[i].seed if varied else 0, []).append(i)
    for group in by_seed.values():
      if len(group) > 1:
        try:
          check_population([configs[i] for i in group])
        except JaxkdError:
          continue
        populations.append(group)
  return populations


def hyperparameters(runs: Sequence[Run]) -> dict:
  """Each member's traced values: {'learning_rate_scale': [S], 'terms': {label: {...: [S]}}}."""
  first = runs[0].config.optimizer.get("learning_rate") or 1.0
  terms = {}
  for term in runs[0].spec.objective.terms:
    values = {"weight": [r.config.distill.terms[term.label]["weight"] for r in runs]}
    if term.temperature is not None:
      default = float(term.temperature(0))
      values["temperature"] = [r.config.distill.terms[term.label].get("temperature", default)
                               for r in runs]
    terms[term.label] = {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
  scale = [(r.config.optimizer.get("learning_rate") or 1.0) / first for r in runs]
  return {"learning_rate_scale": jnp.asarray(scale, jnp.float32), "terms": terms}


def make_population_step(run: Run, shared: bool):
  """step(states, hparams, teacher_variables, batch) -> (states, metrics [S, ...]), jitted."""
  spec, mesh = run.spec, run.mesh

  def step(states, hparams, teacher_variables, batch):
    if shared:  # One teacher forward for all: members share seed, batch and keys.
      first = jax.tree.map(lambda x: x[0], (states.rng, states.step))
      prepared = prepare(spec, *first, teacher_variables, batch)
      return jax.vmap(lambda s, h: update(spec, s, prepared, batch, h))(states, hparams)
    return jax.vmap(lambda s, h, b: update(spec, s, prepare(spec, s.rng, s.step,
                                                             teacher_variables, b), b, h))(
        states, hparams, batch)

  batches = batch_sharding(mesh) if shared else NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))
  teacher_shardings = jax.tree.map(lambda x: x.sharding, run.teacher_variables)
  return jax.jit(step, in_shardings=(replicated(mesh), replicated(mesh), teacher_shardings,
                                     batches),
                 out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=0)


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
  say(f"population of {len(runs)} {configs[0].model.name} students: "
      + ("one batch sequence and one teacher forward per step for all (shared seed)" if shared
         else "each member its own seed, batches and teacher forward"))
  starts = [_member_start(r) for r in runs]
  if len({int(s.step) for s in starts}) > 1:
    raise JaxkdError(f"the members' workdirs hold checkpoints at steps "
                     f"{[int(s.step) for s in starts]}; a population steps its members together: "
                     "finish them one by one (jaxkd.sweep --novectorize) or start fresh workdirs.")
  states = jax.tree.map(lambda *xs: jnp.stack(xs), *starts)
  hparams, step_fn = hyperparameters(runs), make_population_step(first, shared)
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
  stacked = NamedSharding(first.mesh, PartitionSpec(None, DATA_AXIS))
  eval_every = config.train.eval_every_steps or first.steps_per_epoch
  pending, last, stopped = [], time.perf_counter(), None
  with stop_on_signals(jax.process_count()) as stop:
    for step in range(start + 1, first.total_steps + 1):
      if shared:
        batch = shard_batch(first.batches.batch(step - 1), first.mesh)
      else:
        host = [r.batches.batch(step - 1) for r in runs]
        batch = {k: jax.make_array_from_process_local_data(stacked, np.stack([h[k] for h in host]))
                 for k in host[0]}
      states, metrics = step_fn(states, hparams, first.teacher_variables, batch)
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
          for split, data in (("validation", run.validation_data),
                              ("test", run.test_data if evaluate_test else None)):
            if data is not None:
              writer.write(step, split, evaluate(eval_step, variables, data,
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
