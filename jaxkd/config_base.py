"""The config schema: every field a run reads, its default, and the checks run
before training starts. Experiment files start from `base_config()`."""

import ml_collections
from ml_collections import config_dict

from jaxkd.errors import JaxkdError
from jaxkd.transfer import transfer_defaults

REQUIRED = ("dataset.name", "model.name", "optimizer.learning_rate", "train.batch_size")
PRECISIONS = ("float32", "bfloat16")  # config.precision.student / .teacher
BIAS_SOURCES = ("none", "validation", "transfer")


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = ml_collections.ConfigDict(dict(
      name=config_dict.placeholder(str),
      source="auto",  # auto | tfds | offline (see jaxkd.data.catalog.choose_source)
      data_dir=config_dict.placeholder(str),  # tfds data dir
      path=config_dict.placeholder(str),  # for name='npz'
      input_kind="image",  # for name='npz': image | features (tables, sequences) | tokens
      num_classes=config_dict.placeholder(int),  # for name='npz'; else from the dataset
      mean=config_dict.placeholder(tuple),  # per channel on [0, 1]; None: dataset default
      std=config_dict.placeholder(tuple),
      crop_padding=config_dict.placeholder(int),  # None: dataset default
      flip=config_dict.placeholder(bool),  # None: dataset default
      mixup_alpha=0.0,  # > 0: mixup (teacher and student see the same mixed view)
      image_size=config_dict.placeholder(int),  # streamed datasets (imagenet2012); None: 224
      # Examples held out of the training split for model selection ('best' is best on
      # them; the test set is evaluated and logged, never chosen on). Which ones depends on
      # validation_seed only: every run of a dataset config holds out the same examples.
      validation_size=0,
      validation_seed=0,
      # Token datasets (shakespeare_char): characters per example, and a cap on each
      # split's characters (0: all) for smaller runs.
      seq_len=128,
      max_chars=0,
  ))

  # The objective: weighted named terms (jaxkd.distill); plain training is ce alone.
  config.distill = ml_collections.ConfigDict(dict(
      terms=ml_collections.ConfigDict({"ce": ml_collections.ConfigDict({"weight": 1.0})}),
      teacher_combine="average",  # average | sum (several teachers)
      teachers=(),  # workdirs of trained teachers, run online in the train step
      soft_labels=(),  # cached soft labels (one .npz per teacher); then no teacher runs
      # Each online teacher's large arrays split over the devices (its largest dimension
      # that divides evenly; small or indivisible arrays stay whole): a teacher too big
      # for one device. Gathered layer by layer in the step; the student is unchanged.
      shard_teacher=False,
      # Language models: with probability `fraction` a batch of sequences the student
      # generates from `prompt_len` tokens of the data, scored by the teacher (GKD;
      # generator='teacher': sequence-level KD). jaxkd.on_policy.
      on_policy=ml_collections.ConfigDict(dict(fraction=0.0, prompt_len=16, temperature=1.0,
                                               generator="student")),
  ))

  # What the student distils on, when it is not simply the training split: class filters,
  # a labeled subset with the rest unlabeled, extra unlabeled data (jaxkd.transfer).
  config.transfer = transfer_defaults()

  # A per-class logit bias b added to the student's logits at evaluation and export,
  # fitted after training: source 'validation' minimises the cross-entropy of
  # softmax(logits + b) on the validation split, 'transfer' the KL from the teachers on
  # the transfer set; 'none' fits nothing. Never the test set.
  config.bias_correction = ml_collections.ConfigDict(dict(source="none", steps=200))

  # Compute precision of the forward and backward passes: float32 | bfloat16. Parameters,
  # optimizer state and batch statistics stay float32; logits and features come back as
  # float32 for the loss. An online teacher in bfloat16 is also kept in bfloat16.
  config.precision = ml_collections.ConfigDict(dict(student="float32", teacher="float32"))

  # Model options beyond `name` and `init_from` are the model's constructor arguments.
  # init_from: a run's workdir or an export whose parameters (and batch statistics) the
  # model starts from; arrays whose shape differs (another class count's head) start
  # fresh, and the run says which. train.freeze can then hold the rest.
  config.model = ml_collections.ConfigDict(dict(name=config_dict.placeholder(str),
                                                init_from=""))

  config.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=config_dict.placeholder(float), momentum=0.9, nesterov=False,
      b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decay_biases_and_norms=False,
      grad_clip_norm=0.0,
      max_norm=0.0,  # > 0: each unit's incoming weights kept to this L2 norm (max-norm)
      # sgd: momentum from momentum_start to momentum over momentum_warmup_epochs
      momentum_start=config_dict.placeholder(float), momentum_warmup_epochs=0.0))

  config.schedule = ml_collections.ConfigDict(dict(
      name="constant", warmup_epochs=0.0, boundaries_epochs=(), decay_factor=0.1,
      end_factor=0.0))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=config_dict.placeholder(int),
      epochs=0.0,  # length in epochs, unless num_steps > 0
      num_steps=0,
      eval_batch_size=1000,
      log_every_steps=100,
      eval_every_steps=0,  # 0: once per epoch
      checkpoint_every_steps=0,  # 0: once per epoch
      keep_checkpoints=3,
      # A population (jaxkd.population) over the devices: 'batch' splits each step's batch
      # (members replicated), 'member' places whole members on each device.
      population_split="batch",
      # Trainable parts left unchanged, by path prefix: 'params' (the student),
      # 'aux/<term label>' or deeper (a connector or part of one).
      freeze=(),
      # The student runs in inference mode (BatchNorm on its running statistics, which stay
      # as they are; no dropout) while its parameters train: the CRD benchmark's
      # initialisation stages (AB, FSP) run the student so (model_s.eval()).
      student_eval_mode=False,
  ))

  # Stages trained before the main run, in order (e.g. FitNets' hint stage, or the
  # initialisation stage of AB, FSP or FT's paraphraser). Each is a dict with `name`
  # and its length (`epochs` or `num_steps`), and optionally `terms` (its objective),
  # `optimizer` and `schedule` (fields to override), `freeze` and `student_eval_mode`.
  # Every stage hands the student, the connectors and their running state (matched by
  # term label) on to the next; a connector whose shapes changed is an error.
  config.stages = ()

  # Several processes (jaxkd.distributed): coordinator_address set -> those settings; else
  # auto -> a cluster jax detects (SLURM, Open MPI, TPU pod); else one process.
  config.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="",  # HOST:PORT of process 0, the same for every process
      num_processes=1,
      process_id=0,  # 0 .. num_processes - 1, one per process
      local_device_ids="",  # e.g. '0,1': this process's devices; '': all local devices
      auto=True,
  ))
  return config


def validate(config: ml_collections.ConfigDict, given: tuple[str, ...] = ()) -> None:
  """Raises JaxkdError for a missing field or an unknown name, before any work. `given`:
  sections a Python caller passes as objects ('model', 'optimizer': jaxkd.api), whose
  names the config need not hold."""
  from jaxkd.data import DATASETS
  from jaxkd.models import MODELS
  from jaxkd.optim import OPTIMIZERS, SCHEDULES

  for path in REQUIRED:
    if path.split(".")[0] in given:
      continue
    node = config
    for part in path.split("."):
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if node is None:
      raise JaxkdError(f"config field '{path}' is required; set it in the config file or with "
                       f"--config.{path}=VALUE.")
  DATASETS.get(config.dataset.name)
  if "model" not in given:
    MODELS.get(config.model.name)
  OPTIMIZERS.get(config.optimizer.name)
  SCHEDULES.get(config.schedule.name)
  if config.train.batch_size <= 0 or config.train.eval_batch_size <= 0:
    raise JaxkdError("train.batch_size and train.eval_batch_size must be positive.")
  if config.train.num_steps <= 0 and config.train.epochs <= 0:
    raise JaxkdError("set the run's length: train.epochs > 0 or train.num_steps > 0.")
  if config.distill.get("soft_labels") and config.dataset.get("mixup_alpha", 0.0) > 0:
    raise JaxkdError("distill.soft_labels with dataset.mixup_alpha > 0: a cache holds the "
                     "teacher's logits of each unmixed image, not of the mixed one the student "
                     "sees, so the targets would be wrong. Run the teacher online "
                     "(distill.teachers) or set dataset.mixup_alpha=0.")
  correction = (config.get("bias_correction") or {}).get("source", "none")
  if correction not in BIAS_SOURCES:
    raise JaxkdError(f"bias_correction.source='{correction}' is not one of {BIAS_SOURCES}.")
  if correction == "validation" and not config.dataset.get("validation_size"):
    raise JaxkdError("bias_correction.source='validation' needs a validation split: set "
                     "dataset.validation_size > 0 (never fitted on the test set).")
  for role, name in (config.get("precision") or {}).items():
    if role not in ("student", "teacher") or name not in PRECISIONS:
      raise JaxkdError(f"precision.{role}={name!r}: set precision.student and precision.teacher "
                       f"to one of {list(PRECISIONS)}.")


STAGE_FIELDS = ("name", "epochs", "num_steps", "terms", "optimizer", "schedule", "freeze",
                "student_eval_mode")


def stage_configs(config: ml_collections.ConfigDict, given: tuple[str, ...] = ()
                  ) -> list[ml_collections.ConfigDict]:
  """The full config of each stage in config.stages (attribute `stage_name` added)."""
  result, names = [], set()
  for i, stage in enumerate(config.get("stages", ()) or ()):
    stage = dict(stage.to_dict() if isinstance(stage, ml_collections.ConfigDict) else stage)
    unknown = sorted(set(stage) - set(STAGE_FIELDS))
    name = stage.get("name")
    if unknown or not name or name in names:
      raise JaxkdError(f"config.stages[{i}] needs a unique `name` and takes only the fields "
                       f"{STAGE_FIELDS}" + (f"; unknown: {unknown}" if unknown else "") + ".")
    names.add(name)
    derived = ml_collections.ConfigDict(config.to_dict())
    derived.stages = ()
    derived.train.epochs = float(stage.get("epochs", 0.0))
    derived.train.num_steps = int(stage.get("num_steps", 0))
    if "terms" in stage:
      derived.distill.terms = ml_collections.ConfigDict(stage["terms"])
    derived.optimizer.update(stage.get("optimizer", {}))
    derived.schedule.update(stage.get("schedule", {}))
    derived.train.freeze = tuple(stage.get("freeze", ()))
    derived.train.student_eval_mode = bool(stage.get("student_eval_mode", False))
    derived.stage_name = name
    validate(derived, given)
    result.append(derived)
  return result


def load_config_file(path, arg: str | None = None) -> ml_collections.ConfigDict:
  """get_config() (or get_config(arg)) of another config file: recipes are written once."""
  import importlib.util
  import pathlib

  path = pathlib.Path(path)
  spec = importlib.util.spec_from_file_location(f"jaxkd_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)
