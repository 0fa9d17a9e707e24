"""The sink interface: where rendered explanations go.

A sink adapts one experiment tracker (or a folder) to three calls the callback makes after each
explanation cycle: :meth:`~ExplanationSink.log_image` for the pair grid,
:meth:`~ExplanationSink.log_figure` for matplotlib figures (captioned pairs, insertion/deletion
curves) and :meth:`~ExplanationSink.log_table` for per-pair scores. Scalars (metric means) do not go
through sinks: the callback passes them to every logger's ``log_metrics`` and writes them into
``trainer.callback_metrics``, where ModelCheckpoint/EarlyStopping can monitor them.

A sink that stores pictures as PNG files may say how (:attr:`ExplanationSink.png_encoder`, a
:class:`PngEncoder`): under DDP the ranks that draw the pictures then encode them as well, and
rank 0 only writes the bytes (:meth:`ExplanationSink.log_png`,
:meth:`ExplanationSink.log_png_curves`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CURVE_COLUMNS",
    "ExplanationSink",
    "PngEncoder",
    "check_image",
    "check_table",
    "curve_rows",
    "image_to_numpy",
    "is_global_zero",
    "release_figure",
    "require",
]


class ExplanationSink(ABC):
    """Base class of every sink: implement :meth:`log_image`, optionally the others.

    The callback calls sinks on global rank 0 only, after rendering. Lightning's logger methods are
    rank-zero guarded too (and ``logger.experiment`` is a dummy on other ranks), so a sink that only
    calls its logger is safe on any rank; a sink that writes files itself should guard (see
    :class:`~lightning_explain.sinks.FileSink`).

    ``step`` is the trainer's ``global_step``. :meth:`set_context` tells the sink which epoch the
    next calls belong to, for sinks that organise output by epoch.
    """

    epoch: int | None = None
    """The epoch of the current explanation cycle, set by :meth:`set_context` (``None``: unknown)."""

    draws_curves: bool = True
    """Whether :meth:`log_curves` calls its ``draw`` argument. A sink that logs the curves as data
    only (the W&B sink) sets it to ``False``, so that no figure is drawn for it, on any rank."""

    @property
    def figure_dpi(self) -> float | None:
        """The resolution at which this sink rasterises the figures it is given (``None``: the
        figure's own dpi, matplotlib's ``figure.dpi``). Under DDP the callback draws the curves
        figures on other ranks at this resolution and hands rank 0's sinks a figure that shows
        those pixels (:func:`~lightning_explain.render.picture_figure`), so a sink that saves
        figures at another dpi must say so here."""
        return None

    def set_context(self, *, epoch: int | None = None) -> None:
        """Record the epoch of the explanation cycle that the next ``log_*`` calls belong to.

        Args:
            epoch: the trainer's ``current_epoch``, or ``None`` if unknown.
        """
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
            raise TypeError(
                f"`{type(self).__name__}.set_context`: expected `epoch` to be an int or None, but "
                f"got {epoch!r}."
            )
        self.epoch = epoch

    @abstractmethod
    def log_image(self, key: str, image: Tensor, step: int, caption: str | None = None) -> None:
        """Log one RGB image.

        Args:
            key: name of the image series, e.g. ``"explain/gradcam/pairs"``; one series per key.
            image: ``(3, H, W)`` uint8 tensor (CHW), e.g. from
                :func:`~lightning_explain.render.pair_grid`. Check it with :func:`check_image`.
            step: the trainer's global step.
            caption: optional text shown with the image.
        """

    def log_figure(self, key: str, figure: Figure, step: int) -> None:
        """Log a matplotlib figure. Default: rasterise it and call :meth:`log_image`.

        Sinks for trackers with native figure support override this. The figure stays usable after
        the call (the same figure is handed to every sink); pyplot-managed figures are released from
        pyplot by the built-in sinks.

        Args:
            key: name of the figure series.
            figure: the figure, e.g. from :func:`~lightning_explain.render.pair_figure`.
            step: the trainer's global step.
        """
        from lightning_explain.render import figure_to_image

        self.log_image(key, figure_to_image(figure), step)
        release_figure(figure)

    def log_curves(
        self,
        key: str,
        curves: Mapping[str, Tensor],
        step: int,
        *,
        draw: Callable[[], Figure],
    ) -> None:
        """Log insertion/deletion curves. Default: ``log_figure(key, draw(), step)``.

        Trackers that chart data override this and log ``curves`` themselves (see
        :func:`curve_rows`), so no figure is drawn for them. ``draw`` returns the curves' figure:
        it is drawn on the first call and shared by every sink of the evaluation, so a sink must
        not release it. Under DDP it may be a figure showing the curves drawn on another rank,
        pixel for pixel at :attr:`figure_dpi` (see :func:`~lightning_explain.render.picture_figure`).

        Args:
            key: name of the curves series, e.g. ``"explain/gradcam/curves"``.
            curves: name (e.g. ``"insertion_simultaneous"``) -> ``(B, T + 1)`` per-pair
                similarity after ``t`` of ``T`` steps, ``t = 0 .. T``.
            step: the trainer's global step.
            draw: returns the curves' figure (see :func:`lightning_explain.render.curves_figure`).
        """
        self.log_figure(key, draw(), step)

    @property
    def png_encoder(self) -> PngEncoder | None:
        """How this sink stores pictures as PNG, if it does: then under DDP the ranks that draw
        the pictures encode them with it, and rank 0 hands this sink the bytes
        (:meth:`log_png`, :meth:`log_png_curves`) instead of pixels, so that it only writes
        them. ``None`` (the default): the sink takes pixels and figures."""
        return None

    def log_png(self, key: str, png: bytes, step: int, caption: str | None = None) -> None:
        """Log a picture that :attr:`png_encoder` encoded on another rank: what
        :meth:`log_image` (``caption`` given) or :meth:`log_figure` would store for it.

        Called only for sinks whose :attr:`png_encoder` is not ``None``, with the bytes of
        ``png_encoder.encode(key, image, step, caption)``.

        Raises:
            NotImplementedError: unless the sink implements it.
        """
        raise NotImplementedError(
            f"`{type(self).__name__}` has a `png_encoder` but does not implement `log_png`."
        )

    def log_png_curves(self, key: str, curves: Mapping[str, Tensor], png: bytes, step: int) -> None:
        """:meth:`log_curves` with the curves figure already drawn (at :attr:`figure_dpi`) and
        encoded by :attr:`png_encoder` on another rank. Default: ``log_png(key, png, step)``."""
        self.log_png(key, png, step)

    def log_table(self, key: str, columns: list[str], rows: list[list[object]], step: int) -> None:  # noqa: B027
        """Log a table (e.g. per-pair scores). Default: nothing, for trackers without tables.

        The numbers in the table are also logged as scalars (their means) by the callback, so a
        sink without tables loses only the per-pair breakdown.

        Args:
            key: name of the table.
            columns: column names.
            rows: one list of ``len(columns)`` values per row (numbers or strings).
            step: the trainer's global step.
        """

    def define_scalars(  # noqa: B027
        self, charts: Mapping[str, Sequence[str]], higher_is_better: Mapping[str, bool | None]
    ) -> None:
        """Describe the scalars to come, once, before the first evaluation: trackers that can
        lay out charts (TensorBoard's custom scalars, W&B's ``define_metric``) show one chart per
        entry of ``charts``. Default: nothing (the tracker lays out scalars by key).

        Args:
            charts: chart title -> the scalar keys drawn in it, e.g.
                ``{"gradcam: insertion": ["explain/gradcam/insertion_simultaneous", ...]}``.
            higher_is_better: key -> the direction of the score (``None``: no direction).
        """

    def flush(self) -> None:  # noqa: B027
        """Push buffered output to disk or the server. Default: nothing to flush."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(frozen=True)
class PngEncoder:
    """How a sink stores a picture as a PNG file, as a value that travels between ranks: under
    DDP the rank that draws a picture encodes it (see :attr:`ExplanationSink.png_encoder`).

    Attributes:
        compress_level: zlib level, 0 (none, largest) to 9 (smallest, slowest).
        caption_band: write the caption on the picture, in a white band under it
            (:func:`~lightning_explain.render.captioned`).
        text_chunks: store the key, the step and the caption as the PNG text chunks ``Title``,
            ``Step`` and ``Description``.
    """

    compress_level: int = 1
    caption_band: bool = False
    text_chunks: bool = False

    def encode(self, key: str, image: Tensor, step: int, caption: str | None = None) -> bytes:
        """The PNG file of ``image`` (``(3, H, W)`` uint8, see :func:`check_image`) logged under
        ``key`` at ``step`` with ``caption``.

        Example:
            >>> png = PngEncoder().encode("explain/x", torch.zeros(3, 4, 5, dtype=torch.uint8), 0)
            >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
            True
        """
        import io

        from PIL import Image
        from PIL.PngImagePlugin import PngInfo

        image = check_image(image, owner="PngEncoder.encode")
        info = PngInfo()
        if self.text_chunks:
            info.add_text("Title", key)
            info.add_text("Step", str(int(step)))
            if caption is not None:
                info.add_itxt("Description", str(caption))
        if caption and self.caption_band:
            from lightning_explain.render import captioned

            image = captioned(image, str(caption))
        out = io.BytesIO()
        Image.fromarray(image_to_numpy(image)).save(
            out, format="PNG", pnginfo=info, compress_level=self.compress_level
        )
        return out.getvalue()


# --------------------------------------------------------------------------------------------------
# Helpers for sink implementations


def check_image(image: object, *, owner: str) -> Tensor:
    """Validate a ``(3, H, W)`` uint8 image and return it detached on the CPU.

    Raises:
        TypeError: if ``image`` is not a uint8 tensor.
        ValueError: if it is not ``(3, H, W)``.
    """
    if not isinstance(image, Tensor) or image.dtype != torch.uint8:
        got = f"a {image.dtype} tensor" if isinstance(image, Tensor) else f"{type(image).__name__}"
        raise TypeError(
            f"`{owner}`: expected `image` to be a uint8 tensor of shape (3, H, W), but got {got}. "
            f"Render it with `lightning_explain.render.pair_grid`, or convert a [0, 1] float image "
            f"with `(x * 255).round().to(torch.uint8)`."
        )
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(
            f"`{owner}`: expected `image` of shape (3, H, W) (channels first), but got shape "
            f"{tuple(image.shape)}. Use `x.permute(2, 0, 1)` for an (H, W, 3) image."
        )
    return image.detach().cpu()


def check_table(
    columns: object, rows: object, *, owner: str
) -> tuple[list[str], list[list[object]]]:
    """Validate a table: ``columns`` a list of strings, ``rows`` lists of ``len(columns)`` values.

    Raises:
        TypeError: if ``columns`` or a row is not a list/tuple, or a column name is not a string.
        ValueError: for repeated column names or a row with the wrong number of values.
    """
    if not isinstance(columns, (list, tuple)) or not all(isinstance(c, str) for c in columns):
        raise TypeError(
            f"`{owner}`: expected `columns` to be a list of strings, but got {columns!r}."
        )
    if len(set(columns)) != len(columns):
        raise ValueError(f"`{owner}`: expected distinct column names, but got {list(columns)}.")
    if not isinstance(rows, (list, tuple)):
        raise TypeError(
            f"`{owner}`: expected `rows` to be a list of rows (lists of values), but got "
            f"{type(rows).__name__}."
        )
    checked: list[list[object]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or len(row) != len(columns):
            raise ValueError(
                f"`{owner}`: expected every row to be a list of {len(columns)} values (one per "
                f"column {list(columns)}), but row {i} is {row!r}."
            )
        checked.append([_plain(v) for v in row])
    return list(columns), checked


def _plain(value: object) -> object:
    """Turn 0-d tensors and numpy scalars into Python numbers; keep everything else."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def image_to_numpy(image: Tensor) -> np.ndarray:
    """``(3, H, W)`` uint8 tensor -> contiguous ``(H, W, 3)`` uint8 numpy array (HWC)."""
    return np.ascontiguousarray(image.detach().cpu().permute(1, 2, 0).numpy())


def release_figure(figure: Figure) -> None:
    """Release a pyplot-managed figure from pyplot (no-op for figures pyplot does not manage).

    pyplot is never imported here: if it was not imported, it cannot manage the figure.
    """
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(figure)


def require(module: str, *, extra: str, owner: str) -> None:
    """Raise a ``ModuleNotFoundError`` with an install hint if ``module`` cannot be imported."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ModuleNotFoundError(
            f"`{owner}` needs the `{module}` package, which is not installed. Install it with "
            f"`pip install 'lightning-explain[{extra}]'` (or `pip install {module}`).",
            name=module,
        )


def is_global_zero() -> bool:
    """Whether this process is global rank 0, as Lightning's ``rank_zero_only`` decides it."""
    from lightning_utilities.core.rank_zero import rank_zero_only

    rank = getattr(rank_zero_only, "rank", None)
    if rank is None:
        # Lightning not imported yet: the same environment lookup it performs.
        for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
            value = os.environ.get(name)
            if value is not None:
                return int(value) == 0
        return True
    return int(rank) == 0


CURVE_COLUMNS = ["curve", "fraction", "mean", "min", "max"]
"""The columns of :func:`curve_rows`."""


def curve_rows(curves: Mapping[str, Tensor]) -> list[list[object]]:
    """Insertion/deletion curves as table rows ``[curve, fraction, mean, min, max]``.

    ``fraction`` is ``t / T``; ``mean``, ``min`` and ``max`` are over the pairs of each
    ``(B, T + 1)`` curve (a ``(T + 1,)`` curve is one pair). Columns: :data:`CURVE_COLUMNS`.

    Example:
        >>> rows = curve_rows({"insertion": torch.tensor([[0.0, 1.0], [0.5, 1.0]])})
        >>> rows[0], rows[1]
        (['insertion', 0.0, 0.25, 0.0, 0.5], ['insertion', 1.0, 1.0, 1.0, 1.0])
    """
    rows: list[list[object]] = []
    for name, curve in curves.items():
        c = curve.detach().float().cpu().reshape(-1, curve.shape[-1])
        steps = max(1, c.shape[-1] - 1)
        mean, low, high = c.mean(0), c.min(0).values, c.max(0).values
        for t in range(c.shape[-1]):
            rows.append([str(name), t / steps, float(mean[t]), float(low[t]), float(high[t])])
    return rows
