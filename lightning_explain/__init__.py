"""lightning-explain: pairwise visual explanations and faithfulness metrics for contrastive models,
computed while they train.

Reference: Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive Learning",
IEEE Transactions on Image Processing (arXiv 2206.09753).
"""

from lightning_explain.explain import explain
from lightning_explain.explanation import PairExplanation
from lightning_explain.methods import get_method, list_methods, method_info
from lightning_explain.similarity import list_similarities

__version__ = "0.1.0"

__all__ = [
    "PairExplanation",
    "__version__",
    "explain",
    "get_method",
    "list_methods",
    "list_similarities",
    "method_info",
]
