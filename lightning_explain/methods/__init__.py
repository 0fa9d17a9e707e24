"""Pairwise explanation methods of Sammani et al., "Visualizing and Understanding Contrastive
Learning" (IEEE TIP; arXiv 2206.09753), plus integrated gradients and RISE.

Every method has the call contract ``method(model, x1, x2, **options) -> PairExplanation``.
"""

from lightning_explain.methods._registry import (
    MethodInfo,
    check_method_options,
    get_method,
    list_methods,
    method_info,
)
from lightning_explain.methods.cam import list_feature_layers, resolve_layer

__all__ = [
    "MethodInfo",
    "check_method_options",
    "get_method",
    "list_feature_layers",
    "list_methods",
    "method_info",
    "resolve_layer",
]
