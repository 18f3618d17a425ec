"""CIFAR-100 distillation: the CRD benchmark's pairs x methods, generated, not copied.

Argument: 'TEACHER,STUDENT,METHOD[,smoke]', e.g.
  python -m jaxkd.main --config=configs/cifar100/distill.py:wrn_40_2,wrn_16_2,kd \\
      --workdir=runs/cifar100/wrn_40_2-wrn_16_2-kd
The teacher is read from runs/cifar100/TEACHER (train it with
configs/cifar100/teacher.py:TEACHER), or --config.distill.teachers='("DIR",)'.
Recipe: configs/cifar100/teacher.py. kd: ce 0.1 + kd 0.9 at T=4. Every other method:
ce 1 + the method with its usual weight (FitNet 100, AT 1000, SP 3000, VID 1,
RKD 1, PKT 30000, NST 50, CRD 0.8; DKD alpha 1, beta 8, T=4, 20 warm-up epochs),
on the features the benchmark's code uses: FitNets the second stage's output,
AT/NST/VID every stage's output, SP the last stage's, RKD/PKT/CRD the pooled
embedding. Report the best and the last test accuracy (metrics.jsonl).
"""

import pathlib

import ml_collections

from jaxkd.config_base import load_config_file

PAIRS = (("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"),
         ("resnet110", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"),
         ("vgg13", "vgg8"))
WEIGHTS = {"fitnet": 100.0, "at": 1000.0, "sp": 3000.0, "vid": 1.0, "rkd": 1.0, "pkt": 30000.0,
           "nst": 50.0, "crd": 0.8}
METHODS = ("kd", "dkd", *WEIGHTS)


def stages(model: str) -> list[str]:
  """Paths of the stage outputs (the benchmark's feat[1:-1])."""
  if model.startswith("vgg"):
    return ["block1", "block2", "block3", "block4"]
  depth = int(model.split("_")[1] if model.startswith("wrn") else model[6:].split("x")[0])
  if model.startswith("wrn"):
    return [f"block{s}_{(depth - 4) // 6 - 1}" for s in (1, 2, 3)]
  return [f"layer{s}_{(depth - 2) // 6 - 1}" for s in (1, 2, 3)]


def terms(method: str, teacher: str, student: str) -> dict:
  if method == "kd":
    return {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
  if method == "dkd":
    return {"ce": {"weight": 1.0}, "dkd": {"weight": 1.0, "alpha": 1.0, "beta": 8.0,
                                           "temperature": 4.0, "warmup_epochs": 20.0}}
  weight = WEIGHTS[method]
  pairs = {"fitnet": [(stages(student)[1], stages(teacher)[1])],
           "sp": [(stages(student)[-1], stages(teacher)[-1])]}.get(
               method, [("pool", "pool")] if method in ("rkd", "pkt", "crd")
               else list(zip(stages(student), stages(teacher))))
  result = {"ce": {"weight": 1.0}}
  for i, (s, t) in enumerate(pairs):
    label = method if len(pairs) == 1 else f"{method}{i + 1}"
    result[label] = {"term": method, "weight": weight, "student": s, "teacher": t}
  return result


def get_config(arg: str = "wrn_40_2,wrn_16_2,kd"):
  teacher, student, method, *flags = arg.split(",")
  if method not in METHODS:
    raise ValueError(f"unknown method '{method}'; known: {', '.join(METHODS)}")
  config = load_config_file(pathlib.Path(__file__).with_name("teacher.py"),
                            ",".join([student, *flags]))
  config.distill.terms = ml_collections.ConfigDict(terms(method, teacher, student))
  config.distill.teachers = (f"runs/cifar100/{teacher}",)
  if "smoke" in flags and method == "crd":
    config.distill.terms.crd.num_negatives = 16
  return config
