"""Reading the golden fixtures of make_fixtures.py (no torch needed)."""

import functools
import json
import pathlib

import numpy as np

DIR = pathlib.Path(__file__).resolve().parent / "fixtures"


@functools.cache
def load() -> tuple[dict, dict]:
  """(arrays, meta): the fixture arrays by name and what produced them."""
  with np.load(DIR / "reference.npz") as arrays:
    return {k: arrays[k] for k in arrays.files}, json.loads((DIR / "reference.json").read_text())


def subsample(feature: np.ndarray) -> np.ndarray:
  """Every k-th row, column and channel of a [B, H, W, C] map (at most 4 x 4 x 64 of
  them), every k-th entry of a [B, C] vector (at most 64): what a fixture keeps of a
  feature (make_fixtures.py), and the same entries of ours."""
  channel_stride = max(1, feature.shape[-1] // 64)
  if feature.ndim != 4:
    return feature[:, ::channel_stride]
  stride = max(1, feature.shape[1] // 4)
  return feature[:, ::stride, ::stride, ::channel_stride]
