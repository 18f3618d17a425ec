"""Cached soft labels: a teacher's logits for every training example, keyed by index.
For a language model (per-token labels), its top-k log-probabilities at every position of
every sequence (top_k = 0: all V), keyed by (index, position).

  python -m jaxkd soft_labels --teacher=runs/teacher --out=runs/teacher/soft_labels.npz \
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
import pathlib
import zipfile

import numpy as np

from jaxkd.config.checks import SOFT_LABEL_DTYPES, one_of
from jaxkd.data import ArrayDataset, load_split, preprocessing
from jaxkd.data.arrays import has_token_labels
from jaxkd.engine.evaluation import make_predict, predict_all
from jaxkd.engine.sharding import check_batch_size, make_mesh
from jaxkd.errors import JaxkdError
from jaxkd.files import atomic_path
from jaxkd.run.saved import SavedRun, load_run, predict_logits

# Logits given to classes outside a top-k cache: softmax sends them to exactly 0.
MISSING_LOGIT = -1e9


def write_soft_labels(teacher_workdir: str | pathlib.Path, out: str | pathlib.Path,
                      dtype: str = "float16", top_k: int = 0, batch_size: int = 1000,
                      data: ArrayDataset | None = None) -> pathlib.Path:
  """Runs the teacher over `data` (default: its own training split; a student's transfer
  set: jaxkd.run.assemble.transfer_set_of), without augmentation, and saves the logits."""
  one_of("dtype", dtype, SOFT_LABEL_DTYPES)
  mesh = make_mesh()
  check_batch_size(batch_size, mesh, "batch_size")
  run = load_run(teacher_workdir, mesh)
  data = load_split(run.config.dataset, "train") if data is None else data
  per_token = has_token_labels(data)  # A language model's data.
  logits = None if per_token else predict_logits(run, data, batch_size, mesh)
  # Images are normalised; tokens and numeric inputs are used as they are (and a Hugging
  # Face teacher has no dataset config).
  fields = (preprocessing(run.config.dataset, data.input_shape[-1]) if data.kind == "image"
            else {"mean": run.preprocess().mean, "std": run.preprocess().std})
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
  with atomic_path(out, suffix=".npz") as partial:  # Never a half-written cache under its name.
    np.savez(partial, meta=json.dumps(meta), **arrays)
  return out


def token_top_k(run: SavedRun, data: ArrayDataset, k: int, batch_size: int, mesh, dtype: str
                ) -> dict:
  """A language model's top-k log-probabilities (temperature 1) and their token ids at every
  position of `data`: {'token_top_k_logprobs': [N, T, k] dtype, 'token_top_k_ids': [N, T, k]
  (uint8 for vocabularies up to 256 tokens, else int32)}, computed on the devices."""
  import jax

  if not 0 < k <= data.num_classes:
    raise JaxkdError(f"top_k={k}: it must be between 1 and the vocabulary's {data.num_classes}.")
  top = make_predict(run.model, run.preprocess(), mesh, data.kind, outputs=lambda logits: (
      jax.lax.top_k(jax.nn.log_softmax(logits.astype(np.float32), axis=-1), k)),
                     num_classes=data.num_classes)
  values, ids = predict_all(top, run.variables, data, batch_size, mesh)
  return {"token_top_k_logprobs": values.astype(dtype),
          "token_top_k_ids": ids.astype(np.uint8 if data.num_classes <= 256 else np.int32)}


def read_cache(path: pathlib.Path, arrays: bool = True) -> tuple[dict, dict]:
  """(meta, arrays) of a cache; a missing, truncated or damaged file is a JaxkdError."""
  if not path.exists():
    raise JaxkdError(f"soft label cache {path} does not exist; write it with "
                     f"python -m jaxkd soft_labels --teacher=<teacher workdir> --out={path}")
  try:
    with np.load(path) as cache:
      meta = json.loads(str(cache["meta"]))
      values = {k: cache[k] for k in cache.files if k != "meta"} if arrays else {}
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
    raise JaxkdError(f"soft label cache {path} is damaged or truncated ({type(e).__name__}: "
                     f"{str(e)[:100]}); write it again with python -m jaxkd soft_labels "
                     f"--teacher=<teacher workdir> --out={path}") from None
  return meta, values


def cache_meta(path: str | pathlib.Path) -> dict:
  """What a cache says of itself: its data, teacher (teacher_workdir, teacher_step) and dtype."""
  return read_cache(pathlib.Path(path), arrays=False)[0]


def load_soft_labels(path: str | pathlib.Path, data: ArrayDataset, preprocess_fields: dict
                     ) -> np.ndarray | dict:
  """Dense float32 logits [N, C] for `data`, after checking the cache was made for it; for
  a language model's cache, the batch extras {'teacher_topk_logprobs': [N, T, k] float32,
  'teacher_topk_ids': [N, T, k] int32} (jaxkd.distill.token_divergences reads them)."""
  path = pathlib.Path(path)
  meta, arrays = read_cache(path)
  expected = {"dataset": data.name, "split": data.split, "count": len(data),
              "fingerprint": data.fingerprint(), "num_classes": data.num_classes,
              "mean": list(preprocess_fields["mean"]), "std": list(preprocess_fields["std"])}
  if data.kind != "image":  # not normalised: the cache's mean and std say nothing
    del expected["mean"], expected["std"]
  for key, value in expected.items():
    if meta.get(key) != value:
      raise JaxkdError(f"soft label cache {path} does not match the data: its {key} is "
                       f"{meta.get(key)!r}, this run has {value!r}. Write a cache for this "
                       "dataset and preprocessing.")
  index = arrays["index"]
  if len(index) != len(data) or index.min() != 0 or index.max() != len(data) - 1:
    raise JaxkdError(f"soft label cache {path} covers indices {index.min()}..{index.max()} "
                     f"({len(index)} rows); the data has indices 0..{len(data) - 1}. Write it "
                     f"again: python -m jaxkd soft_labels --teacher=<teacher workdir> --out={path}")
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

