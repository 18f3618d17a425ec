"""Character-level Shakespeare students (160k parameters: 2 layers, width 80, 4 heads,
MLP 320; 11x smaller than configs/shakespeare/teacher.py), one config per arm of
experiments/lm_shakespeare. The argument is 'ARM,TEACHER_WORKDIR[,CACHE]':
  alone       ce on the next character (no teacher)
  fkl         forward KL(teacher || student) per token, the teacher online
  rkl         reverse KL(student || teacher)
  jsd         generalized JSD, beta 0.5 (GKD)
  cached_fkl  forward KL from the teacher's cached top-16 (CACHE: jaxkd.run.soft_labels
              --top_k=16 over this transfer set); no teacher runs
  on_policy   JSD(0.5) where half the batches are the student's own continuations of
              16-character prompts, scored by the teacher (GKD, lambda 0.5)
Each trains 1,000 steps of 32 windows on the first 2M training characters (2 epochs).

  python -m jaxkd train --config=configs/shakespeare/student.py:fkl,runs/lm_shakespeare/teacher \\
      --workdir=runs/lm_shakespeare/fkl/seed=0
"""

import importlib.util
import pathlib

ARMS = ("alone", "fkl", "rkl", "jsd", "cached_fkl", "on_policy")
TERMS = {"alone": {"ce": {"weight": 1.0}}, "fkl": {"fkl": {"weight": 1.0}},
         "rkl": {"rkl": {"weight": 1.0}}, "jsd": {"gjsd": {"weight": 1.0, "beta": 0.5}},
         "cached_fkl": {"fkl": {"weight": 1.0}},
         "on_policy": {"gjsd": {"weight": 1.0, "beta": 0.5}}}
TRANSFER_CHARS = 2_000_000
TOP_K = 16


def get_config(arg: str = "fkl,runs/lm_shakespeare/teacher"):
  arm, teacher, *cache = arg.split(",")
  if arm not in ARMS:
    raise ValueError(f"arm '{arm}' is not one of {ARMS}.")
  config = _lm_base(pathlib.Path(__file__).with_name("teacher.py"))()
  config.dataset.max_chars = TRANSFER_CHARS
  config.model.update(num_layers=2, embed_dim=80, num_heads=4, mlp_dim=320)
  config.optimizer.learning_rate = 3e-3
  config.schedule.warmup_epochs = 0.05
  config.train.update(num_steps=1000, eval_every_steps=250, checkpoint_every_steps=250)
  config.distill.terms = TERMS[arm]
  if arm == "cached_fkl":
    config.distill.soft_labels = (cache[0] if cache else
                                  str(pathlib.Path(teacher).parent / "topk16.npz"),)
  elif arm != "alone":
    config.distill.teachers = (teacher,)
  if arm == "on_policy":
    config.distill.on_policy.update(fraction=0.5, prompt_len=16, temperature=1.0)
  return config


def _lm_base(path: pathlib.Path):
  """teacher.py's lm_base: what teacher and students share."""
  spec = importlib.util.spec_from_file_location("jaxkd_config_shakespeare_teacher", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.lm_base
