"""Export a trained student alone: its parameters and model state, nothing of the training.

  python -m jaxkd.export --workdir=runs/student [--out=runs/student/export] [--saved_model]
                         [--platforms=cpu,cuda,tpu]

OUT holds, laid out like a run's workdir (so load_run and distill.teachers accept it too):
  checkpoints/<step>/  orbax checkpoint of {'params': ..., 'model_state': {'batch_stats': ...}};
                       no connectors (aux_params), running state (aux_state) or optimizer state
  config.json          the run's config (config.model rebuilds the network)
  run_info.json        num_classes, image_shape (the input shape), input_kind, preprocessing
                       (mean/std on [0, 1] pixels, images only), logit_bias (the run's fitted
                       bias correction, added to the logits; none without one),
                       step, the workdir it came from, parameter count and bytes
  inference_uint8.jaxexport, inference_float32.jaxexport
                       the portable artifact: the inference function with its weights, as
                       jax.export serialises it (StableHLO, any batch size), taking uint8
                       pixels [N, H, W, C] or floats on [0, 1]; it normalises and returns
                       logits [N, classes]. Features: float32 only; tokens: int32 only. Load with jaxkd.export.load_portable(OUT) (jax
                       only: no jaxkd, flax or model code needed) and call it.
  saved_model/         with --saved_model: a TensorFlow SavedModel (jax2tf), the same function
                       for TF serving (signatures serving_default, uint8, and serve_float).
                       It stays only because TF serving has no other route from JAX.

Then it prints the student's parameter count, bytes and the latency of one batch.
From Python: model, variables, info = jaxkd.export.load_exported(OUT);
predict = jaxkd.export.make_inference_fn(model, variables, info); logits = predict(images).
TensorFlow is imported only for --saved_model.
"""

import json
import pathlib
import shutil
import sys
import types
from typing import Any, Callable, Sequence

import numpy as np
from absl import flags

from jaxkd.errors import JaxkdError

CONFIG_FILE, INFO_FILE, SAVED_MODEL_DIR = "config.json", "run_info.json", "saved_model"
BIAS_FILE = "bias_correction.json"  # A run's fitted logit bias (jaxkd.bias_correction).
# The input dtypes the portable artifact is written for, per input kind.
INPUT_DTYPES = {"image": ("uint8", "float32"), "features": ("float32",), "tokens": ("int32",)}
PORTABLE_FILE = "inference_{dtype}.jaxexport"


def _bias_correction(workdir: pathlib.Path) -> dict:
  """{'logit_bias': [...], 'bias_source': ...} from the run's bias correction, if it has one."""
  path = workdir / BIAS_FILE
  if not path.exists():
    return {}
  fitted = json.loads(path.read_text())
  return {"logit_bias": fitted["bias"], "bias_source": fitted["source"]}


def _student_tree(variables: dict) -> dict:
  """{'params': ..., 'model_state': {other collections}}: what the export checkpoint holds."""
  return {"params": variables["params"],
          "model_state": {k: v for k, v in variables.items() if k != "params"}}


def _left_out(workdir: pathlib.Path, step: int) -> dict[str, int]:
  """Values per train-state field the export drops (from the run's checkpoint metadata)."""
  import jax

  from jaxkd.checkpoint import Checkpointer

  checkpointer = Checkpointer(workdir, every_steps=1, read_only=True)
  try:
    tree = checkpointer.manager.item_metadata(step).tree
    return {name: int(sum(int(np.prod(getattr(x, "shape", ()) or (1,)))
                          for x in jax.tree.leaves(tree.get(name, {}))))
            for name in ("aux_params", "aux_state", "opt_state")}
  except Exception:  # Metadata is informative only; the export itself does not need it.
    return {}
  finally:
    checkpointer.close()


def export(workdir: str | pathlib.Path, out: str | pathlib.Path | None = None,
           saved_model: bool = False, latency_batch_size: int = 256, latency_repeats: int = 20,
           platforms: Sequence[str] | None = None) -> dict:
  """Writes the student of the run in `workdir` to `out` (default workdir/export); returns
  its run_info (with latency_ms, and what was left out)."""
  import jax

  from jaxkd.checkpoint import Checkpointer
  from jaxkd.report import measure_latency_ms
  from jaxkd.runs import load_run
  from jaxkd.sharding import make_mesh

  workdir = pathlib.Path(workdir)
  out = pathlib.Path(out) if out else workdir / "export"
  if out.resolve() == workdir.resolve():
    raise JaxkdError("--out must differ from --workdir (the export would mix with the run).")
  if out.exists() and any(out.iterdir()):
    old = out / INFO_FILE
    if not (old.exists() and "exported_from" in json.loads(old.read_text())):
      raise JaxkdError(f"{out} exists and is not an export; choose another --out.")
    shutil.rmtree(out)  # A previous export: replaced as a whole.
  run = load_run(workdir, make_mesh(jax.devices()[:1]))
  preprocess = run.preprocess()
  variables = run.variables  # on one device
  out.mkdir(parents=True, exist_ok=True)
  checkpointer = Checkpointer(out, every_steps=1, keep=1)
  checkpointer.save(run.step, _student_tree(variables), force=True)
  checkpointer.close()
  (out / CONFIG_FILE).write_text((workdir / CONFIG_FILE).read_text())
  info = {"exported_from": str(workdir.absolute()), "step": run.step,
          "num_classes": run.num_classes, "image_shape": list(run.image_shape),
          "input_kind": run.input_kind, **_bias_correction(workdir),
          "preprocessing": {"mean": list(preprocess.mean), "std": list(preprocess.std),
                            "input": "uint8 pixels, or floats on [0, 1]; [N, H, W, C]"},
          "model": run.config.model.to_dict(), "collections": sorted(variables),
          "params": run.num_params, "bytes": run.num_bytes,
          "left_out": _left_out(workdir, run.step),
          "versions": {"jax": jax.__version__}}
  (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
  write_portable(run.model, variables, info, out, platforms)
  if saved_model:
    write_saved_model(run.model, variables, info, out / SAVED_MODEL_DIR, platforms)
  images = np.zeros((latency_batch_size, *run.image_shape), INPUT_DTYPES[run.input_kind][0])
  info["latency_batch_size"] = latency_batch_size
  info["latency_ms"] = measure_latency_ms(run, types.SimpleNamespace(images=images),
                                          latency_batch_size, latency_repeats)
  info["device"] = str(jax.devices()[0].device_kind)
  return info


def load_exported(directory: str | pathlib.Path) -> tuple[Any, dict, dict]:
  """(model, variables, info) of an export: variables = {'params': ..., 'batch_stats': ...}
  on the default device; info is run_info.json plus 'config' (the run's ConfigDict)."""
  import jax
  import jax.numpy as jnp
  import ml_collections

  from jaxkd.checkpoint import Checkpointer
  from jaxkd.models import create_model

  directory = pathlib.Path(directory)
  if not (directory / INFO_FILE).exists() or not (directory / CONFIG_FILE).exists():
    raise JaxkdError(f"{directory} is not an export (no {INFO_FILE} / {CONFIG_FILE}); write one "
                     "with python -m jaxkd.export --workdir=<run> --out=<dir>.")
  info = json.loads((directory / INFO_FILE).read_text())
  if "exported_from" not in info:
    raise JaxkdError(f"{directory} is a training run, not an export; export it with python -m "
                     f"jaxkd.export --workdir={directory} (or load it with jaxkd.runs.load_run).")
  config = ml_collections.ConfigDict(json.loads((directory / CONFIG_FILE).read_text()))
  model = create_model(config.model, info["num_classes"])
  shapes = jax.eval_shape(lambda: model.init(
      {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
      jnp.zeros((1, *info["image_shape"]), INPUT_DTYPES[info.get("input_kind", "image")][-1]),
      train=False))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                      _student_tree(dict(shapes)))
  checkpointer = Checkpointer(directory, every_steps=1, read_only=True)
  try:
    restored = checkpointer.restore(like)
  finally:
    checkpointer.close()
  variables = {"params": restored["params"], **restored["model_state"]}
  return model, variables, {**info, "config": config}


def make_inference_fn(model: Any, variables: dict, info: dict) -> Callable:
  """predict(images) -> logits, jitted: uint8 [N, H, W, C] pixels or floats on [0, 1],
  normalised with the export's mean/std, model in inference mode."""
  import jax

  apply = _apply_fn(model, info)
  return jax.jit(lambda images: apply(variables, images))


def _apply_fn(model: Any, info: dict) -> Callable:
  import jax.numpy as jnp

  from jaxkd.data import Preprocess
  from jaxkd.data.augment import model_input

  preprocess = Preprocess(tuple(info["preprocessing"]["mean"]),
                          tuple(info["preprocessing"]["std"]))
  kind, bias = info.get("input_kind", "image"), info.get("logit_bias")

  def apply(variables, inputs):
    logits = model.apply(variables, model_input({kind: inputs}, preprocess), train=False)
    return logits if bias is None else logits + jnp.asarray(bias, logits.dtype)

  return apply


def write_portable(model: Any, variables: dict, info: dict, out: pathlib.Path,
                   platforms: Sequence[str] | None = None) -> None:
  """The inference function with its weights, serialised with jax.export for each input dtype
  of its kind, the batch size symbolic; lowered for `platforms` (default: this machine's)."""
  import jax

  apply = _apply_fn(model, info)
  batch, = jax.export.symbolic_shape("batch")
  for dtype in INPUT_DTYPES[info.get("input_kind", "image")]:
    exported = jax.export.export(jax.jit(lambda images: apply(variables, images)),
                                 platforms=tuple(platforms) if platforms else None)(
        jax.ShapeDtypeStruct((batch, *info["image_shape"]), dtype))
    (out / PORTABLE_FILE.format(dtype=dtype)).write_bytes(exported.serialize())


def load_portable(directory: str | pathlib.Path, dtype: str = "uint8") -> Callable:
  """predict(images) -> logits from an export's portable artifact (jax.export), for `dtype`
  inputs ('uint8' pixels or 'float32' on [0, 1])."""
  import jax

  path = pathlib.Path(directory) / PORTABLE_FILE.format(dtype=dtype)
  if not path.exists():
    raise JaxkdError(f"{path} does not exist; write it with python -m jaxkd.export "
                     f"--workdir=<run> --out={directory}.")
  return jax.export.deserialize(bytearray(path.read_bytes())).call


def write_saved_model(model: Any, variables: dict, info: dict, path: pathlib.Path,
                      platforms: Sequence[str] | None = None) -> None:
  """A TF SavedModel of the inference function (jax2tf): parameters as tf.Variables,
  batch size free; signatures serving_default (uint8) and serve_float (float32 on [0, 1])."""
  if info.get("input_kind", "image") != "image":
    raise JaxkdError("--saved_model writes image signatures (uint8, float on [0, 1]); this "
                     f"model takes {info['input_kind']}: use the portable artifact instead.")
  try:
    import tensorflow as tf
    from jax.experimental import jax2tf
  except ImportError as e:
    raise JaxkdError(f"--saved_model needs TensorFlow ({e}); install tensorflow-cpu, or export "
                     "without --saved_model.") from None
  import jax

  converted = jax2tf.convert(_apply_fn(model, info), polymorphic_shapes=[None, "(b, ...)"],
                             with_gradient=False,
                             native_serialization_platforms=tuple(platforms) if platforms else None)
  tf_variables = tf.nest.map_structure(tf.Variable, jax.device_get(variables))
  module = tf.Module()
  module._variables = tf.nest.flatten(tf_variables)  # Tracked: saved as variables, not constants.
  shape = [None, *info["image_shape"]]
  functions = {}
  for name, dtype in (("serving_default", tf.uint8), ("serve_float", tf.float32)):
    functions[name] = tf.function(lambda images: {"logits": converted(tf_variables, images)},
                                  autograph=False, jit_compile=True,
                                  input_signature=[tf.TensorSpec(shape, dtype, name="images")])
  module.serve, module.serve_float = functions["serving_default"], functions["serve_float"]
  tf.saved_model.save(module, str(path), signatures={
      name: function.get_concrete_function() for name, function in functions.items()})


# -- command line ------------------------------------------------------------------------------

_FLAGS: dict = {}


def define_flags() -> None:
  _FLAGS["workdir"] = flags.DEFINE_string("workdir", None, "Workdir of a trained run.")
  _FLAGS["out"] = flags.DEFINE_string("out", None, "Export directory (default WORKDIR/export).")
  _FLAGS["saved_model"] = flags.DEFINE_boolean("saved_model", False,
                                               "Also write a TF SavedModel (needs TensorFlow).")
  _FLAGS["platforms"] = flags.DEFINE_list(
      "platforms", [], "Platforms the portable artifact and the SavedModel are lowered for "
      "(cpu, cuda, tpu); default: this machine's.")
  _FLAGS["latency_batch_size"] = flags.DEFINE_integer("latency_batch_size", 256,
                                                      "Batch size of the latency measurement.")
  _FLAGS["latency_repeats"] = flags.DEFINE_integer("latency_repeats", 20, "Timed batches.")
  flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
  from absl import logging

  if len(argv) > 1:
    print(f"jaxkd.export: error: unexpected arguments {argv[1:]}", file=sys.stderr)
    sys.exit(2)
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  values = {name: holder.value for name, holder in _FLAGS.items()}
  out = values["out"] or str(pathlib.Path(values["workdir"]) / "export")
  try:
    info = export(values["workdir"], out, values["saved_model"], values["latency_batch_size"],
                  values["latency_repeats"], values["platforms"] or None)
  except JaxkdError as e:
    print(f"jaxkd.export: error: {e}", file=sys.stderr)
    sys.exit(2)
  left = ", ".join(f"{k} ({v:,} values)" for k, v in info["left_out"].items() if v) or "-"
  print(f"exported {info['model']['name']} at step {info['step']} from {values['workdir']} "
        f"to {out}\n"
        f"  params:  {info['params']:,}\n"
        f"  bytes:   {info['bytes']:,} ({info['bytes'] / 2**20:.2f} MiB; collections "
        f"{', '.join(info['collections'])})\n"
        f"  latency: {info['latency_ms']:.3f} ms per batch of {info['latency_batch_size']} "
        f"(median, compiled, one {info['device']} device)\n"
        f"  left out: {left}\n"
        + f"  portable: {pathlib.Path(out) / PORTABLE_FILE.format(dtype='uint8')} (jax.export; "
        f"load with jaxkd.export.load_portable('{out}'))\n"
        + (f"  SavedModel: {pathlib.Path(out) / SAVED_MODEL_DIR} (serving_default: uint8 "
           "images; serve_float: floats on [0, 1])\n" if values["saved_model"] else "")
        + f"  reload: jaxkd.export.load_exported('{out}')")


if __name__ == "__main__":
  from absl import app

  define_flags()
  app.run(main)
