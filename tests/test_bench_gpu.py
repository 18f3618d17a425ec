"""experiments/bench_gpu/run.sh end to end on this CPU with small sizes (--small): every
part runs under its limit or says why it did not (no torch here in CI), the results come
part by part, and the table and JSON lines name the device."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_runs_small_on_cpu(tmp_path):
  teacher = tmp_path / "teacher"
  subprocess.run([sys.executable, "-m", "jaxkd", "train", "--config=configs/mnist/teacher_lenet.py",
                  f"--workdir={teacher}", "--config.train.num_steps=2",
                  "--config.train.eval_every_steps=2", "--config.train.log_every_steps=1"],
                 cwd=ROOT, check=True, capture_output=True)
  out = tmp_path / "out"
  env = {**os.environ, "PYTHON": sys.executable, "SITE": str(tmp_path / "site"),
         "TEACHER": str(teacher), "OMP_WAIT_POLICY": "PASSIVE"}
  env.pop("XLA_FLAGS", None)  # one device, as on the GPU machine
  done = subprocess.run(["bash", "experiments/bench_gpu/run.sh", "--small", str(out)], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
  parts = [r["part"] for r in records]
  assert parts == ["resnet_8", "compile_8", "population", "sweep", "lm"]
  by_part = {r["part"]: r for r in records}
  assert all(r["device"].startswith("cpu") for r in records)
  for part in ("population", "sweep"):  # jaxkd alone: they run everywhere
    assert by_part[part]["status"].startswith("ok") and by_part[part]["rows"], by_part[part]
  assert {r["mode"] for r in by_part["population"]["rows"]} == {"online", "population"}
  assert by_part["sweep"]["rows"][0]["cells"] == 2
  assert any(r.get("part") == "on_policy" for r in by_part["lm"]["rows"])
  for part in ("resnet_8", "compile_8"):  # torch's side, where torch is installed
    status = by_part[part]["status"]
    assert status.startswith("ok") or status.startswith("skipped: no torch"), status
  table = (out / "table.md").read_text()
  assert "| population | mlp population, batch" in table and "Device: cpu" in table
