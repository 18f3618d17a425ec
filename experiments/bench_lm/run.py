"""Language-model distillation steps measured: tokens/s against PyTorch + TRL, the cost of
on-policy generation with the key/value cache, and memory dense against chunked; each
part's table goes into README.md (--no_readme: printed only).

  python experiments/bench_lm/run.py [--part=memory|on_policy|peers|all (repeatable)] [--small]
      [--vocabularies=32768,131072] [--chunk=128] [--python=/tmp/refenv/bin/python]

memory: the compiled step's own buffers as XLA plans them (`Compiled.memory_analysis()`),
  dense against train.loss_chunk, at each vocabulary with 8k tokens per batch (8
  sequences of 1,024). Nothing runs: each step is only compiled, for this machine's
  device. Teacher: Llama layout, 2 layers, width 256, untied output layer (a Hugging Face
  directory written here with random weights); student: 2 layers, width 128, tied;
  forward KL with the teacher online; AdamW.
on_policy: the median time of the distillation step (JSD(0.5), the teacher online) off
  policy and on policy (every step's batch the student's continuations: 16 prompt
  tokens, 48 generated with the cache), at experiments/lm_shakespeare's sizes (teacher 4
  layers of 192, student 2 of 80, 84 tokens, 32 windows of 64), random weights.
peers: tokens/s of the distillation step (JSD(0.5), AdamW, batch 16 x 128) at
  experiments/lm_pretrained's sizes (teacher 5.5M, student 0.89M, 4,096 tokens, Llama
  layout): jaxkd with the teacher online and from a cached top-16, beside what a PyTorch
  user writes with TRL (torch_step.py, run by --python: an environment with torch,
  transformers and trl), the same weights and batches, on the same machine.

Each part prints a markdown table and one JSON line per row, naming the device and CPU.
"""

import json
import pathlib
import statistics
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags

from jaxkd.cli import common
from jaxkd.config import base_config
from jaxkd.engine.sharding import make_mesh, shard_batch
from jaxkd.engine.step import make_train_step
from jaxkd.jobs.tables import markdown_table, write_between_markers
from jaxkd.jobs.timing import cpu_model, median_ms
from jaxkd.models import create_model, hf
from jaxkd.run.assemble import assemble


README = pathlib.Path(__file__).with_name("README.md")
TABLES = {}  # part -> its markdown table, as printed


def show(part: str, table: str) -> None:
  TABLES[part] = table
  print(table)


def llama(layers: int, width: int, tied: bool, length: int, heads: int = 4,
          mlp: int = 0, kv_heads: int = 0) -> dict:
  return {"name": "llama", "num_layers": layers, "hidden_size": width,
          "intermediate_size": mlp or 2 * width, "num_heads": heads, "num_kv_heads": kv_heads,
          "max_len": length, "tie_embeddings": tied, "init_from": ""}


def hf_dir(root: pathlib.Path, fields: dict, vocabulary: int, seed: int = 0) -> pathlib.Path:
  """A Hugging Face directory of a model of `fields` with random weights (written once)."""
  name = "_".join(f"{fields[k]}" for k in ("num_layers", "hidden_size", "max_len"))
  path = root / f"hf_{name}_{vocabulary}_{seed}"
  if not path.exists():
    model = create_model(ml_collections.ConfigDict(fields), vocabulary)
    init = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, 8), jnp.int32))
    hf.save_params(init["params"], model, path)
  return path


def token_file(root: pathlib.Path, vocabulary: int, rows: int, length: int) -> pathlib.Path:
  path = root / f"tokens_{vocabulary}_{rows}_{length}.npz"
  if not path.exists():
    tokens = np.random.default_rng(0).integers(0, vocabulary, (rows, length + 1))
    np.savez(path, x_train=tokens[:, :-1], y_train=tokens[:, 1:], x_test=tokens[:, :-1],
             y_test=tokens[:, 1:])
  return path


def _run(root: pathlib.Path, vocabulary: int, batch: int, length: int, teacher: dict,
         student: dict, terms: dict, **train):
  """A distillation run assembled on random tokens, its teacher a Hugging Face directory
  of random weights; returns (run, jitted step, first batch)."""
  data = token_file(root, vocabulary, train.pop("rows", 2 * batch), length)
  config = base_config()
  config.dataset.update(name="npz", path=str(data), input_kind="tokens", num_classes=vocabulary)
  # A model's fields, or a Hugging Face directory: its architecture and weights.
  config.model = student if isinstance(student, dict) else {
      "name": "hf", "path": str(student), "init_from": str(student)}
  config.train.update(batch_size=batch, num_steps=1, **train.pop("train", {}))
  config.optimizer.update(name="adamw", learning_rate=1e-3)
  config.distill.terms = terms
  config.distill.teachers = (str(hf_dir(root, teacher, vocabulary)),)
  for key, value in train.items():  # distill fields; a dict updates a group (on_policy)
    config.distill[key].update(value) if isinstance(value, dict) else config.distill.update(
        {key: value})
  run = assemble(config, None, mesh=make_mesh(jax.devices()[:1]))
  step = make_train_step(run.spec, run.mesh, jax.tree.map(lambda x: x.sharding,
                                                          run.teacher_variables))
  return run, step, shard_batch(run.batches.batch(0), run.mesh)


def step_memory(root: pathlib.Path, vocabulary: int, chunk: int, batch: int = 8,
                length: int = 1024) -> dict:
  """The compiled step's memory statistics (bytes) at this vocabulary and chunk (0: dense)."""
  run, step, first = _run(root, vocabulary, batch, length, llama(2, 256, False, length),
                          llama(2, 128, True, length), {"fkl": {"weight": 1.0}},
                          train={"loss_chunk": chunk})
  stats = step.lower(run.state, run.teacher_variables, first).compile().memory_analysis()
  return {"vocabulary": vocabulary, "tokens": batch * length, "loss_chunk": chunk,
          "temp_bytes": int(stats.temp_size_in_bytes),
          "argument_bytes": int(stats.argument_size_in_bytes),
          "output_bytes": int(stats.output_size_in_bytes),
          "logits_bytes": batch * length * vocabulary * 4}


def memory(root: pathlib.Path, vocabularies, chunk: int, batch: int = 8,
           length: int = 1024) -> list[dict]:
  rows = []
  for vocabulary in vocabularies:
    for c in (0, chunk):
      rows.append(step_memory(root, vocabulary, c, batch, length))
      print(json.dumps({"part": "memory", **rows[-1], "device": _device()}), flush=True)
  gib = lambda b: f"{b / 2**30:.2f}"
  show("memory", markdown_table(
      ["vocabulary", "tokens per batch", "loss", "temporary GiB", "arguments GiB",
       "outputs GiB", "one [B, T, V] float32 GiB"],
      [[f"{r['vocabulary']:,}", f"{r['tokens']:,}",
        "dense" if not r["loss_chunk"] else f"chunks of {r['loss_chunk']} positions",
        gib(r["temp_bytes"]), gib(r["argument_bytes"]), gib(r["output_bytes"]),
        gib(r["logits_bytes"])] for r in rows], align="rrlrrrr"))
  return rows


def on_policy(root: pathlib.Path, calls: int = 10, batch: int = 32, length: int = 64,
              prompt: int = 16, vocabulary: int = 84, small: bool = False) -> dict:
  """Median ms of the off-policy and the on-policy (fraction 1) step."""
  teacher = llama(1, 16, True, length) if small else llama(4, 192, True, length, 6, 768)
  student = llama(1, 8, True, length, 2) if small else llama(2, 80, True, length, 4, 320)
  times = {}
  for name, fraction in (("off_policy", 0.0), ("on_policy", 1.0)):
    run, step, first = _run(root, vocabulary, batch, length, teacher, student,
                            {"gjsd": {"weight": 1.0, "beta": 0.5}},
                            on_policy={"fraction": fraction, "prompt_len": prompt,
                                       "temperature": 1.0, "generator": "student"})
    state = [run.state]

    def one():
      state[0], metrics = step(state[0], run.teacher_variables, first)
      return metrics

    times[name] = median_ms(one, calls, warmup=2)
  row = {**times, "ratio": times["on_policy"] / times["off_policy"],
         "generated_tokens": length - prompt, "batch": batch}
  print(json.dumps({"part": "on_policy", **row, "device": _device()}), flush=True)
  show("on_policy", markdown_table(["step", "ms (median)", "vs off-policy"],
                       [["off-policy (teacher online)", f"{times['off_policy']:.1f}", "1.00x"],
                        [f"on-policy, {length - prompt} tokens generated with the cache",
                         f"{times['on_policy']:.1f}", f"{row['ratio']:.2f}x"]], align="lrr"))
  return row


def _timed_steps(run, step, steps: int, warmup: int) -> tuple[float, float]:
  """(median ms of one step over distinct batches, the first step's loss)."""
  batches = [shard_batch(run.batches.batch(i), run.mesh) for i in range(steps + warmup + 1)]
  state, calls, first = [run.state], iter(range(len(batches))), []

  def one():
    state[0], metrics = step(state[0], run.teacher_variables, batches[next(calls)])
    first.append(metrics["loss"]) if not first else None
    return metrics

  ms = median_ms(one, steps, warmup=warmup + 1)
  return ms, float(first[0])


def peers(root: pathlib.Path, python: str, steps: int = 20, warmup: int = 3, batch: int = 16,
          length: int = 128, vocabulary: int = 4096, small: bool = False) -> dict:
  """Tokens/s of the distillation step (JSD(0.5), AdamW) at experiments/lm_pretrained's
  sizes: jaxkd with the teacher online and from a cached top-16, and the PyTorch step of
  torch_step.py (transformers + TRL's generalized_jsd_loss) run by `python`, from the same
  weights and batches."""
  from jaxkd.run.assemble import transfer_set_of
  from jaxkd.run.soft_labels import write_soft_labels

  teacher = (llama(1, 16, True, length, 2) if small else
             llama(6, 256, True, length, 4, 704, kv_heads=2))
  student = hf_dir(root, llama(1, 8, True, length, 2) if small else
                   llama(2, 128, True, length, 4, 352, kv_heads=2), vocabulary, seed=1)
  rows = batch * (steps + warmup + 1)
  terms = {"gjsd": {"weight": 1.0, "beta": 0.5}}
  online_run, online_step, _ = _run(root, vocabulary, batch, length, teacher, student, terms,
                                    rows=rows)
  result = {"tokens_per_step": batch * length}
  result["jaxkd_online_ms"], result["jaxkd_first_loss"] = _timed_steps(
      online_run, online_step, steps, warmup)
  cache = root / "top16.npz"
  write_soft_labels(hf_dir(root, teacher, vocabulary), cache, "float16", top_k=16,
                    batch_size=batch, data=transfer_set_of(online_run.config))
  cached_run, cached_step, _ = _run(root, vocabulary, batch, length, teacher, student, terms,
                                    rows=rows, soft_labels=(str(cache),), teachers=())
  result["jaxkd_cached_ms"], _ = _timed_steps(cached_run, cached_step, steps, warmup)
  script = pathlib.Path(__file__).with_name("torch_step.py")
  order = root / "order.npy"  # the rows of jaxkd's batches, step by step, for the same batches
  np.save(order, np.stack([np.asarray(online_run.batches.batch(i)["index"])
                           for i in range(steps + warmup + 1)]))
  out = subprocess.run([python, str(script), "--teacher", str(hf_dir(root, teacher, vocabulary)),
                        "--student", str(student), "--order", str(order), "--steps", str(steps),
                        "--warmup", str(warmup), "--data",
                        str(token_file(root, vocabulary, rows, length))],
                       capture_output=True, text=True)
  if out.returncode:
    raise SystemExit(f"the PyTorch step failed:\n{out.stderr[-2000:]}")
  torch_side = json.loads(out.stdout.strip().splitlines()[-1])
  result.update(torch_ms=statistics.median(torch_side["ms"]),
                torch_first_loss=torch_side["first_loss"],
                versions={k: torch_side[k] for k in ("torch", "transformers", "trl")},
                torch_threads=torch_side["threads"], torch_attention=torch_side["attention"])
  speed = lambda ms: result["tokens_per_step"] / ms * 1000
  print(json.dumps({"part": "peers", **result, "device": _device()}), flush=True)
  table = markdown_table(
      ["step (JSD 0.5, AdamW)", "ms (median)", "tokens/s", "vs PyTorch + TRL"],
      [["PyTorch + transformers + TRL, teacher online", f"{result['torch_ms']:.1f}",
        f"{speed(result['torch_ms']):,.0f}", "1.00x"],
       ["jaxkd, teacher online", f"{result['jaxkd_online_ms']:.1f}",
        f"{speed(result['jaxkd_online_ms']):,.0f}",
        f"{result['torch_ms'] / result['jaxkd_online_ms']:.2f}x"],
       ["jaxkd, cached top-16 teacher", f"{result['jaxkd_cached_ms']:.1f}",
        f"{speed(result['jaxkd_cached_ms']):,.0f}",
        f"{result['torch_ms'] / result['jaxkd_cached_ms']:.2f}x"]], align="lrrr")
  versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
  show("peers", table + f"\n\n{batch} sequences of {length} tokens per step; median of {steps} "
       f"steps after {warmup} warm-up steps. First loss from the same weights and batch: jaxkd "
       f"{result['jaxkd_first_loss']:.6f}, TRL {result['torch_first_loss']:.6f}. PyTorch side: "
       f"{versions}, {result['torch_threads']} threads, attention {result['torch_attention']}.")
  return result


def _device() -> str:
  return f"{jax.devices()[0].device_kind} ({cpu_model()})"


_FLAGS = {}
PARTS = ("peers", "on_policy", "memory")
# --small: the sizes of the tests (tests/test_generation.py, tests/test_chunked.py).
SMALL_PEERS = dict(steps=2, warmup=1, batch=8, length=16, vocabulary=32, small=True)
SMALL_ON_POLICY = dict(calls=2, batch=8, length=16, prompt=4, vocabulary=20, small=True)
SMALL_MEMORY = dict(batch=4, length=64)


def define_flags():
  _FLAGS["part"] = flags.DEFINE_multi_enum("part", ["all"], (*PARTS, "all"),
                                           "What to measure (repeat, or 'all').")
  _FLAGS["python"] = common.path_flag(
      "python", "/tmp/refenv/bin/python", "A Python with torch, transformers and trl, for "
      "--part peers.")
  _FLAGS["vocabularies"] = flags.DEFINE_list("vocabularies", ["32768", "131072"],
                                             "Vocabulary sizes of --part memory.")
  _FLAGS["chunk"] = flags.DEFINE_integer("chunk", 128, "train.loss_chunk of --part memory.",
                                         lower_bound=1)
  _FLAGS["no_readme"] = flags.DEFINE_boolean("no_readme", False, "Print the tables only.")
  _FLAGS["small"] = flags.DEFINE_boolean("small", False, "Tiny models (the tests' sizes).")


def main():
  args = common.values(_FLAGS)
  parts = PARTS if "all" in args.part else tuple(dict.fromkeys(args.part))  # in the given order
  with tempfile.TemporaryDirectory() as tmp:
    for part in parts:
      if part == "peers":
        peers(pathlib.Path(tmp), args.python, **(SMALL_PEERS if args.small else {}))
      elif part == "on_policy":
        on_policy(pathlib.Path(tmp), **(SMALL_ON_POLICY if args.small else {}))
      else:
        memory(pathlib.Path(tmp), [512] if args.small else [int(v) for v in args.vocabularies],
               8 if args.small else args.chunk, **(SMALL_MEMORY if args.small else {}))
      if not args.no_readme:  # each part's table in its own block of README.md
        write_between_markers(README, TABLES[part] + f"\n\nOn {_device()}, jax {jax.__version__}.",
                              f"<!-- {part} -->", f"<!-- /{part} -->")
  print(f"\nOn {_device()}, jax {jax.__version__}.")


if __name__ == "__main__":
  common.run(main, define_flags=define_flags)
