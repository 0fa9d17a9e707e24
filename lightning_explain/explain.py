"""The single entry point: ``explain(model, x1, x2, method=..., **options)``."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_explain._core import Model
from lightning_explain.explanation import PairExplanation
from lightning_explain.methods._registry import check_method_options, get_method

__all__ = ["explain"]


def explain(
    model: Model, x1: Tensor, x2: Tensor, method: str = "gradcam", **options: Any
) -> PairExplanation:
    """Explain the similarity of each image pair with one registered method.

    Args:
        model: an ``nn.Module`` or callable mapping ``(B, C, H, W)`` images to ``(B, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images of the pairs (any number of channels, H != W allowed).
        x2: ``(B, C, H, W)`` second images, same shape and device as ``x1``.
        method: a name from :func:`lightning_explain.list_methods`.
        **options: method options (see each method), e.g. ``similarity="dot"``, ``layer="auto"``,
            ``seed=0``, ``batch_size=64``.

    Returns:
        :class:`PairExplanation` with ``h1``, ``h2`` of shape ``(B, H, W)`` (finite, ``>= 0``,
        max 1 per map) and ``sim`` of shape ``(B,)``.

    Raises:
        ValueError: unknown method (the message lists the valid ones) or malformed inputs.
        TypeError: unknown option (the message lists the method's valid options).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_explain import explain
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> x1, x2 = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
        >>> e = explain(net, x1, x2, method="input_x_gradient")
        >>> tuple(e.h1.shape), tuple(e.sim.shape)
        ((2, 32, 32), (2,))
    """
    check_method_options(method, options)
    return get_method(method)(model, x1, x2, **options)
