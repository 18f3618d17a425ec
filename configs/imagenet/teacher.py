"""ImageNet (imagenet2012, prepared in the tfds data dir) training of one ResNet.

100 epochs, SGD momentum 0.9 (nesterov off), lr 0.1 x batch / 256 divided by 10 at
epochs 30/60/90, weight decay 1e-4, batch 256, random-resized crop 224 and flip.

Run (argument: resnet18 | resnet34 | resnet50, add ',smoke' for 2 steps at 32x32):
  python -m jaxkd train --config=configs/imagenet/teacher.py:resnet34 --workdir=runs/imagenet/resnet34
Expect about 73.3% top-1 for resnet34 (torchvision's reference).
"""

from jaxkd.config import base_config


def get_config(arg: str = "resnet34"):
  model, *flags = arg.split(",")
  config = base_config()
  config.dataset.name = "imagenet2012"
  config.model.name = model
  batch_size = 256
  config.optimizer.update(name="sgd", learning_rate=0.1 * batch_size / 256, momentum=0.9,
                          weight_decay=1e-4)
  config.schedule.update(name="step", boundaries_epochs=(30, 60, 90), decay_factor=0.1)
  config.train.update(batch_size=batch_size, epochs=100, eval_batch_size=1000, log_every_steps=100)
  if "smoke" in flags:
    config.dataset.image_size = 32
    config.train.update(num_steps=2, batch_size=8, eval_batch_size=8, log_every_steps=1)
  return config
