"""Functional pairwise faithfulness metrics: ``(model, x1, x2, maps, ...) -> (B,)`` scores."""

from lightning_explain.metrics.functional.drop_increase import average_drop, average_increase
from lightning_explain.metrics.functional.insertion_deletion import deletion, insertion
from lightning_explain.metrics.functional.sensitivity import max_sensitivity

__all__ = ["average_drop", "average_increase", "deletion", "insertion", "max_sensitivity"]
