"""torchmetrics classes of the average drop/increase family: :class:`AverageDrop`,
:class:`AverageIncrease` (the maths: :mod:`lightning_explain.metrics.functional.drop_increase`)."""

from __future__ import annotations

from typing import Any, ClassVar, Union

from lightning_explain.metrics._base import MapMetric
from lightning_explain.metrics.functional._common import Direction, Mode, check_mode
from lightning_explain.similarity import SimilarityFn

__all__ = ["AverageDrop", "AverageIncrease"]


class _MaskedMetric(MapMetric):
    """A metric of the family without curves (one masked image per side): the registry key is
    ``<_family>_<mode>``."""

    _family: ClassVar[str]

    def __init__(
        self,
        mode: Mode = "simultaneous",
        similarity: Union[str, SimilarityFn] = "cosine",
        batch_size: int | None = None,
        *,
        direction: Direction = "both",
        **kwargs: Any,
    ) -> None:
        checked = check_mode(mode, owner=type(self).__name__)
        super().__init__(
            f"{self._family}_{checked}",
            similarity=similarity,
            batch_size=batch_size,
            direction=direction,
            **kwargs,
        )


class AverageDrop(_MaskedMetric):
    """Mean Average Drop (lower is better); see :func:`lightning_explain.metrics.average_drop`.

    Args:
        mode: ``"simultaneous"`` (default) or ``"conditional"``.
        similarity: ``"cosine"`` (default), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass.
        direction: conditional mode only: ``"both"`` (default, the mean of both directions),
            ``"x1"`` (only ``x1`` masked) or ``"x2"``.
        **kwargs: torchmetrics ``Metric`` options.
    """

    higher_is_better = False
    _family: ClassVar[str] = "average_drop"


class AverageIncrease(_MaskedMetric):
    """Fraction of pairs whose similarity rises under masking (higher is better); see
    :func:`lightning_explain.metrics.average_increase`.

    Args:
        mode: ``"simultaneous"`` (default) or ``"conditional"``.
        similarity: ``"cosine"`` (default), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass.
        direction: conditional mode only: ``"both"`` (default), ``"x1"`` or ``"x2"``.
        **kwargs: torchmetrics ``Metric`` options.
    """

    higher_is_better = True
    _family: ClassVar[str] = "average_increase"
