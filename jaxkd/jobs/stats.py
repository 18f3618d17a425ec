"""Statistics over seeds: mean and spread, and the interval of a difference of means."""

from typing import Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
  """The mean and the sample standard deviation (n - 1; None for one value)."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def plus_minus(mean: float, std: float | None, scale: float = 1.0, digits: int = 1) -> str:
  """'mean ± std' (times scale, to `digits` decimals); the mean alone without a std."""
  text = f"{scale * mean:.{digits}f}"
  return text if std is None else f"{text} ± {scale * std:.{digits}f}"


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
  """mean(a) - mean(b) with its Welch's-t confidence interval (unequal variances).

  se = sqrt(s_a^2 / n_a + s_b^2 / n_b); df by Welch-Satterthwaite; the interval is
  difference -+ t_{(1 + confidence) / 2, df} * se (scipy.stats.ttest_ind, equal_var=False).
  With fewer than two values on a side there is no interval (None); with no spread at all
  it is the difference itself.
  """
  from scipy import stats

  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  difference = float(a.mean() - b.mean())
  result = {"difference": difference, "low": None, "high": None, "df": None,
            "confidence": confidence}
  if len(a) < 2 or len(b) < 2:
    return result
  if a.var(ddof=1) + b.var(ddof=1) == 0.0:
    return {**result, "low": difference, "high": difference}
  welch = stats.ttest_ind(a, b, equal_var=False)
  interval = welch.confidence_interval(confidence)
  return {**result, "low": float(interval.low), "high": float(interval.high),
          "df": float(welch.df)}
