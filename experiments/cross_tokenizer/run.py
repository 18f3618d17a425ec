"""A teacher and students with different tokenizers, on Shakespeare: the BPE-4,096 teacher
of experiments/lm_pretrained (its Hugging Face export, tokenizer A) distilled into students
that read the plays through a BPE of 2,048 tokens (tokenizer B), by each arm of
configs/shakespeare/cross_tokenizer.py; the upper reference is the same student with the
teacher's tokenizer and forward KL (experiments/lm_pretrained's 'fkl' arm: its runs are
reused when they are there, else trained here). Writes the table into README.md.

  python experiments/cross_tokenizer/run.py [--seeds=3] [--workdir=runs/cross_tokenizer]
      [--pretrained=runs/lm_pretrained]

Bits per byte of the held-out plays is the metric: it does not depend on the tokenizer.
Runs are read at their last step; nothing is chosen on the test split. Wall times
(ROOT/timings.json) are each arm's first run (its seeds as one population); the reused
reference arm's is lm_pretrained's.
"""

import json
import pathlib
import time

import jax
import numpy as np
from absl import flags

from jaxkd.cli import common
from jaxkd.config import load_config_file
from jaxkd.data import alignment, load_split, tokenizers
from jaxkd.errors import JaxkdError
from jaxkd.files import write_text
from jaxkd.jobs.export import HF_DIR
from jaxkd.jobs.stats import mean_std, plus_minus
from jaxkd.jobs.tables import markdown_table, write_between_markers
from jaxkd.jobs.timing import StageTimes, cpu_model
from jaxkd.run import cross_cache
from jaxkd.run.metrics import last_record
from jaxkd.run.population import train_population

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = HERE.parents[1] / "configs" / "shakespeare"
LABELS = {"alone": "student alone (ce), tokenizer B",
          "uld": "ce + ULD, i-th token against i-th (Boizard et al.)",
          "uld_spans": "ce + ULD over byte-aligned spans (GOLD's extended ULD)",
          "uld_hybrid": "ce + hybrid: shared tokens by JSD, the rest by ULD (GOLD)",
          "uld_hybrid_cached": "ce + hybrid from the teacher's cached top-16 (no teacher runs)",
          "reference": "reference: tokenizer A (the teacher's), forward KL"}

_FLAGS = {}


def define_flags():
  _FLAGS["seeds"] = flags.DEFINE_integer("seeds", 3, "Seeds per arm.", lower_bound=1)
  _FLAGS["workdir"] = common.path_flag("workdir", "runs/cross_tokenizer", "Root of the runs.")
  _FLAGS["pretrained"] = common.path_flag(
      "pretrained", "runs/lm_pretrained", "experiments/lm_pretrained's root: its teacher "
      "export (the teacher) and its fkl arm (the reference).")
  _FLAGS["student_steps"] = flags.DEFINE_integer("student_steps", 0, "0: the config's.",
                                                 lower_bound=0)
  _FLAGS["no_readme"] = flags.DEFINE_boolean("no_readme", False, "Print the table only.")
  _FLAGS["smoke"] = flags.DEFINE_boolean("smoke", False, "Tiny students on 20,000 characters "
                                         "(the test suite's; the teacher given as it is).")


def config_of(arm: str, teacher: pathlib.Path, seed: int, steps: int, smoke: bool,
              cache: pathlib.Path | None = None):
  if arm == "reference":
    config = load_config_file(CONFIGS / "bpe_student.py", f"fkl,{teacher}")
  else:
    given = f",{cache}" if cache else ""
    config = load_config_file(CONFIGS / "cross_tokenizer.py", f"{arm},{teacher}{given}")
  config.seed = seed
  if steps:
    config.train.update(num_steps=steps, eval_every_steps=steps, checkpoint_every_steps=steps)
  if smoke:  # experiments/lm_pretrained's smoke sizes; tokenizer B 280 tokens against A's 300
    config.dataset.update(max_chars=20000, seq_len=32,
                          vocab_size=300 if arm == "reference" else 280)
    config.model.update(num_layers=1, hidden_size=16, intermediate_size=32, head_dim=4,
                        max_len=32)
  return config


def alignment_cost(config, teacher: pathlib.Path) -> dict:
  """The one-time cost of lining the training windows up with the teacher's tokens, and
  the share of the student's predicted tokens inside aligned spans."""
  data = load_split(config.dataset, "train")
  began = time.perf_counter()
  out = alignment.cross_tokenize(data.inputs, data.labels, tokenizers.load(data.tokenizer),
                                 tokenizers.load(teacher), 1 << 30)
  seconds = time.perf_counter() - began
  counted = data.labels >= 0
  return {"seconds": seconds, "windows": len(data), "student_tokens": int(counted.sum()),
          "teacher_tokens": int((out["teacher_labels"] >= 0).sum()),
          "aligned": float((out["student_span"] >= 0)[counted].mean())}


def main():
  main_with(common.values(_FLAGS))


def main_with(args):
  root, pretrained = pathlib.Path(args.workdir).absolute(), pathlib.Path(args.pretrained)
  teacher = pretrained.absolute() / "teacher_export" / HF_DIR
  if not (teacher / "model.safetensors").is_file():
    raise JaxkdError(f"no teacher at {teacher}: run experiments/lm_pretrained/run.py first "
                     f"(its teacher export is this experiment's teacher), or give "
                     "--pretrained=<its root>.")
  timings = StageTimes(root / "timings.json")
  seeds, rows = list(range(args.seeds)), {}
  cache = root / "cross_top16.npz"  # the teacher's top-16 per teacher token of the corpus
  if not cache.exists():
    timings.run("cache", lambda: cross_cache.write_cache(
        teacher, cache, config_of("uld_hybrid_cached", teacher, 0, 0, args.smoke, cache).dataset,
        top_k=16, dtype="float16", batch_size=64 if not args.smoke else 8))
  for arm in LABELS:
    reused = arm == "reference" and all(
        (pretrained / "fkl" / f"seed={s}" / "metrics.jsonl").is_file() for s in seeds)
    if reused:  # experiments/lm_pretrained's fkl arm: read, not trained again
      workdirs = [pretrained / "fkl" / f"seed={s}" for s in seeds]
      minutes = json.loads((pretrained / "timings.json").read_text()).get("fkl", 0) / 60 if (
          pretrained / "timings.json").is_file() else float("nan")
    else:
      configs = [config_of(arm, teacher, s, args.student_steps, args.smoke, cache)
                 for s in seeds]
      workdirs = [root / arm / f"seed={s}" for s in seeds]
      timings.run(arm, lambda: train_population(configs, workdirs, root / arm / "population"))
      minutes = timings[arm] / 60
    rows[arm] = {split: [last_record(w, split)["bits_per_byte"] for w in workdirs]
                 for split in ("validation", "test")}
    rows[arm].update(minutes=minutes, reused=reused)
  with np.load(cache) as arrays:
    cache_tokens = len(arrays["token_id"])
  cost = alignment_cost(config_of("uld_spans", teacher, 0, 0, args.smoke),
                        teacher / tokenizers.FILE)
  teacher_run = pretrained / "teacher"
  teacher_bpb = ({split: last_record(teacher_run, split)["bits_per_byte"]
                  for split in ("validation", "test")} if teacher_run.is_dir() else None)
  cell = lambda values: plus_minus(*mean_std(values), digits=3)
  table = []
  if teacher_bpb:
    table.append(["teacher (tokenizer A, 4,096 tokens)", f"{teacher_bpb['validation']:.3f}",
                  f"{teacher_bpb['test']:.3f}", "-", "-"])
  table += [[label, cell(rows[arm]["validation"]), cell(rows[arm]["test"]),
             ", ".join(f"{v:.3f}" for v in rows[arm]["validation"]),
             f"{rows[arm]['minutes']:.1f}" + (" (lm_pretrained's run)" if rows[arm]["reused"]
                                              else "")]
            for arm, label in LABELS.items()]
  lines = [markdown_table(["model", "validation bits/byte", "test bits/byte",
                           "validation, per seed", "wall min"], table, align="lrrrr"),
           "", f"Mean ± sample std over seeds {seeds} (each arm's seeds trained as one "
           f"population), at the last step. Alignment of the {cost['windows']:,} training "
           f"windows ({cost['student_tokens']:,} student tokens, {cost['teacher_tokens']:,} "
           f"teacher tokens), once before training: {cost['seconds']:.1f} s; "
           f"{cost['aligned']:.1%} of the student's predicted tokens lie in aligned spans. "
           f"The cached teacher: its top-16 for each of its {cache_tokens:,} tokens of the "
           f"training plays (float16), written once in {timings.get('cache', 0) / 60:.1f} min. "
           f"On {cpu_model()} ({jax.device_count()} device(s), jax {jax.__version__})."]
  body = "\n".join(lines)
  print(body)
  write_text(root / "table.json", json.dumps({"rows": rows, "teacher": teacher_bpb,
                                               "alignment": cost, "timings": dict(timings)},
                                              indent=1))
  if not args.no_readme:
    write_between_markers(HERE / "README.md", body)


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
