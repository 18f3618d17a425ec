"""ImageNet: ResNet-34 -> ResNet-18 with kd (ce 0.5 + kd 0.5 at T=1), the recipe of
configs/imagenet/teacher.py (100 epochs, lr 0.1 x batch/256, /10 at 30/60/90, wd 1e-4).

Run (the teacher trained first with configs/imagenet/teacher.py:resnet34):
  python -m jaxkd train --config=configs/imagenet/distill.py --workdir=runs/imagenet/resnet34-resnet18-kd
Argument ',smoke' (e.g. distill.py:smoke) gives a 2-step run at 32x32. The CRD paper
reports 70.66% top-1 for this KD student (69.76% without a teacher).
"""

import pathlib

import ml_collections

from jaxkd.config import load_config_file


def get_config(arg: str = ""):
  flags = [f for f in arg.split(",") if f]
  config = load_config_file(pathlib.Path(__file__).with_name("teacher.py"),
                            ",".join(["resnet18", *flags]))
  config.distill.terms = ml_collections.ConfigDict(
      {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 1.0}})
  config.distill.teachers = ("runs/imagenet/resnet34",)
  return config
