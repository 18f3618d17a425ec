"""Golden fixtures from the authors' code of teacher-free distillation, for
tests/test_distill_virtual_teacher.py: Tf-KD's manually designed teacher
(loss_kd_regularization of Yuan et al.'s my_loss_function.py, run from their source) on
seeded logits and labels, its value and its gradient with respect to the logits. The tests
need no torch.

  git clone https://github.com/yuanli2333/Teacher-free-Knowledge-Distillation /tmp/tfkd
  /tmp/refenv/bin/python tests/reference/make_self_kd_fixtures.py --tfkd /tmp/tfkd
"""

import argparse
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


def main(tfkd: pathlib.Path) -> None:
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
  commit = subprocess.run(["git", "-C", str(tfkd), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or (tfkd / "COMMIT").read_text().strip()
  OUT.write_text(json.dumps({"source": "yuanli2333/Teacher-free-Knowledge-Distillation",
                             "commit": commit, "correct_prob": 0.99, "torch": torch.__version__,
                             "logits": logits.tolist(), "labels": labels.tolist(),
                             "cases": cases}, indent=1) + "\n")
  print(f"wrote {OUT}")


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tfkd", type=pathlib.Path, required=True,
                      help="A checkout of Teacher-free-Knowledge-Distillation.")
  main(parser.parse_args().tfkd)
