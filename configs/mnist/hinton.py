"""The MNIST setting of Hinton, Vinyals & Dean 2015 (section 3) as a pipeline.

Teacher: 2x1200 ReLU MLP with the regularisation of Hinton et al. 2012: dropout
0.2 on the inputs and 0.5 on the hidden units, a max-norm constraint on each
unit's incoming weights (sqrt(15): their bound of 15 on the squared length), momentum
rising from 0.5 to 0.9 over 5 epochs at lr 0.03 (at lr 0.1 it diverged once the
momentum passed about 0.8), and input jitter (random shifts of up to 2 pixels); 150
epochs (86 test errors here).
Student: 2x800 ReLU MLP without regularisation, trained on the unshifted training
set without a teacher (baseline) and with soft targets at T=20 (kd 0.9 + ce 0.1),
3 seeds each against the one teacher (the paper distils from one teacher too).
The paper reports 67 test errors for the teacher, 146 for the student alone and
74 for the distilled student; measured here: 86, 135.0 ± 7.0 and 102.3 ± 2.1
(experiments/mnist_hinton/README.md).

Run: python experiments/mnist_hinton/run.py (the table goes to its README), or
  python -m jaxkd train --config=configs/mnist/hinton.py --workdir=runs/mnist_hinton
"""

import math
import pathlib

from jaxkd.config import load_config_file


def get_config():
  config = load_config_file(pathlib.Path(__file__).with_name("pipeline.py"))
  teacher = load_config_file(pathlib.Path(__file__).with_name("teacher.py"))
  teacher.model = type(teacher.model)({"name": "mlp", "widths": (1200, 1200), "dropout": 0.5,
                                       "input_dropout": 0.2})
  teacher.dataset.crop_padding = 2
  teacher.optimizer.update(learning_rate=0.03, momentum=0.9, nesterov=False,
                           momentum_start=0.5, momentum_warmup_epochs=5.0,
                           max_norm=math.sqrt(15.0))
  teacher.train.epochs = 150
  config.teacher = teacher

  student = load_config_file(pathlib.Path(__file__).with_name("teacher.py"))
  student.model.update(widths=(800, 800), dropout=0.0)
  student.dataset.crop_padding = 0  # The paper's transfer set: the training set, unshifted.
  # At T=20 against a confident teacher the early KD gradients are large: clip them.
  student.optimizer.update(learning_rate=0.05, grad_clip_norm=5.0)
  student.train.epochs = 30
  student.seeds = 3
  config.student = student

  config.distill.mode = "cached"  # Without jitter, cached and online targets are the same.
  config.distill.terms.kd.temperature = 20.0
  config.distill.terms.kd.weight = 0.9
  config.distill.terms.ce.weight = 0.1
  return config
