"""MNIST teacher: a 2x1200 ReLU MLP with dropout, on real MNIST (offline copy).

Run:
  python -m jaxkd.main --config=configs/mnist/teacher.py --workdir=runs/mnist_teacher

Expect: >= 98.0% test accuracy over all 10000 test images in a few minutes on 2 CPU cores.
"""

from jaxkd.config_base import base_config


def get_config():
  config = base_config()
  config.dataset.name = "mnist"
  config.model.name = "mlp"
  config.model.widths = (1200, 1200)
  config.model.dropout = 0.2
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.1
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.schedule.name = "cosine"
  config.train.batch_size = 128
  config.train.epochs = 8
  return config
