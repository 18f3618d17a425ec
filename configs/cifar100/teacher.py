"""CIFAR-100 training of one model with the CRD benchmark's recipe (Tian et al. 2020).

240 epochs, SGD momentum 0.9, lr 0.05 divided by 10 at epochs 150/180/210, weight
decay 5e-4 on every parameter (biases and BatchNorm too, as the benchmark's SGD),
batch 64, random crop 32 with padding 4 and horizontal flip; lr 0.01 for
MobileNetV2 and ShuffleNet (as the benchmark trains them).

Run (the argument is the model; add ',smoke' for a 2-step run on any data):
  python -m jaxkd train --config=configs/cifar100/teacher.py:resnet56 --workdir=runs/cifar100/resnet56
Teachers of the CRD pairs: resnet56, resnet110, resnet32x4, wrn_40_2, vgg13.
Published accuracies to expect (CRD, table 1): resnet56 72.34, resnet110 74.31,
resnet32x4 79.42, wrn_40_2 75.61, vgg13 74.64.
"""

from jaxkd.config import base_config

TEACHERS = ("resnet56", "resnet110", "resnet32x4", "wrn_40_2", "vgg13")
SMALL_LR_MODELS = ("mobilenetv2", "shufflenetv1", "shufflenetv2")


def get_config(arg: str = "resnet56"):
  model, *flags = arg.split(",")
  config = base_config()
  config.dataset.name = "cifar100"
  config.model.name = model
  # The benchmark's SGD decays every parameter, biases and BatchNorm scales included.
  config.optimizer.update(name="sgd", learning_rate=0.01 if model in SMALL_LR_MODELS else 0.05,
                          momentum=0.9, weight_decay=5e-4, decay_biases_and_norms=True)
  config.schedule.update(name="step", boundaries_epochs=(150, 180, 210), decay_factor=0.1)
  config.train.update(batch_size=64, epochs=240, eval_batch_size=1000, log_every_steps=100)
  if "smoke" in flags:
    config.train.update(num_steps=2, batch_size=8, eval_batch_size=8, log_every_steps=1)
  return config
