"""Distillation methods: one file per method, each registered by name, combined by weight
from the config (jaxkd.distill.objective).

Every module of this package is imported here, so a method file added to it registers
itself with no edit to this file. The shape of a method: jaxkd.distill.terms.
"""

import importlib
import pkgutil

from jaxkd.distill.objective import Objective, build_objective
from jaxkd.distill.terms import TERMS, Method, TermInputs, register_method, register_term

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TERMS", "Method", "TermInputs", "register_method", "register_term", "Objective",
           "build_objective"]
