"""The pipeline's report: teacher vs baseline student vs distilled student.

Writes report.json (machine-readable), report.md (the table) and accuracy.png
(test accuracy over training) into the pipeline's workdir. The students are
compared over several seeds: means, spreads, and the gain's Welch interval.
"""

import json
import pathlib

import jax
import numpy as np
from jax.sharding import Mesh

from jaxkd.data import ArrayDataset
from jaxkd.files import write_text
from jaxkd.jobs.stats import mean_std, plus_minus, welch_interval
from jaxkd.jobs.tables import figure, markdown_table
from jaxkd.jobs.timing import model_latency_ms
from jaxkd.run.metrics import read_metrics
from jaxkd.run.saved import SavedRun, predict_logits

ROLES = ("teacher", "baseline", "distilled")


def _student_entry(runs: list[SavedRun], seeds: list[int], logits: list[np.ndarray],
                   test_data: ArrayDataset, teacher_logits: np.ndarray) -> dict:
  """One student arm over its seeds: the means (under today's keys), spreads, per seed."""
  teacher_log_probs = np.asarray(jax.nn.log_softmax(teacher_logits))
  per_seed = []
  for seed, run, arm_logits in zip(seeds, runs, logits):
    predictions = arm_logits.argmax(-1)
    correct = int((predictions == test_data.labels).sum())
    log_probs = np.asarray(jax.nn.log_softmax(arm_logits))
    per_seed.append({
        "seed": seed, "workdir": str(run.workdir), "test_accuracy": correct / len(test_data),
        "test_errors": len(test_data) - correct,
        "agreement_with_teacher": float((predictions == teacher_logits.argmax(-1)).mean()),
        "kl_from_teacher": float(np.mean(np.sum(
            np.exp(teacher_log_probs) * (teacher_log_probs - log_probs), -1)))})
  entry = {"workdir": str(runs[0].workdir.parent), "model": runs[0].config.model.to_dict(),
           "seeds": list(seeds), "per_seed": per_seed}
  for key in ("test_accuracy", "test_errors", "agreement_with_teacher", "kl_from_teacher"):
    entry[key], entry[f"{key}_std"] = mean_std([r[key] for r in per_seed])
  return entry


def compare(teacher: SavedRun, students: dict[str, list[SavedRun]], seeds: list[int],
            test_data: ArrayDataset, mesh: Mesh, batch_size: int, latency_batch_size: int,
            latency_repeats: int) -> dict:
  """The numbers of report.json: the teacher; each student arm ('baseline', 'distilled')
  over its seeds (final models: no checkpoint is chosen, so nothing is chosen on the
  test set); the gain in test errors with its 95% interval."""
  teacher_logits = predict_logits(teacher, test_data, batch_size, mesh)
  correct = int((teacher_logits.argmax(-1) == test_data.labels).sum())
  report = {"teacher": {"workdir": str(teacher.workdir), "model": teacher.config.model.to_dict(),
                        "test_accuracy": correct / len(test_data),
                        "test_errors": len(test_data) - correct}}
  for role, runs in students.items():
    logits = [predict_logits(run, test_data, batch_size, mesh) for run in runs]
    report[role] = _student_entry(runs, seeds, logits, test_data, teacher_logits)
  for role, run in (("teacher", teacher), *((r, runs[0]) for r, runs in students.items())):
    report[role].update(params=run.num_params, bytes=run.num_bytes, latency_ms=model_latency_ms(
        run, test_data.inputs[:latency_batch_size], latency_repeats))
  for role in ROLES:
    report[role]["compression"] = report["teacher"]["params"] / report[role]["params"]
    report[role]["speedup"] = report["teacher"]["latency_ms"] / report[role]["latency_ms"]
  interval = welch_interval([r["test_errors"] for r in report["baseline"]["per_seed"]],
                            [r["test_errors"] for r in report["distilled"]["per_seed"]])
  report["gain"] = {"errors_mean": interval["difference"], "ci95_low": interval["low"],
                    "ci95_high": interval["high"], "df": interval["df"], "seeds": len(seeds),
                    "test": "Welch's t, 95%: baseline errors minus distilled errors"}
  report["latency_batch_size"] = latency_batch_size
  report["device"] = str(jax.devices()[0].device_kind)
  return report


def verdict(gain: dict) -> str:
  """The headline: a gain only where its interval supports one."""
  mean, low, high, n = gain["errors_mean"], gain["ci95_low"], gain["ci95_high"], gain["seeds"]
  amount = f"{abs(mean):.1f} {'fewer' if mean >= 0 else 'more'} test errors on average over {n} seed(s)"
  if low is None:
    return (f"Distillation gave {amount}; with one seed per arm there is no interval, so "
            "this cannot be told from seed noise (set student.seeds >= 2).")
  interval = f"95% interval of the gain [{low:.1f}, {high:.1f}] errors, Welch's t"
  if low > 0:
    return f"Distillation improves the student: {amount} ({interval}), beyond seed noise."
  if high < 0:
    return f"Distillation makes the student worse: {amount} ({interval}), beyond seed noise."
  return (f"Distillation gave {amount}, but the {interval} includes 0: the difference is "
          "within seed noise, and no gain is claimed.")


def _pm(entry: dict, key: str, scale: float = 1.0, digits: int = 1) -> str:
  return plus_minus(entry[key], entry.get(f"{key}_std"), scale, digits)


def render_markdown(report: dict) -> str:
  header = ["model", "test accuracy (%)", "errors", "params", "size", "latency / batch",
            "compression", "speed-up", "agreement with teacher (%)", "KL(teacher ‖ model)"]
  rows = []
  for role in ROLES:
    r = report[role]
    agreement = _pm(r, "agreement_with_teacher", 100, 2) if "agreement_with_teacher" in r else "-"
    kl = _pm(r, "kl_from_teacher", 1, 4) if "kl_from_teacher" in r else "-"
    rows.append([f"{role} ({r['model']['name']})", _pm(r, 'test_accuracy', 100, 2),
                 _pm(r, 'test_errors'), f"{r['params']:,}", f"{r['bytes'] / 2**20:.2f} MiB",
                 f"{r['latency_ms']:.3f} ms", f"{r['compression']:.2f}x", f"{r['speedup']:.2f}x",
                 agreement, kl])
  seeds = report["baseline"]["seeds"]
  per_seed = [[base["seed"], base["test_errors"], dist["test_errors"],
               base["test_errors"] - dist["test_errors"]]
              for base, dist in zip(report["baseline"]["per_seed"], report["distilled"]["per_seed"])]
  kept = report["distilled"]["test_accuracy"] / report["teacher"]["test_accuracy"]
  return "\n".join([
      "# Distillation report", "",
      verdict(report["gain"]),
      f"The distilled student keeps {100 * kept:.2f}% of the teacher's accuracy at "
      f"1/{report['distilled']['compression']:.1f} of its parameters.", "",
      markdown_table(header, rows), "",
      f"Students: mean ± sample standard deviation over seeds {', '.join(map(str, seeds))} "
      "(each seed changes the student's initialisation, dropout, augmentation and data "
      "order; one teacher). Every model is evaluated at its last step (no checkpoint is "
      "chosen); accuracy over all test images.", "",
      markdown_table(["seed", "baseline errors", "distilled errors", "fewer errors"], per_seed),
      "",
      f"Latency: median time of one batch of {report['latency_batch_size']} test images, "
      f"compiled, on one {report['device']} device (the first seed's student).",
      "Training curves: accuracy.png. The same numbers: report.json.", ""])


def plot_accuracy(workdirs: dict[str, list[pathlib.Path]], path: pathlib.Path) -> None:
  """Test accuracy over training, one line per run (the seeds of an arm share a colour)."""
  with figure(path) as (_, ax):
    for colour, (role, dirs) in enumerate(workdirs.items()):
      for i, workdir in enumerate(dirs):
        records = read_metrics(workdir)
        train_records = [r for r in records if r["split"] == "train" and "epoch" in r]
        steps_per_epoch = (train_records[-1]["step"] / train_records[-1]["epoch"]
                           if train_records else 1)
        tests = [r for r in records if r["split"] == "test"]
        ax.plot([r["step"] / steps_per_epoch for r in tests],
                [100 * r["accuracy"] for r in tests], marker="o", markersize=3,
                color=f"C{colour}", alpha=0.8, label=role if i == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()


def write_report(workdir: pathlib.Path, teacher: SavedRun, students: dict[str, list[SavedRun]],
                 seeds: list[int], test_data: ArrayDataset, mesh: Mesh, batch_size: int,
                 latency_batch_size: int, latency_repeats: int) -> str:
  report = compare(teacher, students, seeds, test_data, mesh, batch_size, latency_batch_size,
                   latency_repeats)
  markdown = render_markdown(report)
  if jax.process_index() == 0:
    write_text(workdir / "report.json", json.dumps(report, indent=2) + "\n")
    write_text(workdir / "report.md", markdown)
    plot_accuracy({"teacher": [teacher.workdir],
                   **{role: [run.workdir for run in runs] for role, runs in students.items()}},
                  workdir / "accuracy.png")
  return markdown

