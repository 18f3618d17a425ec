"""The config schema: every field a run reads, its default, and the checks run
before training starts. Experiment files start from `base_config()`."""

import ml_collections
from ml_collections import config_dict

from jaxkd.errors import JaxkdError

REQUIRED = ("dataset.name", "model.name", "optimizer.learning_rate", "train.batch_size")


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = ml_collections.ConfigDict(dict(
      name=config_dict.placeholder(str),
      source="auto",  # auto | tfds | offline (see jaxkd.data.catalog.choose_source)
      data_dir=config_dict.placeholder(str),  # tfds data dir
      path=config_dict.placeholder(str),  # for name='npz'
      num_classes=config_dict.placeholder(int),  # for name='npz'; else from the dataset
      mean=config_dict.placeholder(tuple),  # per channel on [0, 1]; None: dataset default
      std=config_dict.placeholder(tuple),
      crop_padding=config_dict.placeholder(int),  # None: dataset default
      flip=config_dict.placeholder(bool),  # None: dataset default
      mixup_alpha=0.0,  # > 0: mixup (teacher and student see the same mixed view)
      image_size=config_dict.placeholder(int),  # streamed datasets (imagenet2012); None: 224
  ))

  # The objective: weighted named terms (jaxkd.distill); plain training is ce alone.
  config.distill = ml_collections.ConfigDict(dict(
      terms=ml_collections.ConfigDict({"ce": ml_collections.ConfigDict({"weight": 1.0})}),
      teacher_combine="average",  # average | sum (several teachers)
      teachers=(),  # workdirs of trained teachers, run online in the train step
      soft_labels=(),  # cached soft labels (one .npz per teacher); then no teacher runs
  ))

  # Model options beyond `name` are the model's constructor arguments.
  config.model = ml_collections.ConfigDict(dict(name=config_dict.placeholder(str)))

  config.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=config_dict.placeholder(float), momentum=0.9, nesterov=False,
      b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decay_biases_and_norms=False,
      grad_clip_norm=0.0))

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
  ))
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises JaxkdError for a missing field or an unknown name, before any work."""
  from jaxkd.data import DATASETS
  from jaxkd.models import MODELS
  from jaxkd.optim import OPTIMIZERS, SCHEDULES

  for path in REQUIRED:
    node = config
    for part in path.split("."):
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if node is None:
      raise JaxkdError(f"config field '{path}' is required; set it in the config file or with "
                       f"--config.{path}=VALUE.")
  DATASETS.get(config.dataset.name)
  MODELS.get(config.model.name)
  OPTIMIZERS.get(config.optimizer.name)
  SCHEDULES.get(config.schedule.name)
  if config.train.batch_size <= 0 or config.train.eval_batch_size <= 0:
    raise JaxkdError("train.batch_size and train.eval_batch_size must be positive.")
  if config.train.num_steps <= 0 and config.train.epochs <= 0:
    raise JaxkdError("set the run's length: train.epochs > 0 or train.num_steps > 0.")


def load_config_file(path, arg: str | None = None) -> ml_collections.ConfigDict:
  """get_config() (or get_config(arg)) of another config file: recipes are written once."""
  import importlib.util
  import pathlib

  path = pathlib.Path(path)
  spec = importlib.util.spec_from_file_location(f"jaxkd_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)
