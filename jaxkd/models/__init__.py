"""Models: the registry (jaxkd.models.registry) and the families, each registering its
models by name on import."""

from jaxkd.models import cifar, cifar_mobile, imagenet, lenet, mlp, transformer  # noqa: F401
from jaxkd.models.registry import MODELS, count_params, create_model

__all__ = ["MODELS", "count_params", "create_model"]
