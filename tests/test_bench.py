"""jaxkd.jobs.bench: rows for every mode, XLA's FLOP counts against hand counts, the peak."""

import contextlib
import io
import json

import jax
import jax.numpy as jnp
import pytest

from jaxkd.jobs import bench

# A tiny pair: 8x8x1 images, 4 classes, MLP 1x32 -> 1x16, hints at the hidden layer.
TINY = bench.Pair("tiny", "mnist", (8, 8, 1), 4, {"name": "mlp", "widths": (32,)},
                  {"name": "mlp", "widths": (16,)}, hint=("dense0", "dense0"), batch_size=16,
                  steps=2, warmup=1, rounds=2)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
  """The bench job (python -m jaxkd bench) on the tiny pair, every mode, run once for the
  tests below."""
  out = tmp_path_factory.mktemp("bench") / "bench.jsonl"
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(bench.PAIRS, "tiny", TINY)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
      rows = bench.run([TINY], peak_size=128, json_path=str(out))
  return rows, printed.getvalue(), out


def test_bench_times_every_mode(cli_run):
  rows = cli_run[0]
  assert [r["mode"] for r in rows] == list(bench.MODES)
  for row in rows:
    assert row["steps"] == 2 and row["batch_size"] == 16 and row["devices_used"] == 1
    assert row["ms_per_step"] > 0 and row["ms_min"] > 0 and row["examples_per_sec"] > 0
    assert row["gflop_per_step"] > 0 and row["gflop_per_sec"] > 0 and row["pct_of_peak"] > 0
    assert row["jax_version"] == jax.__version__ and row["threads"] >= 1
  flops = {r["mode"]: r["gflop_per_step"] for r in rows}
  # The online step runs the teacher's forward pass on top of the student's step; the
  # cached one reads the same logits from the batch (the same FLOPs give or take the loss).
  assert flops["online"] > flops["student"] + 0.9 * flops["teacher_forward"]
  assert flops["cached"] == pytest.approx(flops["student"], rel=0.05)
  assert flops["fitnet"] > flops["student"]  # + the regressor and the teacher's first layer


def test_cli_prints_table_targets_and_json(cli_run):
  rows, printed, out = cli_run
  for mode in bench.MODES:
    assert f"| tiny | {mode} | 16 |" in printed
  assert "target: tiny: cached distillation" in printed
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["mode"] for r in lines] == [r["mode"] for r in rows]
  assert all(r["pct_of_peak"] > 0 and r["device_kind"] and r["peak_gflops"] > 0 for r in lines)


def test_dot_flops_are_2_m_n_k():
  x, w = jnp.ones((32, 784)), jnp.ones((784, 256))
  compiled = jax.jit(jnp.dot).lower(x, w).compile()
  assert bench.flops_of(compiled) == 2 * 32 * 784 * 256


def test_train_step_flops_match_a_hand_count():
  """Student-only step of a 784 -> 256 -> 10 MLP on a batch of 128: forward 2B(d h + h c);
  backward the weight gradients of both layers (2B d h + 2B h c) and the input gradient
  of the head only (2B h c: nothing needs the images' gradient). The rest (softmax,
  ReLU, SGD with momentum over 204k parameters) adds about 1%."""
  pair = bench.Pair("count", "mnist", (28, 28, 1), 10, {"name": "mlp", "widths": (256,)},
                    {"name": "mlp", "widths": (256,)}, hint=("dense0", "dense0"))
  batch, d, h, c = 128, 784, 256, 10
  setup = bench.setup_pair(pair, batch)
  compiled, *_ = bench.build_train_step(setup, "student")
  forward = 2 * batch * (d * h + h * c)
  backward = 2 * batch * d * h + 2 * (2 * batch * h * c)
  assert bench.flops_of(compiled) == pytest.approx(forward + backward, rel=0.03)
  teacher = bench.prepare_teacher_forward(setup)  # The same MLP, forward only.
  assert teacher.flops == pytest.approx(forward, rel=0.03)


def test_matmul_peak_is_positive():
  peak = bench.matmul_peak(size=128, repeats=2)
  assert peak["gflops"] > 0 and peak["seconds"] > 0 and peak["size"] == 128
  assert peak["xla_flops"] == 2 * 128**3


def test_time_rounds_interleaves_and_counts():
  calls = []
  times = bench.time_rounds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                            steps=4, warmup=1, rounds=2)
  assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4}
  assert calls == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3


def test_peers_compute_the_same_loss_as_torchdistill():
  """experiments/bench_peers (only where the 'bench' extra is installed): both sides run,
  and from the same weights they give the same first loss."""
  pytest.importorskip("torchdistill")
  from conftest import load_script

  peers = load_script("experiments", "bench_peers", "run.py")
  rows = peers.compare_pair(TINY, batch_size=16, steps=2, warmup=1, rounds=1)
  assert [r["mode"] for r in rows] == ["student", "online"]
  for row in rows:
    assert row["speed_ratio"] > 0 and row["torchdistill_ms_per_step"] > 0
    assert row["student_params_jaxkd"] == row["student_params_torch"]
    assert row["teacher_params_jaxkd"] == row["teacher_params_torch"]
    assert row["jaxkd_first_loss"] == pytest.approx(row["torchdistill_first_loss"], rel=1e-5)
