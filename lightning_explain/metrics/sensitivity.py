"""torchmetrics class of the max-sensitivity family: :class:`MaxSensitivity` (the maths:
:mod:`lightning_explain.metrics.functional.sensitivity`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from lightning_explain._core import Model
from lightning_explain.metrics._base import PairScoreMean
from lightning_explain.metrics._registry import metric_info
from lightning_explain.metrics.functional._common import PairInputs, score_pairs

__all__ = ["MaxSensitivity"]


class MaxSensitivity(PairScoreMean):
    """Mean Max-Sensitivity (lower is better); see
    :func:`lightning_explain.metrics.max_sensitivity`.

    Args:
        method: the explanation method (a name from :func:`lightning_explain.list_methods`).
        n_samples: noise draws (default 10).
        radius: noise half-width (default 0.2).
        seed: noise seed (default 0). Every update uses the same seed.
        method_options: options passed to every ``explain`` call.
        explain_batch_size: pairs per ``explain`` call.
        noise_at: ``"inputs"`` (default) or ``"mixed"``: the paper's protocol for Averaged
            Transforms, noise on every mixed image (see
            :func:`~lightning_explain.metrics.max_sensitivity`).
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
        noise_at: str = "inputs",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        info = metric_info("max_sensitivity")
        self.key = info.key
        self.options = info.load().check(
            {
                **info.options,
                "n_samples": n_samples,
                "radius": radius,
                "seed": seed,
                "explain_batch_size": explain_batch_size,
                "noise_at": noise_at,
            },
            type(self).__name__,
        )
        self.method = method
        self.n_samples: int = self.options["n_samples"]
        self.radius: float = self.options["radius"]
        self.seed: int = self.options["seed"]
        self.explain_batch_size: int | None = self.options["explain_batch_size"]
        self.noise_at: str = self.options["noise_at"]
        self.method_options = dict(method_options or {})

    def update(self, model: Model, x1: Tensor, x2: Tensor) -> None:
        """Re-explain noisy copies of a batch of pairs and accumulate their max-sensitivity.

        Args:
            model: ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)``.
            x1: ``(B, C, H, W)`` first images.
            x2: ``(B, C, H, W)`` second images.
        """
        inputs = PairInputs(
            model=model,
            x1=x1,
            x2=x2,
            method=self.method,
            method_options=self.method_options,
            owner=f"{type(self).__name__}.update",
        )
        ((scores, _),) = score_pairs(inputs, [(metric_info(self.key).load(), self.options)])
        self._accumulate(scores)
