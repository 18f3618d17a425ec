"""Students of the BPE Shakespeare teacher (configs/shakespeare/bpe_teacher.py): Llama
layout, 2 layers, width 128, 4 query and 2 key/value heads, SwiGLU 352, tied embeddings
(0.89M parameters, 6.2x smaller). One config per arm of experiments/lm_pretrained; the
argument is 'ARM,TEACHER[,CACHE]', TEACHER a Hugging Face directory (the teacher exported
and read back through the import) or a workdir:
  alone       ce on the next token (no teacher)
  fkl         forward KL(teacher || student) per token, the teacher online
  cached_fkl  forward KL from the teacher's cached top-16 log-probabilities (CACHE:
              jaxkd.run.soft_labels --top_k=16 over this transfer set); no teacher runs
  cached_fkl_ce  the same beside ce, 0.5 each: the cache says nothing of how the teacher
              spreads its tail mass over the other 4,080 tokens, the labels do
  jsd         generalized JSD, beta 0.5 (GKD), the teacher online

  python -m jaxkd train --config=configs/shakespeare/bpe_student.py:fkl,runs/lm_pretrained/teacher_hf \\
      --workdir=runs/lm_pretrained/fkl/seed=0
"""

import importlib.util
import pathlib

ARMS = ("alone", "fkl", "cached_fkl", "cached_fkl_ce", "jsd")
TERMS = {"alone": {"ce": {"weight": 1.0}}, "fkl": {"fkl": {"weight": 1.0}},
         "cached_fkl": {"fkl": {"weight": 1.0}},
         "cached_fkl_ce": {"ce": {"weight": 0.5}, "fkl": {"weight": 0.5}},
         "jsd": {"gjsd": {"weight": 1.0, "beta": 0.5}}}
TOP_K = 16


def get_config(arg: str = "fkl,runs/lm_pretrained/teacher_hf"):
  arm, teacher, *cache = arg.split(",")
  if arm not in ARMS:
    raise ValueError(f"arm '{arm}' is not one of {ARMS}.")
  base = _teacher_module()
  config = base.bpe_base()
  config.model = base.llama(2, 128, 352)
  config.optimizer.learning_rate = 3e-3
  config.train.update(num_steps=600, eval_every_steps=600, checkpoint_every_steps=300)
  config.distill.terms = TERMS[arm]
  if arm.startswith("cached_fkl"):
    config.distill.soft_labels = (cache[0] if cache else
                                  str(pathlib.Path(teacher).parent / "topk16.npz"),)
  elif arm != "alone":
    config.distill.teachers = (teacher,)
  return config


def _teacher_module():
  path = pathlib.Path(__file__).with_name("bpe_teacher.py")
  spec = importlib.util.spec_from_file_location("jaxkd_config_shakespeare_bpe_teacher", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
