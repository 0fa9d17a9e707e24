"""A sink that writes PNG and CSV files: the fallback for CSVLogger and for runs without a tracker."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from lightning_explain._io import csv_writer
from lightning_explain.render import figure_to_image
from lightning_explain.sinks.base import (
    CURVE_COLUMNS,
    ExplanationSink,
    PngEncoder,
    check_image,
    check_table,
    curve_rows,
    is_global_zero,
    release_figure,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FileSink", "file_stem"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def file_stem(key: str, *, owner: str = "FileSink") -> str:
    """A file name for a logging key: slashes and unsafe characters become ``_``.

    The callback's keys map to one file per method: a leading ``explain/`` and a trailing
    ``/pairs`` are dropped, so ``"explain/gradcam/pairs"`` -> ``"gradcam"`` and
    ``"explain/gradcam/curves"`` -> ``"gradcam_curves"``; other keys keep every part
    (``"compare/gradcam/pairs"`` -> ``"compare_gradcam_pairs"``).

    Raises:
        ValueError: if nothing usable is left of ``key``.
    """
    if not isinstance(key, str):
        raise TypeError(f"`{owner}`: expected `key` to be a string, but got {key!r}.")
    key = key.strip()
    if key.startswith("explain/"):
        key = key.removeprefix("explain/").removesuffix("/pairs")
    stem = _UNSAFE.sub("_", key).strip("._")
    if not stem:
        raise ValueError(
            f"`{owner}`: expected a `key` with letters or digits, such as 'explain/gradcam/pairs', "
            f"but got {key!r}."
        )
    return stem


class FileSink(ExplanationSink):
    """Write explanations as files under ``<directory>/explanations/``.

    Layout: one folder per explanation cycle, named ``epoch=NNN`` after the epoch given to
    :meth:`~ExplanationSink.set_context` (``step=NNNNNNNN`` after the global step when no epoch is
    set), holding one file per key, slashes in the key replaced by ``_``::

        <directory>/explanations/epoch=003/gradcam.png          # log_image("explain/gradcam/pairs")
        <directory>/explanations/epoch=003/gradcam_curves.png   # log_figure("explain/gradcam/curves")
        <directory>/explanations/epoch=003/gradcam_scores.csv   # log_table("explain/gradcam/scores")

    The caption is written on the image, in a white band under it (as the trackers show it beside
    their images), and stored with the key and the step as PNG text chunks (``Description``,
    ``Title``, ``Step``; shown by ``exiftool`` or ``PIL.Image.open(p).text``). A key logged twice in one
    cycle overwrites its file. Writes happen on global rank 0 only.

    This sink is what :func:`~lightning_explain.sinks.sinks_for` gives a ``CSVLogger`` (under its
    ``log_dir``, next to ``metrics.csv``) and a run without an image-capable logger.

    Args:
        directory: the base directory (created on first write).
        dpi: resolution of figures saved by :meth:`log_figure`. Default 100.
        compress_level: zlib level of the PNG files, 0 (none, largest) to 9 (smallest, slowest).
            Default 1: a few percent larger files than PIL's default 6 for about half the time to
            write them, which is most of what a logged evaluation costs with a small model.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, dpi: float = 100.0, compress_level: int = 1
    ) -> None:
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(
                f"`FileSink`: expected `directory` to be a path, but got {type(directory).__name__}."
            )
        if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or dpi <= 0:
            raise ValueError(f"`FileSink`: expected `dpi` > 0, but got {dpi!r}.")
        if (
            isinstance(compress_level, bool)
            or not isinstance(compress_level, int)
            or not 0 <= compress_level <= 9
        ):
            raise ValueError(
                "`FileSink`: expected `compress_level` to be an int from 0 (fastest) to 9 "
                f"(smallest), but got {compress_level!r}. Use 1 (the default) for fast writes."
            )
        self.directory = Path(directory)
        self.dpi = float(dpi)
        self.compress_level = compress_level

    @property
    def figure_dpi(self) -> float | None:
        """``dpi``: the resolution :meth:`log_figure` saves at."""
        return self.dpi

    @property
    def root(self) -> Path:
        """``<directory>/explanations``."""
        return self.directory / "explanations"

    def folder(self, step: int) -> Path:
        """The folder of the current cycle: ``epoch=NNN`` if an epoch is set, else ``step=NNNNNNNN``."""
        name = f"epoch={self.epoch:03d}" if self.epoch is not None else f"step={int(step):08d}"
        return self.root / name

    def path(self, key: str, step: int, suffix: str) -> Path:
        """Where ``key`` is written at ``step`` (``suffix`` such as ``".png"``)."""
        return self.folder(step) / f"{file_stem(key)}{suffix}"

    def _target(self, key: str, step: int, suffix: str) -> Path:
        path = self.path(key, step, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def png_encoder(self) -> PngEncoder:
        """PNG at ``compress_level``, the caption in a band under the picture and in the text
        chunks with the key and the step: what :meth:`log_image` and :meth:`log_figure` write
        (under DDP the ranks that draw the pictures encode them, see :meth:`log_png`)."""
        return PngEncoder(self.compress_level, caption_band=True, text_chunks=True)

    def log_image(self, key: str, image: Tensor, step: int, caption: str | None = None) -> None:
        """Write ``image`` as ``<folder>/<key>.png`` (caption in the PNG ``Description`` chunk)."""
        image = check_image(image, owner="FileSink.log_image")
        if is_global_zero():
            self.log_png(key, self.png_encoder.encode(key, image, step, caption), step)

    def log_figure(self, key: str, figure: Figure, step: int) -> None:
        """Save ``figure`` as ``<folder>/<key>.png``, drawn at ``dpi``."""
        try:
            if is_global_zero():
                picture = figure_to_image(figure, dpi=self.dpi)
                self.log_png(key, self.png_encoder.encode(key, picture, step), step)
        finally:
            release_figure(figure)

    def log_curves(
        self,
        key: str,
        curves: Mapping[str, Tensor],
        step: int,
        *,
        draw: Callable[[], Figure],
    ) -> None:
        """Write the curves as data, ``<folder>/<key>.csv`` (:func:`curve_rows`: curve,
        fraction, mean, min, max), and their figure as ``<folder>/<key>.png`` (a folder is
        looked at with an image viewer)."""
        if not is_global_zero():
            return
        self.log_table(key, list(CURVE_COLUMNS), curve_rows(curves), step)
        self.log_figure(key, draw(), step)

    def log_png(self, key: str, png: bytes, step: int, caption: str | None = None) -> None:
        """Write ``png`` (from :attr:`png_encoder`, which holds the caption) as
        ``<folder>/<key>.png``."""
        if is_global_zero():
            self._target(key, step, ".png").write_bytes(png)

    def log_png_curves(self, key: str, curves: Mapping[str, Tensor], png: bytes, step: int) -> None:
        """:meth:`log_curves` with the figure already encoded: the CSV, then ``png``."""
        if is_global_zero():
            self.log_table(key, list(CURVE_COLUMNS), curve_rows(curves), step)
            self.log_png(key, png, step)

    def log_table(self, key: str, columns: list[str], rows: list[list[object]], step: int) -> None:
        """Write the table as ``<folder>/<key>.csv`` (header row, then one line per row)."""
        columns, rows = check_table(columns, rows, owner="FileSink.log_table")
        if not is_global_zero():
            return
        with self._target(key, step, ".csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv_writer(f)
            writer.writerow(columns)
            writer.writerows(rows)

    def __repr__(self) -> str:
        return f"FileSink({str(self.directory)!r})"
