"""Deep mutual learning (Zhang et al. 2018): distill.cohort = K students, seeds seed, seed + 1,
..., trained together from the start, each taught by the others (their predictions on the
same batch are its teachers' outputs: jaxkd.distill.dml). Members of one architecture are
stepped as one population (jaxkd.engine.cohort_step.make_cohort_step); members of different
architectures (distill.cohort_models) as a tuple of states in one compiled step
(make_mixed_cohort_step). Each member is a run of its own in WORKDIR/member_<i> (metrics,
checkpoints, exportable); the cohort's checkpoints, from which it resumes, are in
WORKDIR/cohort."""

import copy
import pathlib

import jax
import ml_collections

from jaxkd.engine.sharding import replicated
from jaxkd.engine.cohort_step import make_mixed_cohort_step
from jaxkd.errors import JaxkdError
from jaxkd.log import say
from jaxkd.run.assemble import assemble
from jaxkd.run.loop import Trainee, fit
from jaxkd.run.population import (check_same_step, checked_sources, member_start,
                                  one_batch_sequence, population_trainee)


def member_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """The members' configs: config with seeds seed, seed + 1, ..., seed + cohort - 1."""
  members = []
  for i in range(config.distill.cohort):
    member = copy.deepcopy(config)
    member.seed = config.seed + i
    if config.distill.cohort_models:
      member.model = ml_collections.ConfigDict(dict(config.distill.cohort_models[i]))
    members.append(member)
  return members


def mixed_cohort_trainee(configs: list[ml_collections.ConfigDict],
                         workdirs: list[pathlib.Path], directory: pathlib.Path, mesh=None,
                         datasets: tuple | None = None) -> Trainee:
  """A cohort of members of different architectures for the training loop: their states a
  tuple, one batch sequence (the first member's), each taught by the others."""
  raw = checked_sources(configs, datasets)
  runs = [assemble(c, w, raw, mesh) for c, w in zip(configs, workdirs)]
  first = runs[0]
  starts = [member_start(r) for r in runs]
  check_same_step(starts)
  states = jax.device_put(tuple(starts), replicated(first.mesh))
  step = make_mixed_cohort_step([r.spec for r in runs], first.mesh)
  line = (f"cohort of {len(runs)} students of different architectures "
          f"({', '.join(c.model.name for c in configs)}; seeds {[c.seed for c in configs]}), "
          f"each taught by the others, on one batch sequence, over {first.mesh.devices.size} "
          "device(s)")
  return Trainee(runs, states, step, *one_batch_sequence(first),
                 pathlib.Path(directory).absolute(), tupled=True, lines=(line,))


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
  directory = pathlib.Path(workdir) / "cohort"
  if config.distill.cohort_models and len({str(c.model) for c in configs}) > 1:
    trainee = mixed_cohort_trainee(configs, workdirs, directory, mesh, datasets)
  else:
    trainee = population_trainee(configs, workdirs, directory, mesh, mutual=True,
                                 datasets=datasets)
  summaries, _ = fit(trainee)
  for i, (member, summary) in enumerate(zip(configs, summaries)):
    score = (f"test bits per byte {summary['test_bits_per_byte']:.4f}"
             if "test_bits_per_byte" in summary else
             f"test accuracy {summary['test_accuracy']:.4f}")
    say(f"member {i} (seed {member.seed}): {score} in {workdirs[i]}")
  return {**summaries[0], "members": summaries}
