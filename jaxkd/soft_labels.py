"""Cached soft labels: a teacher's logits for every training example, keyed by index.
For a language model (per-token labels), its top-k log-probabilities at every position of
every sequence (top_k = 0: all V), keyed by (index, position).

  python -m jaxkd.soft_labels --teacher=runs/teacher --out=runs/teacher/soft_labels.npz \
      [--dtype=float16] [--top_k=0] [--config=<a student's config: its transfer set>]

A student run with distill.soft_labels=(path,) reads them with its batches and
never runs the teacher. The logits are of the un-augmented training images, so
with random augmentation they differ from what an online teacher sees (the
teacher's view of the exact crop/flip/mixup the student gets): the cache is
cheaper (no teacher forward pass) but gives weaker targets (Beyer et al. 2022
show teacher-student consistency matters). With augmentation off, cached and
online targets are the same.
"""

import json
import os
import pathlib

import numpy as np
from absl import app, flags

from jaxkd.data import ArrayDataset
from jaxkd.data.arrays import has_token_labels
from jaxkd.errors import JaxkdError

# Logits given to classes outside a top-k cache: softmax sends them to exactly 0.
MISSING_LOGIT = -1e9


def write_soft_labels(teacher_workdir: str | pathlib.Path, out: str | pathlib.Path,
                      dtype: str = "float16", top_k: int = 0, batch_size: int = 1000,
                      data: ArrayDataset | None = None) -> pathlib.Path:
  """Runs the teacher over `data` (default: its own training split; a student's transfer
  set: jaxkd.assemble.transfer_set_of), without augmentation, and saves the logits."""
  from jaxkd.data import load_split, preprocessing
  from jaxkd.runs import load_run, predict_logits
  from jaxkd.sharding import check_batch_size, make_mesh

  if dtype not in ("float16", "float32"):
    raise JaxkdError(f"soft label dtype must be float16 or float32, not {dtype}.")
  mesh = make_mesh()
  check_batch_size(batch_size, mesh, "batch_size")
  run = load_run(teacher_workdir, mesh)
  data = load_split(run.config.dataset, "train") if data is None else data
  per_token = has_token_labels(data)  # A language model's data.
  logits = None if per_token else predict_logits(run, data, batch_size, mesh)
  fields = preprocessing(run.config.dataset, data.image_shape[-1])
  meta = {"dataset": data.name, "split": data.split, "count": len(data),
          "fingerprint": data.fingerprint(), "num_classes": data.num_classes,
          "mean": list(fields["mean"]), "std": list(fields["std"]),
          "teacher_workdir": str(pathlib.Path(teacher_workdir).absolute()), "teacher_step": run.step,
          "dtype": dtype, "top_k": top_k}
  arrays = {"index": np.arange(len(data), dtype=np.int64)}
  if per_token:  # A language model: top-k log-probabilities per token.
    k = top_k or data.num_classes
    meta.update(top_k=k, temperature=1.0)
    arrays.update(token_top_k(run, data, k, batch_size, mesh, dtype))
  elif top_k:
    top = np.argsort(-logits, axis=1)[:, :top_k]
    arrays["top_k_index"] = top.astype(np.int32)
    arrays["top_k_logits"] = np.take_along_axis(logits, top, axis=1).astype(dtype)
  else:
    arrays["logits"] = logits.astype(dtype)
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  partial = out.with_name(out.name + ".partial.npz")
  np.savez(partial, meta=json.dumps(meta), **arrays)
  os.replace(partial, out)  # Atomic: never a half-written cache under the real name.
  return out


def token_top_k(run, data: ArrayDataset, k: int, batch_size: int, mesh, dtype: str) -> dict:
  """A language model's top-k log-probabilities (temperature 1) and their token ids at every
  position of `data`: {'token_top_k_logprobs': [N, T, k] dtype, 'token_top_k_ids': [N, T, k]
  (uint8 for vocabularies up to 256 tokens, else int32)}, computed on the devices."""
  import jax

  from jaxkd.sharding import batch_sharding, shard_batch

  if not 0 < k <= data.num_classes:
    raise JaxkdError(f"top_k={k}: it must be between 1 and the vocabulary's {data.num_classes}.")

  def top(variables, tokens):
    logits = run.model.apply(variables, tokens, train=False).astype(np.float32)
    return jax.lax.top_k(jax.nn.log_softmax(logits, axis=-1), k)

  top = jax.jit(top, out_shardings=batch_sharding(mesh))
  values, ids = [], []
  for batch in data.eval_batches(batch_size):
    v, i = jax.device_get(top(run.variables, shard_batch({"t": batch["tokens"]}, mesh)["t"]))
    keep = batch["mask"] > 0
    values.append(np.asarray(v)[keep].astype(dtype))
    ids.append(np.asarray(i)[keep].astype(np.uint8 if data.num_classes <= 256 else np.int32))
  return {"token_top_k_logprobs": np.concatenate(values), "token_top_k_ids": np.concatenate(ids)}


def load_soft_labels(path: str | pathlib.Path, data: ArrayDataset, preprocess_fields: dict
                     ) -> np.ndarray | dict:
  """Dense float32 logits [N, C] for `data`, after checking the cache was made for it; for
  a language model's cache, the batch extras {'teacher_topk_logprobs': [N, T, k] float32,
  'teacher_topk_ids': [N, T, k] int32} (jaxkd.distill.token_divergences reads them)."""
  path = pathlib.Path(path)
  if not path.exists():
    raise JaxkdError(f"soft label cache {path} does not exist; write it with "
                     f"python -m jaxkd.soft_labels --teacher=<teacher workdir> --out={path}")
  try:
    with np.load(path) as cache:
      meta = json.loads(str(cache["meta"]))
      arrays = {k: cache[k] for k in cache.files if k != "meta"}
  except (OSError, ValueError, KeyError) as e:
    raise JaxkdError(f"soft label cache {path} is unreadable ({e}); write it again.") from None
  expected = {"dataset": data.name, "split": data.split, "count": len(data),
              "fingerprint": data.fingerprint(), "num_classes": data.num_classes,
              "mean": list(preprocess_fields["mean"]), "std": list(preprocess_fields["std"])}
  for key, value in expected.items():
    if meta.get(key) != value:
      raise JaxkdError(f"soft label cache {path} does not match the data: its {key} is "
                       f"{meta.get(key)!r}, this run has {value!r}. Write a cache for this "
                       "dataset and preprocessing.")
  index = arrays["index"]
  if len(index) != len(data) or index.min() != 0 or index.max() != len(data) - 1:
    raise JaxkdError(f"soft label cache {path} covers indices {index.min()}..{index.max()} "
                     f"({len(index)} rows); the data has indices 0..{len(data) - 1}. Write it "
                     f"again: python -m jaxkd.soft_labels --teacher=<teacher workdir> --out={path}")
  if "token_top_k_ids" in arrays:
    return {"teacher_topk_logprobs": arrays["token_top_k_logprobs"].astype(np.float32),
            "teacher_topk_ids": arrays["token_top_k_ids"].astype(np.int32)}
  logits = np.full((len(data), data.num_classes), MISSING_LOGIT, np.float32)
  if "logits" in arrays:
    logits[index] = arrays["logits"].astype(np.float32)
  else:
    rows = index[:, None]
    logits[rows, arrays["top_k_index"]] = arrays["top_k_logits"].astype(np.float32)
  return logits


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  try:
    data = None
    if FLAGS.config is not None:  # The student's transfer set, not the teacher's data.
      from jaxkd.assemble import transfer_set_of
      data = transfer_set_of(FLAGS.config)
    path = write_soft_labels(FLAGS.teacher, FLAGS.out, FLAGS.dtype, FLAGS.top_k, data=data)
  except JaxkdError as e:
    raise SystemExit(f"jaxkd: error: {e}")
  print(f"wrote soft labels of {FLAGS.teacher} to {path}")


if __name__ == "__main__":
  # Flags only when run as a script: importing this module adds none to other CLIs.
  flags.DEFINE_string("teacher", None, "Workdir of the trained teacher.")
  flags.DEFINE_string("out", None, "Output .npz path.")
  flags.DEFINE_enum("dtype", "float16", ["float16", "float32"], "Storage dtype of the logits.")
  flags.DEFINE_integer("top_k", 0, "Keep only the k largest logits per example (0: all).")
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "A student's config: the cache covers its "
                                  "transfer set (config.transfer) instead of the teacher's data.")
  flags.mark_flags_as_required(["teacher", "out"])
  app.run(main)
