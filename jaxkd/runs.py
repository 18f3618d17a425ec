"""A finished run, loaded back from its workdir: teachers, reports and export use it."""

import dataclasses
import json
import pathlib

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from jaxkd.checkpoint import Checkpointer
from jaxkd.data import ArrayDataset, Preprocess, eval_batches, preprocessing
from jaxkd.errors import JaxkdError
from jaxkd.models import create_model
from jaxkd.sharding import batch_sharding, replicate, replicated, shard_batch


@dataclasses.dataclass
class Run:
  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: dict  # {'params': ..., other collections}, replicated on the mesh
  num_classes: int
  image_shape: tuple[int, ...]
  step: int

  @property
  def num_params(self) -> int:
    return sum(x.size for x in jax.tree.leaves(self.variables["params"]))

  @property
  def num_bytes(self) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(self.variables))

  def preprocess(self) -> Preprocess:
    return Preprocess(**preprocessing(self.config.dataset, self.image_shape[-1]))


def load_run(workdir: str | pathlib.Path, mesh: Mesh) -> Run:
  """The model and latest trained variables of the run in `workdir`."""
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
  # Arrays come back laid out as saved where this process can (same devices); a checkpoint
  # from another topology (e.g. written by several processes) comes back replicated on `mesh`.
  # A damaged newest checkpoint is skipped (with a warning) for the one before it.
  try:
    step, saved = checkpointer.restore_saved(fallback_sharding=replicated(mesh))
  finally:
    checkpointer.close()
  variables = replicate({"params": saved["params"], **saved["model_state"]}, mesh)
  model = create_model(config.model, info["num_classes"])
  return Run(workdir, config, model, variables, info["num_classes"], tuple(info["image_shape"]), step)


def make_predict(model: nn.Module, preprocess: Preprocess, mesh: Mesh):
  """Returns predict(variables, images) -> logits, jitted over the mesh, inference mode."""
  return jax.jit(lambda variables, images: model.apply(variables, preprocess(images), train=False),
                 in_shardings=(replicated(mesh), batch_sharding(mesh)),
                 out_shardings=batch_sharding(mesh))


def predict_logits(run: Run, data: ArrayDataset, batch_size: int, mesh: Mesh) -> np.ndarray:
  """Logits [N, C] for every example of `data`, in order (float32, on the host)."""
  if data.num_classes != run.num_classes:
    raise JaxkdError(f"the model in {run.workdir} predicts {run.num_classes} classes, but "
                     f"{data.name} has {data.num_classes}; teacher and student need the same classes.")
  predict = make_predict(run.model, run.preprocess(), mesh)
  outputs = []
  for batch in eval_batches(data, batch_size):  # Whole batches on this host.
    logits = predict(run.variables, shard_batch({"image": batch["image"]}, mesh)["image"])
    outputs.append(np.asarray(jax.device_get(logits))[batch["mask"] > 0])
  return np.concatenate(outputs).astype(np.float32)
