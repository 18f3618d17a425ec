"""Deep mutual learning (Zhang et al. 2018): distill.cohort = K students, seeds seed, seed + 1,
..., trained together from the start, each taught by the others (their predictions on the
same batch are its teachers' outputs: jaxkd.distill.dml), stepped as one population
(jaxkd.engine.step.make_cohort_step). Each member is a run of its own in
WORKDIR/member_<i> (metrics, checkpoints, exportable); the cohort's checkpoints, from which
it resumes, are in WORKDIR/cohort."""

import copy
import pathlib

import ml_collections

from jaxkd.errors import JaxkdError
from jaxkd.log import say
from jaxkd.run.loop import fit
from jaxkd.run.population import population_trainee


def member_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """The members' configs: config with seeds seed, seed + 1, ..., seed + cohort - 1."""
  members = []
  for i in range(config.distill.cohort):
    member = copy.deepcopy(config)
    member.seed = config.seed + i
    members.append(member)
  return members


def member_dirs(workdir: str | pathlib.Path, count: int) -> list[pathlib.Path]:
  return [pathlib.Path(workdir) / f"member_{i}" for i in range(count)]


def train_cohort(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                 datasets: tuple | None = None, mesh=None, parts=None) -> dict:
  """Trains the cohort of `config` (validated) in `workdir`; returns the first member's
  summary with every member's under 'members'."""
  if parts is not None and parts.given:
    raise JaxkdError("distill.cohort trains students built from the config; give the model and "
                     "optimizer by name, not as objects.")
  configs = member_configs(config)
  workdirs = member_dirs(workdir, len(configs))
  summaries, _ = fit(population_trainee(configs, workdirs, pathlib.Path(workdir) / "cohort",
                                        mesh, mutual=True, datasets=datasets))
  for i, (member, summary) in enumerate(zip(configs, summaries)):
    score = (f"test bits per byte {summary['test_bits_per_byte']:.4f}"
             if "test_bits_per_byte" in summary else
             f"test accuracy {summary['test_accuracy']:.4f}")
    say(f"member {i} (seed {member.seed}): {score} in {workdirs[i]}")
  return {**summaries[0], "members": summaries}
