"""Hugging Face causal-LM directories in and out: config.json <-> a jaxkd model (gpt2 or
llama, which covers Llama, Mistral and Qwen2), *.safetensors <-> its parameters.

Reading is lazy and by name: each parameter is read from its tensor through safetensors'
safe_open / get_slice, straight into the sharding it is given, one device's slice at a
time (a teacher sharded over 8 devices is never whole on one device or in one host
buffer). A checkpoint split into shards (model.safetensors.index.json) reads the same way.
The checkpoint's dtype is kept (a bfloat16 checkpoint stays bfloat16) unless a dtype is
given. Writing gives a directory transformers loads: config.json in its own terms, the
tensors under its names in model.safetensors.
"""

import json
import pathlib
import re
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from jaxkd.errors import JaxkdError

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SUPPORTED = ("gpt2", "llama", "mistral", "qwen2")
ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
                 "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": jax.numpy.bfloat16}


def is_hf_dir(path: str | pathlib.Path) -> bool:
  """A Hugging Face model directory: config.json with a model_type and safetensors weights
  (and no jaxkd run_info.json)."""
  path = pathlib.Path(path)
  if not (path / CONFIG_FILE).is_file() or (path / "run_info.json").exists():
    return False
  try:
    config = json.loads((path / CONFIG_FILE).read_text())
  except (OSError, json.JSONDecodeError):
    return False
  return "model_type" in config and bool(list(path.glob("*.safetensors")))


def read_config(path: str | pathlib.Path) -> dict:
  try:
    return json.loads((pathlib.Path(path) / CONFIG_FILE).read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise JaxkdError(f"{path}/{CONFIG_FILE} cannot be read ({e}); give a Hugging Face model "
                     "directory (config.json, *.safetensors).") from None


def _rope(config: dict) -> dict:
  """The rotary settings of a config, in the legacy form (rope_theta, rope_scaling) or
  transformers 5's (rope_parameters)."""
  given = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
  kind = given.get("rope_type", given.get("type", "default"))
  theta = given.get("rope_theta", config.get("rope_theta", 10000.0))
  if kind not in ("default", "linear", "llama3"):
    raise JaxkdError(f"rope type '{kind}' is not supported (default, linear and llama3 are); "
                     "this checkpoint cannot be imported as it is.")
  if given.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)) != 1.0:
    raise JaxkdError("partial rotary embeddings (partial_rotary_factor < 1) are not supported.")
  fields = {"rope_theta": float(theta), "rope_type": kind}
  if kind != "default":
    fields["rope_factor"] = float(given["factor"])
  if kind == "llama3":
    fields.update(rope_low_freq_factor=float(given["low_freq_factor"]),
                  rope_high_freq_factor=float(given["high_freq_factor"]),
                  rope_original_max=int(given.get("original_max_position_embeddings",
                                                  config.get("max_position_embeddings"))))
  return fields


def model_config(config: dict) -> tuple[ml_collections.ConfigDict, int]:
  """(the jaxkd model config, the vocabulary size) of a Hugging Face config.json."""
  kind = config.get("model_type")
  if kind not in SUPPORTED:
    raise JaxkdError(f"model_type '{kind}' is not supported: jaxkd imports {list(SUPPORTED)} "
                     "(GPT-2 and the Llama family's layout).")
  if kind == "gpt2":
    fields = dict(name="gpt2", num_layers=config["n_layer"], hidden_size=config["n_embd"],
                  num_heads=config["n_head"], inner_size=config.get("n_inner") or 0,
                  max_len=config["n_positions"],
                  layer_norm_eps=config.get("layer_norm_epsilon", 1e-5),
                  activation=config.get("activation_function", "gelu_new"),
                  scale_attn_by_inverse_layer_idx=config.get("scale_attn_by_inverse_layer_idx",
                                                             False))
    if not config.get("scale_attn_weights", True) or config.get("reorder_and_upcast_attn"):
      raise JaxkdError("GPT-2 with scale_attn_weights=False or reorder_and_upcast_attn is not "
                       "supported.")
    return ml_collections.ConfigDict({**fields, "init_from": ""}), config["vocab_size"]
  heads = config["num_attention_heads"]
  layers = config["num_hidden_layers"]
  window, sliding = 0, ()
  if kind == "mistral" and config.get("sliding_window"):
    window = int(config["sliding_window"])
  if kind == "qwen2" and config.get("use_sliding_window") and config.get("sliding_window"):
    window = int(config["sliding_window"])
    types = config.get("layer_types") or ["sliding_attention" if i >= config.get(
        "max_window_layers", layers) else "full_attention" for i in range(layers)]
    sliding = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
    if not sliding:
      window = 0
  bias = config.get("attention_bias", False)
  fields = dict(
      name="llama", num_layers=layers, hidden_size=config["hidden_size"],
      intermediate_size=config["intermediate_size"], num_heads=heads,
      num_kv_heads=config.get("num_key_value_heads") or heads,
      head_dim=config.get("head_dim") or config["hidden_size"] // heads,
      max_len=config.get("max_position_embeddings", 2048),
      rms_norm_eps=config.get("rms_norm_eps", 1e-6),
      qkv_bias=True if kind == "qwen2" else bias, o_bias=False if kind == "qwen2" else bias,
      mlp_bias=config.get("mlp_bias", False),
      tie_embeddings=config.get("tie_word_embeddings", False),
      activation=config.get("hidden_act", "silu"), sliding_window=window,
      sliding_layers=sliding, **_rope(config))
  return ml_collections.ConfigDict({**fields, "init_from": ""}), config["vocab_size"]


def hf_config(model: Any) -> dict:
  """config.json for a jaxkd gpt2 or llama model (the architecture transformers builds)."""
  name = type(model).__name__
  if name == "GPT2":
    return {"architectures": [ARCHITECTURES["gpt2"]], "model_type": "gpt2",
            "vocab_size": model.num_classes, "n_positions": model.max_len,
            "n_embd": model.hidden_size, "n_layer": model.num_layers, "n_head": model.num_heads,
            "n_inner": model.inner_size or None, "activation_function": model.activation,
            "layer_norm_epsilon": model.layer_norm_eps,
            "scale_attn_by_inverse_layer_idx": model.scale_attn_by_inverse_layer_idx,
            "tie_word_embeddings": True, "dtype": "float32"}
  if name != "Llama":
    raise JaxkdError(f"{name} has no Hugging Face layout; models of the gpt2 and llama "
                     "families are written as Hugging Face directories.")
  if model.qkv_bias and not model.o_bias and not model.mlp_bias:
    kind, extra = "qwen2", {"use_sliding_window": bool(model.sliding_window),
                            "sliding_window": model.sliding_window or None,
                            "layer_types": ["sliding_attention" if model.sliding_window and (
                                i in model.sliding_layers) else "full_attention"
                                            for i in range(model.num_layers)]}
  elif model.qkv_bias != model.o_bias:
    raise JaxkdError("a llama model with biases on some attention projections only is Qwen2's "
                     "(q, k, v: yes; o: no); this one has no Hugging Face architecture.")
  elif model.sliding_window:
    if model.sliding_layers and len(model.sliding_layers) < model.num_layers:
      raise JaxkdError("a sliding window on some layers only needs Qwen2's layout (q/k/v "
                       "biases); this model has no Hugging Face architecture.")
    kind, extra = "mistral", {"sliding_window": model.sliding_window}
  else:
    kind, extra = "llama", {"attention_bias": model.qkv_bias, "mlp_bias": model.mlp_bias}
  rope = None if model.rope_type == "default" else {"rope_type": model.rope_type,
                                                     "factor": model.rope_factor}
  if model.rope_type == "llama3":
    rope.update(low_freq_factor=model.rope_low_freq_factor,
                high_freq_factor=model.rope_high_freq_factor,
                original_max_position_embeddings=model.rope_original_max)
  return {"architectures": [ARCHITECTURES[kind]], "model_type": kind,
          "vocab_size": model.num_classes, "hidden_size": model.hidden_size,
          "intermediate_size": model.intermediate_size, "num_hidden_layers": model.num_layers,
          "num_attention_heads": model.num_heads, "num_key_value_heads": model.kv_heads,
          "head_dim": model.dim, "max_position_embeddings": model.max_len,
          "rms_norm_eps": model.rms_norm_eps, "rope_theta": model.rope_theta,
          "rope_scaling": rope, "hidden_act": model.activation,
          "tie_word_embeddings": model.tie_embeddings, "dtype": "float32", **extra}


def tensor_name(path: tuple[str, ...], family: str) -> tuple[str, bool]:
  """(the checkpoint's tensor name, whether it is stored transposed) of a parameter path,
  e.g. ('layers_0', 'self_attn', 'q_proj', 'kernel') -> ('model.layers.0.self_attn.q_proj.
  weight', True): torch's Linear weights are [out, in], GPT-2's Conv1D ones [in, out]."""
  *modules, leaf = path
  modules = [re.sub(r"^(layers|h)_(\d+)$", r"\1.\2", m) for m in modules]
  if modules == ["lm_head"]:
    return "lm_head.weight", True
  name = ".".join(modules + ["bias" if leaf == "bias" else "weight"])
  prefix = "transformer." if family == "gpt2" else "model."
  return prefix + name, family != "gpt2" and leaf == "kernel"


class _Tensors:
  """The checkpoint's tensors by name, over its safetensors files, opened lazily."""

  def __init__(self, path: pathlib.Path):
    self.path = path
    index = path / INDEX_FILE
    if index.exists():
      self.files = {name: path / file for name, file in
                    json.loads(index.read_text())["weight_map"].items()}
    else:
      from safetensors import safe_open

      self.files = {}
      for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as f:
          self.files.update({name: file for name in f.keys()})
    self._open = {}

  def find(self, name: str) -> str | None:
    """The stored name: as given, or without the model's prefix (the original GPT-2
    checkpoints have none)."""
    for candidate in (name, name.split(".", 1)[1]):
      if candidate in self.files:
        return candidate
    return None

  def slice(self, name: str):
    from safetensors import safe_open

    file = self.files[name]
    if file not in self._open:
      self._open[file] = safe_open(str(file), framework="numpy").__enter__()
    return self._open[file].get_slice(name)

  def close(self) -> None:
    for handle in self._open.values():
      handle.__exit__(None, None, None)


def load_params(path: str | pathlib.Path, abstract: Any, family: str, dtype=None,
                on_read: Callable[[str, tuple], None] | None = None) -> Any:
  """The parameters of a checkpoint, like `abstract` (a tree of jax.ShapeDtypeStruct with
  shardings), each read by name one device slice at a time (safe_open / get_slice; a
  transposed tensor is read at the transposed index). `dtype`: cast to it (default: the
  checkpoint's). `on_read(name, shape)` sees every read (tests count them)."""
  path = pathlib.Path(path)
  tensors = _Tensors(path)

  def read(key_path, like):
    keys = tuple(jax.tree_util.keystr((k,), simple=True) for k in key_path)
    name, transposed = tensor_name(keys, family)
    stored = tensors.find(name)
    if stored is None and name == "lm_head.weight":
      raise JaxkdError(f"{path} has no lm_head.weight; set tie_word_embeddings in its config.json "
                       "if the output layer is the embedding.")
    if stored is None:
      raise JaxkdError(f"{path} has no tensor {name} (nor {name.split('.', 1)[1]}): it is not "
                       f"a {family} checkpoint of this size.")
    handle = tensors.slice(stored)
    shape = tuple(handle.get_shape())
    expected = tuple(reversed(like.shape)) if transposed else tuple(like.shape)
    if shape != expected:
      raise JaxkdError(f"{path}: tensor {stored} has shape {shape}, the model expects "
                       f"{expected}; its config.json and weights disagree.")
    if dtype is None and handle.get_dtype() not in DTYPES:
      raise JaxkdError(f"{path}: tensor {stored} is stored as {handle.get_dtype()}; jaxkd reads "
                       f"{sorted(DTYPES)} checkpoints.")
    target = np.dtype(dtype or DTYPES[handle.get_dtype()])

    def callback(index):
      index = tuple(reversed(index)) if transposed else index
      block = np.asarray(handle[index])
      if on_read is not None:
        on_read(stored, block.shape)
      return (block.T if transposed else block).astype(target)

    return jax.make_array_from_callback(like.shape, like.sharding, callback)

  try:
    return jax.tree_util.tree_map_with_path(read, abstract)
  finally:
    tensors.close()


def save_params(params: Any, model: Any, out: pathlib.Path, end_of_text: int | None = None
                ) -> None:
  """config.json and model.safetensors of `params` (float32 on the host) in `out`;
  `end_of_text`: the tokenizer's end-of-document id, the config's bos and eos token ids
  (None without a tokenizer, rather than transformers' defaults for GPT-2's 50,257 ids)."""
  from safetensors.numpy import save_file

  from jaxkd.files import atomic_path, write_text

  family = "gpt2" if type(model).__name__ == "GPT2" else "llama"
  tensors = {}
  for key_path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(params)):
    keys = tuple(jax.tree_util.keystr((k,), simple=True) for k in key_path)
    name, transposed = tensor_name(keys, family)
    value = np.asarray(leaf, np.float32)
    tensors[name] = np.ascontiguousarray(value.T if transposed else value)
  config = {**hf_config(model), "bos_token_id": end_of_text, "eos_token_id": end_of_text}
  write_text(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
  with atomic_path(out / "model.safetensors", suffix=".safetensors") as temporary:
    save_file(tensors, str(temporary), metadata={"format": "pt"})
