"""Weights & Biases sink, through Lightning's ``WandbLogger``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from lightning_explain.sinks.base import (
    ExplanationSink,
    check_image,
    check_table,
    image_to_numpy,
    require,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["WandbSink"]


class WandbSink(ExplanationSink):
    """Log to W&B with ``WandbLogger.log_image`` and ``WandbLogger.log_table``.

    * Images land in the run's media panel under ``key``, with the caption below the image.
    * Insertion/deletion curves are logged as data: a native W&B line chart
      (``wandb.plot.line_series``, the mean curve per metric, hover values in the app) under
      ``key``; no matplotlib figure is drawn for W&B.
    * Other figures are rasterised (Agg) and logged as images (the base class behaviour), which
      keeps them pixel-identical to the PNG files and avoids W&B's plotly conversion.
    * Tables become a ``wandb.Table`` under ``key``.

    Everything goes through the logger, never ``run.log(step=...)`` directly: the logger stores
    ``step`` as the ``trainer/global_step`` field, which avoids W&B's "step must only increase"
    errors. The media panel's slider still counts W&B's own ``_step`` (one per ``log`` call); see
    the trackers page of the documentation.

    Args:
        logger: a ``WandbLogger`` from ``lightning.pytorch.loggers`` or ``pytorch_lightning.loggers``.

    Raises:
        ModuleNotFoundError: if ``wandb`` is not installed.
    """

    draws_curves = False

    def __init__(self, logger: Any) -> None:
        require("wandb", extra="wandb", owner="WandbSink")
        self.logger = logger

    def log_image(self, key: str, image: Tensor, step: int, caption: str | None = None) -> None:
        image = check_image(image, owner="WandbSink.log_image")
        extra: dict[str, list[Any]] = {} if caption is None else {"caption": [str(caption)]}
        self.logger.log_image(key=key, images=[image_to_numpy(image)], step=int(step), **extra)

    def define_scalars(
        self, charts: Mapping[str, Sequence[str]], higher_is_better: Mapping[str, bool | None]
    ) -> None:
        """``define_metric`` for every key: plotted against ``trainer/global_step``, with the
        run summary keeping the best value (max or min by the score's direction)."""
        run = self.logger.experiment
        run.define_metric("trainer/global_step")
        for keys in charts.values():
            for key in keys:
                best = higher_is_better.get(key)
                summary = {True: "max", False: "min"}.get(best, "last")  # type: ignore[arg-type]
                run.define_metric(key, step_metric="trainer/global_step", summary=summary)

    def log_curves(
        self,
        key: str,
        curves: Mapping[str, Tensor],
        step: int,
        *,
        draw: Callable[[], Figure],
    ) -> None:
        """The mean curve of each metric as one ``wandb.plot.line_series`` chart (no figure)."""
        import wandb

        names, xs, ys = [], [], []
        for name, curve in curves.items():
            c = curve.detach().float().cpu().reshape(-1, curve.shape[-1])
            steps = max(1, c.shape[-1] - 1)
            names.append(str(name))
            xs.append([t / steps for t in range(c.shape[-1])])
            ys.append([float(v) for v in c.mean(0)])
        chart = wandb.plot.line_series(
            xs=xs, ys=ys, keys=names, title=key, xname="fraction of pixels"
        )
        self.logger.log_metrics({key: chart}, step=int(step))

    def log_table(self, key: str, columns: list[str], rows: list[list[object]], step: int) -> None:
        columns, rows = check_table(columns, rows, owner="WandbSink.log_table")
        self.logger.log_table(key=key, columns=columns, data=rows, step=int(step))

    def __repr__(self) -> str:
        return f"WandbSink({type(self.logger).__name__})"
