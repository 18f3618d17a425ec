"""The MNIST setting of Hinton, Vinyals & Dean 2015 (section 3) as a pipeline.

Teacher: 2x1200 ReLU MLP regularised with dropout (0.2 hidden) and input
jitter (random shifts of up to 2 pixels). Student: 2x800 ReLU MLP
without regularisation, trained without a teacher (baseline) and with soft
targets at T=20 (kd 0.9 + ce 0.1). The paper reports 67 test errors for the
teacher, 146 for the student alone and 74 for the distilled student, after
much longer training than here.

Run one seed:
  python -m jaxkd.main --config=configs/mnist/hinton.py --workdir=runs/mnist_hinton/seed0
Three seeds and the table: python experiments/mnist_hinton/run.py
"""

import pathlib

from jaxkd.config_base import load_config_file


def get_config():
  config = load_config_file(pathlib.Path(__file__).with_name("pipeline.py"))
  # The teacher of configs/mnist/teacher.py: 2x1200, dropout 0.2, input jitter, 12 epochs.
  # The paper's heavier dropout (0.2 on inputs, 0.5 hidden) without its max-norm
  # constraint diverged here (test accuracy 88% -> 79% at lr 0.1, 80% at lr 0.05).

  student = config.student
  student.model.widths = (800, 800)
  student.model.dropout = 0.0  # lr 0.05 with gradients clipped at norm 5, from pipeline.py.
  student.dataset.crop_padding = 0  # The paper's transfer set: the training set, unshifted.
  student.train.epochs = 8

  config.distill.mode = "cached"  # Without jitter, cached and online targets are the same.
  config.distill.terms.kd.temperature = 20.0
  config.distill.terms.kd.weight = 0.9
  config.distill.terms.ce.weight = 0.1
  return config
