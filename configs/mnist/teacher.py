"""MNIST teacher: a 2x1200 ReLU MLP regularised with dropout and input jitter
(random shifts of up to 2 pixels), on real MNIST (offline copy).

Run:
  python -m jaxkd train --config=configs/mnist/teacher.py --workdir=runs/mnist_teacher

Expect: 98.82% test accuracy (118 errors of 10000) in about 2 minutes on 2 CPU
cores (seed 0). Without the jitter and with 8 epochs: 98.66% in 77 s.
"""

from jaxkd.config import base_config


def get_config():
  config = base_config()
  config.dataset.name = "mnist"
  config.model.name = "mlp"
  config.model.widths = (1200, 1200)
  config.model.dropout = 0.2
  config.dataset.crop_padding = 2  # Input jitter (Hinton et al. 2015).
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.1
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.schedule.name = "cosine"
  config.train.batch_size = 128
  config.train.epochs = 12
  return config
