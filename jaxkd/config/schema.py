"""The config schema: every field a run reads, with its default. Experiment files start
from `base_config()` (one training run) or `pipeline_config()` (job='pipeline'); the checks
run before any work are in jaxkd.config.checks.

complete(config) fills in the fields a config lacks (a workdir's config.json written by an
older version, a user's partial dict) from this schema, so code reads every field directly.
"""

import contextlib

import ml_collections
from ml_collections import config_dict

REQUIRED = ("dataset.name", "model.name", "optimizer.learning_rate", "train.batch_size")


def base_config() -> ml_collections.ConfigDict:
  """Every field of a training run (job 'train'), with its default."""
  config = ml_collections.ConfigDict()
  config.job = "train"  # train | pipeline (pipeline_config) | graph (graph_config)
  config.seed = 0

  config.dataset = ml_collections.ConfigDict(dict(
      name=config_dict.placeholder(str),
      source="auto",  # auto | tfds | offline (see jaxkd.data.catalog.choose_source)
      data_dir=config_dict.placeholder(str),  # tfds data dir
      path=config_dict.placeholder(str),  # for name='npz'
      input_kind="image",  # for name='npz': image | numeric (tables, sequences) | tokens
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
      # Token datasets (shakespeare_char, text): tokens per example, and a cap on each
      # split's characters (0: all) for smaller runs.
      seq_len=128,
      max_chars=0,
      # dataset 'text' (jaxkd.data.text): path (a folder of .txt documents or one file),
      # the tokenizer (a tokenizer.json or a model directory; '': a byte-level BPE of
      # vocab_size trained on the training documents), the held-out documents by name or
      # drawn by split_seed, the separator of documents within one file.
      tokenizer="",
      vocab_size=4096,
      validation_documents=(),
      test_documents=(),
      validation_count=1,
      test_count=1,
      split_seed=0,
      document_separator="\n\n\n",
  ))

  # The objective: weighted named terms (jaxkd.distill); plain training is ce alone.
  config.distill = ml_collections.ConfigDict(dict(
      terms=ml_collections.ConfigDict({"ce": ml_collections.ConfigDict({"weight": 1.0})}),
      teacher_combine="average",  # average | sum (several teachers)
      teachers=(),  # workdirs of trained teachers, run online in the train step
      soft_labels=(),  # cached soft labels (one .npz per teacher); then no teacher runs
      # How each online teacher's variables lie on the devices: 'replicated' (whole on
      # each); 'sharded': each large array split on its largest dimension that divides
      # evenly (small or indivisible arrays stay whole), fsdp-style: a teacher too big for
      # one device; 'logical': by the model's logical axis names (param_logical_axes,
      # e.g. a Transformer's heads, MLP units and vocabulary: tensor-parallel). Read from
      # disk straight into that layout; the student is the same in every layout.
      teacher_layout="replicated",
      # A teacher with another tokenizer than the data's (cross-tokenizer terms: uld): its
      # tokenizer.json or a directory with one; '': the one in the teacher's directory.
      teacher_tokenizer="",
      # Deep mutual learning: K > 1 students (seeds seed, seed + 1, ...) trained together,
      # each taught by the others (their predictions are its teachers' outputs; terms such
      # as dml read them), in WORKDIR/member_<i>, stepped as one (jaxkd.run.cohort).
      cohort=1,
      # The cohort's models, one per member (each a model section: name and fields), for
      # members of different architectures; (): every member is `model`.
      cohort_models=(),
      # Mean teacher (Tarvainen & Valpola 2017): > 0 makes the teacher the exponential
      # moving average of the student's parameters with this decay (e.g. 0.99), updated
      # after every step and checkpointed; terms such as soft_mse or kd read it.
      mean_teacher_decay=0.0,
      # Language models: with probability `fraction` a batch of sequences the student
      # generates from `prompt_len` tokens of the data, scored by the teacher (GKD;
      # generator='teacher': sequence-level KD). jaxkd.engine.on_policy.
      on_policy=ml_collections.ConfigDict(dict(fraction=0.0, prompt_len=16, temperature=1.0,
                                               generator="student")),
  ))

  # What the student distils on, when it is not simply the training split: class filters,
  # a labeled subset with the rest unlabeled, extra unlabeled data (jaxkd.data.transfer).
  config.transfer = ml_collections.ConfigDict(dict(
      keep_classes=(), drop_classes=(), labeled_fraction=1.0, labeled_indices=(),
      labeled_seed=0, unlabeled="keep",  # keep | drop
      extra=ml_collections.ConfigDict(dict(name="", path="", split="train", source="auto",
                                           input_kind="image", num_classes=0))))

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
      # A population (jaxkd.run.population) over the devices: 'batch' splits each step's batch
      # (members replicated), 'member' places whole members on each device.
      population_split="batch",
      # Trainable parts left unchanged, by path prefix: 'params' (the student),
      # 'aux/<term label>' or deeper (a connector or part of one).
      freeze=(),
      # The student runs in inference mode (BatchNorm on its running statistics, which stay
      # as they are; no dropout) while its parameters train: the CRD benchmark's
      # initialisation stages (AB, FSP) run the student so (model_s.eval()).
      student_eval_mode=False,
      # A language model's loss over chunks of this many positions (0: all at once), so that
      # only [batch, loss_chunk, vocabulary] logits are alive at a time (jaxkd.engine.chunked;
      # ce and the token divergences only).
      loss_chunk=0,
  ))

  # Stages trained before the main run, in order (e.g. FitNets' hint stage, or the
  # initialisation stage of AB, FSP or FT's paraphraser). Each is a dict with `name`
  # and its length (`epochs` or `num_steps`), and optionally `terms` (its objective),
  # `optimizer` and `schedule` (fields to override), `freeze` and `student_eval_mode`.
  # Every stage hands the student, the connectors and their running state (matched by
  # term label) on to the next; a connector whose shapes changed is an error.
  config.stages = ()

  # Several processes (jaxkd.run.distributed): coordinator_address set -> those settings; else
  # auto -> a cluster jax detects (SLURM, Open MPI, TPU pod); else one process.
  config.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="",  # HOST:PORT of process 0, the same for every process
      num_processes=1,
      process_id=0,  # 0 .. num_processes - 1, one per process
      local_device_ids="",  # e.g. '0,1': this process's devices; '': all local devices
      auto=True,
  ))
  return config




# A stage's fields (config.stages) and the defaults of those a stage may leave out.
STAGE_DEFAULTS = dict(epochs=0.0, num_steps=0, optimizer={}, schedule={}, freeze=(),
                      student_eval_mode=False)
STAGE_FIELDS = ("name", "terms", *STAGE_DEFAULTS)


def pipeline_config() -> ml_collections.ConfigDict:
  """Every field of the pipeline job (jaxkd.jobs.pipeline): a teacher's and a student's
  training configs, the distillation between them and the report."""
  config = ml_collections.ConfigDict()
  config.job = "pipeline"
  config.teacher = base_config()
  config.teacher_workdir = ""  # A teacher trained elsewhere; empty: train one in WORKDIR/teacher.
  config.student = base_config()
  config.student.seeds = 1  # student.seed, student.seed + 1, ...: the report's statistics
  config.distill = ml_collections.ConfigDict(dict(
      terms=ml_collections.ConfigDict({"ce": ml_collections.ConfigDict({"weight": 0.1}),
                                       "kd": ml_collections.ConfigDict({"weight": 0.9,
                                                                        "temperature": 4.0})}),
      teacher_combine="average",
      mode="cached",  # cached (soft labels written once) | online (the teacher in the step)
      soft_label_dtype="float32",  # float16 | float32
      top_k=0,  # keep only the k largest logits per example in the cache (0: all)
  ))
  config.report = ml_collections.ConfigDict(dict(latency_batch_size=256, latency_repeats=100))
  # The seeds of an arm as one population (jaxkd.run.population); else one after another.
  config.vectorize_seeds = True
  config.distributed = base_config().distributed  # The pipeline runs in one process.
  return config


def graph_config() -> ml_collections.ConfigDict:
  """Every field of the graph job (jaxkd.jobs.graph): named training runs, each a
  base_config() whose distill.teachers may name earlier runs of the graph."""
  config = ml_collections.ConfigDict()
  config.job = "graph"
  config.runs = ml_collections.ConfigDict()  # name -> a training config (base_config)
  # Each run trains `seeds` seeds, from its own `seed` on; seed i of a run is taught by seed i
  # of each teacher run (so a chain's spread includes its teachers').
  config.seeds = 1
  config.baseline = ""  # The run every other is compared against (gain in test errors); '': none.
  config.distributed = base_config().distributed  # The graph runs in one process.
  return config


def defaults_for(config) -> ml_collections.ConfigDict:
  """The schema a config follows: pipeline_config() for job 'pipeline', graph_config() for
  job 'graph', else base_config()."""
  job = config.get("job", "train") if hasattr(config, "get") else "train"
  return {"pipeline": pipeline_config, "graph": graph_config}.get(job, base_config)()


# Sections whose keys are open (a model's constructor arguments, a method's options, a
# graph's runs): their defaults are not merged key by key below the section.
OPEN_SECTIONS = ("model", "distill.terms", "runs")


def complete(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with every schema field it lacks added with its default (in place; returned)."""
  def fill(node, defaults, prefix):
    for key, default in defaults.items():
      path = f"{prefix}{key}"
      if key not in node:
        with node.unlocked() if isinstance(node, ml_collections.ConfigDict) else (
            contextlib.nullcontext()):
          node[key] = default
      elif (isinstance(default, ml_collections.ConfigDict) and path not in OPEN_SECTIONS
            and isinstance(node[key], ml_collections.ConfigDict)):
        fill(node[key], default, path + ".")
      elif path == "model" and isinstance(node[key], ml_collections.ConfigDict):
        for field in ("init_from",):  # The model's own fields (besides its options).
          if field not in node[key]:
            with node[key].unlocked():
              node[key][field] = default[field]

  fill(config, defaults_for(config), "")
  if config.get("job") == "pipeline":
    for role in ("teacher", "student"):
      fill(config[role], base_config(), "")
  if config.get("job") == "graph":
    for name in config.runs:
      if isinstance(config.runs[name], ml_collections.ConfigDict):
        fill(config.runs[name], base_config(), "")
  return config

