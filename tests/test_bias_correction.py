"""Per-class logit bias correction: the fit against a closed form, and a student that never
saw a class, corrected on the validation split and exported with its bias."""

import json

import numpy as np
import pytest
from conftest import toy_config

from jaxkd.run import train
from jaxkd.run.bias_correction import fit_logit_bias
from jaxkd.errors import JaxkdError
from jaxkd.jobs.export import export, load_portable


def test_fit_on_constant_logits_gives_the_log_class_frequencies():
  """With every logit 0, softmax(b) must equal the label frequencies p: b = log p - mean."""
  labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
  targets = np.eye(3, dtype=np.float32)[labels]
  bias = fit_logit_bias(np.zeros((100, 3), np.float32), targets, steps=50)
  expected = np.log([0.5, 0.3, 0.2])
  np.testing.assert_allclose(bias, expected - expected.mean(), atol=1e-4)


def test_fit_meets_the_optimality_condition_on_random_logits():
  """At the minimum, the mean corrected probability of each class equals the mean target."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(200, 4)).astype(np.float32) * 2
  targets = rng.dirichlet(np.ones(4), size=200).astype(np.float32)
  bias = fit_logit_bias(logits, targets, steps=100)
  shifted = logits + bias
  probs = np.exp(shifted - shifted.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  np.testing.assert_allclose(probs.mean(0), targets.mean(0), atol=1e-4)
  assert abs(float(bias.mean())) < 1e-6  # Centred.


def test_a_student_that_never_saw_a_class_is_corrected_and_exported_with_its_bias(
    tmp_path, toy_datasets):
  teacher = toy_config(num_steps=40)
  train.train_and_evaluate(teacher, tmp_path / "teacher", datasets=toy_datasets)
  student = toy_config(num_steps=40)
  student.dataset.validation_size = 96
  student.transfer.drop_classes = (3,)  # Hinton et al. 2015: no 3 in the transfer set.
  student.distill.teachers = (str(tmp_path / "teacher"),)
  student.distill.terms = {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 4.0}}
  student.bias_correction.source = "validation"
  result = train.train_and_evaluate(student, tmp_path / "student", datasets=toy_datasets)
  fitted = json.loads((tmp_path / "student" / "bias_correction.json").read_text())
  assert fitted["fitted_on"] == "validation" and fitted["count"] == 96
  assert result["test_errors_corrected"] == fitted["test_errors_corrected"]
  assert result["test_errors_corrected"] <= result["test_errors"]
  assert np.argmax(fitted["bias"]) == 3  # The class it never saw is raised most.
  # The export carries the bias: its logits give the corrected errors, not the plain ones.
  export(tmp_path / "student", tmp_path / "export", latency_batch_size=8, latency_repeats=1)
  _, test = toy_datasets
  logits = np.asarray(load_portable(tmp_path / "export")(test.inputs))
  assert int(np.sum(logits.argmax(-1) != test.labels)) == result["test_errors_corrected"]


def test_bias_correction_needs_a_validation_split_and_never_uses_the_test_set(tmp_path,
                                                                              toy_datasets):
  config = toy_config()
  config.bias_correction.source = "validation"
  with pytest.raises(JaxkdError, match="needs a validation split"):
    train.train_and_evaluate(config, tmp_path, datasets=toy_datasets)
  config.bias_correction.source = "test"
  with pytest.raises(JaxkdError, match="'test' is not one of"):
    train.train_and_evaluate(config, tmp_path, datasets=toy_datasets)


def test_the_transfer_source_fits_to_the_teachers_without_labels(tmp_path, toy_datasets):
  teacher = toy_config(num_steps=30)
  train.train_and_evaluate(teacher, tmp_path / "teacher", datasets=toy_datasets)
  student = toy_config(num_steps=10)
  student.transfer.labeled_fraction = 0.0  # No label at all: kd alone.
  student.distill.teachers = (str(tmp_path / "teacher"),)
  student.distill.terms = {"kd": {"weight": 1.0, "temperature": 2.0}}
  student.bias_correction.source = "transfer"
  result = train.train_and_evaluate(student, tmp_path / "student", datasets=toy_datasets)
  fitted = json.loads((tmp_path / "student" / "bias_correction.json").read_text())
  assert fitted["source"] == "transfer" and "labeled=0" in fitted["fitted_on"]
  assert fitted["count"] == 512 and len(fitted["bias"]) == 4
  assert "test_errors_corrected" in result
  no_teacher = toy_config()
  no_teacher.bias_correction.source = "transfer"
  with pytest.raises(JaxkdError, match="needs a teacher term"):
    train.train_and_evaluate(no_teacher, tmp_path / "none", datasets=toy_datasets)
