"""TensorBoard sink, through ``TensorBoardLogger.experiment`` (a ``SummaryWriter``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from lightning_explain.sinks.base import ExplanationSink, check_image, check_table, require

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["TensorBoardSink", "markdown_table"]


def _cell(value: object) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (floats to 4 significant digits), as TensorBoard's text tab renders it."""
    lines = [
        "| " + " | ".join(_cell(c) for c in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class TensorBoardSink(ExplanationSink):
    """Log to TensorBoard with ``SummaryWriter.add_image`` / ``add_figure`` / ``add_text``.

    * Images: ``add_image(key, image, global_step=step, dataformats="CHW")`` (IMAGES tab). A caption
      is written as text under ``<key>/caption`` at the same step (TEXT tab), since TensorBoard
      images have no caption.
    * Figures: ``add_figure(key, figure, global_step=step, close=True)`` (IMAGES tab).
    * Tables: a Markdown table via ``add_text(key, ..., global_step=step)`` (TEXT tab); TensorBoard
      has no table type.

    TensorBoard shows at most 10 images per tag unless launched with
    ``tensorboard --samples_per_plugin images=N`` (N at least the number of evaluations; with
    TensorBoard 2.21, ``images=0`` shows none at all).

    Args:
        logger: a ``TensorBoardLogger`` from ``lightning.pytorch.loggers`` or
            ``pytorch_lightning.loggers`` (its ``experiment`` may be torch's or tensorboardX's writer).

    Raises:
        ModuleNotFoundError: if neither ``tensorboard`` nor ``tensorboardX`` is installed.
    """

    def __init__(self, logger: Any) -> None:
        if importlib.util.find_spec("tensorboardX") is None:
            require("tensorboard", extra="tensorboard", owner="TensorBoardSink")
        self.logger = logger

    @property
    def writer(self) -> Any:
        """The logger's ``SummaryWriter``."""
        return self.logger.experiment

    def log_image(self, key: str, image: Tensor, step: int, caption: str | None = None) -> None:
        image = check_image(image, owner="TensorBoardSink.log_image")
        self.writer.add_image(key, image, global_step=int(step), dataformats="CHW")
        if caption is not None:
            self.writer.add_text(f"{key}/caption", str(caption), global_step=int(step))

    def log_figure(self, key: str, figure: Figure, step: int) -> None:
        self.writer.add_figure(key, figure, global_step=int(step), close=True)

    def log_table(self, key: str, columns: list[str], rows: list[list[object]], step: int) -> None:
        columns, rows = check_table(columns, rows, owner="TensorBoardSink.log_table")
        self.writer.add_text(key, markdown_table(columns, rows), global_step=int(step))

    def define_scalars(
        self, charts: Mapping[str, Sequence[str]], higher_is_better: Mapping[str, bool | None]
    ) -> None:
        """One multi-line chart per entry in TensorBoard's CUSTOM SCALARS tab (category
        ``lightning-explain``); the SCALARS tab keeps one card per key."""
        layout = {"lightning-explain": {t: ["Multiline", list(keys)] for t, keys in charts.items()}}
        self.writer.add_custom_scalars(layout)

    def flush(self) -> None:
        self.writer.flush()

    def __repr__(self) -> str:
        return f"TensorBoardSink({type(self.logger).__name__})"
