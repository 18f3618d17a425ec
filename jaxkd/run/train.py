"""Training a config: its stages (config.stages), then the main run, through the one loop.

The rooms: jaxkd.engine.state (the train state, random streams), jaxkd.engine.step (the
jitted step and its StepSpec), jaxkd.run.assemble (config -> a run), jaxkd.run.loop (fit:
log, evaluate, checkpoint, resume), jaxkd.run.stages (the hand-over between stages).
"""

import pathlib

import ml_collections
from jax.sharding import Mesh

from jaxkd import config as config_checks
from jaxkd.data import ArrayDataset
from jaxkd.log import say
from jaxkd.run.assemble import Parts, assemble
from jaxkd.run.bias_correction import correct_bias
from jaxkd.run.cohort import train_cohort
from jaxkd.run.loop import fit, solo


def _carry(state) -> dict:
  """What the next stage starts from: the student, the connectors and their running state."""
  return {"params": state.params, "aux_params": state.aux_params, "aux_state": state.aux_state,
          "model_state": state.model_state}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                       datasets: tuple[ArrayDataset, ArrayDataset] | None = None,
                       mesh: Mesh | None = None, parts: Parts | None = None) -> dict:
  """Trains config.model on config.dataset in `workdir`, resuming from its checkpoint.

  `datasets` = (train, test) arrays replaces config.dataset's loader (a user's own
  in-memory data). With config.stages, each stage first trains in
  workdir/stages/<name> (its own objective, optimizer, length and frozen parts),
  handing the student and the connectors to the next; the main run comes last.
  Returns the final test metrics and the step reached (and, with config.bias_correction,
  the corrected test metrics); a signal stops it with jaxkd.run.signals.Stopped after the
  checkpoint is saved. `parts`: a model, teachers or optimizer given as objects
  (jaxkd.run.api) instead of by name.
  """
  given = parts.given if parts else ()
  config_checks.validate(config, given)
  if config.distill.cohort > 1:  # deep mutual learning: the members teach each other
    return train_cohort(config, workdir, datasets, mesh, parts)
  carry = None
  for stage in config_checks.stage_configs(config, given):
    stage_dir = pathlib.Path(workdir) / "stages" / stage.stage_name
    say(f"stage '{stage.stage_name}' in {stage_dir}")
    _, state = fit(solo(assemble(stage, stage_dir, datasets, mesh, carry, parts)))
    carry = _carry(state)
  run = assemble(config, workdir, datasets, mesh, carry, parts)
  (result,), state = fit(solo(run))
  if config.bias_correction.source == "none":
    return result
  result.update(correct_bias(run, state.variables(), workdir))
  say(f"bias correction ({config.bias_correction.source}): test accuracy "
      f"{result['test_accuracy']:.4f} -> {result['test_accuracy_corrected']:.4f} "
      f"({result['test_errors']} -> {result['test_errors_corrected']} errors)")
  return result


def summary_line(result: dict, workdir: str | pathlib.Path) -> str:
  """The command line's last word on a finished run (for a language model's text: bits per
  byte and perplexity, not next-token accuracy)."""
  if "test_bits_per_byte" in result:
    selected = (f"best validation bits per byte {result['best_validation_bits_per_byte']:.4f} at "
                f"step {result['best_step']}, test there {result['selected_test_bits_per_byte']:.4f}"
                if "selected_test_bits_per_byte" in result else "no model selection (the data "
                "has no validation split)")
    return (f"final test bits per byte {result['test_bits_per_byte']:.4f} (perplexity "
            f"{result['test_perplexity']:.2f} per token over {result['test_count']} tokens) at "
            f"step {result['step']}; {selected}; workdir {workdir}")
  selected = (f"best validation accuracy {result['best_validation_accuracy']:.4f} at step "
              f"{result['best_step']}, test accuracy there {result['selected_test_accuracy']:.4f}"
              if "selected_test_accuracy" in result else
              "no model selection (set dataset.validation_size to select on a validation split)")
  return (f"final test accuracy {result['test_accuracy']:.4f} ({result['test_errors']} errors "
          f"of {result['test_count']}) at step {result['step']}; {selected}; workdir {workdir}")
