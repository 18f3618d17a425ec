"""Hinton et al. 2015's omitted class: distil into a student whose transfer set holds no 3,
then correct its logit bias on the validation split; writes the table into README.md.

  python experiments/mnist_omitted_class/run.py [--seeds 3] [--workdir runs/mnist_omitted_class]

The teacher is the demo's (configs/mnist/teacher_lenet.py, trained in WORKDIR/teacher
unless it is there). The student is the demo's 2x100 MLP (configs/mnist/pipeline.py),
16 epochs on ce 0.1 + kd 0.9 at T=4 from the teacher's soft labels, cached for the
transfer set: MNIST's training split less 5000 validation images, less every 3
(transfer.drop_classes = (3,)). After training, a per-class logit bias is fitted on the
5000 validation images (bias_correction.source = 'validation'), never on the test set.
"""

import json
import pathlib
import time

import numpy as np

from absl import flags

from jaxkd.cli import common
from jaxkd.files import write_text
from jaxkd.run.assemble import transfer_set_of
from jaxkd.config import load_config_file
from jaxkd.data import load_split
from jaxkd.jobs.tables import markdown_table, write_between_markers
from jaxkd.run.saved import load_run, predict_logits
from jaxkd.engine.sharding import make_mesh
from jaxkd.run.soft_labels import write_soft_labels
from jaxkd.jobs.stats import mean_std, plus_minus
from jaxkd.run.train import train_and_evaluate

HERE = pathlib.Path(__file__).resolve().parent
MNIST = HERE.parents[1] / "configs" / "mnist"


def student_config(cache: pathlib.Path, seed: int):
  pipeline = load_config_file(MNIST / "pipeline.py")
  config = pipeline.student
  config.unlock()
  config.seed = seed
  config.dataset.validation_size = 5000
  config.transfer.drop_classes = (3,)
  config.distill.terms = pipeline.distill.terms
  config.distill.soft_labels = (str(cache),)
  config.bias_correction.source = "validation"
  return config


_FLAGS = {}


def define_flags():
  _FLAGS["seeds"] = flags.DEFINE_integer("seeds", 3, "Seeds per arm.", lower_bound=2)
  _FLAGS["workdir"] = common.path_flag("workdir", "runs/mnist_omitted_class", "Root of the runs.")

def main():
  args = common.values(_FLAGS)
  root, start = pathlib.Path(args.workdir).absolute(), time.perf_counter()
  train_and_evaluate(load_config_file(MNIST / "teacher_lenet.py"), root / "teacher")
  cache = root / "soft_labels_no_threes.npz"
  if not cache.exists():
    write_soft_labels(root / "teacher", cache, "float32", data=transfer_set_of(student_config(cache, 0)))
  test = load_split(student_config(cache, 0).dataset, "test")
  threes, mesh = test.labels == 3, make_mesh()
  rows = []
  for seed in range(args.seeds):
    workdir = root / f"seed={seed}"
    result = train_and_evaluate(student_config(cache, seed), workdir)
    fitted = json.loads((workdir / "bias_correction.json").read_text())
    logits = predict_logits(load_run(workdir, mesh), test, 1000, mesh)
    wrong = lambda z: int(np.sum(z[threes].argmax(-1) != 3))
    rows.append({"seed": seed, "errors": result["test_errors"],
                 "errors_corrected": result["test_errors_corrected"],
                 "threes_wrong": wrong(logits), "threes_wrong_corrected":
                     wrong(logits + np.asarray(fitted["bias"], np.float32)),
                 "bias_3": fitted["bias"][3]})
  teacher = int(np.sum(predict_logits(load_run(root / "teacher", mesh), test, 1000, mesh)
                       .argmax(-1) != test.labels))
  cell = lambda key: plus_minus(*mean_std([r[key] for r in rows]))
  seeds = ", ".join(str(r["seed"]) for r in rows)
  body = "\n".join([
      markdown_table(["", f"test errors (of {len(test)})",
                      f"errors on the {int(threes.sum())} test 3s", "per seed"], [
          ["teacher (saw every class)", teacher, "-", "-"],
          ["student, no 3 in its transfer set", cell("errors"), cell("threes_wrong"),
           ", ".join(str(r["errors"]) for r in rows)],
          ["the same, bias corrected on validation", cell("errors_corrected"),
           cell("threes_wrong_corrected"), ", ".join(str(r["errors_corrected"]) for r in rows)]]),
      "", f"Fitted bias of the 3 logit (the biases are centred to mean 0): {cell('bias_3')} "
      f"(seeds {seeds}).",
      "", f"This run: {(time.perf_counter() - start) / 60:.0f} minutes (finished runs reused)."])
  write_text(root / "summary.json", json.dumps({"teacher": teacher, "rows": rows}, indent=2))
  write_between_markers(HERE / "README.md", body)
  print(body)


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
