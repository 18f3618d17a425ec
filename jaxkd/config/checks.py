"""Every check of a config's values, run once before any work: required fields, names that
must be registered, allowed values and ranges, and combinations of options that would
compute the wrong thing. Checks that need the data or a teacher's files (class counts,
shapes) run where those are read.
"""

import dataclasses

import ml_collections

from jaxkd.config.paths import get
from jaxkd.config.schema import REQUIRED, STAGE_DEFAULTS, STAGE_FIELDS, complete
from jaxkd.errors import JaxkdError

JOBS = ("train", "pipeline", "graph")
PRECISIONS = ("float32", "bfloat16")  # config.precision.student / .teacher
BIAS_SOURCES = ("none", "validation", "transfer")
SOURCES = ("auto", "tfds", "offline")  # config.dataset.source
TEACHER_COMBINE = ("average", "sum")
TEACHER_LAYOUTS = ("replicated", "sharded", "logical")
POPULATION_SPLITS = ("batch", "member")
UNLABELED_MODES = ("keep", "drop")  # config.transfer.unlabeled
GENERATORS = ("student", "teacher")  # config.distill.on_policy.generator
PIPELINE_MODES = ("cached", "online")
SOFT_LABEL_DTYPES = ("float16", "float32")


def one_of(path: str, value, allowed) -> None:
  if value not in allowed:
    raise JaxkdError(f"{path}={value!r} is not one of {list(allowed)}; set --config.{path}="
                     f"{allowed[0]} (or another of those).")


def in_range(path: str, value, low=None, high=None, low_open: bool = False) -> None:
  """low <= value <= high (low < value with low_open)."""
  below = low is not None and (value <= low if low_open else value < low)
  if below or (high is not None and value > high):
    bounds = " and ".join(([f"{'>' if low_open else '>='} {low}"] if low is not None else []) +
                          ([f"<= {high}"] if high is not None else []))
    raise JaxkdError(f"{path}={value!r} is out of range: it must be {bounds}.")


def _required(config: ml_collections.ConfigDict, given: tuple[str, ...]) -> None:
  for path in REQUIRED:
    if path.split(".")[0] in given:
      continue
    if get(config, path) is None:
      raise JaxkdError(f"config field '{path}' is required; set it in the config file or with "
                       f"--config.{path}=VALUE.")


def _names(config: ml_collections.ConfigDict, given: tuple[str, ...]) -> None:
  """The names a run looks up in a registry."""
  from jaxkd.data import DATASETS
  from jaxkd.data.arrays import KINDS
  from jaxkd.engine.optim import OPTIMIZERS, SCHEDULES
  from jaxkd.models import MODELS

  DATASETS.get(config.dataset.name)
  if "model" not in given and config.model.name == "hf":
    from jaxkd.models import hf

    if not hf.is_hf_dir(config.model.get("path") or ""):
      raise JaxkdError(f"model.name='hf' needs model.path, a Hugging Face model directory "
                       f"(config.json, *.safetensors); {config.model.get('path')!r} is not one.")
  elif "model" not in given:
    MODELS.get(config.model.name)
  if "optimizer" not in given:
    OPTIMIZERS.get(config.optimizer.name)
  SCHEDULES.get(config.schedule.name)
  one_of("dataset.source", config.dataset.source, SOURCES)
  one_of("dataset.input_kind", config.dataset.input_kind, KINDS)
  if config.transfer.extra.name:
    DATASETS.get(config.transfer.extra.name)
    one_of("transfer.extra.input_kind", config.transfer.extra.input_kind, KINDS)


def _values(config: ml_collections.ConfigDict, given: tuple[str, ...]) -> None:
  """Allowed values and ranges of single fields."""
  train, dataset, distill = config.train, config.dataset, config.distill
  one_of("job", config.job, JOBS)
  for path in ("train.batch_size", "train.eval_batch_size", "train.log_every_steps"):
    in_range(path, get(config, path), 0, low_open=True)
  if train.num_steps <= 0 and train.epochs <= 0:
    raise JaxkdError("set the run's length: train.epochs > 0 or train.num_steps > 0.")
  for path in ("train.eval_every_steps", "train.checkpoint_every_steps", "dataset.validation_size",
               "dataset.max_chars", "dataset.mixup_alpha", "optimizer.weight_decay",
               "optimizer.grad_clip_norm", "optimizer.max_norm", "schedule.warmup_epochs"):
    in_range(path, get(config, path), 0)
  in_range("train.keep_checkpoints", train.keep_checkpoints, 1)
  in_range("train.loss_chunk", train.loss_chunk, 0)
  in_range("dataset.seq_len", dataset.seq_len, 1)
  one_of("train.population_split", train.population_split, POPULATION_SPLITS)
  if "optimizer" not in given:
    if config.optimizer.learning_rate is not None:
      in_range("optimizer.learning_rate", config.optimizer.learning_rate, 0, low_open=True)
    if config.optimizer.momentum_start is not None and config.optimizer.name != "sgd":
      raise JaxkdError(f"optimizer.momentum_start is for sgd, not {config.optimizer.name}.")
  for role in ("student", "teacher"):
    one_of(f"precision.{role}", config.precision[role], PRECISIONS)
  unknown = sorted(set(config.precision) - {"student", "teacher"})
  if unknown:
    raise JaxkdError(f"precision has no field(s) {unknown}; set precision.student and "
                     "precision.teacher.")
  one_of("distill.teacher_combine", distill.teacher_combine, TEACHER_COMBINE)
  one_of("distill.teacher_layout", distill.teacher_layout, TEACHER_LAYOUTS)
  one_of("transfer.unlabeled", config.transfer.unlabeled, UNLABELED_MODES)
  in_range("transfer.labeled_fraction", config.transfer.labeled_fraction, 0.0, 1.0)
  if config.transfer.keep_classes and config.transfer.drop_classes:
    raise JaxkdError("transfer: give keep_classes or drop_classes, not both.")
  one_of("bias_correction.source", config.bias_correction.source, BIAS_SOURCES)
  in_range("bias_correction.steps", config.bias_correction.steps, 1)
  _on_policy(distill.on_policy)
  in_range("distill.cohort", distill.cohort, 1)
  in_range("distill.mean_teacher_decay", distill.mean_teacher_decay, 0.0, 1.0)
  if distill.mean_teacher_decay >= 1:
    raise JaxkdError("distill.mean_teacher_decay must be below 1 (1 would never follow the "
                     f"student), got {distill.mean_teacher_decay}.")


def _on_policy(on_policy: ml_collections.ConfigDict) -> None:
  from jaxkd.engine.on_policy import OnPolicy

  known = [f.name for f in dataclasses.fields(OnPolicy)]
  unknown = sorted(set(on_policy) - set(known))
  if unknown:
    raise JaxkdError(f"distill.on_policy has no option(s) {unknown}; its options are {known}.")
  in_range("distill.on_policy.fraction", on_policy.fraction, 0.0, 1.0)
  one_of("distill.on_policy.generator", on_policy.generator, GENERATORS)
  in_range("distill.on_policy.temperature", on_policy.temperature, 0.0, low_open=True)
  in_range("distill.on_policy.prompt_len", on_policy.prompt_len, 1)


def _combinations(config: ml_collections.ConfigDict, given: tuple[str, ...]) -> None:
  """Options that each work alone but compute the wrong thing together."""
  distill = config.distill
  if distill.soft_labels and config.dataset.mixup_alpha > 0:
    raise JaxkdError("distill.soft_labels with dataset.mixup_alpha > 0: a cache holds the "
                     "teacher's logits of each unmixed image, not of the mixed one the student "
                     "sees, so the targets would be wrong. Run the teacher online "
                     "(distill.teachers) or set dataset.mixup_alpha=0.")
  if distill.on_policy.fraction and distill.soft_labels:
    raise JaxkdError("distill.on_policy: a cached teacher cannot score the sequences the "
                     "student generates; run the teacher online (distill.teachers).")
  if distill.on_policy.fraction and distill.on_policy.generator == "teacher" and (
      not distill.teachers and "teachers" not in given):
    raise JaxkdError("distill.on_policy.generator='teacher' samples from a teacher: set "
                     "distill.teachers.")
  if distill.cohort > 1 and (distill.teachers or distill.soft_labels or "teachers" in given):
    raise JaxkdError(f"distill.cohort={distill.cohort}: the members are each other's teachers; "
                     "leave distill.teachers and distill.soft_labels empty.")
  if distill.mean_teacher_decay and (distill.teachers or distill.soft_labels or distill.cohort > 1
                                     or "teachers" in given or distill.on_policy.fraction):
    raise JaxkdError("distill.mean_teacher_decay: the teacher is the student's moving average; "
                     "leave distill.teachers, soft_labels, cohort and on_policy unset.")
  if distill.cohort_models:
    models = [dict(m) for m in distill.cohort_models]
    if len(models) != distill.cohort or not all(isinstance(m.get("name"), str) for m in models):
      raise JaxkdError(f"distill.cohort_models needs one model section (with its `name`) per "
                       f"member of the cohort ({distill.cohort}), got {len(models)}: e.g. "
                       "({'name': 'mlp', 'widths': (100,)}, {'name': 'mlp', 'widths': (400,)}).")
    if "model" in given:
      raise JaxkdError("distill.cohort_models builds each member from its section; give the "
                       "model by name, not as an object.")
    from jaxkd.models import MODELS

    for model in models:
      if model["name"] != "hf":
        MODELS.get(model["name"])
  if distill.cohort > 1 and (config.stages or distill.on_policy.fraction):
    raise JaxkdError(f"distill.cohort={distill.cohort} trains its members together from the "
                     "start: no config.stages and no on-policy batches.")
  if config.bias_correction.source == "validation" and not config.dataset.validation_size:
    raise JaxkdError("bias_correction.source='validation' needs a validation split: set "
                     "dataset.validation_size > 0 (never fitted on the test set).")


def _objective(config: ml_collections.ConfigDict) -> None:
  """Every term's name, weight and options, checked against the method (jaxkd.distill)."""
  from jaxkd.distill import build_objective

  objective = build_objective(config.distill, steps_per_epoch=1, total_steps=1)
  if config.distill.mean_teacher_decay and not objective.needs_teacher:
    raise JaxkdError("distill.mean_teacher_decay: no term reads the mean teacher; add one, e.g. "
                     "--config.distill.terms.soft_mse.weight=1.0 (the paper's consistency).")
  if config.distill.cohort > 1 and not objective.needs_teacher:
    raise JaxkdError(f"distill.cohort={config.distill.cohort}: no term reads the other members' "
                     "predictions; add one, e.g. --config.distill.terms.dml.weight=1.0.")
  if config.bias_correction.source == "transfer" and not objective.needs_teacher:
    raise JaxkdError("bias_correction.source='transfer' fits the bias to the teachers' "
                     "probabilities on the transfer set: the objective needs a teacher term "
                     "(e.g. kd), or use source='validation'.")


def validate(config: ml_collections.ConfigDict, given: tuple[str, ...] = ()) -> None:
  """Raises JaxkdError for a missing field, an unknown name, a value out of its range or a
  combination that cannot work, before any work; completes the config from the schema
  first. `given`: sections a Python caller passes as objects ('model', 'optimizer':
  jaxkd.run.api), whose names the config need not hold. Stages are checked too."""
  complete(config)
  if config.job == "pipeline":
    validate_pipeline(config)
    return
  if config.job == "graph":
    graph_order(config)
    return
  _required(config, given)
  _names(config, given)
  _values(config, given)
  _combinations(config, given)
  _objective(config)
  stage_configs(config, given)


def validate_pipeline(config: ml_collections.ConfigDict) -> None:
  """The pipeline's own fields, and every check of its teacher's and student's runs."""
  one_of("distill.mode", config.distill.mode, PIPELINE_MODES)
  one_of("distill.soft_label_dtype", config.distill.soft_label_dtype, SOFT_LABEL_DTYPES)
  in_range("distill.top_k", config.distill.top_k, 0)
  _positive_count("student.seeds", config.student.seeds,
                  "--config.student.seeds=3 (and --config.student.seed=3 for seeds 3, 4, 5)")
  for role in ("teacher", "student"):
    try:
      validate(config[role])
    except JaxkdError as e:
      raise JaxkdError(f"{role}: {e}") from None


def _positive_count(path: str, value, example: str) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise JaxkdError(f"{path} must be a positive number, got {value!r}; e.g. {example}.")


def teacher_runs(config: ml_collections.ConfigDict, name: str) -> list[str]:
  """The graph's runs that run `name` names as its teachers (the others are directories)."""
  return [t for t in config.runs[name].distill.teachers if t in config.runs]


def graph_order(config: ml_collections.ConfigDict) -> list[str]:
  """The graph job's runs in an order where every run comes after the runs it names as
  teachers (by name; ties alphabetical), each run's own checks passed; raises for a run
  that names itself, a cycle, a baseline that is not a run, a run cached from another run,
  or a config that is not a training run's."""
  _positive_count("seeds", config.seeds, "--config.seeds=3")
  runs = dict(config.runs.items())
  if not runs:
    raise JaxkdError("a graph needs at least one run: config.runs.<name> = a training config "
                     "(see configs/mnist/born_again.py).")
  if config.baseline and config.baseline not in runs:
    raise JaxkdError(f"baseline={config.baseline!r} is not a run of this graph; its runs: "
                     f"{sorted(runs)}.")
  needs = {}
  for name, run in runs.items():
    if not isinstance(run, ml_collections.ConfigDict) or run.get("job", "train") != "train":
      raise JaxkdError(f"runs.{name} must be a training run's config (job 'train', e.g. "
                       "jaxkd.config.base_config() or a config file's get_config()).")
    try:
      validate(run)
    except JaxkdError as e:
      raise JaxkdError(f"runs.{name}: {e}") from None
    cached = [s for s in run.distill.soft_labels if s in runs]
    if cached:
      raise JaxkdError(f"runs.{name}.distill.soft_labels names the run(s) {cached}: a graph's "
                       "runs teach online; name them in distill.teachers instead.")
    needs[name] = teacher_runs(config, name)
    if name in needs[name]:
      raise JaxkdError(f"runs.{name} names itself as its teacher; name an earlier run.")
  order, placed = [], set()
  while len(order) < len(runs):
    ready = sorted(n for n in runs if n not in placed and set(needs[n]) <= placed)
    if not ready:
      cycle = sorted(n for n in runs if n not in placed)
      raise JaxkdError(f"the runs {cycle} name each other as teachers in a cycle: none of them "
                       "can be trained first.")
    order.append(ready[0])
    placed.add(ready[0])
  return order


def stage_configs(config: ml_collections.ConfigDict, given: tuple[str, ...] = ()
                  ) -> list[ml_collections.ConfigDict]:
  """The full config of each stage in config.stages (attribute `stage_name` added), each
  validated."""
  result, names = [], set()
  for i, stage in enumerate(config.stages or ()):
    stage = dict(stage.to_dict() if isinstance(stage, ml_collections.ConfigDict) else stage)
    unknown = sorted(set(stage) - set(STAGE_FIELDS))
    name = stage.get("name")
    if unknown or not name or name in names:
      raise JaxkdError(f"config.stages[{i}] needs a unique `name` and takes only the fields "
                       f"{STAGE_FIELDS}" + (f"; unknown: {unknown}" if unknown else "") + ".")
    names.add(name)
    stage = {**STAGE_DEFAULTS, **stage}
    derived = ml_collections.ConfigDict(config.to_dict())
    derived.stages = ()
    derived.train.epochs = float(stage["epochs"])
    derived.train.num_steps = int(stage["num_steps"])
    if "terms" in stage:
      derived.distill.terms = ml_collections.ConfigDict(stage["terms"])
    derived.optimizer.update(stage["optimizer"])
    derived.schedule.update(stage["schedule"])
    derived.train.freeze = tuple(stage["freeze"])
    derived.train.student_eval_mode = bool(stage["student_eval_mode"])
    derived.stage_name = name
    validate(derived, given)
    result.append(derived)
  return result
