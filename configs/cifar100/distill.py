"""CIFAR-100 distillation: the CRD benchmark's pairs x methods, generated, not copied.

Argument: 'TEACHER,STUDENT,METHOD[,smoke]', e.g.
  python -m jaxkd.main --config=configs/cifar100/distill.py:wrn_40_2,wrn_16_2,kd \\
      --workdir=runs/cifar100/wrn_40_2-wrn_16_2-kd
The teacher is read from runs/cifar100/TEACHER (train it with
configs/cifar100/teacher.py:TEACHER), or --config.distill.teachers='("DIR",)'.
Recipe: configs/cifar100/teacher.py (lr 0.01 for MobileNetV2/ShuffleNet students).
kd: ce 0.1 + kd 0.9 at T=4. Every other method: ce 1 + the method with its usual
weight (FitNet 100, AT 1000, SP 3000, CC 0.02, VID 1, RKD 1, PKT 30000, FT 200,
NST 50, CRD 0.8, ReviewKD 1 with a 20-epoch warm-up; DKD alpha 1, beta 8, T=4,
20 warm-up epochs), on the features the benchmark's code uses: FitNets the second
stage's output, AT/NST/VID every stage's, SP the last stage's, RKD/PKT/CC/CRD the
pooled embedding, FT the last stage's, ReviewKD every stage's plus the embedding.
AB (weight 1, layers weighted 1/4, 1/2, 1) and FSP (weight 50) train the student
in a 30-epoch initialisation stage (constant lr), then with ce alone; FT's
paraphraser trains in a 30-epoch stage first (config.stages). CC and FT use the
benchmark code's forms (`form: crd_code`). Pairs a method cannot bridge (FSP needs
equal channels; layer-matching methods across architectures) are refused by name.
Report the best and the last test accuracy (metrics.jsonl).
"""

import pathlib

import ml_collections

from jaxkd.config_base import load_config_file

PAIRS = (("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"),
         ("resnet110", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"),
         ("vgg13", "vgg8"))
# Across architectures (CRD table 2, without its ResNet50 teacher).
CROSS_PAIRS = (("vgg13", "mobilenetv2"), ("resnet32x4", "shufflenetv1"),
               ("resnet32x4", "shufflenetv2"), ("wrn_40_2", "shufflenetv1"))
WEIGHTS = {"fitnet": 100.0, "at": 1000.0, "sp": 3000.0, "cc": 0.02, "vid": 1.0, "rkd": 1.0,
           "pkt": 30000.0, "ab": 1.0, "ft": 200.0, "fsp": 50.0, "nst": 50.0, "crd": 0.8,
           "reviewkd": 1.0}
METHODS = ("kd", "dkd", *WEIGHTS)
# Methods that compare embeddings or relations, not layer by layer: any two architectures.
CROSS_METHODS = ("kd", "dkd", "sp", "cc", "rkd", "pkt", "crd", "reviewkd")
SMALL_LR_STUDENTS = ("mobilenetv2", "shufflenetv1", "shufflenetv2")
INIT_EPOCHS = 30.0


def stages(model: str) -> list[str]:
  """Paths of the stage outputs (the benchmark's feat[1:-1])."""
  if model.startswith("vgg"):
    return ["block1", "block2", "block3", "block4"]
  if model in SMALL_LR_STUDENTS:
    return MOBILE_STAGES[model]
  depth = int(model.split("_")[1] if model.startswith("wrn") else model[6:].split("x")[0])
  if model.startswith("wrn"):
    return [f"block{s}_{(depth - 4) // 6 - 1}" for s in (1, 2, 3)]
  return [f"layer{s}_{(depth - 2) // 6 - 1}" for s in (1, 2, 3)]


MOBILE_STAGES = {"mobilenetv2": ["blocks_1", "blocks_2", "blocks_4", "blocks_6"],
                 "shufflenetv1": ["layer1", "layer2", "layer3"],
                 "shufflenetv2": ["layer1", "layer2", "layer3"]}


def applicable(teacher: str, student: str, method: str) -> str | None:
  """None, or why this method does not apply to this pair."""
  if (teacher, student) in CROSS_PAIRS and method not in CROSS_METHODS:
    return (f"{method} matches layers one to one, which {teacher} -> {student} (different "
            f"architectures) does not allow; use one of {CROSS_METHODS}")
  if method == "fsp" and (teacher, student) == ("wrn_40_2", "wrn_40_1"):
    return "fsp needs equal channels per stage, and wrn_40_1 has half of wrn_40_2's"
  return None


def _feature_terms(method: str, pairs: list, weight: float, **options) -> dict:
  result = {}
  for i, (s, t) in enumerate(pairs):
    label = method if len(pairs) == 1 else f"{method}{i + 1}"
    result[label] = {"term": method, "weight": weight, "student": s, "teacher": t, **options}
  return result


def terms(method: str, teacher: str, student: str) -> dict:
  """The main stage's objective."""
  s, t = stages(student), stages(teacher)
  if method == "kd":
    return {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
  if method == "dkd":
    return {"ce": {"weight": 1.0}, "dkd": {"weight": 1.0, "alpha": 1.0, "beta": 8.0,
                                           "temperature": 4.0, "warmup_epochs": 20.0}}
  if method in ("ab", "fsp"):  # Their distillation is the initialisation stage.
    return {"ce": {"weight": 1.0}}
  weight, options = WEIGHTS[method], {}
  if method == "fitnet":
    pairs = [(s[1], t[1])]
  elif method in ("sp", "ft"):
    pairs = [(s[-1], t[-1])]
  elif method in ("rkd", "pkt", "crd", "cc"):
    pairs = [("pool", "pool")]
  elif method == "reviewkd":
    pairs = [((*s, "pool"), (*t, "pool"))]
    options = {"weight_schedule": "warmup", "weight_warmup_epochs": 20.0}
  else:  # at, nst, vid: every stage.
    pairs = list(zip(s, t))
  if method in ("cc", "ft"):
    options["form"] = "crd_code"
  return {"ce": {"weight": 1.0}, **_feature_terms(method, pairs, weight, **options)}


def init_stages(method: str, teacher: str, student: str) -> tuple:
  s, t = stages(student), stages(teacher)
  base = {"name": "init", "epochs": INIT_EPOCHS, "schedule": {"name": "constant"}}
  if method == "ab":
    n = len(s)
    stage_terms = {f"ab{i + 1}": {"term": "ab", "weight": 2.0 ** (i - n + 1), "student": a,
                                  "teacher": b} for i, (a, b) in enumerate(zip(s, t))}
    return ({**base, "terms": stage_terms},)
  if method == "fsp":
    return ({**base, "terms": {"fsp": {"weight": WEIGHTS["fsp"], "student": tuple(s),
                                       "teacher": tuple(t)}}},)
  if method == "ft":
    return ({**base, "name": "paraphraser", "freeze": ("params", "aux/ft/translator"),
             "terms": {"ft": {"term": "ft_paraphraser", "weight": 1.0, "student": s[-1],
                              "teacher": t[-1]}}},)
  return ()


def get_config(arg: str = "wrn_40_2,wrn_16_2,kd"):
  teacher, student, method, *flags = arg.split(",")
  if method not in METHODS:
    raise ValueError(f"unknown method '{method}'; known: {', '.join(METHODS)}")
  reason = applicable(teacher, student, method)
  if reason:
    raise ValueError(f"{teacher},{student},{method}: {reason}.")
  config = load_config_file(pathlib.Path(__file__).with_name("teacher.py"),
                            ",".join([student, *flags]))
  config.distill.terms = ml_collections.ConfigDict(terms(method, teacher, student))
  config.distill.teachers = (f"runs/cifar100/{teacher}",)
  config.stages = tuple(ml_collections.ConfigDict(s) for s in init_stages(method, teacher, student))
  if method == "ft":
    config.train.freeze = ("aux/ft/paraphraser",)
  if "smoke" in flags:  # A 2-step smoke teacher's features are huge: clip the steps.
    config.optimizer.grad_clip_norm = 1.0
    if method == "crd":
      config.distill.terms.crd.num_negatives = 16
    for stage in config.stages:
      stage.epochs, stage.num_steps = 0.0, 2
  return config


def grid(smoke: bool = False) -> list[str]:
  """Every applicable 'TEACHER,STUDENT,METHOD' argument."""
  return [f"{t},{s},{m}" + (",smoke" if smoke else "")
          for (t, s) in PAIRS + CROSS_PAIRS
          for m in (METHODS if (t, s) in PAIRS else CROSS_METHODS) if not applicable(t, s, m)]
