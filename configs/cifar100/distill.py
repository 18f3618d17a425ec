"""CIFAR-100 distillation: the CRD benchmark's pairs x methods, generated, not copied.

Argument: 'TEACHER,STUDENT,METHOD[,smoke]', e.g.
  python -m jaxkd train --config=configs/cifar100/distill.py:wrn_40_2,wrn_16_2,kd \\
      --workdir=runs/cifar100/wrn_40_2-wrn_16_2-kd
The teacher is read from runs/cifar100/TEACHER (train it with
configs/cifar100/teacher.py:TEACHER), or --config.distill.teachers='("DIR",)'.
Recipe: configs/cifar100/teacher.py (lr 0.01 for MobileNetV2/ShuffleNet students;
weight decay on every parameter, as the benchmark's SGD).

Which reference each method follows (REFERENCES below; RepDistiller is the CRD
benchmark's code, scripts/run_cifar_distill.sh and train_student.py):
- kd: RepDistiller, ce 0.1 + kd 0.9 at T=4.
- dkd: mdistiller configs/cifar100/dkd/<pair>.yaml: ce 1 + DKD alpha 1, T=4, beta per
  pair (2 for resnet56/110 -> resnet20/32, 6 for vgg13 and wrn_40_2 teachers, else 8),
  20 warm-up epochs counted from epoch 1.
- fitnet, at, sp, cc, vid, rkd, pkt, nst, crd: RepDistiller, ce 1 + the method with the
  script's weight (FitNet 100, AT 1000, SP 3000, CC 0.02, VID 1, RKD 1, PKT 30000,
  NST 50, CRD 0.8) on the features train_student.py uses: FitNets feat[2] (the second
  stage's output) through ConvReg (conv + BN + ReLU), AT/NST/VID every stage's output
  (feat[1:-1]), SP the last stage's, RKD/PKT/CC/CRD the pooled embedding; CRD draws
  16384 negatives from other classes; CC in the code's form (`form: crd_code`).
- ab: RepDistiller, a 30-epoch initialisation stage on the pre-activation stage
  outputs of both models (feat[1:-1] with preact=True), layers weighted 2^(i-n+1),
  through Connector (ConvReg without ReLU where shapes differ); it trains the student's
  feature layers (not its classifier) and the connectors, the student in inference
  mode (model_s.eval()); then ce alone.
- fsp: RepDistiller, a 30-epoch initialisation stage on feat[:-1] (the stem and every
  stage), weight 1 (the sum of the layer-pair losses), trained and run as AB's; then ce.
- ft: RepDistiller, a 30-epoch paraphraser stage on the teacher's last stage (lr 0.01
  for ResNet/WRN students, as helper/pretrain.py), then ce 1 + FT 200 (`form: crd_code`).
- reviewkd: mdistiller configs/cifar100/reviewkd.yaml: ce 1 + ReviewKD 5 with a
  20-epoch warm-up counted from epoch 1; the student's stage outputs (`feats`) plus its
  embedding, the teacher's pre-activation stage outputs (`preact_feats[1:]`) plus its
  embedding.
Pairs a method cannot bridge (FSP needs equal channels; layer-matching methods across
architectures) are refused by name. Report the last epoch's test accuracy (the
benchmark reports the best test accuracy over training, which selects on the test
set); with --config.dataset.validation_size=5000 a run also selects a step on 5000
held-out training images and reports the test accuracy there.

The `smoke` variant differs from the real recipe in length (2 steps), batch (8), data
(tfds mock data in tests), CRD's negatives (16: the mock set has 16 examples) and a
gradient clip at norm 1: a 2-step smoke teacher's BatchNorm statistics are barely
updated, so its features (and FT's paraphraser loss, 1e25 within 2 steps) blow up
without one. The real recipe has no clip.
"""

import pathlib

import ml_collections

from jaxkd.config import load_config_file
from jaxkd.models.cifar import VGG_BLOCKS

PAIRS = (("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"),
         ("resnet110", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"),
         ("vgg13", "vgg8"))
# Across architectures (CRD table 2, without its ResNet50 teacher).
CROSS_PAIRS = (("vgg13", "mobilenetv2"), ("resnet32x4", "shufflenetv1"),
               ("resnet32x4", "shufflenetv2"), ("wrn_40_2", "shufflenetv1"))
WEIGHTS = {"fitnet": 100.0, "at": 1000.0, "sp": 3000.0, "cc": 0.02, "vid": 1.0, "rkd": 1.0,
           "pkt": 30000.0, "ab": 1.0, "ft": 200.0, "fsp": 1.0, "nst": 50.0, "crd": 0.8,
           "reviewkd": 5.0}
REFERENCES = {**{m: "RepDistiller" for m in ("kd", "fitnet", "at", "sp", "cc", "vid", "rkd",
                                             "pkt", "ab", "ft", "fsp", "nst", "crd")},
              "dkd": "mdistiller", "reviewkd": "mdistiller"}
# mdistiller's configs/cifar100/dkd/<pair>.yaml (default beta 8).
DKD_BETA = {("resnet56", "resnet20"): 2.0, ("resnet110", "resnet32"): 2.0,
            ("resnet110", "resnet20"): 2.0, ("vgg13", "vgg8"): 6.0, ("vgg13", "mobilenetv2"): 6.0,
            ("wrn_40_2", "wrn_16_2"): 6.0, ("wrn_40_2", "wrn_40_1"): 6.0}
# FT's paraphraser stage: lr 0.01 for these students (RepDistiller helper/pretrain.py).
FT_SMALL_LR_STUDENTS = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56",
                        "resnet110", "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2",
                        "wrn_40_1", "wrn_40_2")
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


def preact_stages(model: str) -> list[str]:
  """Paths of the pre-activation stage outputs (the benchmark's feat[1:-1] with preact=True)."""
  if model.startswith("vgg"):
    return [f"block{b}/bn{len(VGG_BLOCKS[model][b]) - 1}" for b in (1, 2, 3, 4)]
  if model.startswith("wrn"):  # The next stage's first BatchNorm, then the final one.
    return ["block2_0/bn1", "block3_0/bn1", "bn"]
  if model.startswith("resnet"):
    return [f"{path}/preact" for path in stages(model)]
  raise ValueError(f"{model} has no pre-activation paths in this grid")


def stem(model: str) -> str:
  """Path of the benchmark's feat[0]: the stem's output (after its ReLU where it has one)."""
  return {"vgg": "block0", "wrn": "conv1", "res": "stem"}[model[:3]]


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
    return {"ce": {"weight": 1.0}, "dkd": {"weight": 1.0, "alpha": 1.0,
                                           "beta": DKD_BETA.get((teacher, student), 8.0),
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
    pairs = [((*s, "pool"), (*preact_stages(teacher), "pool"))]
    options = {"weight_schedule": "epoch_warmup", "weight_warmup_epochs": 20.0}
  else:  # at, nst, vid: every stage.
    pairs = list(zip(s, t))
  if method in ("cc", "ft"):
    options["form"] = "crd_code"
  return {"ce": {"weight": 1.0}, **_feature_terms(method, pairs, weight, **options)}


def init_stages(method: str, teacher: str, student: str) -> tuple:
  s, t = stages(student), stages(teacher)
  base = {"name": "init", "epochs": INIT_EPOCHS, "schedule": {"name": "constant"}}
  # AB and FSP: the benchmark's init optimizer holds the student's feature modules (not
  # its classifier) and the connectors, and runs the student with model_s.eval().
  features_only = {"freeze": ("params/fc",), "student_eval_mode": True}
  if method == "ab":
    s, t = preact_stages(student), preact_stages(teacher)
    n = len(s)
    stage_terms = {f"ab{i + 1}": {"term": "ab", "weight": 2.0 ** (i - n + 1), "student": a,
                                  "teacher": b} for i, (a, b) in enumerate(zip(s, t))}
    return ({**base, **features_only, "terms": stage_terms},)
  if method == "fsp":
    return ({**base, **features_only,
             "terms": {"fsp": {"weight": WEIGHTS["fsp"], "student": (stem(student), *s),
                               "teacher": (stem(teacher), *t)}}},)
  if method == "ft":
    stage = {**base, "name": "paraphraser", "freeze": ("params", "aux/ft/translator"),
             "terms": {"ft": {"term": "ft_paraphraser", "weight": 1.0, "student": s[-1],
                              "teacher": t[-1]}}}
    if student in FT_SMALL_LR_STUDENTS:
      stage["optimizer"] = {"learning_rate": 0.01}
    return (stage,)
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
  if "smoke" in flags:  # Why the clip: see the module docstring.
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
