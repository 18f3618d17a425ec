"""Function matching (Beyer et al. 2022, "Knowledge distillation: A good teacher is
patient and consistent") on MNIST: the teacher runs online on exactly the student's
augmented view (random 2-pixel shifts + mixup), and the student learns from the
teacher alone (kd at T=1, no label term).

Run:
  python -m jaxkd train --config=configs/mnist/function_matching.py --workdir=runs/mnist_fm
The teacher of configs/mnist/pipeline.py can be reused with
--config.teacher_workdir=runs/mnist_pipeline/teacher.
"""

import pathlib

import ml_collections

from jaxkd.config import load_config_file


def get_config():
  config = load_config_file(pathlib.Path(__file__).with_name("pipeline.py"))
  config.distill.mode = "online"  # Consistent views need the teacher in the step.
  config.distill.terms = ml_collections.ConfigDict(
      {"kd": ml_collections.ConfigDict({"weight": 1.0, "temperature": 1.0})})
  config.student.dataset.crop_padding = 2
  config.student.dataset.mixup_alpha = 1.0
  config.student.train.epochs = 16  # Patient: function matching wants long schedules.
  return config
