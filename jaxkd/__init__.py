"""jaxkd: knowledge distillation in JAX and Flax.

jaxkd.train_student(...) distils into your own Flax module from arrays (jaxkd.api); the
command lines run configs (python -m jaxkd.main --config=...).
"""

__version__ = "0.1.0"
__all__ = ["train_student", "Result"]


def __getattr__(name: str):
  # Lazy: `import jaxkd` stays light for the command lines and the data scripts.
  if name in __all__:
    from jaxkd import api

    return getattr(api, name)
  raise AttributeError(f"module 'jaxkd' has no attribute '{name}'")
