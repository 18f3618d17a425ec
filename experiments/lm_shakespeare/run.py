"""Character-level Shakespeare: a 1.8M-parameter Transformer teacher distilled into a
160k-parameter student (11x smaller) by each divergence; writes the table into README.md.

  python experiments/lm_shakespeare/run.py [--seeds 3] [--workdir runs/lm_shakespeare]

Steps (finished ones are reused): train the teacher (configs/shakespeare/teacher.py);
cache its top-16 log-probabilities over the students' transfer set (float16); train each
arm of configs/shakespeare/student.py over the seeds as one population (one compiled step
for the seeds); time the distillation step with the teacher online and from the cache;
score every run's generated continuations of the test plays (64 prompts of 16 characters
spread over the plays, 48 characters sampled at temperature 1 with the key/value cache;
jaxkd.jobs.generation_quality). Validation picks nothing here: every run is read at its
last step; the test split is reported beside the validation split.
"""

import json
import pathlib
import time

import jax
from absl import flags

from jaxkd.cli import common
from jaxkd.data import load_split
from jaxkd.files import write_text
from jaxkd.jobs import generation_quality
from jaxkd.run.assemble import assemble, transfer_set_of
from jaxkd.config import load_config_file
from jaxkd.run.metrics import last_record
from jaxkd.run.population import train_population
from jaxkd.jobs.tables import markdown_table, write_between_markers
from jaxkd.run.saved import load_run
from jaxkd.engine.sharding import make_mesh, shard_batch
from jaxkd.run.soft_labels import write_soft_labels
from jaxkd.jobs.stats import mean_std, plus_minus
from jaxkd.jobs.timing import cpu_model, median_ms
from jaxkd.engine.step import make_train_step
from jaxkd.run.train import train_and_evaluate

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = HERE.parents[1] / "configs" / "shakespeare"
LABELS = {"alone": "student alone (ce)", "fkl": "forward KL", "rkl": "reverse KL",
          "jsd": "JSD(0.5)", "cached_fkl": "forward KL, cached top-16",
          "on_policy": "on-policy JSD(0.5), lambda 0.5"}
PROMPT, HORIZON, PROMPTS = 16, 48, 64  # generation quality: prompt and sampled characters


def shrink(config, steps: int, smoke: bool):
  """`steps` steps (0: the config's); smoke: a 20,000-character corpus and a tiny model."""
  if steps:
    config.train.update(num_steps=steps, eval_every_steps=steps, checkpoint_every_steps=steps)
  if smoke:
    config.dataset.max_chars = 20000
    config.model.update(num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32)
  return config


def student(arm: str, root: pathlib.Path, seed: int, steps: int, smoke: bool = False):
  config = load_config_file(CONFIGS / "student.py", f"{arm},{root / 'teacher'},{root / 'topk16.npz'}")
  config.seed = seed
  return shrink(config, steps, smoke)


def tokens_per_second(config, steps: int = 20) -> float:
  """Tokens/s of one student's compiled distillation step (median step, after a warm-up)."""
  run = assemble(config, None)
  step = make_train_step(run.spec, run.mesh, jax.tree.map(lambda x: x.sharding,
                                                          run.teacher_variables))
  batches = [shard_batch(run.batches.batch(s), run.mesh) for s in range(steps + 1)]
  state, calls = [run.state], iter(range(len(batches)))

  def one_step():
    state[0], metrics = step(state[0], run.teacher_variables, batches[next(calls)])
    return metrics

  return batches[0]["tokens"].size / (median_ms(one_step, steps, warmup=1) / 1000)


_FLAGS = {}


def define_flags():
  _FLAGS["seeds"] = flags.DEFINE_integer("seeds", 3, "Seeds per arm.", lower_bound=1)
  _FLAGS["workdir"] = common.path_flag("workdir", "runs/lm_shakespeare", "Root of the runs.")
  _FLAGS["teacher_steps"] = flags.DEFINE_integer("teacher_steps", 0, "0: the config's.",
                                                 lower_bound=0)
  _FLAGS["student_steps"] = flags.DEFINE_integer("student_steps", 0, "0: the config's.",
                                                 lower_bound=0)
  _FLAGS["no_readme"] = flags.DEFINE_boolean("no_readme", False, "Print the table only.")
  _FLAGS["smoke"] = flags.DEFINE_boolean(
      "smoke", False, "Tiny models on 20,000 characters of each split (the test suite's).")

def main():
  main_with(common.values(_FLAGS))


def main_with(args):
  root, start = pathlib.Path(args.workdir).absolute(), time.perf_counter()
  teacher = shrink(load_config_file(CONFIGS / "teacher.py"), args.teacher_steps, args.smoke)
  train_and_evaluate(teacher, root / "teacher")
  timings = {"teacher": time.perf_counter() - start}
  cache = root / "topk16.npz"
  if not cache.exists():
    write_soft_labels(root / "teacher", cache, "float16", top_k=16,
                      data=transfer_set_of(student("cached_fkl", root, 0, 0, args.smoke)))
  timings["cache"] = time.perf_counter() - start - timings["teacher"]
  seeds = list(range(args.seeds))
  rows = {}
  prompt, horizon, count = (4, 8, 4) if args.smoke else (PROMPT, HORIZON, PROMPTS)
  test_data = load_split(student("alone", root, 0, 0, args.smoke).dataset, "test")
  teacher_run = load_run(root / "teacher", make_mesh(jax.devices()[:1]))
  quality = lambda workdirs: generation_quality.score_runs(workdirs, teacher_run, test_data,
                                                          prompt, horizon, count)
  generation = {"teacher": quality([root / "teacher"])}
  for arm in LABELS:
    began = time.perf_counter()
    configs = [student(arm, root, s, args.student_steps, args.smoke) for s in seeds]
    workdirs = [root / arm / f"seed={s}" for s in seeds]
    train_population(configs, workdirs, root / arm / "population")
    rows[arm] = {split: [last_record(w, split)["bits_per_token"] for w in workdirs]
                 for split in ("validation", "test")}
    timings[arm] = time.perf_counter() - began
    rows[arm]["generation"] = quality(workdirs)
    generation[LABELS[arm]] = rows[arm]["generation"]
  speed = {name: tokens_per_second(student(arm, root, 0, args.student_steps, args.smoke))
           for name, arm in (("online", "fkl"), ("cached", "cached_fkl"))}
  teacher_metrics = {split: last_record(root / "teacher", split)["bits_per_token"]
                     for split in ("validation", "test")}
  params = {name: load_run(root / path, make_mesh()).num_params
            for name, path in (("teacher", "teacher"), ("student", "alone/seed=0"))}
  cell = lambda values: plus_minus(*mean_std(values), digits=3)
  table = [[f"teacher ({params['teacher']:,} parameters)", f"{teacher_metrics['validation']:.3f}",
            f"{teacher_metrics['test']:.3f}", "-"]]
  table += [[label, cell(rows[arm]["validation"]), cell(rows[arm]["test"]),
             ", ".join(f"{v:.3f}" for v in rows[arm]["validation"])] for arm, label in LABELS.items()]
  lines = [markdown_table(["model", "validation bits/char", "test bits/char",
                           "validation, per seed"], table)]
  lines += ["", f"Generation on the test plays: {count} prompts of {prompt} characters spread "
            f"over the plays, {horizon} characters sampled at temperature 1 with the key/value "
            "cache (seed 0), scored as MiniLLM, GKD and DistiLLM report "
            "(jaxkd.jobs.generation_quality): ROUGE-L F1 against the reference continuation, "
            "the teacher's NLL of the sampled characters (nats per character; lower: more "
            "teacher-like), distinct-2. Mean ± std over the seeds.", "",
            generation_quality.table(generation)]
  total = time.perf_counter() - start
  lines += ["", f"Students: {params['student']:,} parameters, mean ± sample std over seeds "
            f"{seeds} (each arm's seeds trained as one population). Distillation step of one "
            f"student: {speed['online']:,.0f} tokens/s with the teacher online, "
            f"{speed['cached']:,.0f} tokens/s from the cache. Wall time: "
            + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
            + f"; all {total / 60:.1f} min (generation scoring included) on {cpu_model()} "
            f"({jax.device_count()} device(s), jax {jax.__version__})."]
  body = "\n".join(lines)
  print(body)
  write_text(root / "table.json", json.dumps({"rows": rows, "teacher": teacher_metrics,
                                               "teacher_generation": generation["teacher"],
                                               "speed": speed, "timings": timings}, indent=1))
  if not args.no_readme:
    write_between_markers(HERE / "README.md", body)


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
