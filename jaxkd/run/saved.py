"""A finished run (or an export), read back from its directory: teachers, reports, export,
warm starts and the Python API read runs here, and only here.

read_variables reads a checkpoint's variables (params and the model's other collections),
never its optimizer state, each array straight into its place on the mesh; load_run adds the
model and what its run_info.json says of its inputs.
"""

import dataclasses
import importlib
import json
import pathlib
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from jaxkd.config import complete
from jaxkd.data import ArrayDataset, Preprocess, preprocessing
from jaxkd.engine.evaluation import logits_of
from jaxkd.engine.sharding import logical_shardings, replicated, split_largest_axis
from jaxkd.errors import JaxkdError
from jaxkd.files import fingerprint
from jaxkd.models import count_params, create_model, hf
from jaxkd.run.checkpoint import Checkpointer

CONFIG_FILE, INFO_FILE, TOKENIZER_FILE = "config.json", "run_info.json", "tokenizer.json"
# A layout: (abstract variables, mesh) -> their shardings, like sharding.split_largest_axis.
Layout = Callable[[Any, Mesh], Any]


def replicated_layout(tree: Any, mesh: Mesh) -> Any:
  return jax.tree.map(lambda _: replicated(mesh), tree)


def logical_layout(model: nn.Module) -> Layout:
  """The model's parameters split by their logical axis names (model.logical_axes:
  sharding.TENSOR_RULES, tensor-parallel), its other collections replicated."""
  if not hasattr(model, "logical_axes"):
    raise JaxkdError(f"{type(model).__name__} names no logical axes for its parameters (no "
                     "logical_axes method); use distill.teacher_layout='sharded' (by largest "
                     "axis) or 'replicated'.")

  def layout(variables, mesh):
    params = variables["params"]
    return {"params": logical_shardings(params, model.logical_axes(params), mesh),
            **replicated_layout({k: v for k, v in variables.items() if k != "params"}, mesh)}

  return layout


def read_variables(directory: str | pathlib.Path, mesh: Mesh, layout: Layout = replicated_layout
                   ) -> tuple[int, dict]:
  """(step, {'params': ..., other collections}) of the newest readable checkpoint in
  `directory` (a run's workdir or an export), each array read straight into `layout` on
  `mesh`; the optimizer state and the rest of the train state are never read. A damaged
  newest checkpoint is skipped (with a warning) for the one before it."""
  directory = pathlib.Path(directory)
  checkpointer = Checkpointer(directory, every_steps=1, read_only=True)
  if checkpointer.latest_step() is None:
    checkpointer.close()
    raise JaxkdError(f"{directory} has no checkpoint yet; train it first with python -m jaxkd "
                     f"train --config=<its config> --workdir={directory}")

  def target(stored: Any) -> dict:
    """{'params', 'model_state'} of the stored state, each array with its sharding."""
    if not isinstance(stored, dict) or "params" not in stored:
      raise JaxkdError(f"the checkpoint in {checkpointer.directory} holds no 'params' (top-level "
                       f"entries: {sorted(stored) if isinstance(stored, dict) else stored!r}); "
                       "give the --workdir of a jaxkd training run or export.")
    shapes = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
    variables = {"params": shapes(stored["params"]), **shapes(stored.get("model_state") or {})}
    variables = jax.tree.map(lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                      sharding=sharding),
                             variables, layout(variables, mesh))
    return {"params": variables.pop("params"), "model_state": variables}

  try:
    step, saved = checkpointer.restore_part(target)
  finally:
    checkpointer.close()
  return step, {"params": saved["params"], **saved["model_state"]}


def read_run_files(directory: str | pathlib.Path) -> tuple[ml_collections.ConfigDict, dict]:
  """(config, run_info) of a run's workdir or an export; fields that older versions named
  otherwise are read under today's names."""
  directory = pathlib.Path(directory)
  if not (directory / CONFIG_FILE).is_file() or not (directory / INFO_FILE).is_file():
    raise JaxkdError(f"{directory} is not a jaxkd run directory (no {CONFIG_FILE} / "
                     f"{INFO_FILE}); give the --workdir of a training run or an export.")
  try:
    config = ml_collections.ConfigDict(json.loads((directory / CONFIG_FILE).read_text()))
    info = json.loads((directory / INFO_FILE).read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise JaxkdError(f"{directory}/{CONFIG_FILE} or {INFO_FILE} is damaged ({e}); train the "
                     "run again in a fresh workdir.") from None
  if "image_shape" in info:  # Before input_shape.
    info.setdefault("input_shape", info.pop("image_shape"))
  if info.get("input_kind") == "features":  # Before the kind was named 'numeric'.
    info["input_kind"] = "numeric"
  info.setdefault("input_kind", "image")
  return complete(config), info


@dataclasses.dataclass
class SavedRun:
  """A trained model read back from its directory: its config, model and variables."""

  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: dict  # {'params': ..., other collections} (no optimizer state), laid out on the mesh
  num_classes: int
  input_shape: tuple[int, ...]  # the shape of one example's input
  step: int
  input_kind: str = "image"  # image | numeric | tokens (jaxkd.data.arrays.KINDS)

  @property
  def num_params(self) -> int:
    return count_params(self.variables["params"])

  @property
  def num_bytes(self) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(self.variables))

  def preprocess(self) -> Preprocess:
    if self.input_kind != "image":  # Numeric inputs and tokens are used as they are.
      return Preprocess((0.0,), (1.0,))
    return Preprocess(**preprocessing(self.config.dataset, self.input_shape[-1]))


LAYOUTS = ("replicated", "sharded", "logical")


def module_class(model: nn.Module) -> dict:
  """Where a user's module class lives and its fields (when plain values), for run_info.json."""
  fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
            if f.init and f.name not in ("parent", "name")}
  try:
    json.dumps(fields)
  except TypeError:
    fields = None
  return {"module": type(model).__module__, "name": type(model).__qualname__, "fields": fields}


def model_of(config: ml_collections.ConfigDict, info: dict, workdir: pathlib.Path, model=None):
  """The run's model: the registered one its config names, `model` (a user's module given by
  the caller), or the user's module class its run_info.json records, where it imports."""
  if model is not None or config.model.name is not None:
    return model if model is not None else create_model(config.model, info["num_classes"])
  recorded = info.get("model_class") or {}
  where = f"{recorded.get('module')}.{recorded.get('name')}"
  if recorded.get("module") in (None, "__main__") or recorded.get("fields") is None:
    raise JaxkdError(f"the run in {workdir} trained a user module ({where}) that cannot be "
                     "rebuilt from its files (defined in a script, or with fields that are not "
                     "plain values); give the module: jaxkd.export(result, out) or "
                     "jaxkd.load_run(workdir, mesh, model=YourModule(...)).")
  try:
    cls = getattr(importlib.import_module(recorded["module"]), recorded["name"])
  except (ImportError, AttributeError) as e:
    raise JaxkdError(f"the run in {workdir} trained {where}, which does not import here ({e}); "
                     "give the module: jaxkd.load_run(workdir, mesh, model=YourModule(...)).") from None
  return cls(**recorded["fields"])


def load_run(workdir: str | pathlib.Path, mesh: Mesh, layout: str | Layout = "replicated",
             model: nn.Module | None = None) -> SavedRun:
  """The model and latest trained variables of the run (or export) in `workdir`, laid out on
  `mesh` by `layout`: 'replicated' (every device holds them), 'sharded' (large arrays split
  on their largest axis: sharding.split_largest_axis, for a teacher too big for one device),
  'logical' (by the model's logical axis names), or a function (abstract variables, mesh) ->
  shardings. `model`: the module of a run that trained a user's module (jaxkd.train_student),
  where its class cannot be imported from what run_info.json records."""
  workdir = pathlib.Path(workdir)
  if hf.is_hf_dir(workdir):
    return load_hf(workdir, mesh, layout)
  config, info = read_run_files(workdir)
  model = model_of(config, info, workdir, model)
  step, variables = read_variables(workdir, mesh, _layout(layout, model))
  return SavedRun(workdir, config, model, variables, info["num_classes"],
                  tuple(info["input_shape"]), step, info["input_kind"])


def _layout(layout: str | Layout, model: nn.Module) -> Layout:
  if not isinstance(layout, str):
    return layout
  if layout not in LAYOUTS:
    raise JaxkdError(f"layout={layout!r}: use one of {list(LAYOUTS)} or a function (abstract "
                     "variables, mesh) -> shardings.")
  return {"replicated": replicated_layout, "sharded": split_largest_axis,
          "logical": None}[layout] or logical_layout(model)


def load_hf(path: pathlib.Path, mesh: Mesh, layout: str | Layout = "replicated",
            on_read=None) -> SavedRun:
  """A Hugging Face causal-LM directory as a run: its model (jaxkd.models.hf) and weights,
  each tensor read by name straight into its layout on `mesh` (jaxkd.models.hf.load_params;
  `on_read(name, shape)` sees each read)."""
  from jaxkd.config import base_config

  config = base_config()
  config.model = ml_collections.ConfigDict({"name": "hf", "path": str(path), "init_from": ""})
  model, vocabulary = create_model(config.model, 0), hf.model_config(hf.read_config(path))[1]
  tokens = jax.numpy.zeros((1, 8), jax.numpy.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens))
  abstract = {"params": shapes["params"]}
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract, _layout(layout, model)(abstract, mesh))
  family = hf.model_config(hf.read_config(path))[0].name
  params = hf.load_params(path, abstract["params"], family, on_read=on_read)
  return SavedRun(path, config, model, {"params": params}, vocabulary, (model.max_len,), 0,
                  "tokens")


def pin(run: SavedRun) -> dict:
  """What identifies the checkpoint a run was read from: its directory, step and a
  fingerprint of the step's files (a teacher trained further, or again, gets another; a
  Hugging Face directory: of its config.json and weights)."""
  root = pathlib.Path(run.workdir).absolute()
  if hf.is_hf_dir(root):
    files = [p for p in root.iterdir() if p.suffix in (".json", ".safetensors")]
  else:
    root = root / "checkpoints" / str(run.step)
    files = [p for p in root.rglob("*") if p.is_file()]
  return {"path": str(pathlib.Path(run.workdir).absolute()), "step": run.step,
          "fingerprint": fingerprint(root, files)}


def predict_logits(run: SavedRun, data: ArrayDataset, batch_size: int, mesh: Mesh) -> np.ndarray:
  """Logits [N, C] for every example of `data`, in order (float32, on the host)."""
  if data.num_classes != run.num_classes:
    raise JaxkdError(f"the model in {run.workdir} predicts {run.num_classes} classes, but "
                     f"{data.name} has {data.num_classes}; teacher and student need the same classes.")
  return logits_of(run.model, run.variables, run.preprocess(), data, batch_size, mesh)
