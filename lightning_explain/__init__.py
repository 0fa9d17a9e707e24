"""lightning-explain: pairwise visual explanations and faithfulness metrics for contrastive models,
computed while they train.

Reference: Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive Learning",
IEEE Transactions on Image Processing (arXiv 2206.09753).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_explain._perf import perturbation_autocast
from lightning_explain.explain import explain
from lightning_explain.explanation import PairExplanation
from lightning_explain.methods import get_method, list_methods, method_info
from lightning_explain.metrics import evaluate, list_metrics, metric_info
from lightning_explain.similarity import list_similarities

if TYPE_CHECKING:
    from lightning_explain.callback import PairExplanationCallback

__version__ = "0.1.0"

__all__ = [
    "PairExplanation",
    "PairExplanationCallback",
    "__version__",
    "evaluate",
    "explain",
    "get_method",
    "list_methods",
    "list_metrics",
    "list_similarities",
    "method_info",
    "metric_info",
    "perturbation_autocast",
]


def __getattr__(name: str) -> object:
    # The callback imports Lightning (seconds); load it only when asked for.
    if name == "PairExplanationCallback":
        from lightning_explain.callback import PairExplanationCallback

        return PairExplanationCallback
    raise AttributeError(f"module 'lightning_explain' has no attribute {name!r}")
