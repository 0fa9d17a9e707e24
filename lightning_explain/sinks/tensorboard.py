"""TensorBoard sink, through ``TensorBoardLogger.experiment`` (a ``SummaryWriter``)."""

from __future__ import annotations

import importlib.util
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from lightning_explain.sinks.base import (
    ExplanationSink,
    PngEncoder,
    check_image,
    check_table,
    require,
)

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

    Under DDP, with torch's ``SummaryWriter``, the ranks that draw the pictures also encode them
    as the PNG files ``add_image`` would make (:attr:`png_encoder`), and rank 0 adds them to the
    event file (:meth:`log_png`).

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

    @property
    def png_encoder(self) -> PngEncoder | None:
        """The PNG file torch's ``add_image`` makes (zlib level 6, no text chunks); ``None``
        for tensorboardX's writer, which gets pixels."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboardX without tensorboard
            return None
        return PngEncoder(6) if isinstance(self.writer, SummaryWriter) else None

    def log_png(self, key: str, png: bytes, step: int, caption: str | None = None) -> None:
        """Add ``png`` (from :attr:`png_encoder`) to the event file as ``add_image`` would, and
        the caption as text under ``<key>/caption``."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        if png[12:16] != b"IHDR":
            raise ValueError(f"`TensorBoardSink.log_png`: {key!r} is not a PNG file.")
        width, height = struct.unpack(">II", png[16:24])
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png)
        summary = Summary(value=[Summary.Value(tag=key, image=image)])
        self.writer._get_file_writer().add_summary(summary, int(step))
        if caption is not None:
            self.writer.add_text(f"{key}/caption", str(caption), global_step=int(step))

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
