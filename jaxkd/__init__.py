"""jaxkd: knowledge distillation in JAX and Flax.

The command lines run configs (python -m jaxkd <command>, see jaxkd.cli); from Python,
jaxkd.train_student(...) distils into your own Flax module from arrays, and
jaxkd.train_and_evaluate(config, workdir) runs a config. Every name below is imported on
first use, so `import jaxkd` stays light.
"""

import importlib

__version__ = "0.1.0"

# The public API: name -> the module that defines it.
_EXPORTS = {
    "train_student": "jaxkd.run.api", "Result": "jaxkd.run.api",
    "train_and_evaluate": "jaxkd.run.train", "train_population": "jaxkd.run.population",
    "base_config": "jaxkd.config", "pipeline_config": "jaxkd.config",
    "load_config_file": "jaxkd.config", "validate": "jaxkd.config",
    "JaxkdError": "jaxkd.errors",
    "load_run": "jaxkd.run.saved", "SavedRun": "jaxkd.run.saved",
    "register_term": "jaxkd.distill", "register_method": "jaxkd.distill",
    "Method": "jaxkd.distill", "TermInputs": "jaxkd.distill",
    "MODELS": "jaxkd.models", "DATASETS": "jaxkd.data", "ArrayDataset": "jaxkd.data",
    "export": "jaxkd.jobs.export", "load_exported": "jaxkd.jobs.export",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'jaxkd' has no attribute '{name}'")


def __dir__():
  return sorted(list(globals()) + __all__)
