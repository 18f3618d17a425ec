"""A pretrained-model round trip on Shakespeare with a BPE tokenizer: a 5.5M-parameter
Llama-layout teacher trained here, exported as a Hugging Face directory, read back through
the import as the teacher, and distilled into a 0.89M-parameter student (6.2x smaller) by
each arm of configs/shakespeare/bpe_student.py; writes the table into README.md.

  python experiments/lm_pretrained/run.py [--seeds 3] [--workdir runs/lm_pretrained]

Steps (finished ones are reused): train the teacher (configs/shakespeare/bpe_teacher.py);
export it (python -m jaxkd export: teacher_export/hf is the Hugging Face directory); cache
the imported teacher's top-16 log-probabilities over the students' transfer set (float16);
train each arm over the seeds as one population; export the student of the lowest mean
validation bits per byte (its seed of the lowest validation) and write jaxkd's logits
beside its Hugging Face directory for tests/reference/make_hf_fixtures.py --check; score
every run's generated continuations of the test plays (jaxkd.jobs.generation_quality).
Nothing is selected on the test split: runs are read at their last step, the best arm and
seed by validation. Wall times (ROOT/timings.json) are each stage's first run; a later
invocation reuses what is done and keeps them.
"""

import json
import pathlib

import jax
from absl import flags

from jaxkd.cli import common
from jaxkd.config import load_config_file
from jaxkd.files import write_text
from jaxkd.data import load_split
from jaxkd.jobs import generation_quality
from jaxkd.jobs.export import HF_DIR, export, hf_parity_sample
from jaxkd.jobs.stats import mean_std, plus_minus
from jaxkd.jobs.tables import markdown_table, write_between_markers
from jaxkd.jobs.timing import StageTimes, cpu_model
from jaxkd.run.assemble import transfer_set_of
from jaxkd.run.metrics import last_record
from jaxkd.run.population import train_population
from jaxkd.run.saved import load_run
from jaxkd.engine.sharding import make_mesh
from jaxkd.run.soft_labels import write_soft_labels
from jaxkd.run.train import train_and_evaluate

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = HERE.parents[1] / "configs" / "shakespeare"
PROMPT, HORIZON, PROMPTS = 32, 64, 64  # generation quality: prompt and sampled tokens
LABELS = {"alone": "student alone (ce)", "fkl": "forward KL, teacher online",
          "cached_fkl": "forward KL, cached top-16",
          "cached_fkl_ce": "ce + forward KL, cached top-16 (0.5 each)",
          "jsd": "JSD(0.5), teacher online"}


def shrink(config, steps: int, smoke: bool):
  """`steps` steps (0: the config's); smoke: 20,000 characters a split, a 300-token BPE and
  tiny models."""
  if steps:
    config.train.update(num_steps=steps, eval_every_steps=steps, checkpoint_every_steps=steps)
  if smoke:
    config.dataset.update(max_chars=20000, vocab_size=300, seq_len=32)
    config.model.update(num_layers=1, hidden_size=16, intermediate_size=32, head_dim=4,
                        max_len=32)
  return config


def student(arm: str, root: pathlib.Path, seed: int, steps: int, smoke: bool = False):
  config = load_config_file(CONFIGS / "bpe_student.py",
                            f"{arm},{teacher_dir(root)},{root / 'topk16.npz'}")
  config.seed = seed
  return shrink(config, steps, smoke)


def teacher_dir(root: pathlib.Path) -> pathlib.Path:
  """The teacher as the students see it: the Hugging Face directory of its export."""
  return root / "teacher_export" / HF_DIR


_FLAGS = {}


def define_flags():
  _FLAGS["seeds"] = flags.DEFINE_integer("seeds", 3, "Seeds per arm.", lower_bound=1)
  _FLAGS["workdir"] = common.path_flag("workdir", "runs/lm_pretrained", "Root of the runs.")
  _FLAGS["teacher_steps"] = flags.DEFINE_integer("teacher_steps", 0, "0: the config's.",
                                                 lower_bound=0)
  _FLAGS["student_steps"] = flags.DEFINE_integer("student_steps", 0, "0: the config's.",
                                                 lower_bound=0)
  _FLAGS["no_readme"] = flags.DEFINE_boolean("no_readme", False, "Print the table only.")
  _FLAGS["smoke"] = flags.DEFINE_boolean("smoke", False, "Tiny models on 20,000 characters "
                                         "of each split (the test suite's).")


def main():
  main_with(common.values(_FLAGS))


def quality_of(workdirs, teacher, data, smoke: bool) -> list[dict]:
  """Generation quality of each run's continuations of the test plays (64 prompts of 32
  tokens spread over the plays, 64 tokens sampled at temperature 1; smoke: 4 prompts of 4
  and 8)."""
  prompt, horizon, count = (4, 8, 4) if smoke else (PROMPT, HORIZON, PROMPTS)
  return generation_quality.score_runs(workdirs, teacher, data, prompt, horizon, count)


def main_with(args):
  root = pathlib.Path(args.workdir).absolute()
  timings = StageTimes(root / "timings.json", legacy=root / "table.json")
  teacher = shrink(load_config_file(CONFIGS / "bpe_teacher.py"), args.teacher_steps,
                   args.smoke)
  timings.run("teacher", lambda: train_and_evaluate(teacher, root / "teacher"))

  def export_and_cache():
    if not (teacher_dir(root) / "model.safetensors").exists():
      export(root / "teacher", root / "teacher_export", latency_repeats=1, latency_batch_size=2)
    cache = root / "topk16.npz"
    if not cache.exists():  # the imported teacher's, over the students' transfer set
      write_soft_labels(teacher_dir(root), cache, "float16", top_k=16, batch_size=64,
                        data=transfer_set_of(student("cached_fkl", root, 0, 0, args.smoke)))

  timings.run("export + cache", export_and_cache)
  seeds, rows = list(range(args.seeds)), {}
  mesh = make_mesh(jax.devices()[:1])
  imported = load_run(teacher_dir(root), mesh)
  test_data = load_split(student("alone", root, 0, 0, args.smoke).dataset, "test")
  quality = {"teacher": quality_of([teacher_dir(root)], imported, test_data, args.smoke)[0]}
  for arm in LABELS:
    configs = [student(arm, root, s, args.student_steps, args.smoke) for s in seeds]
    workdirs = [root / arm / f"seed={s}" for s in seeds]
    timings.run(arm, lambda: train_population(configs, workdirs, root / arm / "population"))
    rows[arm] = {split: [last_record(w, split)["bits_per_byte"] for w in workdirs]
                 for split in ("validation", "test")}
    rows[arm]["perplexity"] = [last_record(w, "test")["perplexity"] for w in workdirs]
    rows[arm]["generation"] = quality_of(workdirs, imported, test_data, args.smoke)
  best_arm = min(LABELS, key=lambda arm: mean_std(rows[arm]["validation"])[0])
  best_seed = min(seeds, key=lambda s: rows[best_arm]["validation"][s])
  best = root / best_arm / f"seed={best_seed}"
  export(best, root / "best_export", latency_repeats=1, latency_batch_size=2)
  sample = hf_parity_sample(root / "best_export" / HF_DIR)
  teacher_metrics = {split: last_record(root / "teacher", split)["bits_per_byte"]
                     for split in ("validation", "test")}
  params = {"teacher": imported.num_params,
            "student": load_run(best, mesh).num_params}
  cell = lambda values: plus_minus(*mean_std(values), digits=3)
  table = [[f"teacher ({params['teacher']:,} parameters), read back from its export",
            f"{teacher_metrics['validation']:.3f}", f"{teacher_metrics['test']:.3f}", "-", "-",
            f"{timings['teacher'] / 60:.1f}"]]
  table += [[label, cell(rows[arm]["validation"]), cell(rows[arm]["test"]),
             cell(rows[arm]["perplexity"]), ", ".join(f"{v:.3f}" for v in rows[arm]["validation"]),
             f"{timings[arm] / 60:.1f}"] for arm, label in LABELS.items()]
  lines = [markdown_table(["model", "validation bits/byte", "test bits/byte",
                           "test perplexity/token", "validation, per seed",
                           "wall min"], table, align="lrrrrr")]
  generation = {"teacher": [quality["teacher"]],
                **{label: rows[arm]["generation"] for arm, label in LABELS.items()}}
  prompt, horizon, count = (4, 8, 4) if args.smoke else (PROMPT, HORIZON, PROMPTS)
  lines += ["", f"Generation on the test plays: {count} prompts of {prompt} tokens, {horizon} "
            "tokens sampled at temperature 1 with the key/value cache (seed 0), scored as "
            "MiniLLM, GKD and DistiLLM report (jaxkd.jobs.generation_quality): ROUGE-L F1 "
            "against the reference continuation, the teacher's NLL of the sampled tokens "
            "(nats per token; lower: more teacher-like), distinct-2. Mean ± std over the seeds.",
            "", generation_quality.table(generation)]
  total = sum(timings.values())
  lines += ["", f"Students: {params['student']:,} parameters "
            f"({params['teacher'] / params['student']:.1f}x smaller), mean ± sample std over "
            f"seeds {seeds} (each arm's seeds trained as one population), at the last step. "
            f"Best by validation: {LABELS[best_arm]}, seed {best_seed}, exported to "
            f"best_export/{HF_DIR}. Export and cache: {timings['export + cache'] / 60:.1f} min; "
            f"all {total / 60:.1f} min on {cpu_model()} ({jax.device_count()} device(s), "
            f"jax {jax.__version__})."]
  body = "\n".join(lines)
  print(body)
  write_text(root / "table.json", json.dumps(
      {"rows": rows, "teacher": teacher_metrics, "params": params, "timings": dict(timings),
       "teacher_generation": quality,
       "best": {"arm": best_arm, "seed": best_seed, "parity_sample": str(sample)}}, indent=1))
  if not args.no_readme:
    write_between_markers(HERE / "README.md", body)


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
