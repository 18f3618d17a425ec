"""MNIST -> scikit-learn's handwritten digits: adapt an MNIST teacher to the new domain,
distil it into a student with few labeled digits; writes the table into README.md.

  python experiments/digits_transfer/run.py [--seeds 3] [--workdir runs/digits_transfer]

Arms (configs/digits/transfer.py): the MNIST LeNet teacher (configs/mnist/teacher_lenet.py,
trained in WORKDIR/mnist_teacher unless it is there), evaluated on the digits as it is;
the same LeNet fine-tuned on the 126 labeled digits (model.init_from) and trained on them
from scratch; the 2x100 MLP student alone on the 126 labeled digits, and distilled on all
1258 training digits (ce on the labeled, kd from the adapted teacher on all), over seeds.
Finished runs are reused.
"""

import json
import pathlib
import time

import numpy as np

from absl import flags

from jaxkd.cli import common
from jaxkd.files import write_text
from jaxkd.config import load_config_file
from jaxkd.data import load_split
from jaxkd.run.saved import load_run, predict_logits
from jaxkd.engine.sharding import make_mesh
from jaxkd.jobs.stats import mean_std, plus_minus, welch_interval
from jaxkd.jobs.tables import markdown_table, write_between_markers
from jaxkd.run.train import train_and_evaluate

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = HERE.parents[1] / "configs"


def arm(name: str, root: pathlib.Path, seed: int = 0) -> dict:
  config = load_config_file(CONFIGS / "digits" / "transfer.py", f"{name},{root}")
  config.seed = seed
  workdir = root / name if name.startswith("teacher") else root / name / f"seed={seed}"
  return train_and_evaluate(config, workdir)


_FLAGS = {}


def define_flags():
  _FLAGS["seeds"] = flags.DEFINE_integer("seeds", 3, "Seeds per arm.", lower_bound=2)
  _FLAGS["workdir"] = common.path_flag("workdir", "runs/digits_transfer", "Root of the runs.")

def main():
  args = common.values(_FLAGS)
  root, start = pathlib.Path(args.workdir).absolute(), time.perf_counter()
  train_and_evaluate(load_config_file(CONFIGS / "mnist" / "teacher_lenet.py"), root / "mnist_teacher")
  test = load_split(load_config_file(CONFIGS / "digits" / "transfer.py").dataset, "test")
  mnist = load_run(root / "mnist_teacher", make_mesh())
  zero_shot = int(np.sum(predict_logits(mnist, test, 539, make_mesh()).argmax(-1) != test.labels))
  teachers = {name: arm(name, root)["test_errors"] for name in ("teacher", "teacher_scratch")}
  seeds = list(range(args.seeds))
  students = {name: [arm(name, root, s)["test_errors"] for s in seeds]
              for name in ("alone", "distilled")}
  gain = welch_interval(students["alone"], students["distilled"])
  line = lambda name, errors: [name, plus_minus(*mean_std(errors)), ", ".join(map(str, errors))]
  body = "\n".join([
      markdown_table([f"model (test: {len(test)} digits)", "test errors", "per seed"], [
          ["MNIST LeNet teacher, as it is (no digit seen)", zero_shot, "-"],
          ["LeNet trained on the 126 labeled digits from scratch", teachers["teacher_scratch"], "-"],
          ["MNIST LeNet adapted on the 126 labeled digits (the teacher)", teachers["teacher"], "-"],
          line("2x100 MLP student alone (126 labeled digits)", students["alone"]),
          line("2x100 MLP student distilled (126 labeled + 1132 unlabeled digits)",
               students["distilled"])]),
      "", f"Gain of distillation: {gain['difference']:.1f} fewer test errors, 95% interval "
      f"[{gain['low']:.1f}, {gain['high']:.1f}] (Welch's t, seeds {seeds}).",
      "", f"This run: {(time.perf_counter() - start) / 60:.0f} minutes (finished runs reused)."])
  write_text(root / "summary.json", json.dumps(
      {"zero_shot": zero_shot, **teachers, **students, "gain": gain}, indent=2))
  write_between_markers(HERE / "README.md", body)
  print(body)


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
