"""jaxkd's train step against torchdistill's on the same machine, in the same process.

  python experiments/bench_peers/run.py [--pair=mlp|resnet32x4-resnet8x4|all]
      [--batch_size=N] [--steps=N] [--warmup=N] [--rounds=N] [--json=PATH]
  (needs pip install -e '.[bench]'; the options are those of python -m jaxkd bench)

Both sides train the same student on the same synthetic batch with the same loss
(ce 0.1 + kd 0.9 at T=4: torchdistill's KDLoss with alpha=0.1, reduction
'batchmean', in its WeightedSumLoss) and SGD with momentum 0.9 (lr 0.05); the
teacher runs inside the step, frozen, in inference mode. jaxkd's step is
jaxkd.engine.step.make_train_step (as jaxkd.jobs.bench times it). torchdistill's is one
iteration of its training loop: DistillationBox.forward_process (teacher under
no_grad, student, criterion via forward hooks' I/O dicts) and post_forward_process
(backward, optimizer step), in eager PyTorch; student-only training is its
TrainingBox with CrossEntropyLoss. Each step is timed on its own (torch on CPU is
synchronous; jaxkd's is waited on with jax.block_until_ready), the two frameworks'
steps interleaved in rounds, and the median is reported.

Threads: torch.set_num_threads(T) with T the CPUs this process may use, which is
also the size of XLA's CPU thread pool (it uses every schedulable core). Where jax's
first device is a GPU, torch runs on CUDA (each step ends with a synchronize).

What differs, against jaxkd: its step also converts the uint8 batch to float and
normalises it (and for CIFAR randomly crops and flips it) on the device, while
torchdistill is handed the ready float tensor (its DataLoader does that work,
outside the step).
"""

import copy
import json
import os
import pathlib
import statistics
import sys

import numpy as np

try:
  import torch
  import torch.nn as nn
  import torchdistill
  from torchdistill.core.distillation import get_distillation_box
  from torchdistill.core.training import get_training_box
except ImportError as error:  # pragma: no cover - the message is the point.
  raise SystemExit(f"torch and torchdistill are needed: pip install -e '.[bench]' ({error})")

import jax
from absl import flags

from jaxkd.cli import bench as bench_command
from jaxkd.cli import common
from jaxkd.config import base_config
from jaxkd.data import preprocessing
from jaxkd.errors import JaxkdError
from jaxkd.files import write_text
from jaxkd.jobs import bench
from jaxkd.jobs.tables import markdown_table as table
from jaxkd.jobs.timing import cpu_threads, environment
from jaxkd.models import count_params

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # Also when loaded by path.
from torch_models import MLP, param_count, torch_model  # noqa: E402

LEARNING_RATE = bench.LEARNING_RATE
TEMPERATURE = 4.0
CE_WEIGHT = 0.1  # KDLoss alpha; beta = 1 - alpha = 0.9 on T^2 * KL
FORWARD = "forward_batch_only"  # torchdistill's forward process: model(images)


def jax_param_count(model, input_shape) -> int:
  import jax.numpy as jnp
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                jnp.zeros((1, *input_shape), jnp.float32)))
  return count_params(variables["params"])


# ----- torchdistill's boxes.

# torchdistill's configs (what its YAML files say), as dicts.
CE_CRITERION = {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"ce": {
    "criterion": {"key": "CrossEntropyLoss", "kwargs": {"reduction": "mean"}},
    "criterion_wrapper": {"key": "SimpleLossWrapper", "kwargs": {
        "input": {"is_from_teacher": False, "module_path": ".", "io": "output"},
        "target": {"uses_label": True}}},
    "weight": 1.0}}}}
KD_CRITERION = {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"kd": {
    "criterion": {"key": "KDLoss", "kwargs": {
        "student_module_path": ".", "student_module_io": "output",
        "teacher_module_path": ".", "teacher_module_io": "output",
        "temperature": TEMPERATURE, "alpha": CE_WEIGHT, "reduction": "batchmean"}},
    "weight": 1.0}}}}
OPTIMIZER = {"key": "SGD", "kwargs": {"lr": LEARNING_RATE, "momentum": 0.9}}


def torch_runner(mode: str, pair: bench.Pair, host_batch: dict, seed: int = 0):
  """(run, box): run() is one torchdistill training iteration (forward_process +
  post_forward_process) on the batch."""
  torch.manual_seed(seed)
  student = torch_model(pair.student, pair)
  device = torch_device()
  images, targets = (t.to(device) for t in torch_batch(pair, host_batch))
  optimizer = copy.deepcopy(OPTIMIZER)  # torchdistill scales lr in place (lr_factor)
  if mode == "student":
    config = {"num_epochs": 1, "model": {"forward_proc": FORWARD}, "optimizer": optimizer,
              "criterion": copy.deepcopy(CE_CRITERION)}
    box = get_training_box(student, {}, config, device, None, False, 1)
  elif mode == "online":
    teacher = torch_model(pair.teacher, pair).eval()  # Inference mode, as jaxkd's teacher.
    config = {"num_epochs": 1, "teacher": {"requires_grad": False, "forward_proc": FORWARD},
              "student": {"forward_proc": FORWARD}, "optimizer": optimizer,
              "criterion": copy.deepcopy(KD_CRITERION)}
    box = get_distillation_box(teacher, student, {}, config, device, None, False, 1)
  else:
    raise ValueError(f"no torchdistill runner for mode '{mode}'")
  box.pre_epoch_process(epoch=0)

  def run():
    loss = box.forward_process(images, targets)
    box.post_forward_process(loss=loss)
    if device.type == "cuda":
      torch.cuda.synchronize()

  return run, box


def plain_torch_runner(variant: str, mode: str, pair: bench.Pair, host_batch: dict,
                       seed: int = 0):
  """run() of the step a PyTorch user writes without torchdistill: the student's forward,
  the teacher's under no_grad, 0.1 CE + 0.9 T^2 KL (or CE alone), backward, SGD.
  variant: 'torch_eager' (float32), 'torch_bf16' (autocast to bfloat16, channels_last
  images and weights), 'torch_compile' (the float32 loss compiled by torch.compile)."""
  torch.manual_seed(seed)
  device = torch_device()
  student = torch_model(pair.student, pair).to(device).train()
  teacher = torch_model(pair.teacher, pair).to(device).eval() if mode == "online" else None
  images, targets = (t.to(device) for t in torch_batch(pair, host_batch))
  low = variant == "torch_bf16"
  if low and images.dim() == 4:
    images = images.contiguous(memory_format=torch.channels_last)
    student = student.to(memory_format=torch.channels_last)
    teacher = None if teacher is None else teacher.to(memory_format=torch.channels_last)
  optimizer = torch.optim.SGD(student.parameters(), lr=LEARNING_RATE, momentum=0.9)
  functional = torch.nn.functional

  def loss_of(images, targets):
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=low):
      logits = student(images).float()
      ce = functional.cross_entropy(logits, targets)
      if teacher is None:
        return ce
      with torch.no_grad():
        soft = functional.softmax(teacher(images).float() / TEMPERATURE, dim=-1)
      kd = functional.kl_div(functional.log_softmax(logits / TEMPERATURE, dim=-1), soft,
                             reduction="batchmean") * TEMPERATURE ** 2
      return CE_WEIGHT * ce + (1 - CE_WEIGHT) * kd

  loss_fn = torch.compile(loss_of) if variant == "torch_compile" else loss_of

  def run():
    loss = loss_fn(images, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if device.type == "cuda":
      torch.cuda.synchronize()

  return run


def torch_device() -> "torch.device":
  """CUDA where jax runs on a GPU (and torch sees one), else the CPU."""
  gpu = jax.devices()[0].platform == "gpu" and torch.cuda.is_available()
  return torch.device("cuda" if gpu else "cpu")


def torch_batch(pair: bench.Pair, host_batch: dict):
  """The batch as torchdistill's DataLoader hands it over: float32 NCHW images normalised
  with the dataset's mean and std (jaxkd's preprocessing), int64 labels."""
  dataset = base_config().dataset
  dataset.name = pair.dataset
  fields = preprocessing(dataset, pair.input_shape[-1])
  mean, std = torch.tensor(fields["mean"]), torch.tensor(fields["std"])
  images = torch.from_numpy(host_batch["image"]).float().div(255.0)
  images = ((images - mean) / std).permute(0, 3, 1, 2).contiguous()
  return images, torch.from_numpy(host_batch["label"]).long()


def same_loss_check(setup: bench.Setup, pair: bench.Pair) -> dict | None:
  """Both frameworks' first online-distillation loss from the same weights and images (MLP
  pair only: no augmentation, and Dense kernels map onto Linear weights transposed)."""
  if pair.student["name"] != "mlp" or setup.preprocess.crop_padding or setup.preprocess.flip:
    return None
  compiled, state, teacher_variables, batch, _ = bench.build_train_step(setup, "online")
  student_params = jax.device_get(state.params)
  teacher_params = jax.device_get(setup.teacher_variables["params"])
  _, metrics = compiled(state, teacher_variables, batch)
  jax_loss = float(metrics["loss"])

  def load(module: MLP, params: dict) -> MLP:
    linears = [m for m in module.body if isinstance(m, nn.Linear)] + [module.fc]
    names = [f"dense{i}" for i in range(len(linears) - 1)] + ["head"]
    with torch.no_grad():
      for linear, name in zip(linears, names):
        linear.weight.copy_(torch.from_numpy(np.asarray(params[name]["kernel"]).T.copy()))
        linear.bias.copy_(torch.from_numpy(np.array(params[name]["bias"])))
    return module

  _, box = torch_runner("online", pair, setup.host_batch)
  load(box.student_model, student_params)
  load(box.teacher_model, teacher_params)
  with torch.no_grad():
    batch = [t.to(torch_device()) for t in torch_batch(pair, setup.host_batch)]
    torch_loss = float(box.forward_process(*batch))
  return {"jaxkd_first_loss": jax_loss, "torchdistill_first_loss": torch_loss}


# ----- The comparison.

MODES = ("student", "online")
VARIANTS = ("jaxkd", "jaxkd_bf16", "torchdistill", "torch_eager", "torch_bf16", "torch_compile")
JAXKD = ("jaxkd", "jaxkd_bf16")


def runner_of(variant: str, mode: str, setup, pair: bench.Pair) -> tuple:
  """(run, flops, compile seconds) of one variant's step."""
  if variant in JAXKD:
    runner = bench.prepare(setup, mode, "bfloat16" if variant == "jaxkd_bf16" else "float32")
    return runner.run, runner.flops, runner.compile_s
  if variant == "torchdistill":
    return torch_runner(mode, pair, setup.host_batch)[0], 0.0, 0.0
  return plain_torch_runner(variant, mode, pair, setup.host_batch), 0.0, 0.0


def compare_pair(pair: bench.Pair, batch_size: int | None, steps: int | None, warmup: int | None,
                 rounds: int | None, log=None, variants=("jaxkd", "torchdistill")) -> list[dict]:
  """One row per mode: each variant's median ms per step, jaxkd's against torchdistill's
  (speed_ratio) and its best against the best PyTorch variant (ratio_to_best_torch)."""
  batch_size, steps = batch_size or pair.batch_size, steps or pair.steps
  warmup = pair.warmup if warmup is None else warmup
  rounds = rounds or pair.rounds
  setup = bench.setup_pair(pair, batch_size)
  runs, flops, compile_s = {}, {}, {}
  for mode in MODES:
    for variant in variants:
      name = f"{variant}/{mode}"
      runs[name], flops[name], compile_s[name] = runner_of(variant, mode, setup, pair)
  counts = {"student_params_jaxkd": jax_param_count(setup.student, pair.input_shape),
            "student_params_torch": param_count(torch_model(pair.student, pair)),
            "teacher_params_jaxkd": jax_param_count(setup.teacher, pair.input_shape),
            "teacher_params_torch": param_count(torch_model(pair.teacher, pair))}
  check = same_loss_check(setup, pair) if "torchdistill" in variants else None
  if check:
    counts.update(check)
  if log:
    log(f"  {pair.name}: parameters {counts}")
  times = bench.time_rounds(runs, steps, warmup, rounds)
  env = {**environment(setup.mesh), "torch_version": torch.__version__,
         "torchdistill_version": torchdistill.__version__, "torch_threads": torch.get_num_threads(),
         "torch_interop_threads": torch.get_num_interop_threads(),
         "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}
  rows = []
  for mode in MODES:
    ms = {v: statistics.median(times[f"{v}/{mode}"]) * 1e3 for v in variants}
    row = {"pair": pair.name, "mode": mode, "batch_size": batch_size,
           "steps": len(times[f"{variants[0]}/{mode}"]), "ms_per_step": ms,
           "ms_min": {v: min(times[f"{v}/{mode}"]) * 1e3 for v in variants},
           "compile_s": {v: compile_s[f"{v}/{mode}"] for v in variants if v in JAXKD},
           **counts, **env}
    if "jaxkd" in ms and "torchdistill" in ms:  # the comparison of the README's tables
      row.update(jaxkd_ms_per_step=ms["jaxkd"], torchdistill_ms_per_step=ms["torchdistill"],
                 jaxkd_examples_per_sec=batch_size / ms["jaxkd"] * 1e3,
                 torchdistill_examples_per_sec=batch_size / ms["torchdistill"] * 1e3,
                 speed_ratio=ms["torchdistill"] / ms["jaxkd"],
                 jaxkd_gflop_per_step=flops[f"jaxkd/{mode}"] / 1e9)
    ours = {v: t for v, t in ms.items() if v in JAXKD}
    theirs = {v: t for v, t in ms.items() if v not in JAXKD}
    if ours and theirs:
      best_ours, best_theirs = min(ours, key=ours.get), min(theirs, key=theirs.get)
      row.update(best_jaxkd=best_ours, best_torch=best_theirs,
                 ratio_to_best_torch=theirs[best_theirs] / ours[best_ours])
    rows.append(row)
    if log:
      log(f"  {pair.name} {mode}: " + ", ".join(f"{v} {t:.2f} ms" for v, t in ms.items()))
  return rows


def markdown_table(rows) -> str:
  """pair, mode, batch, each variant's ms per step, and jaxkd's best against the best
  PyTorch variant (or against torchdistill, with those two alone)."""
  variants = list(rows[0]["ms_per_step"])
  vs = "best jaxkd / best PyTorch" if len(variants) > 2 else "jaxkd speed / torchdistill"
  header = ["pair", "mode", "batch", *(f"{v} ms/step" for v in variants), vs]
  ratio = lambda r: r.get("ratio_to_best_torch", r.get("speed_ratio"))
  return table(header, [[r["pair"], r["mode"], r["batch_size"],
                         *(f"{r['ms_per_step'][v]:.2f}" for v in variants),
                         "-" if ratio(r) is None else f"{ratio(r):.2f}x"] for r in rows],
               align="llr" + "r" * (len(variants) + 1))


def main() -> list[dict]:
  args = bench_command.values()
  threads = cpu_threads()
  torch.set_num_threads(threads)
  say = lambda message: print(message, file=sys.stderr, flush=True)
  say(f"torch {torch.__version__} with {torch.get_num_threads()} threads, torchdistill "
      f"{torchdistill.__version__}; jax {jax.__version__} on {jax.devices()[0].device_kind} "
      f"with XLA's CPU pool over {threads} CPUs")
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
  if load > threads and not os.environ.get("OMP_WAIT_POLICY"):
    say(f"warning: load average {load:.1f} on {threads} CPUs; torch's OpenMP threads spin-wait "
        "and lose most of their speed on a busy machine (OMP_WAIT_POLICY=PASSIVE avoids it)")
  variants = tuple(flags.FLAGS.variants)
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown or not set(variants) & set(JAXKD):
    raise JaxkdError(f"--variants: unknown {unknown} or no jaxkd variant; choose among "
                     f"{list(VARIANTS)}.")
  rows = []
  for pair in bench_command.pairs(args.pair):
    rows += compare_pair(pair, args.batch_size, args.steps, args.warmup, args.rounds,
                         log=say, variants=variants)
  print(markdown_table(rows))
  print()
  print(f"threads: torch.set_num_threads({threads}); XLA CPU pool over {threads} CPUs "
        f"(os.cpu_count()={os.cpu_count()}); torch {torch.__version__}, torchdistill "
        f"{torchdistill.__version__}, jax {jax.__version__}")
  for row in rows:
    if row["mode"] == "online" and "ratio_to_best_torch" in row:
      print(f"{row['pair']} online distillation, batch {row['batch_size']}: jaxkd "
            f"({row['best_jaxkd']}) at {row['ratio_to_best_torch']:.2f}x the best PyTorch "
            f"variant ({row['best_torch']}) on {row['device_kind']}")
  print()
  lines = [json.dumps(row, sort_keys=True) for row in rows]
  print("\n".join(lines))
  if args.json:
    write_text(pathlib.Path(args.json), "\n".join(lines) + "\n")
  return rows


def define_flags() -> None:
  bench_command.define_bench_flags(bench.PAIRS)
  flags.DEFINE_list("variants", ["jaxkd", "torchdistill"],
                    f"The steps timed, among {', '.join(VARIANTS)}: jaxkd in float32 or "
                    "bfloat16; torchdistill's boxes; plain PyTorch in float32, with autocast to "
                    "bfloat16 and channels_last, or compiled by torch.compile.")


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
