"""Reading images out of dataset items: shared by the probe-set and kNN-set draws."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor

__all__ = [
    "as_single_view",
    "is_integer_image",
    "is_pil",
    "is_view",
    "match_channels",
    "transform_disabled",
    "transform_holder",
]


def is_view(x: object) -> bool:
    """Whether ``x`` is a ``(C, H, W)`` float tensor."""
    return isinstance(x, Tensor) and x.is_floating_point() and x.ndim == 3


def is_integer_image(x: object) -> bool:
    """Whether ``x`` is a ``(C, H, W)`` tensor of integers (e.g. ``uint8`` from ``v2.ToImage()``
    without ``v2.ToDtype``)."""
    return isinstance(x, Tensor) and x.ndim == 3 and not x.is_floating_point()


def is_pil(x: object) -> bool:
    """Whether ``x`` is a PIL image (without importing PIL)."""
    return type(x).__module__.startswith("PIL")


def as_single_view(x: object) -> object:
    """The first view of a multi-view transform's output (a list of views), else ``x``."""
    if isinstance(x, (list, tuple)) and x and not isinstance(x, Tensor):
        return x[0]
    return x


def match_channels(x: Tensor, channels: int) -> Tensor:
    """``(C, H, W)`` image with ``channels`` channels: grey expanded to RGB, RGB averaged to grey."""
    if x.shape[0] == channels:
        return x
    if x.shape[0] == 1:
        return x.expand(channels, -1, -1).clone()
    if channels == 1 and x.shape[0] == 3:
        return x.mean(dim=0, keepdim=True)
    return x


def transform_holder(dataset: object) -> object | None:
    """The object whose ``transform`` attribute the dataset applies (looks through ``Subset``)."""
    seen = 0
    obj: object = dataset
    while seen < 8:
        if hasattr(obj, "transform"):
            return obj
        inner = getattr(obj, "dataset", None)
        if inner is None:
            return None
        obj, seen = inner, seen + 1
    return None


@contextmanager
def transform_disabled(holder: Any) -> Iterator[Any]:
    """Switch ``holder.transform`` off inside; yield the original transform."""
    original = holder.transform
    try:
        holder.transform = None
        yield original
    finally:
        holder.transform = original
