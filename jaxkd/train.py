"""Training a config: its stages (config.stages), then the main run.

The rooms: jaxkd.state (the train state, random streams), jaxkd.step (the jitted step
and its StepSpec), jaxkd.assemble (config -> a run), jaxkd.loop (fit: log, evaluate,
checkpoint, resume), jaxkd.stages (the hand-over between stages).
"""

import pathlib

import ml_collections
from jax.sharding import Mesh

from jaxkd import config_base
from jaxkd.assemble import assemble
from jaxkd.data import ArrayDataset
from jaxkd.loop import fit, say


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                       datasets: tuple[ArrayDataset, ArrayDataset] | None = None,
                       mesh: Mesh | None = None) -> dict:
  """Trains config.model on config.dataset in `workdir`, resuming from its checkpoint.

  `datasets` = (train, test) arrays replaces config.dataset's loader (a user's
  own in-memory data). With config.stages, each stage first trains in
  workdir/stages/<name> (its own objective, optimizer, length and frozen parts),
  handing the student and the connectors to the next; the main run comes last.
  Returns the final test metrics and the step reached.
  """
  config_base.validate(config)
  carry = None
  for stage in config_base.stage_configs(config):
    stage_dir = pathlib.Path(workdir) / "stages" / stage.stage_name
    say(f"stage '{stage.stage_name}' in {stage_dir}")
    result, carry = fit(assemble(stage, stage_dir, datasets, mesh, carry))
    if result["interrupted"]:
      return result
  return fit(assemble(config, workdir, datasets, mesh, carry))[0]

