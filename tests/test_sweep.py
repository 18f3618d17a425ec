import csv
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import toy_arrays, toy_config

from jaxkd.config import load_config_file
from jaxkd.errors import JaxkdError
from jaxkd.run.metrics import read_metrics
from jaxkd.engine.sharding import make_mesh
from jaxkd.jobs.sweep.grid import Sweep, split_values

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _npz_config(tmp_path):
  x, y = toy_arrays(256, 0)
  xt, yt = toy_arrays(100, 1)
  np.savez(tmp_path / "toy.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
  config = toy_config(num_steps=4, eval_every_steps=2, log_every_steps=2)
  config.dataset.path = str(tmp_path / "toy.npz")
  config.dataset.validation_size = 56
  config.lock()
  return config


def test_split_values_keeps_tuples_and_quoted_commas():
  assert split_values("1, 2.5,(3,4),'a,b',[5]") == ["1", "2.5", "(3,4)", "'a,b'", "[5]"]


def test_two_by_two_sweep_writes_means_and_skips_finished_cells(tmp_path, capsys):
  config = _npz_config(tmp_path)
  sweep = Sweep(config, tmp_path / "sweep", ["optimizer.learning_rate=0.003,0.03"], seeds=2)
  assert [str(c.workdir.relative_to(tmp_path / "sweep")) for c in sweep.cells] == [
      "optimizer.learning_rate=0.003/seed=0", "optimizer.learning_rate=0.003/seed=1",
      "optimizer.learning_rate=0.03/seed=0", "optimizer.learning_rate=0.03/seed=1"]
  assert [c.config.optimizer.learning_rate for c in sweep.cells] == [0.003, 0.003, 0.03, 0.03]
  assert [c.config.seed for c in sweep.cells] == [0, 1, 0, 1]
  sweep.run_cells(mesh=make_mesh(jax.devices()[:1]))  # one device: the fastest compile
  sweep.write_report()

  # Independently: each cell's own metrics.jsonl.
  expected = {}
  for lr in ("0.003", "0.03"):
    last, best, last_err = [], [], []
    for seed in (0, 1):
      records = read_metrics(tmp_path / "sweep" / f"optimizer.learning_rate={lr}" / f"seed={seed}")
      tests = [r for r in records if r["split"] == "test"]
      validation = [r for r in records if r["split"] == "validation"]
      assert [r["step"] for r in tests] == [r["step"] for r in validation] == [2, 4]
      assert {r["count"] for r in validation} == {56}
      last.append(tests[-1]["accuracy"])
      last_err.append(tests[-1]["errors"])
      # Selected: the test accuracy where validation accuracy was best (earliest of ties).
      chosen = max(validation, key=lambda r: (r["accuracy"], -r["step"]))["step"]
      best.append([r["accuracy"] for r in tests if r["step"] == chosen][0])
    expected[lr] = (last, best, last_err)
  assert np.std(expected["0.003"][0]) > 0  # seeds differ: the std is checked, not just 0
  rows = list(csv.DictReader((tmp_path / "sweep" / "results.csv").open()))
  assert [r["optimizer.learning_rate"] for r in rows] == ["0.003", "0.03"]
  for row in rows:
    last, best, last_err = expected[row["optimizer.learning_rate"]]
    assert row["n"] == "2" and row["seeds"] == "0 1"
    np.testing.assert_allclose(float(row["test_accuracy_mean"]), np.mean(last), rtol=1e-12)
    np.testing.assert_allclose(float(row["test_accuracy_std"]), np.std(last, ddof=1), atol=1e-12)
    np.testing.assert_allclose(float(row["selected_test_accuracy_mean"]), np.mean(best), rtol=1e-12)
    np.testing.assert_allclose(float(row["selected_test_accuracy_std"]), np.std(best, ddof=1), atol=1e-12)
    np.testing.assert_allclose(float(row["test_errors_mean"]), np.mean(last_err), rtol=1e-12)
  markdown = (tmp_path / "sweep" / "results.md").read_text()
  last, best, _ = expected["0.003"]
  assert (f"| 0.003 | 2 | {100 * np.mean(best):.2f} ± {100 * np.std(best, ddof=1):.2f} | "
          f"{100 * np.mean(last):.2f} ± {100 * np.std(last, ddof=1):.2f} |") in markdown
  assert (tmp_path / "sweep" / "results.png").stat().st_size > 1000

  # Run again: every cell is finished, nothing trains.
  stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep").rglob("metrics.jsonl")}
  capsys.readouterr()
  again = Sweep(config, tmp_path / "sweep", ["optimizer.learning_rate=0.003,0.03"], seeds=2)
  assert [again.state(c) for c in again.cells] == ["finished"] * 4
  again.run_cells(mesh=make_mesh(jax.devices()[:1]))
  out = capsys.readouterr().out
  assert out.count("finished, skipped") == 4 and "objective" not in out
  assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_unknown_key_wrong_type_and_pipeline_config_are_clear_errors(tmp_path):
  config = _npz_config(tmp_path)
  with pytest.raises(JaxkdError, match=r"unknown config field 'learnin_rate' in "
                                       r"config.optimizer .*did you mean 'learning_rate'"):
    Sweep(config, tmp_path, ["optimizer.learnin_rate=0.1,0.2"])
  with pytest.raises(JaxkdError, match=r"unknown config field 'kd' in config.distill.terms"):
    Sweep(config, tmp_path, ["distill.terms.kd.temperature=1,2"])
  with pytest.raises(JaxkdError, match=r"value 'many' does not fit config.train.num_steps"):
    Sweep(config, tmp_path, ["train.num_steps=4,many"])
  with pytest.raises(JaxkdError, match=r"pipeline"):
    Sweep(load_config_file(ROOT / "configs" / "mnist" / "pipeline.py"), tmp_path, [])


def test_command_line_lists_cells_and_reports_unknown_keys(tmp_path):
  config_file = tmp_path / "toy_config.py"
  config_file.write_text(  # A small file: listing cells imports neither jax nor TensorFlow.
      "from jaxkd.config import base_config\n\ndef get_config():\n"
      "  config = base_config()\n  config.dataset.name = 'npz'\n  config.model.name = 'mlp'\n"
      "  config.model.widths = (32,)\n  config.optimizer.learning_rate = 0.1\n"
      "  config.train.batch_size = 32\n  config.train.num_steps = 8\n  return config\n")
  base = [sys.executable, "-m", "jaxkd", "sweep", f"--config={config_file}",
          f"--workdir={tmp_path / 'sweep'}", "--sweep", "model.widths=(8,),(16,)", "--seeds=2"]
  listed = subprocess.run(base + ["--list"], capture_output=True, text=True, cwd=ROOT)
  assert listed.returncode == 0, listed.stderr
  assert "4 cells (2 setting(s) x 2 seed(s))" in listed.stdout
  assert f"3  {tmp_path / 'sweep' / 'model.widths=(16,)' / 'seed=1'}" in listed.stdout
  assert "--cell=K" in listed.stdout
  bad = subprocess.run(base + ["--sweep", "train.epoch=1,2"], capture_output=True, text=True,
                       cwd=ROOT)
  assert bad.returncode == 2
  assert "jaxkd: error: --sweep train.epoch: unknown config field 'epoch'" in bad.stderr
  assert "did you mean 'epochs'" in bad.stderr


def _events(workdir):
  """Every Event record of the run's TensorBoard files (TFRecord framing, read by hand)."""
  import struct

  from tensorboardX.proto.event_pb2 import Event

  events = []
  for path in sorted(workdir.glob("events.out.tfevents.*")):
    data = path.read_bytes()
    while data:
      (length,) = struct.unpack("<Q", data[:8])
      events.append(Event.FromString(data[12:12 + length]))
      data = data[12 + length + 4:]
  return events


def test_write_hparams_puts_the_flat_config_in_the_runs_event_file(tmp_path):
  import ml_collections
  from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

  from jaxkd.run.metrics import MetricWriter, flatten_hparams

  config = toy_config()
  config.distill.terms.kd = ml_collections.ConfigDict({"weight": 0.9, "temperature": 4.0})
  flat = flatten_hparams(config)
  assert flat["distill.terms.kd.temperature"] == 4.0 and flat["model.widths"] == "(32,)"
  assert flat["train.num_steps"] == 8 and "dataset.path" not in flat  # None is left out
  writer = MetricWriter(tmp_path)
  writer.write_hparams(config)
  writer.close()
  values = [v for e in _events(tmp_path) for v in e.summary.value]
  start = [v for v in values if v.tag == "_hparams_/session_start_info"]
  assert len(start) == 1
  hparams = HParamsPluginData.FromString(start[0].metadata.plugin_data.content).session_start_info.hparams
  assert hparams["distill.terms.kd.temperature"].number_value == 4.0
  assert hparams["model.name"].string_value == "mlp"
  assert any(v.tag.startswith("config") for v in values)  # the text table
  # Once per run: a resumed writer adds nothing. (Its own directory: two writers opened in
  # the same second would share one event file name.)
  (tmp_path / "resumed").mkdir()
  resumed = MetricWriter(tmp_path / "resumed", resume_step=8)
  resumed.write_hparams(config)
  resumed.close()
  assert not [v for e in _events(tmp_path / "resumed") for v in e.summary.value
              if v.tag.startswith(("_hparams_", "config"))]


def test_a_vectorized_sweep_gives_the_cells_of_a_sequential_one(tmp_path, capsys):
  """The same grid (2 temperatures x 2 seeds of a distilled student) as populations (one per
  seed, sharing the teacher) and one cell at a time: the same errors in every cell."""
  from jaxkd.run import train

  config = _npz_config(tmp_path)
  teacher = toy_config(num_steps=20)
  teacher.dataset.path = config.dataset.path
  train.train_and_evaluate(teacher, tmp_path / "teacher")
  config = config.copy_and_resolve_references()
  config.distill.teachers = (str(tmp_path / "teacher"),)
  config.distill.terms = {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 2.0}}
  config.lock()
  grid = ["distill.terms.kd.temperature=1,4"]
  mesh = make_mesh(jax.devices()[:1])
  vectorized = Sweep(config, tmp_path / "vectorized", grid, seeds=2)
  assert vectorized.populations(range(4)) == [[0, 2], [1, 3]]  # One per seed.
  together = vectorized.run_cells(mesh=mesh)
  assert capsys.readouterr().out.count("== population") == 2
  apart = Sweep(config, tmp_path / "sequential", grid, seeds=2).run_cells(mesh=mesh,
                                                                         vectorize=False)
  assert [r["test_errors"] for r in together] == [r["test_errors"] for r in apart]
  np.testing.assert_allclose([r["selected_test_accuracy"] for r in together],
                             [r["selected_test_accuracy"] for r in apart])
