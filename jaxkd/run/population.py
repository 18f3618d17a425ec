"""Populations: S students of one architecture trained in one compiled step.

The members' train states are stacked on a leading axis and one jitted step updates them
all (jax.vmap of jaxkd.engine.step's update). Members may differ in their seed and in scalar
hyperparameters that change no shape (jaxkd.config.population); each member's values reach
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

train_population(configs, workdirs, population_dir) trains them through the one training
loop (jaxkd.run.loop.fit): one checkpoint of the stacked state in population_dir (atomic,
resumable after SIGTERM like any run), and in each member's workdir its own metrics.jsonl,
TensorBoard events, config and, at the end, its final state as an ordinary run checkpoint
(so load_run, export, reports and sweeps read a member as a run of its own).
"""

import dataclasses
import pathlib
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxkd import config as config_checks
from jaxkd.config.population import check_population, population_differences
from jaxkd.data.catalog import load_source_split
from jaxkd.engine.cohort_step import make_cohort_step
from jaxkd.engine.sharding import replicated
from jaxkd.engine.step import batch_layout, make_population_step, member_sharding
from jaxkd.errors import JaxkdError
from jaxkd.run.assemble import Run, assemble
from jaxkd.run.checkpoint import Checkpointer
from jaxkd.run.loop import Trainee, fit

DEVICE_TABLE_LIMIT_BYTES = 2 << 30  # Seed populations gather batches on device below this.


def hyperparameters(runs: Sequence[Run]) -> dict:
  """Each member's traced values: {'learning_rate_scale': [S], 'terms': {label: {...: [S]}},
  and where members differ in them 'mixup_alpha': [S], 'model': {field: [S]}}."""
  varied = set(population_differences([r.config for r in runs]))
  vector = lambda values: jnp.asarray(values, jnp.float32)
  first = runs[0].config.optimizer.learning_rate or 1.0
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
  scale = [(r.config.optimizer.learning_rate or 1.0) / first for r in runs]
  hparams = {"learning_rate_scale": vector(scale), "terms": terms}
  if "dataset.mixup_alpha" in varied:
    hparams["mixup_alpha"] = vector([r.config.dataset.mixup_alpha for r in runs])
  model_fields = sorted(k.split(".", 1)[1] for k in varied if k.startswith("model."))
  if model_fields:
    model = runs[0].spec.model
    hparams["model"] = {f: vector([r.config.model.get(f, getattr(model, f)) for r in runs])
                        for f in model_fields}
  return hparams


def with_weight_decay(states, runs: Sequence[Run]):
  """The stacked states with each member's optimizer.weight_decay in its optimizer state."""
  values = jnp.asarray([r.config.optimizer.weight_decay for r in runs], jnp.float32)
  if optax.tree.get(states.opt_state, "weight_decay", None) is None:
    raise JaxkdError("members differ in optimizer.weight_decay, but this optimizer keeps no "
                     "weight_decay in its state (jaxkd.engine.optim.decayed_weights does): fix "
                     "the decay, or build the optimizer with jaxkd.engine.optim.")
  return states.replace(opt_state=optax.tree.set(states.opt_state, weight_decay=values))


def device_table(run: Run):
  """The training data on the devices (replicated), for gathering batches there; None where
  it cannot be (streamed data, or larger than DEVICE_TABLE_LIMIT_BYTES)."""
  if not hasattr(run.batches, "columns"):
    return None
  host = run.batches.columns()
  if sum(np.asarray(v).nbytes for v in host.values()) > DEVICE_TABLE_LIMIT_BYTES:
    return None
  table = {k: jax.device_put(np.asarray(v), replicated(run.mesh)) for k, v in host.items()}
  # Copied before the first step reads it: with XLA:CPU's devices sharing one thread pool,
  # a step whose collective waits on a device still receiving its copy of the table can
  # leave the other devices waiting until XLA aborts (seen with 8 fake devices on 2 cores).
  return jax.block_until_ready(table)


def member_start(run: Run):
  """A member's state to start from: its own workdir's last checkpoint where it has one (a
  member continued in a new population, e.g. the next rung of a search), else fresh."""
  member = Checkpointer(run.workdir, 1, run.config.train.keep_checkpoints)
  try:
    return run.state if member.latest_step() is None else member.restore(run.state)
  finally:
    member.close()


def check_same_step(starts) -> None:
  """Members stepped together must start at one step."""
  if len({int(s.step) for s in starts}) > 1:
    raise JaxkdError(f"the members' workdirs hold checkpoints at steps "
                     f"{[int(s.step) for s in starts]}; a population steps its members together: "
                     "finish them one by one (python -m jaxkd sweep --novectorize) or start "
                     "fresh workdirs.")


def _describe(runs: Sequence[Run], split: str, shared: bool, shared_prepare: bool,
              gathered: bool) -> str:
  first = runs[0]
  if {"teacher_logits", "teacher_topk_ids"} & set(getattr(first.batches, "extras", {})):
    teacher = "cached soft labels, no teacher forward"
  elif first.spec.objective.needs_teacher:
    teacher = ("one teacher forward per step for all" if shared_prepare else
               "a teacher forward per member")
  else:
    teacher = "no teacher"
  data = ("one batch sequence for all (shared seed)" if shared_prepare else
          "one batch sequence, each member its own mixup" if shared else
          "each member its own seed and batches, gathered "
          + ("on the device from the data held there" if gathered else "on the host"))
  return (f"population of {len(runs)} {first.config.model.name} students, split over "
          f"{first.mesh.devices.size} device(s) by {split}; {data}; {teacher}")


def checked_sources(configs: Sequence[ml_collections.ConfigDict],
                    datasets: tuple | None = None) -> tuple:
  """Every member's config checked as the command line checks it; the (train, test) arrays
  the members share: `datasets`, or the first config's dataset."""
  for config in configs:
    config_checks.validate(config)
  return datasets or (load_source_split(configs[0].dataset, "train"),
                      load_source_split(configs[0].dataset, "test"))


def one_batch_sequence(first, split: str = "batch") -> tuple:
  """The training loop's host batches and their placement when every member reads the
  first member's batches (a cohort)."""
  layout = batch_layout(first.mesh, True, split)
  return (lambda start, end: (first.batches.batch(s) for s in range(start, end)),
          lambda host: jax.tree.map(
              lambda v: jax.make_array_from_process_local_data(layout, v), host))


def population_trainee(configs: Sequence[ml_collections.ConfigDict],
                       workdirs: Sequence[str | pathlib.Path], population_dir: str | pathlib.Path,
                       mesh=None, evaluate_test: bool = True, mutual: bool = False,
                       datasets: tuple | None = None) -> Trainee:
  """The members (configs[i] in workdirs[i]) assembled and stacked, with their step, for
  the training loop. mutual: a cohort (deep mutual learning): one batch sequence, the
  first member's, and each member taught by the others (engine.cohort_step.make_cohort_step).
  datasets: (train, test) arrays in place of config.dataset's splits."""
  raw = checked_sources(configs, datasets)
  check_population(configs, mutual)
  shared = len({c.seed for c in configs}) == 1
  first = assemble(configs[0], workdirs[0], raw, mesh)
  if shared:  # One seed: the same data, teacher and initial state; only the values differ.
    runs = [first] + [dataclasses.replace(first, config=c, workdir=pathlib.Path(w))
                      for c, w in zip(configs[1:], workdirs[1:])]
  else:
    runs = [first] + [assemble(c, w, raw, mesh) for c, w in zip(configs[1:], workdirs[1:])]
  for run in runs[1:]:
    run.eval_step = first.eval_step  # One architecture: one compiled evaluation for all.
  varied = population_differences(configs)
  shared_prepare = (shared and "dataset.mixup_alpha" not in varied
                    and first.spec.on_policy is None)  # Each member generates its own.
  split = configs[0].train.population_split
  devices = first.mesh.devices.size
  if split == "member" and len(runs) % devices:
    raise JaxkdError(f"train.population_split='member' puts whole members on each of the "
                     f"{devices} devices: give a multiple of {devices} members (not "
                     f"{len(runs)}), or split by batch.")
  table = None if shared or mutual else device_table(first)
  starts = [member_start(r) for r in runs]
  check_same_step(starts)
  states = jax.tree.map(lambda *xs: jnp.stack(xs), *starts)
  if "optimizer.weight_decay" in varied:
    states = with_weight_decay(states, runs)
  members = member_sharding(first.mesh) if split == "member" else replicated(first.mesh)
  states, hparams = jax.device_put((states, hyperparameters(runs)), members)
  if mutual:
    cohort_step = make_cohort_step(first.spec, first.mesh, split)
    line = (f"cohort of {len(runs)} {first.config.model.name} students (seeds "
            f"{[r.config.seed for r in runs]}), each taught by the others, on one batch "
            f"sequence, split over {devices} device(s) by {split}")
    return Trainee(runs, states, lambda states, batch: cohort_step(states, hparams, batch),
                   *one_batch_sequence(first, split), pathlib.Path(population_dir).absolute(),
                   stacked=True, evaluate_test=evaluate_test, lines=(line,))
  teacher_shardings = jax.tree.map(lambda x: x.sharding, first.teacher_variables)
  step_fn = make_population_step(first.spec, first.mesh, teacher_shardings, shared,
                                 shared_prepare, split, table is not None)
  layout = batch_layout(first.mesh, shared, split)

  def host_batches(start: int, end: int):
    for step in range(start, end):
      if shared:
        yield first.batches.batch(step)
      elif table is not None:
        yield np.stack([r.batches.indices(step) for r in runs]).astype(np.int32)
      else:
        each = [r.batches.batch(step) for r in runs]
        yield {k: np.stack([h[k] for h in each]) for k in each[0]}

  def to_device(host):
    return jax.tree.map(lambda v: jax.make_array_from_process_local_data(layout, v), host)

  return Trainee(runs, states,
                 lambda states, batch: step_fn(states, hparams, first.teacher_variables, batch,
                                               table),
                 host_batches, to_device, pathlib.Path(population_dir).absolute(), stacked=True,
                 evaluate_test=evaluate_test,
                 lines=(_describe(runs, split, shared, shared_prepare, table is not None),))


def train_population(configs: Sequence[ml_collections.ConfigDict],
                     workdirs: Sequence[str | pathlib.Path], population_dir: str | pathlib.Path,
                     mesh=None, evaluate_test: bool = True) -> list[dict]:
  """Trains the members (configs[i] in workdirs[i]) as one population; returns each one's
  final test metrics, as train_and_evaluate would. evaluate_test=False evaluates the
  validation split only (a search, whose test set is measured once, at its end); the
  results then hold validation metrics ('validation_*') instead."""
  summaries, _ = fit(population_trainee(configs, workdirs, population_dir, mesh, evaluate_test))
  return summaries
