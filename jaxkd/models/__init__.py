"""Models: the registry (jaxkd.models.registry) and the families, each registering its
models by name on import."""

from jaxkd.models import (cifar, cifar_mobile, gpt2, imagenet, lenet, llama, mlp,  # noqa: F401
                          transformer)
from jaxkd.models.registry import MODELS, count_params, create_model

__all__ = ["MODELS", "count_params", "create_model"]
