"""The distilled student of configs/mnist/pipeline.py as a standalone training config.

The 2x100 MLP student (no jitter, 16 epochs, lr 0.05, gradients clipped at norm 5) on
ce 0.1 + kd 0.9 at T=4, taught online by the pipeline's LeNet teacher in
runs/mnist_pipeline/teacher (what `make demo` trains; or train it alone with
python -m jaxkd train --config=configs/mnist/teacher_lenet.py --workdir=runs/mnist_pipeline/teacher).
Another teacher: --config.distill.teachers="('runs/other_teacher',)".

It is what the pipeline's distilled arm trains (online rather than from the cache:
without augmentation the targets are the same), so it can be swept on its own:
  python -m jaxkd train --config=configs/mnist/student_kd.py --workdir=runs/student_kd
  python -m jaxkd sweep --config=configs/mnist/student_kd.py --workdir=runs/mnist_temperature \\
      --sweep 'distill.terms.kd.temperature=1,2,4,8' --seeds=3
(experiments/mnist_temperature/).
"""

import pathlib

from jaxkd.config import load_config_file

TEACHER = "runs/mnist_pipeline/teacher"


def get_config():
  pipeline = load_config_file(pathlib.Path(__file__).with_name("pipeline.py"))
  student = pipeline.student
  student.distill.terms = pipeline.distill.terms
  student.distill.teacher_combine = pipeline.distill.teacher_combine
  student.distill.teachers = (TEACHER,)
  return student
