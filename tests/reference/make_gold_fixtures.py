"""Golden fixtures from TRL's GOLD trainer (trl.experimental.gold.ULDLoss), for
tests/test_uld.py: two byte-level BPE tokenizers of different sizes trained here, texts
with Unicode, whitespace and word-boundary-crossing tokens cut by both, random logits, and
ULDLoss's value and gradient (with respect to the student's logits) for each setting:
positional ULD, extended ULD with the 'observed' and 'bayesian' merges, and the hybrid
(adaptive and fixed weights, two betas). The tests need no torch.

  python -m venv /tmp/refenv && /tmp/refenv/bin/pip install torch==2.13.0 transformers trl
  /tmp/refenv/bin/python tests/reference/make_gold_fixtures.py
"""

import json
import pathlib
import types

import numpy as np
import torch
import transformers
import trl
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from trl.experimental.gold.gold_trainer import ULDLoss
from trl.experimental.utils import encode_with_byte_offsets

OUT = pathlib.Path(__file__).resolve().parent / "fixtures" / "gold"
SEED = 0
CORPUS = ("the king is dead long live the queen my lord what say you to this naïve café — "
          "fair is foul and foul is fair “hover” through the fog, 日本語 and Ελληνικά  two "
          "spaces\nnew lines\n\n tabs\tand ÿ bytes ") * 4
# The teacher's BPE learns from other text: each vocabulary then has tokens the other lacks.
TEACHER_CORPUS = ("hover through the fog and filthy air, when shall we three meet again in "
                  "thunder, lightning, or in rain — café crème, naïve Ελλάδα, 日本語のテキスト "
                  "\ttabs  and\nlines ") * 4
TEXTS = ["fair is foul, my lord — naïve café", "the queen  says “hover”\tthrough 日本",
         "Ελληνικά and the fog\nlong live"]
PROMPT = 2  # prompt tokens before each completion (labels -100)
SETTINGS = {
    "positions": dict(use_extended_uld=False),
  "positions_hybrid": dict(use_extended_uld=False, uld_use_hybrid_loss=True),
    "observed": dict(uld_token_merge_strategy="observed"),
    "bayesian": dict(uld_token_merge_strategy="bayesian"),
    "hybrid_adaptive": dict(uld_token_merge_strategy="bayesian", uld_use_hybrid_loss=True),
    "hybrid_fixed_beta0": dict(uld_token_merge_strategy="observed", uld_use_hybrid_loss=True,
                               uld_hybrid_matched_weight=0.3, uld_hybrid_unmatched_weight=0.7,
                               beta=0.0),
    "temperatures": dict(uld_token_merge_strategy="bayesian", uld_student_temperature=2.0,
                         uld_teacher_temperature=0.5),
}


def bpe(vocab_size: int, corpus: str) -> transformers.PreTrainedTokenizerFast:
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.train_from_iterator([corpus], trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer,
                                              eos_token="<|endoftext|>",
                                              pad_token="<|endoftext|>")


def side(tokenizer, rng) -> dict:
  """GOLD's inputs for one side: ids, labels and byte offsets [B, L] (prompt, completion,
  end of text; right padding)."""
  encoded = encode_with_byte_offsets(tokenizer.backend_tokenizer, TEXTS)
  rows = []
  for text, (ids, offsets) in zip(TEXTS, encoded):
    prompt = list(rng.integers(1, tokenizer.vocab_size, PROMPT))
    end = len(text.encode())
    rows.append((prompt + list(ids) + [tokenizer.eos_token_id],
                 [(0, 0)] * PROMPT + list(offsets) + [(end, end)]))
  length = max(len(ids) for ids, _ in rows)
  out = {"ids": np.zeros((len(rows), length), np.int64),
         "labels": np.full((len(rows), length), -100, np.int64),
         "offsets": np.zeros((len(rows), length, 2), np.int64)}
  for i, (ids, offsets) in enumerate(rows):
    out["ids"][i, :len(ids)] = ids
    out["labels"][i, PROMPT:len(ids)] = ids[PROMPT:]
    out["offsets"][i, :len(ids)] = offsets
  return out


def main():
  rng = np.random.default_rng(SEED)
  student_tokenizer, teacher_tokenizer = bpe(300, CORPUS), bpe(380, TEACHER_CORPUS)
  OUT.mkdir(parents=True, exist_ok=True)
  student_tokenizer.backend_tokenizer.save(str(OUT / "student_tokenizer.json"))
  teacher_tokenizer.backend_tokenizer.save(str(OUT / "teacher_tokenizer.json"))
  student, teacher = side(student_tokenizer, rng), side(teacher_tokenizer, rng)
  sizes = (len(student_tokenizer), len(teacher_tokenizer))
  arrays = {f"student_{k}": v for k, v in student.items()}
  arrays.update({f"teacher_{k}": v for k, v in teacher.items()})
  arrays["student_logits"] = rng.normal(0, 2, (*student["ids"].shape, sizes[0])).astype(np.float32)
  arrays["teacher_logits"] = rng.normal(0, 2, (*teacher["ids"].shape, sizes[1])).astype(np.float32)
  results = {}
  for name, options in SETTINGS.items():
    config = types.SimpleNamespace(**{
        "uld_crossentropy_weight": 0.0, "uld_distillation_weight": 1.0,
        "uld_student_temperature": 1.0, "uld_teacher_temperature": 1.0,
        "uld_skip_student_eos": True, "uld_skip_teacher_eos": True, "use_extended_uld": True,
        "uld_token_merge_strategy": "observed", "uld_use_hybrid_loss": False,
        "uld_hybrid_matched_weight": None, "uld_hybrid_unmatched_weight": None, "beta": 0.5,
        **options})
    loss_fn = ULDLoss(config, student_tokenizer, teacher_tokenizer)
    logits = torch.tensor(arrays["student_logits"], requires_grad=True)
    loss = loss_fn(logits, torch.tensor(arrays["teacher_logits"]),
                   torch.tensor(student["labels"]), torch.tensor(teacher["labels"]),
                   torch.tensor(student["ids"]), torch.tensor(teacher["ids"]),
                   student_byte_offsets=torch.tensor(student["offsets"]),
                   teacher_byte_offsets=torch.tensor(teacher["offsets"]))
    loss.backward()
    arrays[f"grad_{name}"] = logits.grad.numpy()
    results[name] = {"loss": float(loss), "options": options}
  np.savez_compressed(OUT / "uld.npz", **arrays)
  meta = {"trl": trl.__version__, "torch": torch.__version__,
          "transformers": transformers.__version__, "texts": TEXTS, "prompt": PROMPT,
          "settings": results}
  (OUT / "uld.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()
