"""The training loop, one for a single student and for a population: step, log, evaluate,
checkpoint, stop on a signal, resume.

fit(trainee) trains a Trainee (solo(run) for one assembled run, jaxkd.run.population for
S students stepped together) from its last checkpoint and returns each member's summary
(its final metrics, and the validation-selected step) and the final state.
"""

import dataclasses
import json
import pathlib
import platform
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import flax
import jax
import numpy as np
import optax
import tqdm

from jaxkd.data import prefetch
from jaxkd.engine.evaluation import evaluate, select_on_validation
from jaxkd.engine.sharding import shard_batch
from jaxkd.engine.step import make_train_step
from jaxkd.errors import JaxkdError
from jaxkd.files import write_bytes, write_text
from jaxkd.log import say
from jaxkd.models import count_params
from jaxkd.run import cross_tokenizer
from jaxkd.run.assemble import Run
from jaxkd.run.checkpoint import Checkpointer
from jaxkd.run.metrics import MetricWriter, read_metrics
from jaxkd.run.saved import TOKENIZER_FILE, module_class
from jaxkd.run.signals import Stopped, stop_on_signals
from jaxkd.run.workdir import check_resume, lock


@dataclasses.dataclass
class Trainee:
  """What the loop trains: one run, or a population of runs stepped as one.

  runs: the members (one for a single run); the first sets the length, the mesh and when
  to log, evaluate and checkpoint. state: the train state, the members' stacked on a
  leading axis when `stacked`, or a tuple of the members' states when `tupled` (members of
  different architectures). step(state, device batch) -> (state, metrics), jitted; the
  metrics of several members stacked on a leading axis.
  host_batches(start, end) yields the host batches of steps start .. end - 1 (in a
  background thread) and to_device places one on the devices (on the main thread).
  directory: where its checkpoints go. evaluate_test: False evaluates the validation
  split only (a search, which measures the test split once, at its end). lines: what the
  run says about itself when it starts.
  """

  runs: Sequence[Run]
  state: Any
  step: Callable[[Any, Any], tuple[Any, dict]]
  host_batches: Callable[[int, int], Iterator]
  to_device: Callable[[Any], Any]
  directory: pathlib.Path
  stacked: bool = False
  evaluate_test: bool = True
  lines: tuple[str, ...] = ()
  tupled: bool = False

  def member(self, state, index: int):
    """Member `index`'s own state."""
    if self.tupled:
      return state[index]
    return jax.tree.map(lambda x: x[index], state) if self.stacked else state

  @property
  def several(self) -> bool:
    """Whether the state holds several members (their metrics stacked)."""
    return self.stacked or self.tupled


def solo(run: Run) -> Trainee:
  """One assembled run, its step jitted over its mesh (jaxkd.engine.step)."""
  train_step = make_train_step(run.spec, run.mesh, jax.tree.map(lambda x: x.sharding,
                                                                 run.teacher_variables))
  params = count_params(run.state.params)
  lines = (f"objective [{', '.join(t.label for t in run.spec.objective.terms)}] with "
           f"{run.teacher_source}",
           f"{run.config.model.name} ({params:,} params) on {run.config.dataset.name}: "
           f"{len(run.train_data)} train / {len(run.test_data)} test examples, "
           f"{run.mesh.devices.size} device(s), {run.steps_per_epoch} steps per epoch")
  step = lambda state, batch: train_step(state, run.teacher_variables, batch)
  if run.spec.cross_tokenizer is not None and run.config.distill.on_policy.fraction:
    # The teacher's tokens of the student's samples are made on the host, between steps.
    return Trainee([run], run.state, cross_tokenizer.on_policy_step(run, step),
                   run.batches.iterate, lambda batch: (batch, shard_batch(batch, run.mesh)),
                   run.workdir, lines=lines)
  return Trainee([run], run.state, step, run.batches.iterate,
                 lambda batch: shard_batch(batch, run.mesh), run.workdir, lines=lines)


def write_run_files(run: Run) -> None:
  """config.json (the resolved config) and run_info.json (versions, devices, the data's
  shape, the teacher checkpoints or caches it reads: run.sources, and for a model given as
  an object its class, so that the run can be read back where that class imports)."""
  if jax.process_index() != 0:
    return
  write_text(run.workdir / "config.json",
             run.config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
  import orbax.checkpoint as ocp

  info = {"argv": sys.argv, "python": platform.python_version(),
          "versions": {"jax": jax.__version__, "jaxlib": jax.lib.__version__,
                       "flax": flax.__version__, "optax": optax.__version__,
                       "orbax-checkpoint": getattr(ocp, "__version__", "unknown"),
                       "numpy": np.__version__},
          "devices": [str(d) for d in run.mesh.devices.flat],
          "process_count": jax.process_count(), "num_classes": run.train_data.num_classes,
          "input_shape": list(run.train_data.input_shape), "input_kind": run.train_data.kind,
          **run.sources}
  if run.config.model.name is None:  # A user's module (jaxkd.train_student).
    info["model_class"] = module_class(run.spec.model)
  write_text(run.workdir / "run_info.json", json.dumps(info, indent=2) + "\n")
  if getattr(run.train_data, "tokenizer", None):  # Beside the run: export and teachers use it.
    write_bytes(run.workdir / TOKENIZER_FILE, pathlib.Path(run.train_data.tokenizer).read_bytes())


def check_finite(pending: list[dict], first_step: int, checkpointer: Checkpointer) -> None:
  """Stops the run (JaxkdError) at the first step whose loss or gradient norm is not finite.

  pending: the metrics of steps first_step, first_step + 1, ... (scalars, or one per member
  of a population). The state after such a step holds its update, so it is checked before
  every save: no saved state has a bad update.
  """
  values = jax.device_get([(m["loss"], m["grad_norm"]) for m in pending])
  for offset, (loss, grad_norm) in enumerate(values):
    for what, value in (("loss", loss), ("gradient norm", grad_norm)):
      finite = np.isfinite(value)
      if np.all(finite):
        continue
      if np.ndim(value):  # A population: name the first member that failed.
        member = int(np.argmin(finite))
        what, value = f"{what} of population member {member}", np.asarray(value)[member]
      checkpointer.manager.wait_until_finished()  # Saves under way (all of good states).
      kept = checkpointer.latest_step()
      checkpointer.close()
      where = (f"the last good checkpoint (step {kept}) is kept in {checkpointer.directory}"
               if kept is not None else "no checkpoint had been saved yet")
      raise JaxkdError(
          f"the training {what} became {float(value)} at step {first_step + offset}; training "
          f"stopped without saving that state: {where}. Lower optimizer.learning_rate or set "
          "optimizer.grad_clip_norm (e.g. 1.0), or check the data for bad values; then run again "
          "with the same workdir to resume from that checkpoint.")


class _Window:
  """Train metrics averaged over a log window (per member), with examples/s measured over
  the window's training time only (evaluation time is taken out)."""

  def __init__(self, step: int, batch_size: int):
    self.pending, self.step, self.start, self.batch_size = [], step, time.perf_counter(), batch_size

  def means(self, step: int, steps_per_epoch: int, members: int, stacked: bool) -> list[dict]:
    stacked_values = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0),
                                  *jax.device_get(self.pending))
    now = time.perf_counter()
    rate = (step - self.step) * self.batch_size / (now - self.start)
    self.pending, self.step, self.start = [], step, now
    return [{**{k: float(v[i] if stacked else v) for k, v in stacked_values.items()},
             "examples_per_sec": rate, "epoch": step / steps_per_epoch} for i in range(members)]

  def pause(self, seconds: float) -> None:
    self.start += seconds


def _evaluate(trainee: Trainee, state, step: int, writers: list, progress) -> list[dict]:
  """Each member's validation (if held out) and test (with evaluate_test) metrics at `step`,
  logged and printed: [{split: metrics}] per member."""
  results, line = [], f"step {step} epoch {step / trainee.runs[0].steps_per_epoch:.2f}:"
  for i, (run, writer) in enumerate(zip(trainee.runs, writers)):
    variables, found = trainee.member(state, i).variables(), {}
    for split, data in (("validation", run.validation_data),
                        ("test", run.test_data if trainee.evaluate_test else None)):
      if data is not None:
        found[split] = evaluate(run.eval_step, variables, data, run.config.train.eval_batch_size,
                                run.mesh)
        writer.write(step, split, found[split])
    results.append(found)
  for split in ("validation", "test"):
    if split in results[0]:
      if "bits_per_byte" in results[0][split]:  # text: comparable across tokenizers
        shown = ", ".join(f"{r[split]['bits_per_byte']:.4f}" for r in results)
        line += f" {split} bits/byte {shown}" + (
            f" (perplexity {results[0][split]['perplexity']:.2f})" if len(results) == 1
            else "") + ","
        continue
      shown = ", ".join(f"{r[split]['accuracy']:.4f}" for r in results)
      line += f" {split} accuracy {shown}" + (
          f" ({results[0][split]['errors']} errors / {results[0][split]['count']})"
          if len(results) == 1 else "") + ","
  if jax.process_index() == 0:  # tqdm.write prints even where the bar is disabled.
    progress.write(line.rstrip(",") + ("" if len(results) == 1 else " (members)"))
  return results


def _step_of(trainee: Trainee, state) -> int:
  return int(trainee.member(state, 0).step) if trainee.several else int(state.step)


def fit(trainee: Trainee) -> tuple[list[dict], Any]:
  """Trains `trainee` to its last step, resuming from its checkpoint; returns (a summary
  per member, the final state). Its directories have one writer (jaxkd.run.workdir.lock); a
  resume whose config or teachers would change the result is refused. Stopped by a signal,
  it saves and raises jaxkd.run.signals.Stopped."""
  with lock([trainee.directory, *(run.workdir for run in trainee.runs)]):
    return _fit(trainee)


def _fit(trainee: Trainee) -> tuple[list[dict], Any]:
  first = trainee.runs[0]
  config, total_steps = first.config, first.total_steps
  checkpointer = Checkpointer(trainee.directory, config.train.checkpoint_every_steps
                              or first.steps_per_epoch, config.train.keep_checkpoints)
  state = trainee.state
  if checkpointer.latest_step() is not None:
    for run in trainee.runs:  # Before anything is written: the settings it was started with.
      check_resume(run.workdir, run.config, run.sources)
    state = checkpointer.restore(state)
    say(f"resuming from the checkpoint at step {_step_of(trainee, state)} in "
        f"{checkpointer.directory}")
  start_step = _step_of(trainee, state)
  writers = []
  for run in trainee.runs:
    write_run_files(run)
    writers.append(MetricWriter(run.workdir, resume_step=start_step))
    writers[-1].write_hparams(run.config)
  for line in trainee.lines:
    say(line)
  say(f"steps {start_step}->{total_steps}")
  eval_every = config.train.eval_every_steps or first.steps_per_epoch
  log_every = config.train.log_every_steps
  window = _Window(start_step, config.train.batch_size)
  stopped_by, last_eval = None, (None, None)
  progress = tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                       disable=jax.process_index() != 0,
                       mininterval=1.0 if sys.stderr.isatty() else 30)
  # The thread only gathers host arrays: device transfers stay on the main thread, since
  # transfers racing collectives from another thread can deadlock the CPU backend.
  host_batches = prefetch(trainee.host_batches(start_step, total_steps))
  try:
    with stop_on_signals(jax.process_count()) as stop:
      for step, batch in zip(range(start_step + 1, total_steps + 1), host_batches):
        state, metrics = trainee.step(state, trainee.to_device(batch))
        if window.pending:
          # At most two steps in flight: one queued ahead hides dispatch latency, and an
          # unbounded queue deadlocks collectives on multi-device CPU (threads starve).
          jax.block_until_ready(window.pending[-1])
        window.pending.append(metrics)
        progress.update(1)
        last = step == total_steps
        if step % log_every == 0 or step % checkpointer.every_steps == 0 or last:
          check_finite(window.pending, window.step + 1, checkpointer)  # Before any save.
        if step % log_every == 0 or last:
          means = window.means(step, first.steps_per_epoch, len(trainee.runs), trainee.several)
          for writer, member_means in zip(writers, means):
            writer.write(step, "train", member_means)
          progress.set_postfix(epoch=f"{means[0]['epoch']:.2f}", loss=f"{means[0]['loss']:.4f}",
                               ex_per_s=f"{means[0]['examples_per_sec']:.0f}", refresh=False)
        if step % eval_every == 0 or last:
          eval_start = time.perf_counter()
          last_eval = (step, _evaluate(trainee, state, step, writers, progress))
          window.pause(time.perf_counter() - eval_start)
        checkpointer.save(step, state)
        if stop.stop_now():  # With several processes: agreed, all stop after the same step.
          stopped_by = stop.reason
          break
  finally:
    progress.close()  # Before any message: the bar ends its line.
  check_finite(window.pending, window.step + 1, checkpointer)  # Stopped between checks.
  return _finish(trainee, state, checkpointer, writers, stopped_by, last_eval), state


def _finish(trainee: Trainee, state, checkpointer: Checkpointer, writers: list,
            stopped_by: str | None, last_eval: tuple) -> list[dict]:
  """Saves the final state (and each population member's as an ordinary run checkpoint in
  its workdir, so it reads as a run of its own); each member's summary."""
  final_step = _step_of(trainee, state)
  checkpointer.save(final_step, state, force=True)
  checkpointer.close()
  members = [trainee.member(state, i) for i in range(len(trainee.runs))]
  if trainee.several and not stopped_by:
    for run, member in zip(trainee.runs, members):
      own = Checkpointer(run.workdir, 1, run.config.train.keep_checkpoints)
      own.save(final_step, member, force=True)
      own.close()
  for writer in writers:
    writer.close()
  params = [count_params(member.params) for member in members]
  if stopped_by:
    raise Stopped(stopped_by, final_step)  # Saved: the command line says so and exits 0.
  split = "test" if trainee.evaluate_test else "validation"
  results = last_eval[1]
  if last_eval[0] != final_step:  # Nothing trained (resumed at the end): evaluate once.
    results = [{split: evaluate(run.eval_step, member.variables(),
                                run.test_data if split == "test" else run.validation_data,
                                run.config.train.eval_batch_size, run.mesh)}
               for run, member in zip(trainee.runs, members)]
    say(f"already trained to step {final_step}; {split} accuracy "
        + ", ".join(f"{r[split]['accuracy']:.4f}" for r in results))
  summaries = []
  for run, found, count in zip(trainee.runs, results, params):
    summary = {"step": final_step, "num_params": count,
               **{f"{split}_{k}": v for k, v in found[split].items()}}
    # Only process 0 wrote metrics.jsonl (other hosts may not share the disk, or read it
    # mid-write).
    if run.validation_data is not None and jax.process_index() == 0:
      summary.update(select_on_validation(read_metrics(run.workdir)))
    summaries.append(summary)
  return summaries
