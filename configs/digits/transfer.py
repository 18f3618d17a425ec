"""MNIST -> handwritten digits (scikit-learn's 8x8 UCI digits as 28x28 images): a teacher
pretrained on MNIST, adapted to the new domain, distilled into a small student that has
few labeled digits. experiments/digits_transfer/ runs every arm and writes the table.

The argument picks the arm; WORKDIR_ROOT/mnist_teacher is the MNIST LeNet of
configs/mnist/teacher_lenet.py (the demo's teacher):
  teacher           the MNIST LeNet fine-tuned on the labeled digits (model.init_from;
                    every layer trains, the head keeps its 10 classes)
  teacher_scratch   the same LeNet trained on the labeled digits from scratch
  alone             the 2x100 MLP student on the labeled digits only
  distilled         the same student on every training digit: ce on the labeled ones,
                    kd (T=4) from the adapted teacher on all (the rest are unlabeled)
The labeled digits: transfer.labeled_fraction = 0.1 of the 1258 training digits (126,
drawn with seed 0), the same for every arm. Every arm trains 1500 steps of 32.

  python -m jaxkd train --config=configs/digits/transfer.py:alone,runs/digits_transfer \\
      --workdir=runs/digits_transfer/alone/seed=0
"""

import ml_collections

from jaxkd.config import base_config

LABELED_FRACTION = 0.1
STEPS = 1500


def _digits(config: ml_collections.ConfigDict, keep_unlabeled: bool) -> None:
  config.dataset.name = "sklearn_digits"
  config.transfer.labeled_fraction = LABELED_FRACTION
  config.transfer.labeled_seed = 0
  config.transfer.unlabeled = "keep" if keep_unlabeled else "drop"
  config.train.update(batch_size=32, num_steps=STEPS, eval_batch_size=539, log_every_steps=100,
                      eval_every_steps=250, checkpoint_every_steps=500)


def get_config(arg: str = "alone,runs/digits_transfer"):
  arm, root = arg.split(",")
  config = base_config()
  if arm in ("teacher", "teacher_scratch"):
    config.model = ml_collections.ConfigDict({"name": "lenet", "batch_norm": True,
                                             "width_multiplier": 2})
    config.optimizer.update(name="sgd", learning_rate=0.01, momentum=0.9, nesterov=True)
    config.schedule.name = "cosine"
    if arm == "teacher":
      config.model.init_from = f"{root}/mnist_teacher"
    _digits(config, keep_unlabeled=False)
    return config
  if arm not in ("alone", "distilled"):
    raise ValueError(f"arm '{arm}': one of teacher, teacher_scratch, alone, distilled.")
  config.model = ml_collections.ConfigDict({"name": "mlp", "widths": (100, 100)})
  config.optimizer.update(name="sgd", learning_rate=0.05, momentum=0.9, grad_clip_norm=5.0)
  _digits(config, keep_unlabeled=arm == "distilled")
  if arm == "distilled":
    config.distill.teachers = (f"{root}/teacher",)
    config.distill.terms = ml_collections.ConfigDict({
        "ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 4.0}})
  return config
