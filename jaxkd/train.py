"""Training a config: its stages (config.stages), then the main run.

The rooms: jaxkd.state (the train state, random streams), jaxkd.step (the jitted step
and its StepSpec), jaxkd.assemble (config -> a run), jaxkd.loop (fit: log, evaluate,
checkpoint, resume), jaxkd.stages (the hand-over between stages).
"""

import pathlib

import ml_collections
from jax.sharding import Mesh

from jaxkd import config_base
from jaxkd.assemble import Parts, assemble
from jaxkd.bias_correction import correct_bias
from jaxkd.data import ArrayDataset
from jaxkd.loop import fit, say


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                       datasets: tuple[ArrayDataset, ArrayDataset] | None = None,
                       mesh: Mesh | None = None, parts: Parts | None = None) -> dict:
  """Trains config.model on config.dataset in `workdir`, resuming from its checkpoint.

  `datasets` = (train, test) arrays replaces config.dataset's loader (a user's
  own in-memory data). With config.stages, each stage first trains in
  workdir/stages/<name> (its own objective, optimizer, length and frozen parts),
  handing the student and the connectors to the next; the main run comes last.
  Returns the final test metrics and the step reached (and, with config.bias_correction,
  the corrected test metrics). `parts`: a model, teachers or optimizer given as objects
  (jaxkd.api) instead of by name.
  """
  config_base.validate(config, parts.given if parts else ())
  carry = None
  for stage in config_base.stage_configs(config, parts.given if parts else ()):
    stage_dir = pathlib.Path(workdir) / "stages" / stage.stage_name
    say(f"stage '{stage.stage_name}' in {stage_dir}")
    result, carry = fit(assemble(stage, stage_dir, datasets, mesh, carry, parts))
    if result["interrupted"]:
      return result
  run = assemble(config, workdir, datasets, mesh, carry, parts)
  result, carry = fit(run)
  if result["interrupted"] or config.get("bias_correction", {}).get("source", "none") == "none":
    return result
  result.update(correct_bias(run, {"params": carry["params"], **carry["model_state"]}, workdir))
  say(f"bias correction ({config.bias_correction.source}): test accuracy "
      f"{result['test_accuracy']:.4f} -> {result['test_accuracy_corrected']:.4f} "
      f"({result['test_errors']} -> {result['test_errors_corrected']} errors)")
  return result

