"""Sweeps: one training config over a grid of overrides and seeds, then a table and a plot.

  python -m jaxkd sweep --config=configs/mnist/student_kd.py --workdir=runs/sweep_t \
      --sweep 'distill.terms.kd.temperature=1,2,4,8' [--sweep 'optimizer.learning_rate=0.05,0.1'] \
      --seeds=3 [--config.train.epochs=2 ...]

A *cell* is one point of the grid: a value for every swept key and a seed
(config.seed + 0, 1, ..., seeds - 1). Cells run one after the other, each in its
own workdir, WORKDIR/<key>=<value>/.../seed=<seed>, named by the last two parts of
each key (kd.temperature=4). A value is parsed with the type of its config field,
as --config.<key>=<value> would be; tuples and other literals go in parentheses,
e.g. --sweep 'model.widths=(100,100),(200,200)'.

Then WORKDIR/results.md, results.csv and results.png aggregate the cells: one row
per *setting* (the swept values without the seed) with the mean and sample
standard deviation over its seeds of the final and best test accuracy and errors.
The plot shows accuracy against the first swept key, one line per combination of
the others.

Running the same command again skips finished cells (WORKDIR/.../sweep_cell.json
and the final checkpoint are there) and resumes unfinished ones.
  --list      prints the cells, their workdirs and state, and how to run one.
  --cell=K    runs only cell K (repeatable): one cluster job per cell.
  --report    only aggregates the finished cells into the results files.
"""

import copy
import dataclasses
import itertools
import json
import pathlib
import re
import shlex
from typing import Any, Sequence

import ml_collections
from flax import traverse_util

from jaxkd.config import paths
from jaxkd.errors import JaxkdError
from jaxkd.files import write_text
from jaxkd.jobs.sweep import results as sweep_report

CELL_FILE = "sweep_cell.json"
RESULTS = ("results.md", "results.csv", "results.png", "results.json")


@dataclasses.dataclass(frozen=True)
class Axis:
  """One swept config field: its dotted key, short label and values (raw and parsed)."""

  key: str
  label: str
  raw: tuple[str, ...]
  values: tuple[Any, ...]


@dataclasses.dataclass
class Cell:
  index: int
  setting: tuple[str, ...]  # the raw value of each axis, in axis order
  values: tuple[Any, ...]  # the same, parsed with the type of each config field
  seed: int
  workdir: pathlib.Path
  config: ml_collections.ConfigDict

  def describe(self, axes: Sequence[Axis]) -> str:
    return " ".join([f"{a.label}={v}" for a, v in zip(axes, self.setting)] + [f"seed={self.seed}"])


def split_values(text: str) -> list[str]:
  """'1,2,(3,4),"a,b"' -> ['1', '2', '(3,4)', '"a,b"']: commas outside brackets and quotes."""
  values, depth, quote, current = [], 0, None, ""
  for char in text:
    if quote:
      quote = None if char == quote else quote
    elif char in "'\"":
      quote = char
    elif char in "([{":
      depth += 1
    elif char in ")]}":
      depth -= 1
    elif char == "," and depth == 0:
      values.append(current.strip())
      current = ""
      continue
    current += char
  values.append(current.strip())
  return values


def parse_spec(spec: str) -> tuple[str, list[str]]:
  """'distill.terms.kd.temperature=1,2,4' -> (key, raw values)."""
  key, sep, rest = spec.partition("=")
  key = key.strip().removeprefix("--").removeprefix("config.")
  values = split_values(rest) if sep else []
  if not key or not values or any(v == "" for v in values):
    raise JaxkdError(f"--sweep '{spec}' must be KEY=VALUE1,VALUE2,... (a config field and "
                     "comma-separated values), e.g. --sweep 'distill.terms.kd.temperature=1,2,4'.")
  if len(set(values)) != len(values):
    raise JaxkdError(f"--sweep '{spec}' repeats a value.")
  return key, values


def apply_override(config: ml_collections.ConfigDict, key: str, raw: str
                   ) -> tuple[ml_collections.ConfigDict, Any]:
  """A copy of `config` with `key` set to `raw` parsed as --config.<key>=<raw> would be
  (the field's type decides), and the parsed value."""
  return paths.parse_override(config, key, raw, f"--sweep {key}")


def short_labels(keys: Sequence[str]) -> list[str]:
  """The last two parts of each key (more if two keys would share a label)."""
  for parts in range(2, max((k.count(".") + 1 for k in keys), default=1) + 1):
    labels = [".".join(k.split(".")[-parts:]) for k in keys]
    if len(set(labels)) == len(labels):
      return labels
  return list(keys)


def _dir_part(label: str, raw: str) -> str:
  return f"{label}={re.sub(r'[^A-Za-z0-9._,()+=-]', '_', raw)}"


class Sweep:
  """The grid of a base config, swept keys and seeds, rooted at `workdir`."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
               specs: Sequence[str] = (), seeds: int = 1):
    if config.get("job") == "pipeline":
      raise JaxkdError("--config is a pipeline (job='pipeline': teacher, baseline and distilled "
                       "student); a sweep trains one config per cell. Point --config at a "
                       "training config, e.g. configs/mnist/student_kd.py.")
    if seeds < 1:
      raise JaxkdError(f"--seeds={seeds}: need at least one seed.")
    self.config, self.workdir, self.num_seeds = config, pathlib.Path(workdir), seeds
    parsed = [parse_spec(spec) for spec in specs]
    keys = [key for key, _ in parsed]
    if len(set(keys)) != len(keys):
      raise JaxkdError(f"a key is swept twice: {keys}; give each key once with all its values.")
    if "seed" in keys:
      raise JaxkdError("sweep seeds with --seeds=N (seeds config.seed ... config.seed + N - 1), "
                       "not with --sweep 'seed=...'.")
    self.axes = [Axis(key, label, tuple(raw), tuple(apply_override(config, key, r)[1] for r in raw))
                 for (key, raw), label in zip(parsed, short_labels(keys))]
    for axis in self.axes:
      names = {_dir_part(axis.label, r) for r in axis.raw}
      if len(names) != len(axis.raw):
        raise JaxkdError(f"--sweep {axis.key}: two values give the same directory name; use "
                         "values that differ in letters, digits or ._,()+=-.")
    self.seeds = [int(config.seed) + i for i in range(seeds)]
    self.settings = list(itertools.product(*[a.raw for a in self.axes]))
    self.cells = []
    for setting in self.settings:
      config, values = self.config, []
      for axis, raw in zip(self.axes, setting):
        config, value = apply_override(config, axis.key, raw)
        values.append(value)
      for seed in self.seeds:
        cell_config = copy.deepcopy(config)
        cell_config.seed = seed
        parts = [_dir_part(a.label, r) for a, r in zip(self.axes, setting)] + [f"seed={seed}"]
        self.cells.append(Cell(len(self.cells), setting, tuple(values), seed,
                               self.workdir.joinpath(*parts),
                               cell_config))

  def validate(self) -> None:
    """Every cell's config checks, before any training."""
    from jaxkd import config as config_checks

    for cell in self.cells:
      try:
        config_checks.validate(cell.config)
      except JaxkdError as e:
        raise JaxkdError(f"cell {cell.index} ({cell.describe(self.axes)}): {e}") from None

  # -- cell state --------------------------------------------------------------------------

  def result(self, cell: Cell) -> dict | None:
    """The cell's recorded result when it is finished (result file + final checkpoint), else None.

    A finished cell trained with another config (e.g. the same workdir, other overrides)
    is an error rather than a result that would be mixed into the table.
    """
    path = cell.workdir / CELL_FILE
    if not path.exists():
      return None
    result = json.loads(path.read_text())
    if not (cell.workdir / "checkpoints" / str(result["step"])).is_dir():
      return None
    wanted = _plain_config(cell.config)
    if result.get("config") != wanted:
      mine, theirs = _flatten(wanted), _flatten(result.get("config") or {})
      differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
      raise JaxkdError(f"cell {cell.index} in {cell.workdir} was trained with another config "
                       f"(differs in {', '.join(differ[:5])}); use a fresh --workdir for a "
                       "changed sweep, or delete that cell's directory to train it again.")
    return result

  def state(self, cell: Cell) -> str:
    try:
      if self.result(cell) is not None:
        return "finished"
    except JaxkdError:
      return "other config"
    checkpoints = cell.workdir / "checkpoints"
    # Started alone: a checkpoint of its own. A member of an unfinished population has none
    # (the population's are in WORKDIR/populations/): it stays '-' and resumes with it.
    own = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
    return "started" if own else "-"

  # -- running -----------------------------------------------------------------------------

  def populations(self, indices: Sequence[int]) -> list[list[int]]:
    """The cells among `indices` that are neither finished nor started alone, grouped into
    populations (jaxkd.config.population.group_populations); groups of one are left out. The
    grouping is a function of the cells, so a population stopped by a signal is found again
    (the same cells, the same WORKDIR/populations/<cells>/) and resumes."""
    from jaxkd.config.population import group_populations

    fresh = [i for i in indices if self.state(self.cells[i]) == "-"]
    return [[fresh[j] for j in group]
            for group in group_populations([self.cells[i].config for i in fresh])]

  def _record(self, index: int, result: dict) -> dict:
    import jax

    cell = self.cells[index]
    record = {"index": index, "setting": dict(zip([a.key for a in self.axes], cell.setting)),
              "values": {a.key: sweep_report.jsonable(v) for a, v in zip(self.axes, cell.values)},
              "seed": cell.seed, "step": result["step"],
              "test_accuracy": result["test_accuracy"], "test_errors": result["test_errors"],
              "test_count": result["test_count"],
              **{k: result.get(k) for k in ("best_step", "best_validation_accuracy",
                                            "selected_test_accuracy", "selected_test_errors")},
              "num_params": result["num_params"], "config": _plain_config(cell.config)}
    if jax.process_index() == 0:
      write_text(cell.workdir / CELL_FILE, json.dumps(record, indent=2) + "\n")
    return record

  def run_cells(self, indices: Sequence[int] | None = None, datasets: Any = None,
                mesh: Any = None, vectorize: bool = True) -> list[dict]:
    """Trains the given cells (default: all) in order, skipping finished ones. Returns their
    results; a signal stops it (jaxkd.run.signals.Stopped) after the cell's checkpoint. `datasets` (train, test) and `mesh`
    are passed to train.train_and_evaluate (default: each cell's dataset, all devices).
    With `vectorize`, cells that can train as populations do (self.populations), in one
    compiled step each: the same results as one by one, in less time."""
    from jaxkd.data.catalog import load_source_split
    from jaxkd.log import say
    from jaxkd.run import train
    from jaxkd.run.population import train_population

    indices = range(len(self.cells)) if indices is None else indices
    for index in indices:
      if not 0 <= index < len(self.cells):
        raise JaxkdError(f"--cell={index}: this sweep has cells 0 to {len(self.cells) - 1} "
                         "(see --list).")
    self.validate()
    loaded, results, trained = {}, [], {}
    if vectorize and datasets is None:
      for number, group in enumerate(self.populations(list(indices))):
        names = "; ".join(self.cells[i].describe(self.axes) for i in group)
        say(f"== population {number + 1}: cells {group} ({names})")
        outcome = train_population([self.cells[i].config for i in group],
                                   [self.cells[i].workdir for i in group],
                                   self.workdir / "populations" / "-".join(map(str, group)), mesh)
        trained.update({i: self._record(i, r) for i, r in zip(group, outcome)})
    for index in indices:
      cell = self.cells[index]
      head = f"== cell {index + 1}/{len(self.cells)} [{index}] {cell.describe(self.axes)}"
      if index in trained:
        results.append(trained[index])
        continue
      done = self.result(cell)
      if done is not None:
        say(f"{head}: finished, skipped ({cell.workdir})")
        results.append(done)
        continue
      say(f"{head} in {cell.workdir}")
      data = datasets
      if data is None:
        key = cell.config.dataset.to_json_best_effort(sort_keys=True)
        if key not in loaded:  # The whole training split: the run holds out its validation.
          loaded[key] = (load_source_split(cell.config.dataset, "train"),
                         load_source_split(cell.config.dataset, "test"))
        data = loaded[key]
      result = train.train_and_evaluate(cell.config, cell.workdir, datasets=data, mesh=mesh)
      results.append(self._record(index, result))
    return results

  # -- report ------------------------------------------------------------------------------

  def aggregate(self, results: Sequence[dict | None] | None = None) -> list[dict]:
    """One row per setting: n and mean/std over seeds of the finished cells' numbers.

    `results`: each cell's result (None where unfinished), in cell order; default: read them.
    """
    results = [self.result(c) for c in self.cells] if results is None else results
    by_setting: dict[tuple[str, ...], list[dict]] = {setting: [] for setting in self.settings}
    for cell, result in zip(self.cells, results):
      if result is not None:
        by_setting[cell.setting].append(result)
    return sweep_report.summarize(self.axes, by_setting)

  def write_report(self, argv: Sequence[str] | None = None) -> str:
    """results.md, results.csv, results.json and results.png in the sweep's workdir."""
    results = [self.result(c) for c in self.cells]
    rows = self.aggregate(results)
    missing = [c.index for c, r in zip(self.cells, results) if r is None]
    self.workdir.mkdir(parents=True, exist_ok=True)
    markdown = sweep_report.markdown(
        rows, self.axes, missing, workdir=self.workdir, seeds=self.seeds, argv=argv,
        test_count=next((r["test_count"] for r in results if r), None))
    write_text(self.workdir / "results.md", markdown)
    write_text(self.workdir / "results.csv", sweep_report.csv_text(rows, self.axes))
    write_text(self.workdir / "results.json",
                  sweep_report.json_text(rows, self.axes, self.seeds, missing))
    sweep_report.plot(rows, self.axes, self.workdir / "results.png", self.num_seeds)
    return markdown

  def listing(self, argv: Sequence[str] | None = None) -> str:
    lines = [f"{len(self.cells)} cells ({len(self.settings)} setting(s) x {len(self.seeds)} "
             f"seed(s)) in {self.workdir}:"]
    width = max((len(str(c.workdir)) for c in self.cells), default=0)
    for cell in self.cells:
      lines.append(f"  {cell.index:3d}  {str(cell.workdir):<{width}}  {self.state(cell):<12}  "
                   f"{cell.describe(self.axes)}")
    if argv:
      kept, skip = [], False
      for arg in argv:  # The command without --list, --report and --cell[=]K.
        if skip or re.match(r"^--?(no)?(list|report|cell)(=|$)", arg):
          skip = re.match(r"^--?cell$", arg) is not None
          continue
        kept.append(arg)
      base = " ".join(shlex.quote(a) for a in kept)
      lines += ["", f"one cell:     python -m jaxkd sweep {base} --cell=K",
                f"the results:  python -m jaxkd sweep {base} --report"]
    return "\n".join(lines)


def _plain_config(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _flatten(tree: dict) -> dict:
  return traverse_util.flatten_dict(tree, sep=".")
