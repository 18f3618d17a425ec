"""Tabular distillation: a wide MLP teacher into a small MLP or a linear model, on one of
scikit-learn's bundled tables (jaxkd.data.sklearn_sets: fixed 70/30 split, standardised
with the training split's statistics; features reach the models as they are).

  python -m jaxkd train --config=configs/tabular/pipeline.py:breast_cancer,linear \\
      --workdir=runs/tabular/breast_cancer_linear

The argument is DATASET,STUDENT: DATASET breast_cancer or wine; STUDENT 'mlp' (one hidden
layer of 8 units) or 'linear' (logistic regression: an MLP with no hidden layer). The
teacher is a 2x512 MLP with dropout 0.3. Both train with Adam; the students over
student.seeds = 5 seeds, alone and on ce 0.5 + kd 0.5 at T=4 from the teacher's cached
soft labels. experiments/tabular/ runs the four combinations and writes the table.
"""

import ml_collections

from jaxkd.config import base_config, pipeline_config


def _run(dataset: str, widths: tuple, dropout: float, epochs: float, learning_rate: float):
  config = base_config()
  config.dataset.name = f"sklearn_{dataset}"
  config.model.name = "mlp"
  config.model.widths = widths
  config.model.dropout = dropout
  config.optimizer.update(name="adam", learning_rate=learning_rate)
  config.train.update(batch_size=25, epochs=epochs, eval_batch_size=256, log_every_steps=50)
  return config


def get_config(arg: str = "breast_cancer,linear"):
  dataset, student_kind = arg.split(",")
  if student_kind not in ("mlp", "linear"):
    raise ValueError(f"student '{student_kind}': use 'mlp' or 'linear'.")
  config = pipeline_config()
  config.teacher = _run(dataset, (512, 512), 0.3, 100.0, 1e-3)
  config.teacher_workdir = ""
  student = _run(dataset, (8,) if student_kind == "mlp" else (), 0.0, 100.0, 1e-2)
  student.seeds = 5
  config.student = student
  config.distill.terms = ml_collections.ConfigDict(dict(
      ce=ml_collections.ConfigDict(dict(weight=0.5)),
      kd=ml_collections.ConfigDict(dict(weight=0.5, temperature=4.0))))
  config.distill.update(teacher_combine="average", mode="cached", soft_label_dtype="float32",
                        top_k=0)
  config.report.update(latency_batch_size=128, latency_repeats=50)
  return config
