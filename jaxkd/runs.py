"""A finished run, loaded back from its workdir: teachers, reports and export use it."""

import dataclasses
import json
import pathlib
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from jaxkd.checkpoint import Checkpointer
from jaxkd.data import ArrayDataset, Preprocess, preprocessing
from jaxkd.data.augment import model_input
from jaxkd.errors import JaxkdError
from jaxkd.models import create_model
from jaxkd.sharding import batch_sharding, replicated, shard_batch, split_largest_axis

# How load_run lays out a run's variables on the mesh: a name, or a function
# (abstract variables, mesh) -> their shardings, like sharding.split_largest_axis.
LAYOUTS = {"replicated": lambda tree, mesh: jax.tree.map(lambda _: replicated(mesh), tree),
           "sharded": split_largest_axis}
Layout = str | Callable[[Any, Mesh], Any] | None


@dataclasses.dataclass
class Run:
  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: dict  # {'params': ..., other collections} (no optimizer state), laid out on the mesh
  num_classes: int
  image_shape: tuple[int, ...]  # the input shape of one example
  step: int
  input_kind: str = "image"  # image | features | tokens (jaxkd.data.arrays.KINDS)

  @property
  def num_params(self) -> int:
    return sum(x.size for x in jax.tree.leaves(self.variables["params"]))

  @property
  def num_bytes(self) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(self.variables))

  def preprocess(self) -> Preprocess:
    return Preprocess(**preprocessing(self.config.dataset, self.image_shape[-1]))


def load_run(workdir: str | pathlib.Path, mesh: Mesh, layout: Layout = None) -> Run:
  """The model and latest trained variables of the run in `workdir`.

  Only the variables (params and the model's other collections) are read from the checkpoint,
  never the optimizer state or the rest of the train state, each array straight into its
  place on `mesh`: `layout` None or 'replicated' copies it to every device; 'sharded' splits
  the large arrays over the devices (sharding.split_largest_axis: a teacher too big for one
  device); or a function (abstract variables, mesh) -> shardings. A damaged newest checkpoint
  is skipped (with a warning) for the one before it.
  """
  if layout is None or isinstance(layout, str):
    if (layout or "replicated") not in LAYOUTS:
      raise JaxkdError(f"layout={layout!r}: use one of {sorted(LAYOUTS)} or a function "
                       "(abstract variables, mesh) -> shardings.")
    layout = LAYOUTS[layout or "replicated"]
  workdir = pathlib.Path(workdir)
  info_path = workdir / "run_info.json"
  if not (workdir / "config.json").exists() or not info_path.exists():
    raise JaxkdError(f"{workdir} is not a jaxkd run directory (no config.json / run_info.json); "
                     "give the --workdir of a training run.")
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  info = json.loads(info_path.read_text())
  checkpointer = Checkpointer(workdir, every_steps=1, read_only=True)
  if checkpointer.latest_step() is None:
    checkpointer.close()
    raise JaxkdError(f"the run in {workdir} has no checkpoint yet; train it first with "
                     f"python -m jaxkd.main --config=<its config> --workdir={workdir}")

  def target(stored: Any) -> dict:
    """{'params', 'model_state'} of the stored train state, each array with its sharding."""
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
  variables = {"params": saved["params"], **saved["model_state"]}
  model = create_model(config.model, info["num_classes"])
  return Run(workdir, config, model, variables, info["num_classes"], tuple(info["image_shape"]), step,
             info.get("input_kind", "image"))


def make_predict(model: nn.Module, preprocess: Preprocess, mesh: Mesh, kind: str = "image"):
  """Returns predict(variables, inputs) -> logits, jitted over the mesh, inference mode;
  inputs of `kind` are preprocessed as training preprocesses them (images only)."""
  apply = lambda variables, inputs: model.apply(
      variables, model_input({kind: inputs}, preprocess), train=False)
  return jax.jit(apply, in_shardings=(replicated(mesh), batch_sharding(mesh)),
                 out_shardings=batch_sharding(mesh))


def logits_of(model: nn.Module, variables: dict, preprocess: Preprocess, data: ArrayDataset,
              batch_size: int, mesh: Mesh) -> np.ndarray:
  """The model's logits [N, C] for every example of `data`, in order (float32, on the host)."""
  predict = make_predict(model, preprocess, mesh, data.kind)
  outputs = []
  for batch in data.eval_batches(batch_size):  # Whole batches on this host.
    logits = predict(variables, shard_batch({"inputs": batch[data.kind]}, mesh)["inputs"])
    outputs.append(np.asarray(jax.device_get(logits))[batch["mask"] > 0])
  return np.concatenate(outputs).astype(np.float32)


def predict_logits(run: Run, data: ArrayDataset, batch_size: int, mesh: Mesh) -> np.ndarray:
  """Logits [N, C] for every example of `data`, in order (float32, on the host)."""
  if data.num_classes != run.num_classes:
    raise JaxkdError(f"the model in {run.workdir} predicts {run.num_classes} classes, but "
                     f"{data.name} has {data.num_classes}; teacher and student need the same classes.")
  return logits_of(run.model, run.variables, run.preprocess(), data, batch_size, mesh)
