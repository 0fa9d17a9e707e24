"""torchmetrics classes of the insertion/deletion family: :class:`Insertion`, :class:`Deletion`
(the maths: :mod:`lightning_explain.metrics.functional.insertion_deletion`)."""

from __future__ import annotations

from typing import Any, Union

from lightning_explain._checks import check_bool
from lightning_explain.metrics._base import MapMetric
from lightning_explain.metrics.functional._common import Direction, Mode, Ties, check_mode
from lightning_explain.similarity import SimilarityFn

__all__ = ["Deletion", "Insertion"]


class Insertion(MapMetric):
    """Mean insertion score (higher is better); see :func:`lightning_explain.metrics.insertion`.

    ``update(model, x1, x2, h1, h2)`` (or ``update(model, x1, x2, explanation)``) scores a batch
    exactly as ``evaluate(..., [metric.key], direction=...)`` and
    :func:`~lightning_explain.metrics.insertion` do, and accumulates; ``compute()`` returns the
    mean over every pair seen.

    Args:
        mode: ``"simultaneous"`` (default, key ``insertion_simultaneous``) or ``"conditional"``
            (``insertion_conditional``).
        n_steps: steps per curve (default 224).
        similarity: ``"cosine"`` (default), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass (default chosen per device).
        direction: conditional mode only: ``"both"`` (default, the mean of both directions,
            symmetric in the pair), ``"x1"`` (only ``x1`` restored) or ``"x2"``.
        ties: order of equal-saliency pixels: ``"raster"`` (default) or ``"paper"`` (the
            authors' order, see :func:`~lightning_explain.metrics.insertion`).
        **kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``, ...).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_explain.metrics import Insertion
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> metric = Insertion(mode="conditional", n_steps=8)
        >>> x1, x2 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> metric.update(net, x1, x2, torch.rand(2, 16, 16), torch.rand(2, 16, 16))
        >>> metric.compute().shape
        torch.Size([])
    """

    higher_is_better = True

    def __init__(
        self,
        mode: Mode = "simultaneous",
        n_steps: int = 224,
        similarity: Union[str, SimilarityFn] = "cosine",
        batch_size: int | None = None,
        *,
        direction: Direction = "both",
        ties: Ties = "raster",
        **kwargs: Any,
    ) -> None:
        checked = check_mode(mode, owner=type(self).__name__)
        super().__init__(
            f"insertion_{checked}",
            n_steps=n_steps,
            similarity=similarity,
            batch_size=batch_size,
            direction=direction,
            ties=ties,
            **kwargs,
        )


class Deletion(MapMetric):
    """Mean deletion score (lower is better); see :func:`lightning_explain.metrics.deletion`.

    Args:
        mode: ``"simultaneous"`` (default) or ``"conditional"``.
        corrected: simultaneous deletion towards each image's own blurred version (key
            ``deletion_simultaneous_corrected``), without the identical-endpoint artifact.
        n_steps: steps per curve (default 224).
        similarity: ``"cosine"`` (default), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass.
        direction: conditional mode only: ``"both"`` (default), ``"x1"`` or ``"x2"`` (see
            :class:`Insertion`).
        ties: ``"raster"`` (default) or ``"paper"`` (see :class:`Insertion`).
        **kwargs: torchmetrics ``Metric`` options.
    """

    higher_is_better = False

    def __init__(
        self,
        mode: Mode = "simultaneous",
        corrected: bool = False,
        n_steps: int = 224,
        similarity: Union[str, SimilarityFn] = "cosine",
        batch_size: int | None = None,
        *,
        direction: Direction = "both",
        ties: Ties = "raster",
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        checked = check_mode(mode, owner=owner)
        fixed = check_bool(corrected, name="corrected", owner=owner)
        if fixed and checked != "simultaneous":
            raise ValueError(
                f"`{owner}`: `corrected=True` only applies to mode='simultaneous', but got "
                f"mode={checked!r}."
            )
        super().__init__(
            f"deletion_{checked}{'_corrected' if fixed else ''}",
            n_steps=n_steps,
            similarity=similarity,
            batch_size=batch_size,
            direction=direction,
            ties=ties,
            **kwargs,
        )
        self.corrected = fixed
