"""Shared base of the torchmetrics classes: a DDP-synced mean of per-pair scores, and a map metric
that scores one registry key through its family, the same code path as
:func:`~lightning_explain.metrics.evaluate` and the functions.

Each class keeps two summed states, the sum of the per-pair scores and the number of pairs, so a
probe set sharded across ranks gives the same value as one process, and memory does not grow with
the number of updates.
"""

from __future__ import annotations

from typing import Any, Union

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_explain._checks import check_batch_size, check_positive_int
from lightning_explain._core import Model
from lightning_explain.explanation import PairExplanation
from lightning_explain.metrics._registry import metric_info
from lightning_explain.metrics.functional._common import (
    check_direction,
    check_ties,
    score_maps,
    unpack_explanation,
)
from lightning_explain.similarity import SimilarityFn

__all__ = ["MapMetric", "Maps", "PairScoreMean"]

Maps = Union[PairExplanation, Tensor, tuple[Tensor, Tensor]]
"""A ``(B, h, w)`` map of ``x1`` (with ``h2`` given separately), a :class:`PairExplanation` or an
``(h1, h2)`` tuple."""


class PairScoreMean(Metric):
    """Mean of per-pair scores with summed states ``score_sum`` and ``count`` (DDP: summed over
    ranks in ``compute``).

    Attributes:
        key: the registry key the metric computes.
    """

    is_differentiable = False
    full_state_update = False
    higher_is_better: bool | None
    score_sum: Tensor
    count: Tensor
    key: str

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("score_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def _accumulate(self, scores: Tensor) -> None:
        scores = scores.detach().to(self.score_sum.device)
        self.score_sum += scores.sum().to(self.score_sum.dtype)
        self.count += scores.numel()

    def compute(self) -> Tensor:
        """Mean score over every pair seen (on every rank); NaN before the first update."""
        return self.score_sum / self.count


class MapMetric(PairScoreMean):
    """A map-scoring metric: the registry key ``key``, scored by its family with the row's options.

    Args:
        key: registry key, e.g. ``"insertion_conditional"``.
        n_steps: steps per curve (families without curves ignore it).
        similarity: ``"cosine"``, ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass, or None (chosen per device).
        direction: which image the conditional metrics perturb (``"both"``, ``"x1"``, ``"x2"``).
        ties: insertion/deletion order of equal-saliency pixels (``"raster"`` or ``"paper"``).
        **kwargs: torchmetrics ``Metric`` options.
    """

    def __init__(
        self,
        key: str,
        *,
        n_steps: int = 224,
        similarity: Union[str, SimilarityFn] = "cosine",
        batch_size: int | None = None,
        direction: str = "both",
        ties: str = "raster",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        info = metric_info(key)
        self.key = info.key
        self.mode = info.mode
        self.n_steps = check_positive_int(n_steps, name="n_steps", owner=owner)
        self.batch_size = check_batch_size(batch_size, owner=owner)
        self.direction = check_direction(direction, owner=owner)
        self.ties = check_ties(ties, owner=owner)
        self.similarity = similarity

    def update(
        self, model: Model, x1: Tensor, x2: Tensor, h1: Maps, h2: Tensor | None = None
    ) -> None:
        """Score a batch of pairs and accumulate.

        Args:
            model: ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)``.
            x1: ``(B, C, H, W)`` first images.
            x2: ``(B, C, H, W)`` second images.
            h1: ``(B, h, w)`` map of ``x1``, or a :class:`PairExplanation` / ``(h1, h2)`` tuple
                (then ``h2`` is omitted).
            h2: ``(B, h, w)`` map of ``x2``.
        """
        owner = f"{type(self).__name__}.update"
        if isinstance(h1, Tensor):
            if h2 is None:
                raise ValueError(
                    f"`{owner}`: expected `h2` (the map of x2) with a tensor `h1`, but got None. "
                    "Pass both maps or a PairExplanation."
                )
            maps = (h1, h2)
        else:
            if h2 is not None:
                raise ValueError(
                    f"`{owner}`: `h1` is already a pair of maps; do not pass `h2` too."
                )
            maps = unpack_explanation(h1, owner=owner)
        info = metric_info(self.key)
        ((scores, _),) = score_maps(
            model,
            x1,
            x2,
            *maps,
            [(info.load(), info.options)],
            similarity=self.similarity,
            n_steps=self.n_steps,
            batch_size=self.batch_size,
            direction=self.direction,
            ties=self.ties,
            owner=owner,
        )
        self._accumulate(scores)
