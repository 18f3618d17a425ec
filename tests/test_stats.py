import numpy as np
import pytest
from scipy import stats as scipy_stats

from jaxkd.jobs.stats import mean_std, welch_interval


def test_welch_interval_on_a_hand_worked_case():
  # a: mean 10, s^2 = 1 (n 3); b: mean 7, s^2 = 4 (n 3). se^2 = 1/3 + 4/3 = 5/3.
  # df = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = (25/9) / (17/18) = 50/17.
  a, b = [9.0, 10.0, 11.0], [5.0, 7.0, 9.0]
  result = welch_interval(a, b)
  assert result["difference"] == 3.0
  assert result["df"] == pytest.approx(50 / 17)
  half = scipy_stats.t.ppf(0.975, 50 / 17) * np.sqrt(5 / 3)
  assert (result["low"], result["high"]) == pytest.approx((3 - half, 3 + half))
  # And as scipy's own Welch test computes it.
  interval = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
  assert (result["low"], result["high"]) == pytest.approx((interval.low, interval.high))


def test_interval_edge_cases():
  assert welch_interval([3.0], [1.0, 2.0])["low"] is None  # One seed: no interval.
  same = welch_interval([5.0, 5.0], [2.0, 2.0])
  assert (same["low"], same["high"]) == (3.0, 3.0)  # No spread: the difference itself.
  assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0) and mean_std([4.0]) == (4.0, None)
