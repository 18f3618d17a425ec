"""The model registry: every model is a flax.linen Module called as
`model.apply(variables, inputs, train=...)` and returning logits."""

import dataclasses

import flax.linen as nn
import ml_collections

from jaxkd.errors import JaxkdError
from jaxkd.registry import Registry

MODELS: Registry[type[nn.Module]] = Registry("model")


def create_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """Builds config.name with the other config fields (but init_from) as constructor
  arguments; name 'hf' builds the model of the Hugging Face directory model.path (its
  config.json; num_classes is then its vocabulary)."""
  if config.name == "hf":
    from jaxkd.models import hf

    if not config.get("path"):
      raise JaxkdError("model.name='hf' needs model.path: a Hugging Face model directory.")
    config, num_classes = hf.model_config(hf.read_config(config.path))
  cls = MODELS.get(config.name)
  kwargs = {k: v for k, v in config.items() if k not in ("name", "init_from")}
  fields = {f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise JaxkdError(f"model '{config.name}' has no option(s) {unknown}; its options are "
                     f"{sorted(fields - {'num_classes'})}.")
  if "num_classes" in kwargs:
    raise JaxkdError("set the class count through the dataset, not model.num_classes.")
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  return cls(num_classes=num_classes, **kwargs)




def count_params(params) -> int:
  """The number of parameter values in a pytree of arrays (or of shape structs)."""
  import jax

  return sum(int(x.size) for x in jax.tree.leaves(params))
