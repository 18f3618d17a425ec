"""Golden fixtures from the authors' code of distillation without a teacher network, for
tests/test_distill_virtual_teacher.py and tests/test_distill_cs_kd.py: Tf-KD's manually
designed teacher (loss_kd_regularization of Yuan et al.'s my_loss_function.py) and CS-KD's
KDLoss (the class in alinlab/cs-kd's train.py, read out of that script and run: the script
itself starts training when imported), each run from its source on seeded logits (and
labels): the value and its gradient with respect to the (example) logits. The tests need
no torch.

  git clone https://github.com/yuanli2333/Teacher-free-Knowledge-Distillation /tmp/tfkd
  git clone https://github.com/alinlab/cs-kd /tmp/cskd
  /tmp/refenv/bin/python tests/reference/make_self_kd_fixtures.py --tfkd /tmp/tfkd --cskd /tmp/cskd
"""

import argparse
import ast
import importlib.util
import json
import pathlib
import subprocess
import types

import numpy as np
import torch

OUT = pathlib.Path(__file__).resolve().parent / "fixtures" / "self_kd.json"
SETTINGS = [dict(reg_temperature=20.0, multiplier=100.0), dict(reg_temperature=1.0, multiplier=1.0),
            dict(reg_temperature=40.0, multiplier=50.0)]


def _commit(path: pathlib.Path) -> str:
  found = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
  return found or (path / "COMMIT").read_text().strip()


def cs_kd_cases(cskd: pathlib.Path) -> dict:
  """CS-KD's KDLoss(temp)(outputs, outputs_cls) on seeded example and partner logits."""
  tree = ast.parse((cskd / "train.py").read_text())
  source = next(node for node in tree.body if isinstance(node, ast.ClassDef)
                and node.name == "KDLoss")
  namespace = {"torch": torch, "nn": torch.nn}
  exec(compile(ast.Module([source], []), "cs-kd/train.py", "exec"), namespace)
  rng = np.random.default_rng(1)
  examples = rng.normal(0, 2, (6, 5)).astype(np.float32)
  partners = rng.normal(0, 2, (6, 5)).astype(np.float32)
  cases = []
  for temperature in (4.0, 1.0):
    tensor = torch.tensor(examples, requires_grad=True)
    loss = namespace["KDLoss"](temperature)(tensor, torch.tensor(partners))
    loss.backward()
    cases.append({"temperature": temperature, "loss": float(loss),
                  "grad": tensor.grad.numpy().tolist()})
  return {"source": "alinlab/cs-kd", "commit": _commit(cskd), "examples": examples.tolist(),
          "partners": partners.tolist(), "cases": cases}


def main(tfkd: pathlib.Path, cskd: pathlib.Path) -> None:
  torch.Tensor.cuda = lambda self, *args, **kwargs: self  # their code moves to the GPU
  spec = importlib.util.spec_from_file_location("tfkd_losses", tfkd / "my_loss_function.py")
  losses = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(losses)
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (8, 10)).astype(np.float32)
  labels = rng.integers(0, 10, 8)
  cases = []
  for setting in SETTINGS:
    tensor = torch.tensor(logits, requires_grad=True)
    # reg_alpha = 1: their (1 - alpha) CE + alpha * regularizer is the regularizer alone.
    params = types.SimpleNamespace(reg_alpha=1.0, **setting)
    loss = losses.loss_kd_regularization(tensor, torch.tensor(labels), params)
    loss.backward()
    cases.append({**setting, "loss": float(loss), "grad": tensor.grad.numpy().tolist()})
  OUT.write_text(json.dumps({
      "torch": torch.__version__,
      "tf_kd": {"source": "yuanli2333/Teacher-free-Knowledge-Distillation",
                "commit": _commit(tfkd), "correct_prob": 0.99, "logits": logits.tolist(),
                "labels": labels.tolist(), "cases": cases},
      "cs_kd": cs_kd_cases(cskd)}, indent=1) + "\n")
  print(f"wrote {OUT}")


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tfkd", type=pathlib.Path, required=True,
                      help="A checkout of Teacher-free-Knowledge-Distillation.")
  parser.add_argument("--cskd", type=pathlib.Path, required=True, help="A checkout of cs-kd.")
  args = parser.parse_args()
  main(args.tfkd, args.cskd)
