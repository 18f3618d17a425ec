"""The pipeline's report: teacher vs baseline student vs distilled student.

Writes report.json (machine-readable), report.md (the table) and accuracy.png
(test accuracy over training) into the pipeline's workdir.
"""

import json
import pathlib
import statistics
import time

import jax
import numpy as np
from jax.sharding import Mesh

from jaxkd.data import ArrayDataset
from jaxkd.metric_writer import read_metrics
from jaxkd.runs import Run, make_predict, predict_logits
from jaxkd.sharding import make_mesh

ROLES = ("teacher", "baseline", "distilled")


def measure_latency_ms(run: Run, data: ArrayDataset, batch_size: int, repeats: int) -> float:
  """Median wall time of one inference batch on one device (compiled, inputs on device)."""
  mesh = make_mesh(jax.devices()[:1])
  predict = make_predict(run.model, run.preprocess(), mesh)
  variables = jax.device_put(run.variables, jax.devices()[0])
  images = jax.device_put(data.images[:batch_size], jax.devices()[0])
  for _ in range(3):  # Compile and warm up.
    jax.block_until_ready(predict(variables, images))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(predict(variables, images))
    times.append(time.perf_counter() - start)
  return 1000.0 * statistics.median(times)


def compare(runs: dict[str, Run], test_data: ArrayDataset, mesh: Mesh, batch_size: int,
            latency_batch_size: int, latency_repeats: int) -> dict:
  """The numbers of report.json for each role."""
  logits = {role: predict_logits(run, test_data, batch_size, mesh) for role, run in runs.items()}
  teacher_log_probs = np.asarray(jax.nn.log_softmax(logits["teacher"]))
  teacher_labels = logits["teacher"].argmax(-1)
  report = {}
  for role, run in runs.items():
    predictions = logits[role].argmax(-1)
    correct = int((predictions == test_data.labels).sum())
    entry = {"workdir": str(run.workdir), "model": run.config.model.to_dict(),
             "test_accuracy": correct / len(test_data), "test_errors": len(test_data) - correct,
             "params": run.num_params, "bytes": run.num_bytes,
             "latency_ms": measure_latency_ms(run, test_data, latency_batch_size, latency_repeats)}
    if role != "teacher":
      log_probs = np.asarray(jax.nn.log_softmax(logits[role]))
      entry["agreement_with_teacher"] = float((predictions == teacher_labels).mean())
      entry["kl_from_teacher"] = float(np.mean(np.sum(
          np.exp(teacher_log_probs) * (teacher_log_probs - log_probs), -1)))
    report[role] = entry
  for role in ROLES:
    report[role]["compression"] = report["teacher"]["params"] / report[role]["params"]
    report[role]["speedup"] = report["teacher"]["latency_ms"] / report[role]["latency_ms"]
  report["latency_batch_size"] = latency_batch_size
  report["device"] = str(jax.devices()[0].device_kind)
  return report


def render_markdown(report: dict) -> str:
  rows = ["| model | test accuracy | errors | params | size | latency / batch | compression | speed-up | agreement with teacher | KL(teacher ‖ model) |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for role in ROLES:
    r = report[role]
    agreement = f"{100 * r['agreement_with_teacher']:.2f}%" if "agreement_with_teacher" in r else "-"
    kl = f"{r['kl_from_teacher']:.4f}" if "kl_from_teacher" in r else "-"
    rows.append(f"| {role} ({r['model']['name']}) | {100 * r['test_accuracy']:.2f}% | {r['test_errors']} | "
                f"{r['params']:,} | {r['bytes'] / 2**20:.2f} MiB | {r['latency_ms']:.3f} ms | "
                f"{r['compression']:.2f}x | {r['speedup']:.2f}x | {agreement} | {kl} |")
  gain = report["distilled"]["test_accuracy"] - report["baseline"]["test_accuracy"]
  fewer = report["baseline"]["test_errors"] - report["distilled"]["test_errors"]
  verdict = (f"Distillation {'improves' if gain > 0 else 'does not improve'} the student: "
             f"{100 * gain:+.2f} points of test accuracy ({abs(fewer)} "
             f"{'fewer' if fewer >= 0 else 'more'} test errors) than the same student trained "
             "without a teacher.")
  kept = report["distilled"]["test_accuracy"] / report["teacher"]["test_accuracy"]
  return "\n".join([
      "# Distillation report", "",
      verdict,
      f"The distilled student keeps {100 * kept:.2f}% of the teacher's accuracy at "
      f"1/{report['distilled']['compression']:.1f} of its parameters.", "",
      *rows, "",
      f"Latency: median time of one batch of {report['latency_batch_size']} test images, "
      f"compiled, on one {report['device']} device. Accuracy over all test images.",
      "Training curves: accuracy.png.", ""])


def plot_accuracy(workdirs: dict[str, pathlib.Path], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for role, workdir in workdirs.items():
    records = read_metrics(workdir)
    train_records = [r for r in records if r["split"] == "train" and "epoch" in r]
    steps_per_epoch = train_records[-1]["step"] / train_records[-1]["epoch"] if train_records else 1
    tests = [r for r in records if r["split"] == "test"]
    ax.plot([r["step"] / steps_per_epoch for r in tests], [100 * r["accuracy"] for r in tests],
            marker="o", label=role)
  ax.set_xlabel("epoch")
  ax.set_ylabel("test accuracy (%)")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def write_report(workdir: pathlib.Path, runs: dict[str, Run], test_data: ArrayDataset, mesh: Mesh,
                 batch_size: int, latency_batch_size: int, latency_repeats: int) -> str:
  report = compare(runs, test_data, mesh, batch_size, latency_batch_size, latency_repeats)
  markdown = render_markdown(report)
  if jax.process_index() == 0:
    (workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (workdir / "report.md").write_text(markdown)
    plot_accuracy({role: run.workdir for role, run in runs.items()}, workdir / "accuracy.png")
  return markdown
