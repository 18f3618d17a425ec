"""A sweep's results: per-setting statistics over seeds, and their table, CSV, JSON and plot.

Plain functions of the finished cells' results (the sweep_cell.json records) and the swept
axes (each a jaxkd.jobs.sweep.grid.Axis: key, label, raw, values); jaxkd.jobs.sweep.grid
gathers the results and writes the files.
"""

import csv
import dataclasses
import io
import json
import pathlib
import shlex
from typing import Any, Mapping, Sequence

from jaxkd.jobs.stats import mean_std, plus_minus
from jaxkd.jobs.tables import figure, markdown_table

# selected_*: the test numbers at the step of best validation accuracy (runs with
# dataset.validation_size > 0; missing otherwise); the others at the last step.
NUMBERS = ("selected_test_accuracy", "test_accuracy", "selected_test_errors", "test_errors")


def summarize(axes: Sequence, results_by_setting: Mapping[tuple[str, ...], Sequence[dict]]
              ) -> list[dict]:
  """One row per setting: n and mean/std over seeds of the finished cells' numbers.

  `results_by_setting` maps each setting (the raw value of each axis, in axis order) to
  the results of its finished cells, in seed order; rows come in the mapping's order.
  """
  rows = []
  for setting, done in results_by_setting.items():
    row = {"setting": dict(zip([a.key for a in axes], setting)), "n": len(done),
           "seeds": [r["seed"] for r in done]}
    for name in NUMBERS:
      values = [float(r[name]) for r in done if r.get(name) is not None]
      mean, std = mean_std(values) if values else (None, None)
      row[name] = {"mean": mean, "std": std,
                   "values": values}
    rows.append(row)
  return rows


def markdown(rows: list[dict], axes: Sequence, missing: Sequence[int] = (), *,
             workdir: pathlib.Path, seeds: Sequence[int], test_count: int | None = None,
             argv: Sequence[str] | None = None) -> str:
  """results.md: the table of `rows` and notes (seeds, swept keys, the `missing` cell indices,
  the command `argv`) for the sweep in `workdir`; `test_count`: test images per evaluation."""
  head = [a.label for a in axes] + ["n", "selected test accuracy (%)", "final test accuracy (%)",
                                    "selected errors", "final errors"]
  table = [[row["setting"][a.key] for a in axes] + [str(row["n"])]
           + [_pm(row[n], 100.0, 2) for n in ("selected_test_accuracy", "test_accuracy")]
           + [_pm(row[n], 1.0, 1) for n in ("selected_test_errors", "test_errors")]
           for row in rows]
  notes = [f"Mean ± sample standard deviation over seeds {', '.join(map(str, seeds))} "
           f"(n: finished seeds). Selected: the test accuracy at the evaluation with the best "
           f"validation accuracy (dataset.validation_size examples held out of the training "
           f"split; '-' without one): the test set is never chosen on. Final: at the last "
           f"step. Errors out of {test_count or '?'} test images."]
  if axes:
    notes.append("Swept: " + "; ".join(f"{a.label} = config.{a.key} in "
                                       f"{{{', '.join(a.raw)}}}" for a in axes) + ".")
  if missing:
    notes.append(f"Not finished yet: cells {', '.join(str(i) for i in missing)} "
                 "(see --list).")
  if argv:
    notes.append(f"Command: `{' '.join(shlex.quote(a) for a in argv)}`")
  return "\n".join([f"# Sweep in {workdir}", "", markdown_table(head, table), "", *notes,
                    "", "Plot: results.png.", ""])


def csv_text(rows: list[dict], axes: Sequence) -> str:
  """results.csv: one line per row, each number's mean and std (empty where there is none)."""
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow([a.key for a in axes] + ["n", "seeds"] +
                  [f"{n}_{s}" for n in NUMBERS for s in ("mean", "std")])
  for row in rows:
    writer.writerow([row["setting"][a.key] for a in axes] +
                    [row["n"], " ".join(map(str, row["seeds"]))] +
                    ["" if row[n][s] is None else repr(row[n][s]) for n in NUMBERS
                     for s in ("mean", "std")])
  return out.getvalue()


def json_text(rows: list[dict], axes: Sequence, seeds: Sequence[int],
              missing: Sequence[int] = ()) -> str:
  """results.json: the axes, seeds, rows and the indices of the cells not finished yet."""
  return json.dumps(
      {"axes": [dataclasses.asdict(a) | {"values": [jsonable(v) for v in a.values]}
                for a in axes], "seeds": list(seeds), "rows": rows,
       "missing_cells": list(missing)}, indent=2) + "\n"


def plot(rows: list[dict], axes: Sequence, path: pathlib.Path, num_seeds: int) -> None:
  """results.png at `path`: final and selected test accuracy against the first axis, one line
  per combination of the other axes' values, with std error bars."""
  first = axes[0] if axes else None
  xs = dict(zip(first.raw, first.values)) if first else {}
  numeric = bool(first) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                for v in first.values)
  position = (lambda raw: float(xs[raw])) if numeric else (
      lambda raw: first.raw.index(raw) if first else 0)
  groups: dict[tuple, list[dict]] = {}
  for row in rows:
    if row["n"]:
      rest = tuple(row["setting"][a.key] for a in axes[1:])
      groups.setdefault(rest, []).append(row)
  with figure(path, columns=2, size=(10, 4), sharey=True) as (_, panels):
    for panel, name, title in ((panels[0], "test_accuracy", "final test accuracy"),
                               (panels[1], "selected_test_accuracy",
                                "test accuracy at best validation")):
      for rest, members in groups.items():
        members = [r for r in members if r[name]["mean"] is not None]
        label = ", ".join(f"{a.label}={v}" for a, v in zip(axes[1:], rest)) or (
            f"mean ± std over {num_seeds} seed(s)")
        members = sorted(members, key=lambda r: position(r["setting"][first.key]) if first else 0)
        panel.errorbar([position(r["setting"][first.key]) if first else 0 for r in members],
                       [100 * r[name]["mean"] for r in members],
                       yerr=[100 * (r[name]["std"] or 0.0) for r in members],
                       marker="o", capsize=4, label=label)
      panel.set_title(title)
      panel.set_xlabel(first.label if first else "")
      panel.grid(alpha=0.3)
      if numeric and min(xs.values()) > 0 and max(xs.values()) / min(xs.values()) >= 8:
        panel.set_xscale("log", base=2)
      if first:
        panel.set_xticks([position(r) for r in first.raw], list(first.raw))
      else:
        panel.set_xticks([0], ["config"])
    panels[0].set_ylabel("test accuracy (%)")
    panels[0].legend(fontsize="small")


def jsonable(value: Any) -> Any:
  """`value` as JSON would give it back (tuples as lists, unknown types as str)."""
  return json.loads(json.dumps(value, default=str))


def _pm(stats: dict, scale: float, digits: int) -> str:
  return "-" if stats["mean"] is None else plus_minus(stats["mean"], stats["std"], scale, digits)
