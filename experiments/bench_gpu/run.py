"""jaxkd's speed where users train, in the few minutes a GPU is lent: each part a command of
its own under its own time limit, all within --budget seconds, results written as they come
(OUT/results.jsonl), then one markdown table (OUT/table.md) and the JSON lines, naming the
device. run.sh beside it sets up a bare machine (the wheels in wheels/, MNIST and its
teacher from data/) and calls this.

  python experiments/bench_gpu/run.py --out=DIR [--budget=480] [--small]

Parts, in order (each skipped with the reason where what it needs is missing):
  resnet_64, resnet_256   resnet32x4 -> resnet8x4 at batch 64 and 256, student-only and online:
                          jaxkd in float32 and bfloat16, torchdistill's boxes, plain PyTorch in
                          float32 and with autocast to bfloat16 + channels_last
                          (experiments/bench_peers/run.py)
  compile_64, compile_256 the same pair with torch.compile against jaxkd float32
  population              4 students (kd at T = 1, 2, 4, 8) in one step against 4 online steps
                          (python -m jaxkd bench --modes=online,population)
  sweep                   the MNIST 12-cell temperature sweep as populations against one cell at
                          a time (experiments/mnist_temperature/populations.py)
  lm                      on-policy generation against the off-policy step, and the LM
                          distillation step against transformers + TRL
                          (experiments/bench_lm/run.py)
The table's 'vs' column: a variant's speed against the best PyTorch variant (bench_peers
parts), the population against 4 online steps, the sweep as populations against one cell
at a time, jaxkd's LM step against PyTorch + TRL's, on-policy against off-policy time.
--small: the MLP pair, tiny sizes and steps (the CPU test of this script).
"""

import json
import os
import pathlib
import subprocess
import sys
import time

from absl import flags

from jaxkd.cli import common

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAIR = "resnet32x4-resnet8x4"
CORE = "jaxkd,jaxkd_bf16,torchdistill,torch_eager,torch_bf16"


def parts(out: pathlib.Path, small: bool, teacher: str) -> list[tuple[str, list[str], int]]:
  """(name, command, seconds at most) of each part."""
  python = sys.executable
  pair = "mlp" if small else PAIR
  peers = [python, "experiments/bench_peers/run.py", f"--pair={pair}"]
  steps = ["--steps=2", "--warmup=1", "--rounds=1"] if small else [
      "--steps=20", "--warmup=2", "--rounds=2"]
  found = []
  for batch in ((8,) if small else (64, 256)):
    found.append((f"resnet_{batch}", [*peers, f"--batch_size={batch}", f"--variants={CORE}",
                                      *steps, f"--json={out}/resnet_{batch}.jsonl"], 75))
    found.append((f"compile_{batch}", [*peers, f"--batch_size={batch}",
                                       "--variants=jaxkd,torch_compile", *steps,
                                       f"--json={out}/compile_{batch}.jsonl"], 75))
  found.append(("population", [python, "-m", "jaxkd", "bench", f"--pair={pair}",
                               "--modes=online,population", *steps,
                               f"--json={out}/population.jsonl"], 45))
  sweep = ["--steps=2", "--temperatures=1,2", "--seeds=1"] if small else ["--epochs=1"]
  found.append(("sweep", [python, "experiments/mnist_temperature/populations.py",
                          f"--workdir={out}/sweep_runs", *sweep, f"--teacher={teacher}",
                          "--no_readme", f"--json={out}/sweep.jsonl"], 150))
  lm = ["--small"] if small else []
  found.append(("lm", [python, "experiments/bench_lm/run.py", "--part=on_policy", "--part=peers",
                       f"--python={python}", "--no_readme", *lm], 60))
  return found


def json_lines(text: str) -> list[dict]:
  rows = []
  for line in text.splitlines():
    line = line.strip()
    if line.startswith("{"):
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def run_part(name: str, command: list[str], limit: float, log) -> tuple[str, list[dict]]:
  """(status, the JSON lines the command printed) of one part run for at most `limit` s."""
  began = time.perf_counter()
  try:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    output, status = done.stdout, "ok" if done.returncode == 0 else f"failed ({done.returncode})"
    if done.returncode:
      needs = "torch" if "torch and torchdistill are needed" in done.stderr + done.stdout else ""
      status = "skipped: no torch/torchdistill here" if needs else status
      log.write(f"--- {name} stderr ---\n{done.stderr[-4000:]}\n")
  except subprocess.TimeoutExpired as timeout:
    output = timeout.stdout.decode() if isinstance(timeout.stdout, bytes) else (timeout.stdout or "")
    status = f"stopped at its {limit:.0f} s limit"
  rows = json_lines(output)
  return f"{status} in {time.perf_counter() - began:.0f} s", rows


def table(results: list[dict]) -> str:
  """One markdown table over every part's rows."""
  lines = ["| part | setting | variant | ms/step or s | vs |", "| --- | --- | --- | ---: | ---: |"]
  for result in results:
    for row in result["rows"]:
      if "ms_per_step" in row and isinstance(row["ms_per_step"], dict):  # bench_peers
        best = min(v for k, v in row["ms_per_step"].items() if not k.startswith("jaxkd"))
        for variant, ms in row["ms_per_step"].items():
          lines.append(f"| {result['part']} | {row['pair']} {row['mode']}, batch "
                       f"{row['batch_size']} | {variant} | {ms:.2f} | {best / ms:.2f}x |")
      elif "ms_per_step" in row:  # python -m jaxkd bench: the population against 4 steps
        online = [r["ms_per_step"] for r in result["rows"] if r.get("mode") == "online"]
        vs = (f"{4 * online[0] / row['ms_per_step']:.2f}x" if row["mode"] == "population"
              and online else "-")
        lines.append(f"| {result['part']} | {row['pair']} {row['mode']}, batch "
                     f"{row['batch_size']} | jaxkd | {row['ms_per_step']:.2f} | {vs} |")
      elif row.get("part") == "sweep":
        lines.append(f"| sweep | {row['cells']} cells (T x seeds) | populations / one by one | "
                     f"{row['populations_s']:.1f} / {row['one_by_one_s']:.1f} | "
                     f"{row['ratio']:.2f}x |")
      elif row.get("part") == "peers":
        for name in ("torch_ms", "jaxkd_online_ms", "jaxkd_cached_ms"):
          lines.append(f"| lm | JSD(0.5) step, {row['tokens_per_step']} tokens | "
                       f"{name.removesuffix('_ms')} | {row[name]:.2f} | "
                       f"{row['torch_ms'] / row[name]:.2f}x |")
      elif row.get("part") == "on_policy":
        lines.append(f"| lm | on-policy / off-policy, {row['generated_tokens']} tokens | jaxkd | "
                     f"{row['on_policy']:.2f} / {row['off_policy']:.2f} | "
                     f"{row['ratio']:.2f}x |")
  return "\n".join(lines)


def main(out: str, budget: float, small: bool, teacher: str) -> list[dict]:
  import jax

  out = pathlib.Path(out).absolute()
  out.mkdir(parents=True, exist_ok=True)
  device = f"{jax.devices()[0].device_kind} ({jax.devices()[0].platform}), jax {jax.__version__}"
  print(f"device: {device}", flush=True)
  started, results = time.perf_counter(), []
  with open(out / "results.jsonl", "a") as sink, open(out / "log.txt", "a") as log:
    for name, command, limit in parts(out, small, teacher):
      left = budget - (time.perf_counter() - started)
      if left < 10:
        results.append({"part": name, "status": "not run: the budget is spent", "rows": []})
        continue
      status, rows = run_part(name, command, min(limit, left), log)
      results.append({"part": name, "status": status, "rows": rows})
      record = {"part": name, "status": status, "device": device, "rows": rows}
      sink.write(json.dumps(record) + "\n")
      sink.flush()
      print(f"{name}: {status}", flush=True)
  body = table(results) + "\n\n" + "\n".join(f"- {r['part']}: {r['status']}" for r in results)
  body += f"\n\nDevice: {device}; {time.perf_counter() - started:.0f} s in all."
  (out / "table.md").write_text(body + "\n")
  print(body)
  for result in results:
    print(json.dumps({"part": result["part"], "status": result["status"], "device": device,
                      "rows": result["rows"]}))
  return results


_FLAGS = {}


def define_flags():
  _FLAGS["out"] = common.path_flag("out", None, "Where the results go.")
  _FLAGS["budget"] = flags.DEFINE_float("budget", 480, "Seconds for every part together.",
                                        lower_bound=10)
  _FLAGS["small"] = flags.DEFINE_boolean("small", False, "Tiny sizes (the CPU test).")
  _FLAGS["teacher"] = flags.DEFINE_string("teacher", "runs/mnist_pipeline/teacher",
                                          "The MNIST teacher of the sweep.")
  flags.mark_flags_as_required(["out"])


if __name__ == "__main__":
  common.run(lambda: main(**vars(common.values(_FLAGS))), define_flags=define_flags)
