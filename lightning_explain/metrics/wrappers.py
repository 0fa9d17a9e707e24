"""torchmetrics wrappers: accumulate per-pair scores over batches (and DDP ranks), report the mean.

Each class keeps two summed states, the sum of the per-pair scores and the number of pairs, so a
probe set sharded across ranks gives the same value as one process, and memory does not grow with
the number of updates. The maths lives in :func:`lightning_explain.metrics.evaluate` (same keys,
same conditional convention: mean of both directions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Union

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_explain._core import Model, check_positive_int
from lightning_explain.explanation import PairExplanation
from lightning_explain.metrics._evaluate import evaluate
from lightning_explain.metrics._registry import metric_info
from lightning_explain.metrics.functional._common import check_mode, unpack_explanation
from lightning_explain.metrics.functional.sensitivity import run_max_sensitivity
from lightning_explain.similarity import SimilarityFn

__all__ = ["AverageDrop", "AverageIncrease", "Deletion", "Insertion", "MaxSensitivity"]

Maps = Union[PairExplanation, Tensor, tuple[Tensor, Tensor]]


class _PairScoreMean(Metric):
    """Mean of per-pair scores with summed states ``score_sum`` and ``count``."""

    is_differentiable = False
    full_state_update = False
    higher_is_better: bool | None
    score_sum: Tensor
    count: Tensor

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


class _MapMetric(_PairScoreMean):
    """A map-scoring metric computed by :func:`evaluate` under one registry key,
    ``<_family>_<mode><_key_suffix()>``."""

    _family: ClassVar[str]
    key: str

    def __init__(
        self,
        mode: str = "simultaneous",
        n_steps: int = 224,
        similarity: Union[str, SimilarityFn] = "cosine",
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.mode = check_mode(mode, owner=owner)
        self.n_steps = check_positive_int(n_steps, name="n_steps", owner=owner)
        if batch_size is not None:
            check_positive_int(batch_size, name="batch_size", owner=owner)
        self.batch_size = batch_size
        self.similarity = similarity
        self.key = metric_info(f"{self._family}_{self.mode}{self._key_suffix()}").key

    def _key_suffix(self) -> str:
        """Appended to ``<_family>_<mode>`` to form the registry key."""
        return ""

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
        owner = type(self).__name__
        if isinstance(h1, Tensor):
            if h2 is None:
                raise ValueError(
                    f"`{owner}.update`: expected `h2` (the map of x2) with a tensor `h1`, but got "
                    "None. Pass both maps or a PairExplanation."
                )
            maps = (h1, h2)
        else:
            if h2 is not None:
                raise ValueError(
                    f"`{owner}.update`: `h1` is already a pair of maps; do not pass `h2` too."
                )
            maps = unpack_explanation(h1, owner=f"{owner}.update")
        scores = evaluate(
            model,
            x1,
            x2,
            maps,
            [self.key],
            similarity=self.similarity,
            n_steps=self.n_steps,
            batch_size=self.batch_size,
        )
        self._accumulate(scores[self.key])


class Insertion(_MapMetric):
    """Mean insertion score (higher is better); see :func:`lightning_explain.metrics.insertion`.

    Args:
        mode: ``"simultaneous"`` (default, key ``insertion_simultaneous``) or ``"conditional"``
            (``insertion_conditional``: mean of both directions).
        n_steps: steps per curve (default 224).
        similarity: ``"cosine"`` (default), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass (default chosen per device).
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
    _family: ClassVar[str] = "insertion"


class Deletion(_MapMetric):
    """Mean deletion score (lower is better); see :func:`lightning_explain.metrics.deletion`.

    Args:
        mode: ``"simultaneous"`` (default) or ``"conditional"`` (mean of both directions).
        corrected: simultaneous deletion towards each image's own blurred version (key
            ``deletion_simultaneous_corrected``), without the identical-endpoint artifact.
        n_steps: steps per curve (default 224).
        similarity: ``"cosine"`` (default), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass.
        **kwargs: torchmetrics ``Metric`` options.
    """

    higher_is_better = False
    _family: ClassVar[str] = "deletion"

    def __init__(
        self,
        mode: str = "simultaneous",
        corrected: bool = False,
        n_steps: int = 224,
        similarity: Union[str, SimilarityFn] = "cosine",
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        if corrected and mode != "simultaneous":
            raise ValueError(
                "`Deletion`: `corrected=True` only applies to mode='simultaneous', but got "
                f"mode={mode!r}."
            )
        self.corrected = bool(corrected)
        super().__init__(mode, n_steps, similarity, batch_size, **kwargs)

    def _key_suffix(self) -> str:
        return "_corrected" if self.corrected else ""


class _SingleMaskMetric(_MapMetric):
    """A map metric without curves (one masked image per side), hence without ``n_steps``."""

    def __init__(
        self,
        mode: str = "simultaneous",
        similarity: Union[str, SimilarityFn] = "cosine",
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(mode, similarity=similarity, batch_size=batch_size, **kwargs)


class AverageDrop(_SingleMaskMetric):
    """Mean Average Drop (lower is better); see :func:`lightning_explain.metrics.average_drop`.

    Args:
        mode: ``"simultaneous"`` (default) or ``"conditional"`` (mean of both directions).
        similarity: ``"cosine"`` (default), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass.
        **kwargs: torchmetrics ``Metric`` options.
    """

    higher_is_better = False
    _family: ClassVar[str] = "average_drop"


class AverageIncrease(_SingleMaskMetric):
    """Fraction of pairs whose similarity rises under masking (higher is better); see
    :func:`lightning_explain.metrics.average_increase`.

    Args:
        mode: ``"simultaneous"`` (default) or ``"conditional"`` (mean of both directions).
        similarity: ``"cosine"`` (default), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass.
        **kwargs: torchmetrics ``Metric`` options.
    """

    higher_is_better = True
    _family: ClassVar[str] = "average_increase"


class MaxSensitivity(_PairScoreMean):
    """Mean Max-Sensitivity (lower is better); see
    :func:`lightning_explain.metrics.max_sensitivity`.

    Args:
        method: the explanation method (a name from :func:`lightning_explain.list_methods`).
        n_samples: noise draws (default 10).
        radius: noise half-width (default 0.2).
        seed: noise seed (default 0). Every update uses the same seed.
        method_options: options passed to every ``explain`` call.
        explain_batch_size: pairs per ``explain`` call.
        **kwargs: torchmetrics ``Metric`` options.
    """

    higher_is_better = False

    def __init__(
        self,
        method: str,
        n_samples: int = 10,
        radius: float = 0.2,
        seed: int = 0,
        method_options: Mapping[str, Any] | None = None,
        explain_batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.key = "max_sensitivity"
        self.method = method
        self.n_samples = check_positive_int(n_samples, name="n_samples", owner="MaxSensitivity")
        self.radius = radius
        self.seed = seed
        self.method_options = dict(method_options or {})
        self.explain_batch_size = explain_batch_size

    def update(self, model: Model, x1: Tensor, x2: Tensor) -> None:
        """Re-explain noisy copies of a batch of pairs and accumulate their max-sensitivity.

        Args:
            model: ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)``.
            x1: ``(B, C, H, W)`` first images.
            x2: ``(B, C, H, W)`` second images.
        """
        scores = run_max_sensitivity(
            model,
            x1,
            x2,
            self.method,
            self.method_options,
            n_samples=self.n_samples,
            radius=self.radius,
            seed=self.seed,
            explain_batch_size=self.explain_batch_size,
            owner="MaxSensitivity.update",
        )
        self._accumulate(scores)
