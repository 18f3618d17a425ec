"""The PyTorch side of experiments/bench_lm/run.py --part peers: what a PyTorch user writes
with TRL: a transformers teacher and student (Llama layout, read from the Hugging Face
directories jaxkd wrote, so both sides start from the same weights), TRL's
generalized_jsd_loss, AdamW, in a plain training step, timed on the same batches.

Runs in an environment with torch, transformers and trl (not jaxkd's):
  /tmp/refenv/bin/python experiments/bench_lm/torch_step.py --teacher T --student S \\
      --data tokens.npz --order order.npy --steps 20 --warmup 3
Prints one JSON line: the step times (ms), the first loss, the versions.
"""

import argparse
import json
import time

import numpy as np
import torch
import transformers
import trl
try:  # TRL 1.x keeps GKD under trl.experimental
  from trl.experimental.gkd import GKDTrainer
except ImportError:
  from trl import GKDTrainer


def main(args):
  torch.manual_seed(0)
  load = lambda path: transformers.AutoModelForCausalLM.from_pretrained(
      path, dtype=torch.float32)
  teacher, student = load(args.teacher).eval(), load(args.student).train()
  data = np.load(args.data)
  tokens = torch.from_numpy(data["x_train"].astype(np.int64))
  labels = torch.from_numpy(data["y_train"].astype(np.int64))
  optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=0.0)

  order = torch.from_numpy(np.load(args.order).astype(np.int64))  # [steps, batch] rows

  def step(index: int) -> float:
    rows = order[index]
    inputs = tokens[rows]
    with torch.no_grad():
      teacher_logits = teacher(input_ids=inputs).logits
    student_logits = student(input_ids=inputs).logits
    loss = GKDTrainer.generalized_jsd_loss(student_logits, teacher_logits, labels=labels[rows],
                                           beta=0.5)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss)

  first = step(0)
  for i in range(args.warmup):
    step(i + 1)
  times = []
  for i in range(args.steps):
    began = time.perf_counter()
    step(args.warmup + 1 + i)
    times.append(1000 * (time.perf_counter() - began))
  print(json.dumps({"ms": times, "first_loss": first, "torch": torch.__version__,
                    "transformers": transformers.__version__, "trl": trl.__version__,
                    "threads": torch.get_num_threads(),
                    "attention": student.config._attn_implementation}))


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  for name in ("teacher", "student", "data"):
    parser.add_argument(f"--{name}", required=True)
  parser.add_argument("--order", required=True, help="[steps, batch] rows of each step (.npy)")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  main(parser.parse_args())
