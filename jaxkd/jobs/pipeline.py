"""The classic pipeline in one job: teacher -> soft labels -> baseline and distilled
students -> report.

Workdir layout: teacher/ (unless config.teacher_workdir names one trained
elsewhere), soft_labels.npz (mode 'cached'), baseline/seed=S/, distilled/seed=S/
for the student seeds S = student.seed, ..., student.seed + student.seeds - 1,
report.md, report.json, accuracy.png. Every stage resumes or, when finished, is
reused. The seeds of an arm train as one population (jaxkd.run.population: one compiled
step for all, each seed its own batches; its checkpoints in <arm>/population/), unless
config.vectorize_seeds is False or the arm's config cannot be a population (e.g. stages):
then one after another. Each seed's run directory is the same either way.
"""

import copy
import json
import pathlib

import ml_collections

from jaxkd import config as config_checks
from jaxkd.config.population import check_population
from jaxkd.data import load_split
from jaxkd.engine.sharding import make_mesh
from jaxkd.errors import JaxkdError
from jaxkd.jobs.report import write_report
from jaxkd.log import say
from jaxkd.run.assemble import transfer_set_of
from jaxkd.run.population import train_population
from jaxkd.run.saved import load_run
from jaxkd.run.soft_labels import cache_meta, write_soft_labels
from jaxkd.run.train import train_and_evaluate
from jaxkd.run.workdir import lock


def student_seeds(config: ml_collections.ConfigDict) -> list[int]:
  """student.seeds consecutive seeds from student.seed."""
  return list(range(config.student.seed, config.student.seed + config.student.seeds))


def seeded(student: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  student = copy.deepcopy(student)
  student.seed = seed
  return student


def _population_fits(configs: list[ml_collections.ConfigDict]) -> bool:
  """Whether the seeds can train as one population (jaxkd.run.population); if not, says why."""
  try:
    check_population(configs)
  except JaxkdError as e:
    say(f"   the seeds train one by one: {e}")
    return False
  return True


def train_seeds(configs: list[ml_collections.ConfigDict], workdirs: list[pathlib.Path],
                population_dir: pathlib.Path, vectorize: bool, what: str) -> None:
  """Trains one arm's seeds (resumed, or reused when finished): as one population when
  `vectorize` and they can be one, else one after another; each seed's run directory is the
  same either way."""
  seeds = [c.seed for c in configs]
  if vectorize and len(configs) > 1 and _population_fits(configs):
    say(f"{what}: seeds {seeds} as one population")
    train_population(configs, workdirs, population_dir)
    return
  for seed_config, seed_dir in zip(configs, workdirs):
    say(f"{what}: seed {seed_config.seed} of {seeds}")
    train_and_evaluate(seed_config, seed_dir)


def distilled_config(config: ml_collections.ConfigDict, teacher_dir: pathlib.Path,
                     cache: pathlib.Path) -> ml_collections.ConfigDict:
  """The student's config with the pipeline's objective and teacher source."""
  student = copy.deepcopy(config.student)
  student.unlock()
  student.distill.terms = copy.deepcopy(config.distill.terms)
  student.distill.teacher_combine = config.distill.teacher_combine
  if config.distill.mode == "cached":
    student.distill.soft_labels = (str(cache),)
  else:
    student.distill.teachers = (str(teacher_dir),)
  return student


def _cache_is_current(cache: pathlib.Path, teacher_dir: pathlib.Path, teacher_step: int,
                      dtype: str, top_k: int, fingerprint: str) -> bool:
  """Whether `cache` was written by this teacher checkpoint with these settings, for the
  data of this `fingerprint` (the student's transfer set); a damaged cache is not."""
  try:
    meta = cache_meta(cache)
  except JaxkdError:  # Missing or damaged: written again.
    return False
  return ((meta["teacher_workdir"], meta["teacher_step"], meta["dtype"], meta["top_k"],
           meta["fingerprint"]) ==
          (str(teacher_dir.absolute()), teacher_step, dtype, top_k, fingerprint))


def validate(config: ml_collections.ConfigDict, workdir: pathlib.Path = pathlib.Path(".")) -> None:
  """Every check of every stage, before any training: the pipeline's fields, the teacher's
  and the student's runs, and the distilled student's run."""
  config_checks.validate(config)
  student = distilled_config(config, workdir / "teacher", workdir / "soft_labels.npz")
  try:
    config_checks.validate(student)
  except JaxkdError as e:
    raise JaxkdError(f"the distilled student: {e}") from None


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Runs every stage in `workdir` (one pipeline at a time in it) and returns the report's
  numbers (report.json)."""
  workdir = pathlib.Path(workdir)
  validate(config, workdir)
  with lock([workdir]):
    return _run(config, workdir)


def _run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  teacher_dir = pathlib.Path(config.teacher_workdir or workdir / "teacher")
  cache = workdir / "soft_labels.npz"
  student = distilled_config(config, teacher_dir, cache)

  say(f"== 1/4 teacher in {teacher_dir}")
  if not config.teacher_workdir:
    train_and_evaluate(config.teacher, teacher_dir)
  mesh = make_mesh()
  teacher = load_run(teacher_dir, mesh)
  if config.distill.mode == "cached":
    say(f"== 2/4 soft labels in {cache}")
    transfer = transfer_set_of(student)
    if _cache_is_current(cache, teacher_dir, teacher.step, config.distill.soft_label_dtype,
                         config.distill.top_k, transfer.fingerprint()):
      say("   already written for this teacher checkpoint")
    else:
      write_soft_labels(teacher_dir, cache, config.distill.soft_label_dtype, config.distill.top_k,
                        data=transfer)
  else:
    say("== 2/4 soft labels: online (the teacher runs inside the student's train step)")
  seeds = student_seeds(config)
  students = {}
  for number, (role, arm) in enumerate((("baseline", config.student), ("distilled", student))):
    how = "no teacher" if role == "baseline" else config.distill.mode
    workdirs = [workdir / role / f"seed={seed}" for seed in seeds]
    train_seeds([seeded(arm, seed) for seed in seeds], workdirs, workdir / role / "population",
                config.vectorize_seeds, f"== {3 + number}/4 {role} student ({how})")
    students[role] = [load_run(seed_dir, mesh) for seed_dir in workdirs]

  test_data = load_split(config.student.dataset, "test")
  markdown = write_report(workdir, teacher, students, seeds, test_data, mesh,
                          config.student.train.eval_batch_size, config.report.latency_batch_size,
                          config.report.latency_repeats)
  say("\n" + markdown)
  say(f"report: {workdir / 'report.md'}, {workdir / 'report.json'}, {workdir / 'accuracy.png'}")
  return json.loads((workdir / "report.json").read_text())
