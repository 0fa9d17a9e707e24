"""lightning-explain: pairwise visual explanations and faithfulness metrics for contrastive models,
computed while they train.

Reference: Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive Learning",
IEEE Transactions on Image Processing (arXiv 2206.09753).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_explain._perf import perturbation_autocast
from lightning_explain._version import __version__
from lightning_explain.data import KNNSettings, ProbeSet, ProbeSettings
from lightning_explain.evaluation import (
    MethodEvaluation,
    MethodSpec,
    ProbeEvaluation,
    evaluate_probe,
    parse_methods,
)
from lightning_explain.explain import explain
from lightning_explain.explanation import PairExplanation
from lightning_explain.methods import get_method, list_methods, method_info
from lightning_explain.metrics import evaluate, list_metrics, metric_info
from lightning_explain.similarity import list_similarities

if TYPE_CHECKING:
    from lightning_explain.callback import PairExplanationCallback

__all__ = [
    "KNNSettings",
    "MethodEvaluation",
    "MethodSpec",
    "PairExplanation",
    "PairExplanationCallback",
    "ProbeEvaluation",
    "ProbeSet",
    "ProbeSettings",
    "__version__",
    "evaluate",
    "evaluate_probe",
    "explain",
    "get_method",
    "list_methods",
    "list_metrics",
    "list_similarities",
    "method_info",
    "metric_info",
    "parse_methods",
    "perturbation_autocast",
]


def __getattr__(name: str) -> object:
    # The callback imports Lightning (seconds); load it only when asked for.
    if name == "PairExplanationCallback":
        from lightning_explain.callback import PairExplanationCallback

        return PairExplanationCallback
    raise AttributeError(f"module 'lightning_explain' has no attribute {name!r}")
