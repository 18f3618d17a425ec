"""jaxkd.jobs.search: successive halving over populations, ranked on validation only."""

import numpy as np
import pytest
from conftest import npz_with_teacher, toy_config

from jaxkd.config import load_config_file
from jaxkd.errors import JaxkdError
from jaxkd.run.metrics import read_metrics
from jaxkd.jobs.search import parse_space, search


def test_spaces_parse_and_sample_within_their_bounds():
  rng = np.random.default_rng(0)
  log = parse_space("distill.terms.kd.temperature=loguniform(1, 32)")
  draws = [log.sample(rng) for _ in range(200)]
  assert 1 <= min(draws) and max(draws) <= 32 and np.median(draws) < 8  # Log-spread.
  assert parse_space("a.b=choice(1, 2)").sample(rng) in (1, 2)
  with pytest.raises(JaxkdError, match="two bounds low < high, low > 0"):
    parse_space("x=loguniform(0, 2)")
  with pytest.raises(JaxkdError, match="KEY=uniform"):
    parse_space("x=normal(0, 1)")


def test_search_halves_on_validation_and_measures_the_test_set_once(tmp_path):
  base = toy_config()
  base.dataset.path = npz_with_teacher(tmp_path, teacher_steps=20)
  base.dataset.validation_size = 64
  base.distill.teachers = (str(tmp_path / "teacher"),)
  base.distill.terms = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
  spaces = [parse_space("distill.terms.kd.temperature=loguniform(1,16)"),
            parse_space("distill.terms.kd.weight=uniform(0.1,0.9)")]
  summary = search(base, tmp_path / "search", spaces, trials=4, eta=2, rungs=2, min_epochs=1)
  rungs = {t["trial"]: len(t["rungs"]) for t in summary["trials"]}
  assert sorted(rungs.values()) == [1, 1, 2, 2, 2] and rungs["control"] == 2  # 4 -> 2 (+control)
  first = {t["trial"]: t["rungs"][0][1] for t in summary["trials"] if t["trial"] != "control"}
  kept = {t for t, n in rungs.items() if n == 2 and t != "control"}
  assert min(first[t] for t in kept) >= max(first[t] for t in first if t not in kept)
  for trial in range(4):  # The test split is never evaluated while the search runs.
    assert not [r for r in read_metrics(tmp_path / "search" / "trials" / str(trial))
                if r["split"] == "test"]
  best = load_config_file(tmp_path / "search" / "best_config.py")
  assert best.distill.terms.kd.temperature == pytest.approx(
      summary["best_values"]["distill.terms.kd.temperature"])
  assert best.train.epochs == 2.0 and 0 <= summary["test_accuracy"] <= 1
  for name in ("trials.md", "trials.csv", "search.png"):
    assert (tmp_path / "search" / name).stat().st_size > 100
  base.dataset.validation_size = 0
  with pytest.raises(JaxkdError, match="validation split"):
    search(base, tmp_path / "other", spaces)
