"""Where a distillation run gets its teacher outputs: teacher runs (online) or a cache."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
from jax.sharding import Mesh

from jaxkd.data import ArrayDataset
from jaxkd.data.tokenizers import same_vocabulary
from jaxkd.distill import Objective
from jaxkd.errors import JaxkdError
from jaxkd.engine.sharding import place
from jaxkd.files import fingerprint
from jaxkd.log import say
from jaxkd.run.saved import TOKENIZER_FILE, load_run, pin
from jaxkd.run.soft_labels import cache_meta, load_soft_labels


def _check_tokenizer(run, data: ArrayDataset) -> None:
  """A teacher whose tokenizer gives ids to other tokens than the data's would be compared
  with the student id by id on different tokens: refused."""
  theirs = pathlib.Path(run.workdir) / TOKENIZER_FILE
  if data.tokenizer and theirs.is_file() and not same_vocabulary(theirs, data.tokenizer):
    raise JaxkdError(f"the teacher in {run.workdir} has another tokenizer ({theirs}) than the "
                     f"data ({data.tokenizer}): its ids stand for other tokens. Set "
                     f"dataset.tokenizer={run.workdir} so that both read the same ids, or "
                     "distil across tokenizers with the uld term (distill.terms.uld).")


def prepare_teachers(config: ml_collections.ConfigDict, objective: Objective,
                     train_data: ArrayDataset, preprocess_fields: dict, mesh: Mesh,
                     dtype: str = "float32"):
  """Returns (teacher models, teacher variables, cached logits [N, K, C] or None; for a
  language model's cache, its batch extras: jaxkd.run.soft_labels.load_soft_labels; the
  sources: {'teachers': [pin]} or {'soft_labels': [pin]}, what the run's run_info.json
  records and a resume must find again).

  config is config.distill: `teachers` (workdirs, run online in the step) or
  `soft_labels` (cache files, one per teacher; no teacher runs at all). `teacher_layout`
  lays each online teacher's variables out on the mesh (jaxkd.run.saved.load_run: replicated,
  sharded by largest axis, or by logical axes), read straight into that layout; `dtype`
  (config.precision.teacher) other than float32 stores their floating variables in it.
  """
  teachers, caches = tuple(config.teachers), tuple(config.soft_labels)
  if not objective.needs_teacher:
    return (), (), None, {}
  if caches:
    _check_cache_teachers(caches, teachers)
    if objective.teacher_paths:
      raise JaxkdError(f"feature terms (paths {list(objective.teacher_paths)}) need the teacher "
                       "online: soft label caches hold logits only. Set distill.teachers instead.")
    sources = {"soft_labels": [{"path": str(pathlib.Path(path).absolute()),
                                "step": cache_meta(path).get("teacher_step"),
                                "fingerprint": fingerprint(pathlib.Path(path).parent, [path])}
                               for path in caches]}
    if objective.cross_tokenizer:  # read and lined up by jaxkd.run.cross_tokenizer
      return (), (), None, sources
    logits = [load_soft_labels(path, train_data, preprocess_fields) for path in caches]
    if isinstance(logits[0], dict):  # A language model's top-k per token.
      if len(logits) > 1:
        raise JaxkdError("a language model distils from one cached teacher (top-k per token); "
                         "give one distill.soft_labels file, or the teachers online.")
      return (), (), logits[0], sources
    return (), (), np.stack(logits, axis=1), sources
  if not teachers:
    names = [t.label for t in objective.terms if t.method.uses_teacher]
    raise JaxkdError(f"objective term(s) {names} need a teacher: set distill.teachers to the "
                     "workdir(s) of trained teachers, or distill.soft_labels to cached soft labels.")
  # Each teacher's variables are read straight into their layout (a sharded teacher is never
  # whole on one device), without its optimizer state.
  runs = [load_run(workdir, mesh, layout=config.teacher_layout) for workdir in teachers]
  for run in runs:
    if objective.cross_tokenizer:  # its own tokenizer and vocabulary (run.cross_tokenizer)
      continue
    if train_data.kind == "tokens" and run.num_classes > train_data.num_classes:
      say(f"the teacher in {run.workdir} has {run.num_classes} output ids, the tokenizer "
          f"{train_data.num_classes}: compared on the tokenizer's ids (its vocabulary's "
          "padding left out).")
    elif run.num_classes != train_data.num_classes:
      raise JaxkdError(f"the teacher in {run.workdir} predicts {run.num_classes} classes but the "
                       f"student's dataset {train_data.name} has {train_data.num_classes}; "
                       "distil between models of the same classes.")
    if train_data.kind == "tokens":
      _check_tokenizer(run, train_data)
      continue  # No preprocessing; a causal LM reads any length up to its max_len.
    if run.input_shape != train_data.input_shape:
      raise JaxkdError(_input_shape_mismatch(run, train_data))
    teacher_fields = run.preprocess()
    if (teacher_fields.mean, teacher_fields.std) != (preprocess_fields["mean"], preprocess_fields["std"]):
      raise JaxkdError(f"the teacher in {run.workdir} was trained on inputs normalised with mean "
                       f"{teacher_fields.mean} / std {teacher_fields.std}, the student uses "
                       f"{preprocess_fields['mean']} / {preprocess_fields['std']}; use the same "
                       "dataset.mean and dataset.std.")
  variables = [r.variables for r in runs]
  if dtype != "float32":  # Cast in place: each array keeps the layout it was loaded into.
    variables = [place(v, jax.tree.map(lambda x: x.sharding, v), jnp.dtype(dtype))
                 for v in variables]
  return [r.model for r in runs], variables, None, {"teachers": [pin(r) for r in runs]}


def _check_cache_teachers(caches: tuple, teachers: tuple) -> None:
  """distill.soft_labels wins over distill.teachers (no teacher runs): refuse the two naming
  different teachers rather than silently read the cache's."""
  if not teachers:
    return
  named = {str(pathlib.Path(t).absolute()) for t in teachers}
  for path in caches:
    wrote = cache_meta(path).get("teacher_workdir")
    if wrote not in named:
      raise JaxkdError(f"distill.soft_labels {path} was written by the teacher in {wrote}, but "
                       f"distill.teachers names {sorted(named)}; with a cache no teacher runs, so "
                       "give one of the two (or a cache of that teacher).")


def _input_shape_mismatch(run, train_data) -> str:
  """The error for a teacher whose images differ from the student's: what differs and which
  settings align them (the teacher's own, from its config.json)."""
  dataset = run.config.dataset
  settings = [f"dataset.name={dataset.name!r}"]
  if dataset.name == "npz":
    settings.append(f"dataset.path={dataset.path!r}")
  if dataset.image_size is not None:
    settings.append(f"dataset.image_size={dataset.image_size}")
  message = (f"the teacher in {run.workdir} takes images {run.input_shape}, the student's data "
             f"({train_data.name}) are {train_data.input_shape}; teacher and student must see the "
             f"same images. Give the student the teacher's dataset settings ({', '.join(settings)}"
             f", as in {run.workdir}/config.json), or distil from a teacher trained on the "
             "student's dataset.")
  height, width, channels = run.input_shape
  if hasattr(train_data, "image_size") and height == width and (
      channels == train_data.input_shape[-1]):  # Streamed data: its size is a setting.
    message += (f" For the student's streamed {train_data.name}, dataset.image_size={height} "
                "gives the teacher's size.")
  return message
