"""Who teaches whom, on MNIST, as one graph of runs (job 'graph': jaxkd.jobs.graph).

Every student is the demo's 2x100 MLP (configs/mnist/pipeline.py's: no dropout, no jitter,
16 epochs, lr 0.05); the teacher is the demo's LeNet (configs/mnist/teacher_lenet.py).
Runs, each over `seeds` seeds (seed i taught by seed i of its teachers):

  teacher        the LeNet
  alone          the student on the labels (ce)
  kd             ce 0.1 + kd 0.9 at T = 4 from the teacher (Hinton et al. 2015)
  assistant      a 2x400 MLP taught like kd by the teacher
  takd           the student taught by the assistant (Mirzadeh et al. 2020)
  ban1..ban3     born-again networks (Furlanello et al. 2018): generation 1 taught by
                 `alone` (the same architecture trained on labels), each next one by the
                 one before
  ban_ensemble   a student taught by the average of ban1..ban3 (the paper's BAN ensemble
                 as teacher)
  dml            a cohort of 2 students on ce + dml (Zhang et al. 2018; each member a row)
  tfkd_virtual   ce 0.1 + Tf-KD's virtual teacher 0.9 (Yuan et al. 2020)
  cs_kd          ce + cs_kd at T = 4, weight 1 (Yun et al. 2020)
  mean_teacher   ce + soft_mse to the student's moving average, decay 0.99 (Tarvainen &
                 Valpola 2017)

Run (experiments/schemes/ has the table):
  python -m jaxkd train --config=configs/mnist/schemes.py --workdir=runs/schemes
  (--config.seeds=3; --config.runs.kd.train.epochs=8 changes one run)
"""

import copy
import pathlib

import ml_collections

from jaxkd.config import graph_config, load_config_file

HERE = pathlib.Path(__file__).parent


def _student(terms: dict, teachers: tuple = ()) -> ml_collections.ConfigDict:
  student = copy.deepcopy(load_config_file(HERE / "pipeline.py").student)
  del student["seeds"]  # The pipeline's field; a graph's seeds are config.seeds.
  student.distill.terms = ml_collections.ConfigDict(terms)
  student.distill.teachers = teachers
  return student


def get_config():
  config = graph_config()
  config.seeds = 3
  config.baseline = "alone"
  kd = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
  runs = {"teacher": load_config_file(HERE / "teacher_lenet.py"),
          "alone": _student({"ce": {"weight": 1.0}}),
          "kd": _student(kd, ("teacher",)),
          "assistant": _student(kd, ("teacher",)),
          "takd": _student(kd, ("assistant",)),
          "ban1": _student(kd, ("alone",)),
          "ban2": _student(kd, ("ban1",)),
          "ban3": _student(kd, ("ban2",)),
          "ban_ensemble": _student(kd, ("ban1", "ban2", "ban3")),
          "dml": _student({"ce": {"weight": 1.0}, "dml": {"weight": 1.0}}),
          "tfkd_virtual": _student({"ce": {"weight": 0.1}, "virtual_teacher": {"weight": 0.9}}),
          "cs_kd": _student({"ce": {"weight": 1.0}, "cs_kd": {"weight": 1.0,
                                                              "temperature": 4.0}}),
          "mean_teacher": _student({"ce": {"weight": 1.0}, "soft_mse": {"weight": 1.0}})}
  runs["assistant"].model.widths = (400, 400)
  runs["dml"].distill.cohort = 2
  runs["mean_teacher"].distill.mean_teacher_decay = 0.99
  config.runs = ml_collections.ConfigDict(runs)
  return config
