"""Students with another tokenizer than their teacher's (experiments/cross_tokenizer): the
Shakespeare plays through a byte-level BPE of 2,048 tokens (tokenizer B, trained on the
training plays), distilled from the BPE-4,096 teacher of configs/shakespeare/bpe_teacher.py
(tokenizer A, a Hugging Face directory with its tokenizer.json). The student is
bpe_student.py's (Llama layout, 2 layers, width 128, SwiGLU 352, tied embeddings; 0.63M
parameters with B's smaller embedding), 600 steps of 16 windows of 128 tokens. The argument
is 'ARM,TEACHER':
  alone        ce on the next token (no teacher)
  uld          ce + ULD (Boizard et al. 2024): the i-th predicted token of each side against
               the i-th of the other, sorted probabilities
  uld_spans    ce + ULD over byte-aligned spans (GOLD's extended ULD, chain-rule merge)
  uld_hybrid   ce + the spans, tokens both vocabularies hold compared by JSD(0.5), the rest
               by sorted probabilities (GOLD's hybrid, adaptive weights)
  uld_hybrid_cached  the same from the teacher's cached top-16 per teacher token (CACHE:
               python -m jaxkd soft_labels --top_k=16 with this config; no teacher runs)
The argument is 'ARM,TEACHER[,CACHE]'.

  python -m jaxkd train --config=configs/shakespeare/cross_tokenizer.py:uld_spans,runs/lm_pretrained/teacher_export/hf \\
      --workdir=runs/cross_tokenizer/uld_spans/seed=0
"""

import pathlib

from jaxkd.config import load_config_file

ARMS = ("alone", "uld", "uld_spans", "uld_hybrid", "uld_hybrid_cached")
VOCABULARY = 2048
ULD = {"uld": {"alignment": "positions"},
       "uld_spans": {"alignment": "spans"},
       "uld_hybrid": {"alignment": "spans", "hybrid": True},
       "uld_hybrid_cached": {"alignment": "spans", "hybrid": True}}


def get_config(arg: str = "uld_spans,runs/lm_pretrained/teacher_export/hf"):
  arm, teacher, *cache = arg.split(",")
  if arm not in ARMS:
    raise ValueError(f"arm '{arm}' is not one of {ARMS}.")
  config = load_config_file(pathlib.Path(__file__).with_name("bpe_student.py"),
                            f"alone,{teacher}")
  config.dataset.vocab_size = VOCABULARY  # tokenizer B: trained on the training plays
  if arm != "alone":
    config.distill.terms = {"ce": {"weight": 1.0}, "uld": {"weight": 1.0, **ULD[arm]}}
    if arm.endswith("_cached"):
      config.distill.soft_labels = (cache[0] if cache else str(
          pathlib.Path(teacher).parent.parent / "cross_top16.npz"),)
    else:
      config.distill.teachers = (teacher,)
  return config
