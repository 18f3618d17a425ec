"""The training loop: step, log, evaluate, checkpoint, stop on a signal, resume.

fit(run) trains an assembled run (jaxkd.assemble) from its last checkpoint and returns
(summary, carry): the test metrics (and the validation-selected step) and what a next
stage starts from.
"""

import json
import pathlib
import platform
import sys
import time

import flax
import jax
import ml_collections
import numpy as np
import optax
import tqdm
from jax.sharding import Mesh

from jaxkd.assemble import Run, say
from jaxkd.checkpoint import Checkpointer
from jaxkd.data import prefetch
from jaxkd.errors import JaxkdError
from jaxkd.evaluation import evaluate, select_on_validation
from jaxkd.interrupt import stop_on_signals
from jaxkd.metric_writer import MetricWriter, read_metrics
from jaxkd.sharding import shard_batch
from jaxkd.step import make_train_step


def write_run_files(workdir: pathlib.Path, config: ml_collections.ConfigDict, mesh: Mesh,
                    data) -> None:
  """config.json (the resolved config) and run_info.json (versions, devices, data shape)."""
  if jax.process_index() != 0:
    return
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
  import orbax.checkpoint as ocp

  info = {"argv": sys.argv, "python": platform.python_version(),
          "versions": {"jax": jax.__version__, "jaxlib": jax.lib.__version__,
                       "flax": flax.__version__, "optax": optax.__version__,
                       "orbax-checkpoint": getattr(ocp, "__version__", "unknown"),
                       "numpy": np.__version__},
          "devices": [str(d) for d in mesh.devices.flat], "process_count": jax.process_count(),
          "num_classes": data.num_classes, "image_shape": list(data.image_shape),
          "input_kind": getattr(data, "kind", "image")}
  (workdir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")


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


class _Throughput:
  """Train metrics averaged over a log window, with examples/s measured over the window's
  training time only (evaluation time is taken out)."""

  def __init__(self, step: int, batch_size: int):
    self.pending, self.step, self.start, self.batch_size = [], step, time.perf_counter(), batch_size

  def means(self, step: int, steps_per_epoch: int) -> dict:
    means = {k: float(np.mean(v)) for k, v in jax.tree.map(
        lambda *xs: np.stack(xs), *jax.device_get(self.pending)).items()}
    now = time.perf_counter()
    means["examples_per_sec"] = (step - self.step) * self.batch_size / (now - self.start)
    means["epoch"] = step / steps_per_epoch
    self.pending, self.step, self.start = [], step, now
    return means

  def pause(self, seconds: float) -> None:
    self.start += seconds


def _evaluate_splits(run: Run, state, step: int, writer: MetricWriter, progress) -> dict:
  """Validation (if held out) and test metrics at `step`, logged and printed; returns test's."""
  config = run.config
  line = f"step {step} epoch {step / run.steps_per_epoch:.2f}:"
  if run.validation_data is not None:
    validation = evaluate(run.eval_step, state.variables(), run.validation_data,
                          config.train.eval_batch_size, run.mesh)
    writer.write(step, "validation", validation)
    line += f" validation accuracy {validation['accuracy']:.4f},"
  result = evaluate(run.eval_step, state.variables(), run.test_data, config.train.eval_batch_size,
                    run.mesh)
  writer.write(step, "test", result)
  if jax.process_index() == 0:  # tqdm.write prints even where the bar is disabled.
    progress.write(f"{line} test accuracy {result['accuracy']:.4f} ({result['errors']} "
                   f"errors / {result['count']})")
  return result


def _announce(run: Run, state, start_step: int) -> int:
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  say(f"objective [{', '.join(t.label for t in run.spec.objective.terms)}] with "
      f"{run.teacher_source}")
  say(f"{run.config.model.name} ({num_params:,} params) on {run.config.dataset.name}: "
      f"{len(run.train_data)} train / {len(run.test_data)} test examples, "
      f"{run.mesh.devices.size} device(s), steps {start_step}->{run.total_steps} "
      f"({run.steps_per_epoch} per epoch)")
  return num_params


def fit(run: Run) -> tuple[dict, dict]:
  """Trains `run` to its last step, resuming from its checkpoint; returns (summary, carry)."""
  config, mesh, state, total_steps = run.config, run.mesh, run.state, run.total_steps
  checkpointer = Checkpointer(run.workdir, config.train.checkpoint_every_steps
                              or run.steps_per_epoch, config.train.keep_checkpoints)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    say(f"resuming from the checkpoint at step {int(state.step)} in {checkpointer.directory}")
  start_step = int(state.step)
  write_run_files(run.workdir, config, mesh, run.train_data)
  writer = MetricWriter(run.workdir, resume_step=start_step)
  writer.write_hparams(config)
  train_step = make_train_step(run.spec, mesh, jax.tree.map(lambda x: x.sharding,
                                                             run.teacher_variables))
  eval_every = config.train.eval_every_steps or run.steps_per_epoch
  log_every = config.train.log_every_steps
  num_params = _announce(run, state, start_step)

  window = _Throughput(start_step, config.train.batch_size)
  stopped_by, last_eval = None, (None, None)
  progress = tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                       disable=jax.process_index() != 0,
                       mininterval=1.0 if sys.stderr.isatty() else 30)
  # The thread only gathers host arrays: device transfers stay on the main thread, since
  # transfers racing collectives from another thread can deadlock the CPU backend.
  host_batches = prefetch(run.batches.iterate(start_step, total_steps))
  with stop_on_signals(jax.process_count()) as stop:
    for step, batch in zip(range(start_step + 1, total_steps + 1), host_batches):
      state, metrics = train_step(state, run.teacher_variables, shard_batch(batch, mesh))
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
        means = window.means(step, run.steps_per_epoch)
        writer.write(step, "train", means)
        progress.set_postfix(epoch=f"{means['epoch']:.2f}", loss=f"{means['loss']:.4f}",
                             ex_per_s=f"{means['examples_per_sec']:.0f}", refresh=False)
      if step % eval_every == 0 or last:
        eval_start = time.perf_counter()
        last_eval = (step, _evaluate_splits(run, state, step, writer, progress))
        window.pause(time.perf_counter() - eval_start)
      checkpointer.save(step, state)
      if stop.stop_now():  # With several processes: agreed, all stop after the same step.
        stopped_by = stop.reason
        break
  progress.close()
  check_finite(window.pending, window.step + 1, checkpointer)  # Stopped between checks.
  return _finish(run, state, checkpointer, writer, num_params, stopped_by, last_eval)


def _finish(run: Run, state, checkpointer: Checkpointer, writer: MetricWriter, num_params: int,
            stopped_by: str | None, last_eval: tuple) -> tuple[dict, dict]:
  """Saves the final state; the summary (test metrics, the validation-selected step) and the
  carry a next stage starts from."""
  final_step = int(state.step)
  checkpointer.save(final_step, state, force=True)
  checkpointer.close()
  carry = {"params": state.params, "aux_params": state.aux_params, "aux_state": state.aux_state,
           "model_state": state.model_state}
  if stopped_by:
    writer.close()
    say(f"stopped by {stopped_by} at step {final_step}; checkpoint saved. "
        "Run the same command again to resume.")
    return {"step": final_step, "interrupted": True, "num_params": num_params}, carry
  result = last_eval[1]
  if last_eval[0] != final_step:  # Nothing trained (resumed at the end): evaluate once.
    result = evaluate(run.eval_step, state.variables(), run.test_data,
                      run.config.train.eval_batch_size, run.mesh)
    say(f"already trained to step {final_step}; test accuracy {result['accuracy']:.4f}")
  writer.close()
  summary = {"step": final_step, "interrupted": False, "num_params": num_params,
             **{f"test_{k}": v for k, v in result.items()}}
  # Only process 0 wrote metrics.jsonl (other hosts may not share the disk, or read it mid-write).
  if run.validation_data is not None and jax.process_index() == 0:
    summary.update(select_on_validation(read_metrics(run.workdir)))
  return summary, carry
