"""Export a trained student alone: its parameters and model state, nothing of the training.

  python -m jaxkd export --workdir=runs/student [--out=runs/student/export] [--saved_model]
                         [--platforms=cpu,cuda,tpu]

OUT holds, laid out like a run's workdir (so load_run and distill.teachers accept it too):
  checkpoints/<step>/  orbax checkpoint of {'params': ..., 'model_state': {'batch_stats': ...}};
                       no connectors (aux_params), running state (aux_state) or optimizer state
  config.json          the run's config (config.model rebuilds the network)
  run_info.json        num_classes, input_shape, input_kind, preprocessing (mean/std on [0, 1]
                       pixels, images only), logit_bias (the run's fitted bias correction,
                       added to the logits; none without one), step, the workdir it came
                       from, parameter count and bytes
  inference_uint8.jaxexport, inference_float32.jaxexport
                       the portable artifact: the inference function with its weights, as
                       jax.export serialises it (StableHLO, any batch size), taking uint8
                       pixels [N, H, W, C] or floats on [0, 1]; it normalises and returns
                       logits [N, classes]. Numeric inputs: float32 only; tokens: int32 only.
                       Load with jaxkd.jobs.export.load_portable(OUT) (jax only: no jaxkd,
                       flax or model code needed) and call it.
  saved_model/         with --saved_model: a TensorFlow SavedModel (jax2tf), the same function
                       for TF serving (signatures serving_default, uint8, and serve_float).
                       It stays only because TF serving has no other route from JAX.
  hf/                  a language model of the gpt2 or llama family as a Hugging Face
                       directory (config.json, model.safetensors, the run's tokenizer.json):
                       transformers loads it (AutoModelForCausalLM.from_pretrained), and so
                       do distill.teachers and model.init_from.

The export is written beside OUT under a temporary name and renamed into place when whole:
a failed export (a wrong --workdir, a full disk) leaves an earlier export as it was.
From Python: model, variables, info = jaxkd.jobs.export.load_exported(OUT);
predict = jaxkd.jobs.export.make_inference_fn(model, variables, info); logits = predict(images).
TensorFlow is imported only for --saved_model.
"""

import json
import pathlib
import shutil
import tempfile
from typing import Any, Callable, Sequence

import numpy as np

from jaxkd.errors import JaxkdError
from jaxkd.files import atomic_path, write_bytes, write_text
from jaxkd.run.bias_correction import BIAS_FILE
from jaxkd.run.saved import CONFIG_FILE, INFO_FILE

SAVED_MODEL_DIR, HF_DIR = "saved_model", "hf"
# The input dtypes the portable artifact is written for, per input kind.
INPUT_DTYPES = {"image": ("uint8", "float32"), "numeric": ("float32",), "tokens": ("int32",)}
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

  from jaxkd.run.checkpoint import Checkpointer

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


def _check_destination(workdir: pathlib.Path, out: pathlib.Path) -> None:
  if out.resolve() == workdir.resolve():
    raise JaxkdError("--out must differ from --workdir (the export would mix with the run).")
  if out.exists() and not out.is_dir():
    raise JaxkdError(f"{out} is a file; choose another --out.")
  if out.exists() and any(out.iterdir()):
    old = out / INFO_FILE
    try:
      exported = old.exists() and "exported_from" in json.loads(old.read_text())
    except json.JSONDecodeError:
      exported = False
    if not exported:
      raise JaxkdError(f"{out} exists and is not an export; choose another --out.")


def _replace_dir(built: pathlib.Path, out: pathlib.Path) -> None:
  """`built` (a finished export) becomes `out`; an earlier export there is removed after."""
  old = None
  if out.exists():
    old = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    old.rmdir()
    out.rename(old)
  built.rename(out)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def export(source, out: str | pathlib.Path | None = None,
           saved_model: bool = False, latency_batch_size: int = 256, latency_repeats: int = 20,
           platforms: Sequence[str] | None = None) -> dict:
  """Writes the student of `source` (a run's workdir, or the Result of jaxkd.train_student:
  its module and workdir) to `out` (default workdir/export); returns its run_info (with
  latency_ms, and what was left out)."""
  import jax

  from jaxkd.engine.sharding import make_mesh
  from jaxkd.jobs.timing import model_latency_ms
  from jaxkd.run.checkpoint import Checkpointer
  from jaxkd.run.saved import load_run, read_run_files

  model = None if isinstance(source, (str, pathlib.Path)) else source.model
  workdir = pathlib.Path(source if model is None else source.workdir)
  out = pathlib.Path(out) if out else workdir / "export"
  _check_destination(workdir, out)
  # The source is read whole before `out` is touched.
  run = load_run(workdir, make_mesh(jax.devices()[:1]), model=model)
  recorded = read_run_files(workdir)[1].get("model_class")
  preprocess, variables = run.preprocess(), run.variables  # on one device
  out.parent.mkdir(parents=True, exist_ok=True)
  built = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.partial.", dir=out.parent))
  try:
    checkpointer = Checkpointer(built, every_steps=1, keep=1)
    checkpointer.save(run.step, _student_tree(variables), force=True)
    checkpointer.close()
    write_text(built / CONFIG_FILE, (workdir / CONFIG_FILE).read_text())
    info = {"exported_from": str(workdir.absolute()), "step": run.step,
            "num_classes": run.num_classes, "input_shape": list(run.input_shape),
            "input_kind": run.input_kind, **_bias_correction(workdir),
            "preprocessing": {"mean": list(preprocess.mean), "std": list(preprocess.std),
                              "input": "uint8 pixels, or floats on [0, 1]; [N, H, W, C]"},
            "model": run.config.model.to_dict(), "collections": sorted(variables),
            **({"model_class": recorded} if recorded else {}),
            "params": run.num_params, "bytes": run.num_bytes,
            "left_out": _left_out(workdir, run.step),
            "versions": {"jax": jax.__version__}}
    write_text(built / INFO_FILE, json.dumps(info, indent=2) + "\n")
    write_portable(run.model, variables, info, built, platforms)
    if hf_layout(run.model):
      write_hf(run, built / HF_DIR)
      info["hf"] = HF_DIR
    if saved_model:
      write_saved_model(run.model, variables, info, built / SAVED_MODEL_DIR, platforms)
    _replace_dir(built, out)
  finally:
    shutil.rmtree(built, ignore_errors=True)
  inputs = np.zeros((latency_batch_size, *run.input_shape), INPUT_DTYPES[run.input_kind][0])
  info["latency_batch_size"] = latency_batch_size
  info["latency_ms"] = model_latency_ms(run, inputs, latency_repeats)
  info["device"] = str(jax.devices()[0].device_kind)
  return info


def hf_layout(model: Any) -> bool:
  """Whether `model` has a Hugging Face architecture (jaxkd.models.hf)."""
  return type(model).__name__ in ("GPT2", "Llama")


def write_hf(run, out: pathlib.Path) -> None:
  """The run's model as a Hugging Face directory: config.json, model.safetensors and the
  tokenizer.json kept beside the run (with a tokenizer_config.json naming its end token)."""
  from jaxkd.models import hf
  from jaxkd.run.saved import TOKENIZER_FILE

  from jaxkd.data import tokenizers

  out.mkdir(parents=True, exist_ok=True)
  tokenizer = pathlib.Path(run.workdir) / TOKENIZER_FILE
  end = tokenizers.end_of_text(tokenizers.load(tokenizer)) if tokenizer.is_file() else None
  hf.save_params(run.variables["params"], run.model, out, end)
  if tokenizer.is_file():  # with what transformers' AutoTokenizer needs beside it
    write_bytes(out / TOKENIZER_FILE, tokenizer.read_bytes())
    token = tokenizers.load(tokenizer).id_to_token(end)
    write_text(out / "tokenizer_config.json", json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": token, "eos_token": token,
         "model_max_length": run.model.max_len}, indent=2) + "\n")


def hf_parity_sample(directory: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
  """jaxkd_logits.npz beside a Hugging Face directory jaxkd wrote: fixed tokens [3, 10] with
  right and left padding, their mask and the logits jaxkd computes from the directory, for
  tests/reference/make_hf_fixtures.py --check (transformers must give the same)."""
  import jax
  import jax.numpy as jnp

  from jaxkd.engine.sharding import make_mesh
  from jaxkd.run.saved import load_run

  directory = pathlib.Path(directory)
  run = load_run(directory, make_mesh(jax.devices()[:1]))
  tokens = np.random.default_rng(seed).integers(0, run.num_classes, (3, 10)).astype(np.int32)
  mask = np.ones((3, 10), np.int32)
  mask[1, 7:], mask[2, :4] = 0, 0
  logits = run.model.apply(run.variables, jnp.asarray(tokens), mask=jnp.asarray(mask))
  out = directory / "jaxkd_logits.npz"
  with atomic_path(out, suffix=".npz") as temporary:
    np.savez(temporary, tokens=tokens, mask=mask, logits=np.asarray(logits, np.float32))
  return out


def load_exported(directory: str | pathlib.Path, model: Any = None) -> tuple[Any, dict, dict]:
  """(model, variables, info) of an export: variables = {'params': ..., 'batch_stats': ...}
  on the default device; info is run_info.json plus 'config' (the run's ConfigDict).
  `model`: for the export of a user's module whose class does not import here."""
  import jax

  from jaxkd.engine.sharding import make_mesh
  from jaxkd.run.saved import model_of, read_run_files, read_variables

  directory = pathlib.Path(directory)
  config, info = read_run_files(directory)
  if "exported_from" not in info:
    raise JaxkdError(f"{directory} is a training run, not an export; export it with python -m "
                     f"jaxkd export --workdir={directory} (or load it with jaxkd.load_run).")
  model = model_of(config, info, directory, model)
  _, variables = read_variables(directory, make_mesh(jax.devices()[:1]))
  return model, variables, {**info, "config": config}


def _apply_fn(model: Any, info: dict) -> Callable:
  """apply(variables, inputs) -> logits with the export's preprocessing and logit bias."""
  from jaxkd.data import Preprocess
  from jaxkd.engine.evaluation import inference

  preprocess = Preprocess(tuple(info["preprocessing"]["mean"]),
                          tuple(info["preprocessing"]["std"]))
  return inference(model, preprocess, info["input_kind"], info.get("logit_bias"))


def make_inference_fn(model: Any, variables: dict, info: dict) -> Callable:
  """predict(images) -> logits, jitted: uint8 [N, H, W, C] pixels or floats on [0, 1],
  normalised with the export's mean/std, model in inference mode."""
  import jax

  apply = _apply_fn(model, info)
  return jax.jit(lambda inputs: apply(variables, inputs))


def write_portable(model: Any, variables: dict, info: dict, out: pathlib.Path,
                   platforms: Sequence[str] | None = None) -> None:
  """The inference function with its weights, serialised with jax.export for each input dtype
  of its kind, the batch size symbolic; lowered for `platforms` (default: this machine's)."""
  import jax

  predict = make_inference_fn(model, variables, info)
  batch, = jax.export.symbolic_shape("batch")
  for dtype in INPUT_DTYPES[info["input_kind"]]:
    exported = jax.export.export(predict, platforms=tuple(platforms) if platforms else None)(
        jax.ShapeDtypeStruct((batch, *info["input_shape"]), dtype))
    write_bytes(out / PORTABLE_FILE.format(dtype=dtype), exported.serialize())


def load_portable(directory: str | pathlib.Path, dtype: str = "uint8") -> Callable:
  """predict(images) -> logits from an export's portable artifact (jax.export), for `dtype`
  inputs ('uint8' pixels or 'float32' on [0, 1])."""
  import jax

  path = pathlib.Path(directory) / PORTABLE_FILE.format(dtype=dtype)
  if not path.exists():
    raise JaxkdError(f"{path} does not exist; write it with python -m jaxkd export "
                     f"--workdir=<run> --out={directory}.")
  return jax.export.deserialize(bytearray(path.read_bytes())).call


def write_saved_model(model: Any, variables: dict, info: dict, path: pathlib.Path,
                      platforms: Sequence[str] | None = None) -> None:
  """A TF SavedModel of the inference function (jax2tf): parameters as tf.Variables,
  batch size free; signatures serving_default (uint8) and serve_float (float32 on [0, 1])."""
  if info["input_kind"] != "image":
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
  shape = [None, *info["input_shape"]]
  functions = {}
  for name, dtype in (("serving_default", tf.uint8), ("serve_float", tf.float32)):
    functions[name] = tf.function(lambda images: {"logits": converted(tf_variables, images)},
                                  autograph=False, jit_compile=True,
                                  input_signature=[tf.TensorSpec(shape, dtype, name="images")])
  module.serve, module.serve_float = functions["serving_default"], functions["serve_float"]
  tf.saved_model.save(module, str(path), signatures={
      name: function.get_concrete_function() for name, function in functions.items()})
