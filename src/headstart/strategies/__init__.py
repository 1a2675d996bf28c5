"""How a classifier is built on top of a backbone. Today: the linear probe on CNN codes."""

from .linear import HEADS, LinearFitReport, LinearHead, fit_linear_head

__all__ = ["HEADS", "LinearFitReport", "LinearHead", "fit_linear_head"]
