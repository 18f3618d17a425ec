"""Distillation objectives: registered terms, combined by weight from the config.

A term is a pure function `term(inputs: TermInputs, **options) -> scalar`.
Register one with `@register_term("name", uses_teacher=True)`.
"""

from jaxkd.distill.terms import TERMS, TermInputs, register_term
from jaxkd.distill.objective import Objective, build_objective
from jaxkd.distill import (boundaries, contrastive, correlation, factor_transfer, feature_maps,  # noqa: F401
                          fsp, logits, relations, review)  # (registers the terms)

__all__ = ["TERMS", "TermInputs", "register_term", "Objective", "build_objective"]
