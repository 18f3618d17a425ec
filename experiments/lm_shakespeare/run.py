"""Character-level Shakespeare: a 1.8M-parameter Transformer teacher distilled into a
160k-parameter student (11x smaller) by each divergence; writes the table into README.md.

  python experiments/lm_shakespeare/run.py [--seeds 3] [--workdir runs/lm_shakespeare]

Steps (finished ones are reused): train the teacher (configs/shakespeare/teacher.py);
cache its top-16 log-probabilities over the students' transfer set (float16); train each
arm of configs/shakespeare/student.py over the seeds as one population (one compiled step
for the seeds); time the distillation step with the teacher online and from the cache.
Validation picks nothing here: every run is read at its last step; the test split is
reported beside the validation split.
"""

import argparse
import json
import pathlib
import time

import jax
from jaxkd.assemble import assemble, transfer_set_of
from jaxkd.config_base import load_config_file
from jaxkd.metric_writer import read_metrics
from jaxkd.population import train_population
from jaxkd.report import write_between_markers
from jaxkd.runs import load_run
from jaxkd.sharding import make_mesh, shard_batch
from jaxkd.soft_labels import write_soft_labels
from jaxkd.stats import mean_std, plus_minus
from jaxkd.step import make_train_step
from jaxkd.train import train_and_evaluate

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = HERE.parents[1] / "configs" / "shakespeare"
LABELS = {"alone": "student alone (ce)", "fkl": "forward KL", "rkl": "reverse KL",
          "jsd": "JSD(0.5)", "cached_fkl": "forward KL, cached top-16",
          "on_policy": "on-policy JSD(0.5), lambda 0.5"}


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


def last(workdir: pathlib.Path, split: str) -> dict:
  return [r for r in read_metrics(workdir) if r["split"] == split][-1]


def tokens_per_second(config, workdir: pathlib.Path, steps: int = 20) -> float:
  """Tokens/s of one student's compiled distillation step (after a warm-up step)."""
  run = assemble(config, workdir)
  step = make_train_step(run.spec, run.mesh, jax.tree.map(lambda x: x.sharding,
                                                          run.teacher_variables))
  batches = [shard_batch(run.batches.batch(s), run.mesh) for s in range(steps + 1)]
  state, _ = step(run.state, run.teacher_variables, batches[0])
  jax.block_until_ready(state)
  start = time.perf_counter()
  for batch in batches[1:]:
    state, metrics = step(state, run.teacher_variables, batch)
  jax.block_until_ready(metrics)
  return steps * batches[0]["tokens"].size / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/lm_shakespeare"))
  parser.add_argument("--teacher_steps", type=int, default=0, help="0: the config's")
  parser.add_argument("--student_steps", type=int, default=0, help="0: the config's")
  parser.add_argument("--no_readme", action="store_true", help="Print the table only.")
  parser.add_argument("--smoke", action="store_true",
                      help="Tiny models on 20,000 characters of each split (the test suite's).")
  main_with(parser.parse_args())


def main_with(args):
  root, start = args.workdir.absolute(), time.perf_counter()
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
  for arm in LABELS:
    began = time.perf_counter()
    configs = [student(arm, root, s, args.student_steps, args.smoke) for s in seeds]
    workdirs = [root / arm / f"seed={s}" for s in seeds]
    train_population(configs, workdirs, root / arm / "population")
    rows[arm] = {split: [last(w, split)["bits_per_token"] for w in workdirs]
                 for split in ("validation", "test")}
    timings[arm] = time.perf_counter() - began
  speed = {name: tokens_per_second(student(arm, root, 0, args.student_steps, args.smoke),
                                   root / "speed" / name)
           for name, arm in (("online", "fkl"), ("cached", "cached_fkl"))}
  teacher_metrics = {split: last(root / "teacher", split)["bits_per_token"]
                     for split in ("validation", "test")}
  params = {name: load_run(root / path, make_mesh()).num_params
            for name, path in (("teacher", "teacher"), ("student", "alone/seed=0"))}
  cell = lambda values: plus_minus(*mean_std(values), digits=3)
  lines = [f"| model | validation bits/char | test bits/char | validation, per seed |",
           "| --- | --- | --- | --- |",
           f"| teacher ({params['teacher']:,} parameters) | {teacher_metrics['validation']:.3f} "
           f"| {teacher_metrics['test']:.3f} | - |"]
  for arm, label in LABELS.items():
    lines.append(f"| {label} | {cell(rows[arm]['validation'])} | {cell(rows[arm]['test'])} | "
                 + ", ".join(f"{v:.3f}" for v in rows[arm]["validation"]) + " |")
  total = time.perf_counter() - start
  lines += ["", f"Students: {params['student']:,} parameters, mean ± sample std over seeds "
            f"{seeds} (each arm's seeds trained as one population). Distillation step of one "
            f"student: {speed['online']:,.0f} tokens/s with the teacher online, "
            f"{speed['cached']:,.0f} tokens/s from the cache. Wall time: "
            + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
            + f"; all {total / 60:.1f} min ({jax.devices()[0].device_kind}, "
            f"{jax.device_count()} device(s))."]
  body = "\n".join(lines)
  print(body)
  (root / "table.json").write_text(json.dumps({"rows": rows, "teacher": teacher_metrics,
                                               "speed": speed, "timings": timings}, indent=1))
  if not args.no_readme:
    write_between_markers(HERE / "README.md", body)


if __name__ == "__main__":
  main()
