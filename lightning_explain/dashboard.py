"""A self-contained, interactive HTML dashboard comparing pairwise explanations across checkpoints.

This module is pure: it takes plain numbers and encoded pictures (see :class:`DashboardData`) and
writes one HTML file. It loads no model and computes no explanation; ``lightning-explain compare``
(see :mod:`lightning_explain.cli`) fills the data model from saved checkpoints, and
:class:`LiveDashboard` from the evaluations of a running training.

The page opens from disk without a network. Its CSS and JavaScript (package data under
``lightning_explain/_static``, hand-written, no third-party library) are inline; the data are one
JSON document in a ``<script type="application/json">`` element (every ``<``, ``>`` and ``&`` in
it written as ``\\u003c``, ``\\u003e``, ``\\u0026``, so that no string, say a checkpoint named
``</script><script>``, can end the element); the charts are SVG drawn in the page from those
numbers; probe images are WebP and heatmaps 8-bit grey lossless WebP, both base64 in the JSON,
coloured and blended over their images in the page with matplotlib's ``jet`` table (the colours of
:func:`lightning_explain.render.overlay`). Nothing is fetched. Every string from the user
(checkpoint names and paths, run information, the title, method labels) is HTML-escaped with
:func:`html.escape` in the HTML and by the page's own escaping where the script writes markup.

The tabs:

* **Summary** (first): per method, the trend of every score over training (first and last value,
  the change, better or worse for the metric's direction), the Spearman correlation with the kNN
  accuracy, and the number of degenerate (all-zero or constant) maps; the kNN accuracy's trend;
  the latest checkpoint's maps of the first pairs.
* **Pair**: one probe pair; a slider (or the arrow keys) scrubs it through the checkpoints: both
  images, every method's maps, the pair's insertion/deletion curves and scores, and the pair's
  scores over the checkpoints.
* **Difference**: two chosen checkpoints A and B: the maps of both and ``B - A`` per method, and
  the change of every score (the pair's and the mean over pairs).
* **Heatmaps**: a grid of maps, one pair x all checkpoints or one checkpoint x all pairs; a click
  opens a map large.
* **Curves**: the insertion/deletion curves, mean over pairs or of one pair, per checkpoint.
* **Over training**: checkpoints of one run: every score, the kNN accuracy, the mean similarity
  and the degenerate maps against the epoch (or global step).
* **Metrics**: one row per (method, checkpoint), one column per metric with its direction (``↑``
  higher is better, ``↓`` lower is better); the best value of each column is marked ``★``, never
  on a row whose method made degenerate maps for that checkpoint. Columns sort on a click.
* **Downstream**: with kNN accuracies: the accuracy per checkpoint, the Spearman and Pearson
  correlation of every method x metric score with it (see :mod:`lightning_explain.downstream`),
  and a scatter plot of accuracy against each score.
* **Run**: the checkpoints (path, epoch, global step) and how the comparison was computed.

The method and checkpoint check boxes act on every tab: rows, columns, chart series, slider steps.
Charts show values on hover and zoom on a horizontal drag (double-click resets).

Example:
    >>> data = DashboardData(
    ...     checkpoints=[CheckpointInfo("a.ckpt", epoch=0), CheckpointInfo("b.ckpt", epoch=1)],
    ...     methods=["gradcam"],
    ...     metrics=[MetricColumn("insertion_simultaneous", True)],
    ...     scores={(0, "gradcam"): {"insertion_simultaneous": 0.4},
    ...             (1, "gradcam"): {"insertion_simultaneous": 0.6}},
    ...     one_run=True,
    ... )
    >>> page = render_html(data)
    >>> page.startswith("<!DOCTYPE html>"), 'data-tab="summary"' in page
    (True, True)

Reference: Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive Learning",
IEEE TIP (arXiv 2206.09753); the metrics are its pairwise insertion/deletion/average-drop scores.
"""

from __future__ import annotations

import base64
import datetime
import functools
import html
import io
import json
import math
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from lightning_explain.downstream import Correlation, DownstreamPoint, correlation_table

if TYPE_CHECKING:
    from torch import Tensor

    from lightning_explain.data.probe import ProbeSet
    from lightning_explain.evaluation import MethodEvaluation, ProbeEvaluation

__all__ = [
    "CheckpointInfo",
    "DashboardData",
    "LiveDashboard",
    "MethodRecord",
    "MetricColumn",
    "best_rows",
    "check_dashboard_dir",
    "encode_image",
    "encode_map",
    "image_png",
    "render_html",
    "update_live_dashboard",
    "write_dashboard",
]

_OWNER = "dashboard"

# Colours of the methods, shared by the charts and the check-box swatches (matplotlib's tab10).
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

Pictures = Sequence[tuple[bytes, bytes]]
"""Per probe pair, the encoded pictures (PNG, JPEG or WebP bytes) of image 1 and image 2."""

Stats = Union[Sequence[float], None]


# --------------------------------------------------------------------------------------------------
# Data model


@dataclass(frozen=True)
class CheckpointInfo:
    """One compared checkpoint (or one evaluation of a live run).

    Attributes:
        name: label shown in the dashboard (usually the file name).
        path: where it was loaded from. Default ``""``.
        epoch: the checkpoint's ``epoch`` entry, if recorded. Default ``None``.
        global_step: the checkpoint's ``global_step`` entry, if recorded. Default ``None``.
    """

    name: str
    path: str = ""
    epoch: int | None = None
    global_step: int | None = None


@dataclass(frozen=True)
class MetricColumn:
    """One metric column of the table.

    Attributes:
        key: the metric key (a name from :func:`lightning_explain.metrics.list_metrics`).
        higher_is_better: ``True`` (shown ``↑``), ``False`` (``↓``) or ``None`` (no direction: no
            best value is marked). Default ``None``.
    """

    key: str
    higher_is_better: bool | None = None


@dataclass
class DashboardData:
    """Everything the dashboard shows, as plain numbers and encoded pictures.

    Checkpoints are referred to by their index in ``checkpoints``, methods by name. Pictures are
    PNG, JPEG or WebP bytes (see :func:`encode_image` and :func:`encode_map`).

    Attributes:
        checkpoints: the compared checkpoints, in display order.
        methods: explanation method names, in display order.
        metrics: metric columns, in display order.
        scores: ``(checkpoint index, method) -> {metric key: mean score over the pairs}``. Missing
            entries and NaN are shown as ``n/a``.
        pairs: per probe pair, the pictures of image 1 and image 2. Default: none.
        overlays: ``(checkpoint index, method) ->`` per pair, ready-made pictures of the heatmap
            overlays on image 1 and image 2; shown where ``maps`` has no entry. Default: none.
        similarity: ``checkpoint index ->`` per pair, the similarity of the pair's embeddings.
            Default: none.
        curves: ``(checkpoint index, method) -> {metric key: mean curve over pairs}``, each curve a
            sequence of ``T + 1`` similarities at ``0, 1/T, ..., 1`` of the pixels. Default: the
            mean of ``pair_curves`` where given.
        one_run: whether the checkpoints come from one training run, which adds the Over training
            tab and orders the trends by epoch (else by position). Default ``False``.
        title: page title. Default ``"lightning-explain comparison"``.
        info: ``(label, value)`` lines shown in the Run tab (probe file, device, options, ...).
            Default: none.
        knn_accuracy: ``checkpoint index -> kNN accuracy`` of the online kNN probe (see
            :mod:`lightning_explain.downstream`); adds a ``knn_accuracy`` column and the
            Downstream tab. Default: none.
        knn_info: one line describing the kNN probe (k, temperature, image counts), shown in the
            Downstream tab. Default ``""``.
        maps: ``(checkpoint index, method) ->`` per pair, the heatmaps ``h1`` and ``h2`` as 8-bit
            grey pictures (value / 255 is the map's value in [0, 1]; see :func:`encode_map`). The
            page colours them and blends them over ``pairs``; the Difference tab needs them.
            Default: none.
        pair_scores: ``(checkpoint index, method) -> {metric key: per-pair scores}``, one number per
            probe pair. Default: none.
        pair_curves: ``(checkpoint index, method) -> {metric key: per-pair curves}``, per pair a
            sequence of ``T + 1`` similarities (the rows of
            :attr:`lightning_explain.evaluation.MethodEvaluation.curves`). Default: none.
        degenerate: ``(checkpoint index, method) ->`` per pair, whether ``h1`` and ``h2`` are
            degenerate (all zero or constant, see
            :meth:`lightning_explain.evaluation.MethodEvaluation.degenerate`). Default: worked
            out from ``maps`` (a map of one grey level), unknown without them.
        refresh_seconds: for a page rewritten during training (:class:`LiveDashboard`): the page
            offers to reload itself this often, keeping its view. Default ``None``: a static page.
        updated: when the data were last changed, shown in the header. Default ``""``.

    Raises:
        ValueError: from :meth:`validate` for inconsistent contents.
    """

    checkpoints: Sequence[CheckpointInfo]
    methods: Sequence[str]
    metrics: Sequence[MetricColumn]
    scores: Mapping[tuple[int, str], Mapping[str, float]]
    pairs: Pictures = field(default_factory=list)
    overlays: Mapping[tuple[int, str], Pictures] = field(default_factory=dict)
    similarity: Mapping[int, Sequence[float]] = field(default_factory=dict)
    curves: Mapping[tuple[int, str], Mapping[str, Sequence[float]]] = field(default_factory=dict)
    one_run: bool = False
    title: str = "lightning-explain comparison"
    info: Sequence[tuple[str, str]] = field(default_factory=list)
    knn_accuracy: Mapping[int, float] = field(default_factory=dict)
    knn_info: str = ""
    maps: Mapping[tuple[int, str], Pictures] = field(default_factory=dict)
    pair_scores: Mapping[tuple[int, str], Mapping[str, Sequence[float]]] = field(
        default_factory=dict
    )
    pair_curves: Mapping[tuple[int, str], Mapping[str, Sequence[Sequence[float]]]] = field(
        default_factory=dict
    )
    degenerate: Mapping[tuple[int, str], Sequence[tuple[bool, bool]]] = field(default_factory=dict)
    refresh_seconds: float | None = None
    updated: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check that every index, method, metric, pair count and picture is consistent.

        Raises:
            ValueError: naming the first inconsistent entry.
        """
        n_ckpt = len(self.checkpoints)
        if n_ckpt == 0:
            raise ValueError(f"`{_OWNER}`: expected at least one checkpoint, but got none.")
        if len(self.methods) == 0:
            raise ValueError(f"`{_OWNER}`: expected at least one method, but got none.")
        for seq, what in ((self.methods, "method"), ([m.key for m in self.metrics], "metric")):
            dupes = sorted({s for s in seq if list(seq).count(s) > 1})
            if dupes:
                raise ValueError(f"`{_OWNER}`: duplicate {what} names {dupes}.")
        methods = set(self.methods)
        n_pairs = len(self.pairs)

        def check_index(index: int, where: str) -> None:
            if not 0 <= index < n_ckpt:
                raise ValueError(
                    f"`{_OWNER}`: `{where}` refers to checkpoint index {index}, but there are "
                    f"{n_ckpt} checkpoints."
                )

        def check_key(key: tuple[int, str], where: str) -> None:
            index, method = key
            check_index(index, where)
            if method not in methods:
                raise ValueError(
                    f"`{_OWNER}`: `{where}` refers to method {method!r}, which is not in "
                    f"`methods` {list(self.methods)}."
                )

        def check_count(got: int, key: object, where: str, what: str) -> None:
            if got != n_pairs:
                raise ValueError(
                    f"`{_OWNER}`: expected {n_pairs} {what} (one per probe pair, as in `pairs`) "
                    f"for {key} in `{where}`, but got {got}."
                )

        for p, pair in enumerate(self.pairs):
            for blob in pair:
                _mime(blob, f"pairs[{p}]")
        for key in self.scores:
            check_key(key, "scores")
        for key in self.curves:
            check_key(key, "curves")
        for where, pictures in (("overlays", self.overlays), ("maps", self.maps)):
            for key, tiles in pictures.items():
                check_key(key, where)
                check_count(len(tiles), key, where, f"{where[:-1]} pairs")
                for tile in tiles:
                    for blob in tile:
                        _mime(blob, f"{where}[{key}]")
        for key, per_pair in self.pair_scores.items():
            check_key(key, "pair_scores")
            for metric, values in per_pair.items():
                check_count(len(values), (key, metric), "pair_scores", "scores")
        for key, curves in self.pair_curves.items():
            check_key(key, "pair_curves")
            for metric, rows in curves.items():
                check_count(len(rows), (key, metric), "pair_curves", "curves")
                if len({len(row) for row in rows}) > 1:
                    raise ValueError(
                        f"`{_OWNER}`: expected the curves of every pair to have one length for "
                        f"{(key, metric)} in `pair_curves`, but got lengths "
                        f"{sorted({len(row) for row in rows})}."
                    )
        for key, flags in self.degenerate.items():
            check_key(key, "degenerate")
            check_count(len(flags), key, "degenerate", "(h1, h2) flags")
        for index in self.knn_accuracy:
            check_index(index, "knn_accuracy")
        for index, sims in self.similarity.items():
            check_index(index, "similarity")
            if n_pairs and len(sims) != n_pairs:
                raise ValueError(
                    f"`{_OWNER}`: expected {n_pairs} similarities for checkpoint {index}, but got "
                    f"{len(sims)}."
                )

    def rows(self) -> list[tuple[int, str]]:
        """Rows of the metric table: ``(checkpoint index, method)``, grouped by method."""
        return [(i, m) for m in self.methods for i in range(len(self.checkpoints))]

    def score(self, index: int, method: str, metric: str) -> float:
        """The score of one cell, NaN when missing."""
        value = self.scores.get((index, method), {}).get(metric)
        return math.nan if value is None else float(value)

    def knn(self, index: int) -> float:
        """The kNN accuracy of one checkpoint, NaN when missing."""
        value = self.knn_accuracy.get(index)
        return math.nan if value is None else float(value)

    def degenerate_flags(self, index: int, method: str) -> list[tuple[bool, bool]] | None:
        """Per pair, whether ``h1`` and ``h2`` of one cell are degenerate; ``None`` when unknown.

        Taken from ``degenerate`` when given, else from ``maps`` (a map of one grey level).
        """
        key = (index, method)
        flags = self.degenerate.get(key)
        if flags is not None:
            return [(bool(a), bool(b)) for a, b in flags]
        tiles = self.maps.get(key)
        if tiles is None:
            return None
        return [(_is_flat(a), _is_flat(b)) for a, b in tiles]

    def degenerate_count(self, index: int, method: str) -> int | None:
        """How many of one cell's ``2 x pairs`` maps are degenerate; ``None`` when unknown."""
        flags = self.degenerate_flags(index, method)
        return None if flags is None else sum(int(a) + int(b) for a, b in flags)

    def axis(self) -> tuple[str, list[float]]:
        """The x axis of the trends: ``("epoch", epochs)`` for checkpoints of one run with
        distinct epochs, else ``("global step", steps)`` when they are distinct, else
        ``("checkpoint", positions)``."""
        ckpts = self.checkpoints
        if self.one_run:
            for label, values in (
                ("epoch", [c.epoch for c in ckpts]),
                ("global step", [c.global_step for c in ckpts]),
            ):
                known = [v for v in values if v is not None]
                if len(known) == len(ckpts) and len(set(known)) == len(known):
                    return label, [float(v) for v in known]
        return "checkpoint", [float(i) for i in range(len(ckpts))]

    def order(self) -> list[int]:
        """Checkpoint indices in training order (by :meth:`axis`), ties in display order."""
        _, xs = self.axis()
        return sorted(range(len(self.checkpoints)), key=lambda i: (xs[i], i))

    def downstream_points(self) -> list[DownstreamPoint]:
        """One point per checkpoint: its mean scores and kNN accuracy, labelled ``e<epoch>``
        (or ``#<index>`` without a recorded epoch)."""
        return [
            DownstreamPoint(
                {m: {c.key: self.score(i, m, c.key) for c in self.metrics} for m in self.methods},
                self.knn(i),
                f"e{ckpt.epoch}" if ckpt.epoch is not None else f"#{i}",
            )
            for i, ckpt in enumerate(self.checkpoints)
        ]

    def correlations(self) -> list[Correlation]:
        """Spearman and Pearson correlation of every method x metric score with the kNN accuracy
        across the checkpoints (NaN with fewer than 3 checkpoints or a constant series); empty
        without kNN accuracies."""
        if not self.knn_accuracy:
            return []
        return correlation_table(
            self.downstream_points(), list(self.methods), [c.key for c in self.metrics]
        )


# --------------------------------------------------------------------------------------------------
# Encoding


def best_rows(
    values: Sequence[float], higher_is_better: bool | None, *, exclude: Iterable[int] = ()
) -> list[int]:
    """Indices of the best values of a column (all of them when tied); NaN never wins.

    Args:
        values: the column's numbers.
        higher_is_better: the metric's direction; ``None`` marks nothing.
        exclude: indices that may not win (e.g. rows of degenerate maps).

    Returns:
        Sorted indices into ``values``; empty when there is no direction or no finite value.

    Example:
        >>> best_rows([0.2, 0.9, 0.9, float("nan")], True)
        [1, 2]
        >>> best_rows([0.2, 0.9, 0.5], True, exclude=[1])
        [2]
    """
    if higher_is_better is None:
        return []
    skip = set(exclude)
    finite = [
        (i, float(v)) for i, v in enumerate(values) if i not in skip and math.isfinite(float(v))
    ]
    if not finite:
        return []
    pick = max if higher_is_better else min
    best = pick(v for _, v in finite)
    return [i for i, v in finite if v == best]


def _as_array(values: Any) -> np.ndarray[Any, Any]:
    """A NumPy array of a tensor (any device or float dtype), an array or nested sequences."""
    if hasattr(values, "detach"):
        t = values.detach().cpu()
        return np.asarray((t.float() if t.dtype.is_floating_point else t).numpy())
    return np.asarray(values)


def _rows(values: Any) -> list[list[float]]:
    """``(B, T)`` numbers as ``B`` lists of floats."""
    arr = _as_array(values).astype(np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if arr.size else arr.reshape(0, 0)
    return [[float(v) for v in row.reshape(-1)] for row in arr]


def _to_uint8(image: Any, owner: str) -> np.ndarray[Any, Any]:
    """An ``(H, W, 3)`` or ``(H, W)`` uint8 array from any accepted image layout."""
    arr = _as_array(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise ValueError(
            f"`{_OWNER}.{owner}`: expected an image of shape (3, H, W), (H, W, 3) or (H, W), but "
            f"got shape {arr.shape}."
        )
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(np.nan_to_num(arr.astype(np.float64)), 0.0, 1.0) * 255.0)
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def _save(arr: np.ndarray[Any, Any], fmt: str, **options: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def image_png(image: Any) -> bytes:
    """Encode one image as PNG bytes (lossless).

    Args:
        image: a ``(3, H, W)`` or ``(1, H, W)`` tensor or array (float in [0, 1], or uint8), or an
            ``(H, W, 3)`` / ``(H, W)`` uint8 array.

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: for another shape.
    """
    return _save(_to_uint8(image, "image_png"), "PNG")


def encode_image(image: Any, *, quality: int = 85) -> bytes:
    """Encode one probe image compactly, as lossy WebP.

    Args:
        image: as :func:`image_png`.
        quality: WebP quality, 1 to 100. Default 85.

    Returns:
        The WebP file's bytes (about a fifth of the PNG's for photographs).

    Raises:
        ValueError: for another shape.

    Example:
        >>> encode_image(np.zeros((8, 8, 3), dtype=np.uint8))[8:12]
        b'WEBP'
    """
    return _save(_to_uint8(image, "encode_image"), "WEBP", quality=int(quality), method=4)


def encode_map(h: Any) -> bytes:
    """Encode one heatmap as an 8-bit grey picture (lossless WebP).

    Args:
        h: an ``(H, W)`` map (tensor or array) of floats in [0, 1] (clipped; NaN becomes 0), or
            uint8 levels.

    Returns:
        WebP bytes whose grey level ``g`` stands for the value ``g / 255``.

    Raises:
        ValueError: for another shape.

    Example:
        >>> len(encode_map(np.linspace(0, 1, 64).reshape(8, 8))) < 200
        True
    """
    arr = _as_array(h)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(
            f"`{_OWNER}.encode_map`: expected a map of shape (H, W), but got shape {arr.shape}."
        )
    # Effort 1: the size of effort 4 (within 1 %) at half the time (24 ms for 224 x 224).
    return _save(_to_uint8(arr, "encode_map"), "WEBP", lossless=True, quality=100, method=1)


def _mime(blob: bytes, where: str) -> str:
    if not isinstance(blob, (bytes, bytearray)):
        raise ValueError(
            f"`{_OWNER}`: expected the bytes of a PNG, JPEG or WebP picture in `{where}`, but got "
            f"an object of type {type(blob).__name__}."
        )
    if blob[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if blob[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if blob[:4] == b"RIFF" and blob[8:12] == b"WEBP":
        return "image/webp"
    raise ValueError(
        f"`{_OWNER}`: a picture in `{where}` is not PNG, JPEG or WebP (it starts with "
        f"{bytes(blob[:12])!r}); encode it with `encode_image`, `encode_map` or `image_png`."
    )


@functools.lru_cache(maxsize=4096)
def _is_flat(blob: bytes) -> bool:
    """Whether an encoded grey map has a single level (an all-zero or constant map)."""
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        low, high = img.convert("L").getextrema()
    return bool(low == high)


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode("ascii")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + _b64(png)


@functools.lru_cache(maxsize=8)
def _lut(name: str) -> str:
    """A matplotlib colormap's 256 colours as base64 of ``256 x 3`` bytes."""
    from lightning_explain.render import colormap_lut

    table = colormap_lut(name).numpy()
    if table.shape[0] != 256:
        index = np.minimum((np.arange(256) / 256 * table.shape[0]).astype(int), table.shape[0] - 1)
        table = table[index]
    return _b64(np.round(np.clip(table, 0, 1) * 255).astype(np.uint8).tobytes())


# --------------------------------------------------------------------------------------------------
# One method's results of one evaluation


@dataclass(frozen=True)
class MethodRecord:
    """One method's results on the probe pairs in one evaluation, compactly encoded.

    What :class:`LiveDashboard` keeps per evaluation and ``lightning-explain compare`` per
    checkpoint: encoded maps and plain numbers, no tensor.

    Attributes:
        maps: per pair, :func:`encode_map` of ``h1`` and ``h2``.
        scores: metric key -> per-pair scores.
        curves: insertion/deletion key -> per pair, the ``T + 1`` similarities of its curve.
        degenerate: per pair, whether ``h1`` and ``h2`` are all zero or constant.
    """

    maps: tuple[tuple[bytes, bytes], ...] = ()
    scores: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    curves: Mapping[str, tuple[tuple[float, ...], ...]] = field(default_factory=dict)
    degenerate: tuple[tuple[bool, bool], ...] = ()

    @classmethod
    def from_tensors(
        cls,
        h1: Any = None,
        h2: Any = None,
        *,
        scores: Mapping[str, Any] | None = None,
        curves: Mapping[str, Any] | None = None,
        degenerate: Any = None,
    ) -> MethodRecord:
        """Encode one method's results.

        Args:
            h1: ``(B, H, W)`` maps of image 1 (tensor or array in [0, 1]), or a sequence of ``B``
                encoded pictures; ``None`` without maps.
            h2: the maps of image 2, same form.
            scores: metric key -> ``(B,)`` per-pair scores (tensor, array or sequence).
            curves: insertion/deletion key -> ``(B, T + 1)`` curves.
            degenerate: ``(B, 2)`` bools; default: worked out from the maps (all zero or
                constant, as :meth:`lightning_explain.evaluation.MethodEvaluation.degenerate`).

        Returns:
            The record.

        Raises:
            ValueError: if ``h1`` and ``h2`` differ in length or a map has a wrong shape.
        """
        maps: tuple[tuple[bytes, bytes], ...] = ()
        flags: list[tuple[bool, bool]] = []
        if h1 is not None and h2 is not None:
            side1, flat1 = _encode_side(h1)
            side2, flat2 = _encode_side(h2)
            if len(side1) != len(side2):
                raise ValueError(
                    f"`{_OWNER}.MethodRecord`: expected as many maps h1 as h2, but got "
                    f"{len(side1)} and {len(side2)}."
                )
            maps = tuple(zip(side1, side2))
            flags = list(zip(flat1, flat2))
        if degenerate is not None:
            arr = _as_array(degenerate).astype(bool).reshape(-1, 2)
            flags = [(bool(a), bool(b)) for a, b in arr]
        return cls(
            maps=maps,
            scores={k: tuple(_floats(v)) for k, v in (scores or {}).items()},
            curves={k: tuple(tuple(row) for row in _rows(v)) for k, v in (curves or {}).items()},
            degenerate=tuple(flags),
        )

    @classmethod
    def from_evaluation(cls, evaluation: MethodEvaluation) -> MethodRecord:
        """The record of one :class:`lightning_explain.evaluation.MethodEvaluation`: its maps,
        per-pair scores, per-pair curves and degenerate flags."""
        e = evaluation.explanation
        return cls.from_tensors(
            None if e is None else e.h1,
            None if e is None else e.h2,
            scores=evaluation.scores,
            curves=evaluation.curves,
            degenerate=None if e is None else evaluation.degenerate(),
        )

    def mean_scores(self) -> dict[str, float]:
        """Metric key -> mean over the pairs with a finite score (NaN when none)."""
        out: dict[str, float] = {}
        for key, values in self.scores.items():
            finite = [v for v in values if math.isfinite(v)]
            out[key] = math.fsum(finite) / len(finite) if finite else math.nan
        return out

    def mean_curves(self) -> dict[str, list[float]]:
        """Curve key -> the mean curve over the pairs."""
        return {
            k: [float(v) for v in np.nanmean(np.asarray(rows, dtype=np.float64), axis=0)]
            for k, rows in self.curves.items()
            if rows
        }


def _floats(values: Any) -> list[float]:
    return [float(v) for v in _as_array(values).reshape(-1)]


def _encode_side(maps: Any) -> tuple[list[bytes], list[bool]]:
    """Encoded maps of one side and whether each is degenerate."""
    if isinstance(maps, (list, tuple)) and all(isinstance(m, (bytes, bytearray)) for m in maps):
        blobs = [bytes(m) for m in maps]
        return blobs, [_is_flat(b) for b in blobs]
    arr = _as_array(maps)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ValueError(
            f"`{_OWNER}.MethodRecord`: expected maps of shape (B, H, W), but got shape {arr.shape}."
        )
    arr = np.nan_to_num(arr.astype(np.float64))
    flat = arr.reshape(arr.shape[0], -1)
    from lightning_explain.evaluation import DEGENERATE_SPAN

    spans = flat.max(axis=1) - flat.min(axis=1) if flat.shape[1] else np.zeros(len(flat))
    return [encode_map(m) for m in arr], [bool(s <= DEGENERATE_SPAN) for s in spans]


# --------------------------------------------------------------------------------------------------
# HTML


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4f}"


def _arrow(higher_is_better: bool | None) -> str:
    if higher_is_better is None:
        return ""
    return " ↑" if higher_is_better else " ↓"


def _direction(higher_is_better: bool | None) -> str:
    if higher_is_better is None:
        return "no direction"
    return "higher is better" if higher_is_better else "lower is better"


def _color(method_index: int) -> str:
    return _PALETTE[method_index % len(_PALETTE)]


@functools.lru_cache(maxsize=4)
def _asset(name: str) -> str:
    text = (resources.files("lightning_explain") / "_static" / name).read_text("utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise RuntimeError(f"`{_OWNER}`: package data {name} would end its element early.")
    return text


def _json_script(payload: object) -> str:
    """JSON safe inside ``<script>``: no ``<``, ``>`` or ``&`` survives (``\\u003c`` etc.)."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _num(value: object, digits: int = 6) -> float | None:
    """A finite number rounded to ``digits`` significant digits, or ``None`` (JSON ``null``)."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


def _curve_keys(data: DashboardData) -> list[str]:
    metric_order = {c.key: n for n, c in enumerate(data.metrics)}
    keys: list[str] = []
    for source in (data.curves, data.pair_curves):
        for per_metric in source.values():
            for key in per_metric:
                if key not in keys:
                    keys.append(key)
    return sorted(keys, key=lambda k: (metric_order.get(k, len(metric_order)), keys.index(k)))


def _pack_curves(rows: Sequence[Sequence[float]]) -> dict[str, Any] | None:
    """Per-pair curves as uint16 levels between their minimum and maximum (65535: not finite),
    base64 little-endian: a third of the size of the numbers as JSON text, 3e-5 resolution on
    a similarity range of 2."""
    if not rows:
        return None
    arr = np.asarray(rows, dtype=np.float64)
    finite = np.isfinite(arr)
    lo = float(arr[finite].min()) if finite.any() else 0.0
    hi = float(arr[finite].max()) if finite.any() else 0.0
    span = hi - lo
    scaled = np.round((np.where(finite, arr, lo) - lo) / span * 65534) if span > 0 else arr * 0
    levels = np.where(finite, scaled, 65535).astype("<u2")
    return {"lo": lo, "hi": hi, "n": int(arr.shape[1]), "q": _b64(levels.tobytes())}


def _payload(data: DashboardData, flags: Mapping[tuple[int, str], list[tuple[bool, bool]]]) -> Any:
    """The data the page's script draws from."""
    n = len(data.checkpoints)
    methods = list(data.methods)
    keys = [c.key for c in data.metrics]
    curve_keys = _curve_keys(data)
    label, xs = data.axis()

    def cell_scores(i: int, m: str) -> list[float | None] | None:
        if (i, m) not in data.scores:
            return None
        return [_num(data.score(i, m, k)) for k in keys]

    def cell_pair_scores(i: int, m: str) -> list[list[float | None] | None] | None:
        ps = data.pair_scores.get((i, m))
        if ps is None:
            return None
        return [[_num(v) for v in ps[k]] if k in ps else None for k in keys]

    def cell_pair_curves(i: int, m: str) -> list[dict[str, Any] | None] | None:
        pc = data.pair_curves.get((i, m))
        if pc is None:
            return None
        return [_pack_curves(pc[k]) if k in pc else None for k in curve_keys]

    def cell_curves(i: int, m: str) -> list[list[float | None] | None] | None:
        mean = data.curves.get((i, m))
        pc = data.pair_curves.get((i, m), {})
        if mean is None and not pc:
            return None
        out: list[list[float | None] | None] = []
        for k in curve_keys:
            # With per-pair curves the page takes their mean itself: each number is stored once.
            curve = None if pc.get(k) else (mean or {}).get(k)
            out.append(None if curve is None else [_num(v, 4) for v in curve])
        return out

    def cell_flags(i: int, m: str) -> str | None:
        f = flags.get((i, m))
        return None if f is None else "".join(f"{int(a)}{int(b)}" for a, b in f)

    def pictures(source: Mapping[tuple[int, str], Pictures], i: int, m: str) -> Any:
        tiles = source.get((i, m))
        return None if tiles is None else [[_b64(a), _b64(b)] for a, b in tiles]

    def grid(fn: Any) -> list[list[Any]]:
        return [[fn(i, m) for m in methods] for i in range(n)]

    correlations = data.correlations()
    return {
        "v": 1,
        "ckpts": [{"n": c.name, "e": c.epoch, "s": c.global_step} for c in data.checkpoints],
        "order": data.order(),
        "x": {"label": label, "v": xs},
        "oneRun": bool(data.one_run),
        "methods": methods,
        "colors": [_color(j) for j in range(len(methods))],
        "metrics": [{"k": c.key, "h": c.higher_is_better} for c in data.metrics],
        "curveKeys": curve_keys,
        "nPairs": len(data.pairs),
        "scores": grid(cell_scores),
        "pairScores": grid(cell_pair_scores),
        "curves": grid(cell_curves),
        "pairCurves": grid(cell_pair_curves),
        "deg": grid(cell_flags),
        "sim": [
            None if i not in data.similarity else [_num(v) for v in data.similarity[i]]
            for i in range(n)
        ],
        "knn": [_num(data.knn(i)) for i in range(n)],
        "corr": [
            {
                "m": methods.index(c.method),
                "k": keys.index(c.metric),
                "n": c.n,
                "s": _num(c.spearman),
                "p": _num(c.pearson),
            }
            for c in correlations
            if c.method in methods and c.metric in keys
        ],
        "img": [[_b64(a), _b64(b)] for a, b in data.pairs],
        "maps": grid(lambda i, m: pictures(data.maps, i, m)),
        "ov": grid(lambda i, m: pictures(data.overlays, i, m)),
        "lut": {"seq": _lut("jet"), "div": _lut("RdBu_r")},
        "live": None
        if data.refresh_seconds is None
        else {"refresh": float(data.refresh_seconds), "updated": data.updated},
    }


_KNN_COLUMN = MetricColumn("knn_accuracy", True)


def _metric_table(
    data: DashboardData, counts: Mapping[tuple[int, str], int | None], n_maps: int
) -> str:
    rows = data.rows()
    columns = [*data.metrics, _KNN_COLUMN] if data.knn_accuracy else list(data.metrics)
    excluded = [r for r, (i, m) in enumerate(rows) if (counts.get((i, m)) or 0) > 0]

    def value_of(i: int, method: str, column: MetricColumn) -> float:
        if column is _KNN_COLUMN:
            return data.knn(i)
        return data.score(i, method, column.key)

    best: dict[str, set[int]] = {}
    for metric in columns:
        column = [value_of(i, m, metric) for i, m in rows]
        # The kNN accuracy is the checkpoint's, not the maps': degenerate maps do not matter.
        skip = () if metric is _KNN_COLUMN else excluded
        best[metric.key] = set(best_rows(column, metric.higher_is_better, exclude=skip))
    head = "".join(
        f'<th scope="col" data-col="{_e(m.key)}" title="{_direction(m.higher_is_better)}; '
        f'click to sort">{_e(m.key)}{_arrow(m.higher_is_better)}</th>'
        for m in columns
    )
    has_counts = any(v is not None for v in counts.values())
    deg_head = (
        '<th scope="col" title="degenerate (all-zero or constant) maps of the row">degenerate</th>'
        if has_counts
        else ""
    )
    out = [
        '<div class="scroll"><table class="metrics sortable" id="metric-table"><thead><tr>'
        '<th scope="col">method</th><th scope="col">checkpoint</th><th scope="col">epoch</th>'
        f'<th scope="col">step</th>{deg_head}{head}</tr></thead><tbody>'
    ]
    method_index = {m: j for j, m in enumerate(data.methods)}
    for r, (i, method) in enumerate(rows):
        ckpt = data.checkpoints[i]
        cells = []
        for metric in columns:
            value = value_of(i, method, metric)
            is_best = r in best[metric.key]
            cls = "num best" if is_best else "num"
            mark = "★ " if is_best else ""
            cells.append(
                f'<td class="{cls}" data-col="{_e(metric.key)}" data-value="{value!r}" '
                f'title="{value!r}" '
                f'data-best="{"true" if is_best else "false"}">{mark}{_fmt(value)}</td>'
            )
        count = counts.get((i, method))
        deg_cell = ""
        if has_counts:
            text = "" if count is None else f"{count}/{n_maps}"
            warn = ' class="num warn"' if count else ' class="num"'
            deg_cell = f"<td{warn}>{'⚠ ' if count else ''}{text}</td>"
        out.append(
            f'<tr data-m="{method_index[method]}" data-ckpt="{i}" data-method="{_e(method)}" '
            f'data-degenerate="{"" if count is None else count}">'
            f"<td>{_e(method)}</td><td>{_e(ckpt.name)}</td>"
            f'<td class="num">{"" if ckpt.epoch is None else ckpt.epoch}</td>'
            f'<td class="num">{"" if ckpt.global_step is None else ckpt.global_step}</td>'
            + deg_cell
            + "".join(cells)
            + "</tr>"
        )
    out.append("</tbody></table></div>")
    out.append(
        '<p class="legend">↑ higher is better, ↓ lower is better; ★ marks the best value of each '
        "column over all rows, except rows whose maps include degenerate ones (all zero or "
        "constant: they rank no pixel above another, so their scores measure nothing). Scores "
        "are means over the probe pairs. Click a column head to sort."
        + (
            " knn_accuracy is the checkpoint's kNN top-1 accuracy (the same for every method)."
            if data.knn_accuracy
            else ""
        )
        + "</p>"
    )
    return "".join(out)


def _corr_cell(value: float, column: str) -> str:
    return (
        f'<td class="num" data-col="{column}" data-value="{value!r}" title="{value!r}">'
        f"{'n/a' if not math.isfinite(value) else f'{value:+.3f}'}</td>"
    )


def _downstream(data: DashboardData, static_scatter: bool) -> str:
    """kNN accuracy per checkpoint, the correlation table and the scatter plots."""
    out = []
    if data.knn_info:
        out.append(f'<p class="legend">{_e(data.knn_info)}</p>')
    rows = "".join(
        f'<tr data-ckpt="{i}"><td>{_e(ckpt.name)}</td>'
        f'<td class="num">{"" if ckpt.epoch is None else ckpt.epoch}</td>'
        f'<td class="num" data-col="knn_accuracy" data-value="{data.knn(i)!r}">'
        f"{_fmt(data.knn(i))}</td></tr>"
        for i, ckpt in enumerate(data.checkpoints)
    )
    out.append(
        '<h3>kNN accuracy</h3><div class="scroll"><table id="knn-table"><thead><tr>'
        "<th>checkpoint</th><th>epoch</th><th>knn_accuracy ↑</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )
    correlations = data.correlations()
    method_index = {m: j for j, m in enumerate(data.methods)}
    body = "".join(
        f'<tr data-m="{method_index[c.method]}" data-method="{_e(c.method)}" '
        f'data-metric="{_e(c.metric)}"><td>{_e(c.method)}</td>'
        f"<td>{_e(c.metric)}{_arrow(c.higher_is_better)}</td>"
        f'<td class="num">{c.n}</td>'
        + _corr_cell(c.spearman, "spearman")
        + _corr_cell(c.pearson, "pearson")
        + "</tr>"
        for c in correlations
    )
    n = sum(1 for i in range(len(data.checkpoints)) if math.isfinite(data.knn(i)))
    out.append(
        "<h3>Correlation with the kNN accuracy across checkpoints</h3>"
        '<div class="scroll"><table id="correlation-table"><thead><tr><th>method</th>'
        "<th>metric</th><th>n</th><th>Spearman</th><th>Pearson</th></tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
        f'<p class="legend">Over {n} checkpoint(s) with a kNN accuracy (all checkpoints, whatever '
        "the filter). n/a: undefined (fewer than 3 checkpoints, or a constant series). For a ↑ "
        "metric a positive correlation means that more faithful explanations went with a better "
        "model; for a ↓ metric a negative one does. Checkpoints of one run are confounded by "
        "training progress: both the scores and the accuracy change with the epoch, so a "
        "correlation is no evidence that either causes the other.</p>"
    )
    picture = ""
    if static_scatter:
        from lightning_explain.downstream import correlation_figure

        fig = correlation_figure(
            data.downstream_points(),
            correlations,
            methods=list(data.methods),
            metrics=[c.key for c in data.metrics],
        )
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=60, metadata={"Software": None})
        picture = (
            "<details><summary>Static picture (PNG, for slides)</summary>"
            f'<img class="plot" alt="kNN accuracy against each metric" '
            f'src="{_data_uri(buffer.getvalue())}"></details>'
        )
    out.append(
        '<h3>Scores against kNN accuracy</h3><figure id="correlation-scatter">'
        '<div id="scatter-view" class="charts" data-view="scatter"></div>'
        "<figcaption>One chart per metric, one colour per method; points are checkpoints, joined "
        "in training order; the legend gives rho (Spearman) and r (Pearson) over the shown "
        f"checkpoints.</figcaption>{picture}</figure>"
    )
    return "".join(out)


def _run_info(data: DashboardData) -> str:
    rows = []
    for i, ckpt in enumerate(data.checkpoints):
        sims = data.similarity.get(i)
        mean_sim = _fmt(float(np.mean(np.asarray(sims, dtype=np.float64)))) if sims else ""
        rows.append(
            f'<tr data-ckpt="{i}"><td>{_e(ckpt.name)}</td><td class="path">{_e(ckpt.path)}</td>'
            f'<td class="num">{"" if ckpt.epoch is None else ckpt.epoch}</td>'
            f'<td class="num">{"" if ckpt.global_step is None else ckpt.global_step}</td>'
            f'<td class="num">{mean_sim}</td></tr>'
        )
    out = [
        '<h3>Checkpoints</h3><div class="scroll"><table id="checkpoint-table"><thead><tr>'
        "<th>name</th><th>path</th><th>epoch</th><th>global step</th>"
        "<th>mean pair similarity</th></tr></thead><tbody>",
        *rows,
        "</tbody></table></div>",
    ]
    if data.info:
        out.append('<h3>Settings</h3><div class="scroll"><table class="settings"><tbody>')
        out.extend(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in data.info)
        out.append("</tbody></table></div>")
    return "".join(out)


def _view(name: str) -> str:
    return f'<div id="{name}-view" class="view" data-view="{name}"></div>'


def render_html(data: DashboardData, *, static_scatter: bool = True) -> str:
    """Render the dashboard as one self-contained HTML document.

    Args:
        data: the contents (validated again here).
        static_scatter: add a static PNG of the kNN scatter plots (matplotlib, about a second)
            under the interactive ones in the Downstream tab. Default ``True``.

    Returns:
        The HTML text: inline CSS, JavaScript and JSON data, no external reference.

    Raises:
        ValueError: for inconsistent ``data`` (see :meth:`DashboardData.validate`).
    """
    from lightning_explain._version import __version__

    data.validate()
    flags: dict[tuple[int, str], list[tuple[bool, bool]]] = {}
    for i in range(len(data.checkpoints)):
        for m in data.methods:
            f = data.degenerate_flags(i, m)
            if f is not None:
                flags[(i, m)] = f
    counts = {
        (i, m): (sum(int(a) + int(b) for a, b in flags[(i, m)]) if (i, m) in flags else None)
        for i in range(len(data.checkpoints))
        for m in data.methods
    }
    tabs: list[tuple[str, str, str]] = [
        ("summary", "Summary", _view("summary")),
        ("pair", "Pair", _view("pair")),
        ("diff", "Difference", _view("diff")),
        ("heatmaps", "Heatmaps", _view("heatmaps")),
        ("curves", "Curves", _view("curves")),
    ]
    if data.one_run:
        tabs.append(("training", "Over training", _view("training")))
    tabs.append(("metrics", "Metrics", _metric_table(data, counts, 2 * len(data.pairs))))
    if data.knn_accuracy:
        tabs.append(("downstream", "Downstream", _downstream(data, static_scatter)))
    tabs.append(("run", "Run", _run_info(data)))

    nav = "".join(
        f'<button type="button" role="tab" data-tab="{key}" aria-selected="false" '
        f'aria-controls="panel-{key}">{label}</button>'
        for key, label, _ in tabs
    )
    sections = "".join(
        f'<section id="panel-{key}" data-panel="{key}" role="tabpanel" hidden>'
        f"<h2>{label}</h2>{body}</section>"
        for key, label, body in tabs
    )
    method_boxes = "".join(
        f'<label><input type="checkbox" checked data-kind="m" value="{j}">'
        f'<span class="swatch" style="background:{_color(j)}"></span>{_e(m)}</label>'
        for j, m in enumerate(data.methods)
    )
    ckpt_boxes = "".join(
        f'<label><input type="checkbox" checked data-kind="ckpt" value="{i}">{_e(c.name)}</label>'
        for i, c in enumerate(data.checkpoints)
    )
    subtitle = (
        f"{len(data.checkpoints)} checkpoint(s) &times; {len(data.methods)} method(s) &times; "
        f"{len(data.pairs)} probe pair(s); made by lightning-explain {_e(__version__)}"
    )
    live = ""
    if data.refresh_seconds is not None:
        live = (
            '<p class="live">Live: rewritten during training'
            + (f", last at {_e(data.updated)}" if data.updated else "")
            + '. <label><input type="checkbox" id="auto-reload" checked> reload every '
            f"{data.refresh_seconds:g} s</label></p>"
        )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(data.title)}</title><style>{_asset('dashboard.css')}</style></head><body>"
        f"<header><h1>{_e(data.title)}</h1><p>{subtitle}</p>{live}</header>"
        '<noscript><p class="warn">This page draws its charts and maps with JavaScript; without '
        "it only the Metrics, Downstream and Run tables are readable.</p></noscript>"
        f'<nav class="tabs" role="tablist">{nav}</nav>'
        '<details class="filters" open><summary>Filters <span id="filter-state"></span></summary>'
        '<fieldset data-kind="m"><legend>Methods</legend>'
        f"{method_boxes}</fieldset>"
        f'<fieldset data-kind="ckpt"><legend>Checkpoints</legend>{ckpt_boxes}</fieldset>'
        '<p class="filter-actions"><button type="button" data-all="1">show all</button> '
        '<label class="size">tile size <input type="range" id="tile-size" min="48" max="320" '
        'value="112"></label></p></details>'
        f"<main>{sections}</main>"
        '<dialog id="lightbox" aria-label="heatmap, large"><form method="dialog">'
        '<button class="close" aria-label="close">&times;</button></form>'
        '<div class="lightbox-body"></div></dialog>'
        '<script type="application/json" id="dashboard-data">'
        f"{_json_script(_payload(data, flags))}</script>"
        f"<script>{_asset('dashboard.js')}</script></body></html>\n"
    )


def write_dashboard(data: DashboardData, path: str | Path, *, static_scatter: bool = True) -> Path:
    """Write the dashboard to ``path`` atomically (parent folders are created).

    The page is written to a temporary file in the same folder, then moved onto ``path`` with
    :func:`os.replace`, so a browser (or a reader thread) never sees a half-written page.

    Args:
        data: the contents.
        path: the HTML file to write (UTF-8).
        static_scatter: as in :func:`render_html`. Default ``True``.

    Returns:
        The path written.

    Raises:
        ValueError: for inconsistent ``data``.
    """
    return _write_atomically(Path(path), render_html(data, static_scatter=static_scatter))


def _write_atomically(target: Path, text: str) -> Path:
    """Write ``text`` to a temporary file next to ``target``, then :func:`os.replace` it onto
    ``target``. The file gets the usual permissions (``0o666`` less the umask), not the
    owner-only ones of :func:`tempfile.mkstemp`: a page in a shared folder stays readable."""
    target.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue
        break
    else:  # pragma: no cover
        raise FileExistsError(f"`{_OWNER}`: no free temporary file name next to {target}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


# --------------------------------------------------------------------------------------------------
# Live


@dataclass(frozen=True)
class _Evaluation:
    info: CheckpointInfo
    methods: Mapping[str, MethodRecord]
    sim: tuple[float, ...]
    knn_accuracy: float | None


def _display_rgb(x: Tensor, mean: Stats, std: Stats) -> Tensor:
    from lightning_explain.render import to_rgb

    if x.shape[1] not in (1, 3):  # as `compare`: other channel counts show their first channel
        x = x[:, :1]
        mean = None if mean is None else list(mean)[:1]
        std = None if std is None else list(std)[:1]
    return to_rgb(x, mean, std)


class LiveDashboard:
    """A dashboard of one training run, rewritten after every evaluation.

    It keeps what the page needs of each evaluation, encoded (maps as 8-bit grey WebP, probe
    images as WebP, scores and curves as floats; no tensor), at most ``max_evaluations`` of them,
    and rewrites ``path`` atomically (temporary file in the same folder, then :func:`os.replace`)
    on every :meth:`add`, so that a browser or another process never reads a half-written page.
    The page offers to reload itself every ``refresh_seconds`` and keeps its tab, pair, slider
    and filters across reloads.

    Args:
        path: the HTML file to (re)write.
        probe: the probe set explained at every evaluation (its images are encoded once); or
            give ``pairs``.
        pairs: the encoded images of the pairs (see :func:`encode_image`), instead of ``probe``.
        mean: normalisation means to undo when showing the probe images. Default: the probe
            set's.
        std: normalisation standard deviations to undo. Default: the probe set's.
        metrics: metric columns in display order (keys get their direction from
            :func:`lightning_explain.metrics.metric_info`). Default: those of the first
            evaluation.
        title: page title.
        info: ``(label, value)`` lines for the Run tab.
        knn_info: one line describing the kNN probe.
        max_evaluations: how many evaluations are kept; beyond it the interior evaluation whose
            neighbours are closest in global step is dropped, so the kept ones stay spread over
            the run (the first and the latest are always kept). Default 50.
        refresh_seconds: the page's reload period. Default 30.

    Raises:
        ValueError: for a bad ``max_evaluations`` or neither/both of ``probe`` and ``pairs``.

    Example:
        >>> import tempfile, torch
        >>> folder = tempfile.mkdtemp()
        >>> live = LiveDashboard(f"{folder}/live.html", pairs=[(encode_image(np.zeros((4, 4))),) * 2])
        >>> record = MethodRecord.from_tensors(torch.rand(1, 4, 4), torch.rand(1, 4, 4),
        ...                                    scores={"insertion_simultaneous": [0.5]})
        >>> path = live.add(epoch=0, global_step=10, methods={"gradcam": record}, sim=[0.9])
        >>> len(live), path.read_text(encoding="utf-8").rstrip().endswith("</html>")
        (1, True)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        probe: ProbeSet | None = None,
        *,
        pairs: Pictures | None = None,
        mean: Stats = None,
        std: Stats = None,
        metrics: Sequence[str | MetricColumn] | None = None,
        title: str = "lightning-explain: live",
        info: Sequence[tuple[str, str]] = (),
        knn_info: str = "",
        max_evaluations: int = 50,
        refresh_seconds: float | None = 30.0,
    ) -> None:
        if (probe is None) == (pairs is None):
            raise ValueError(
                f"`{_OWNER}.LiveDashboard`: pass either `probe` (a ProbeSet) or `pairs` (encoded "
                f"images), exactly one of them."
            )
        if isinstance(max_evaluations, bool) or not isinstance(max_evaluations, int):
            raise ValueError(
                f"`{_OWNER}.LiveDashboard`: expected `max_evaluations` to be an int >= 2, but got "
                f"{max_evaluations!r}."
            )
        if max_evaluations < 2:
            raise ValueError(
                f"`{_OWNER}.LiveDashboard`: expected `max_evaluations` >= 2 (the first and the "
                f"latest evaluation are always kept), but got {max_evaluations}."
            )
        self.path = Path(path)
        self.title = title
        self.info = list(info)
        self.knn_info = knn_info
        self.max_evaluations = max_evaluations
        self.refresh_seconds = refresh_seconds
        self._metrics = None if metrics is None else [_column(m) for m in metrics]
        self._methods: list[str] = []
        self._evaluations: list[_Evaluation] = []
        self._pairs: list[tuple[bytes, bytes]] = []
        self._probe: ProbeSet | None = None
        if probe is not None:
            self.set_probe(probe, mean=mean, std=std)
        else:
            self._pairs = [(bytes(a), bytes(b)) for a, b in pairs or ()]

    def __len__(self) -> int:
        return len(self._evaluations)

    @property
    def probe(self) -> ProbeSet | None:
        """The probe set whose pairs are shown (``None`` when built from ``pairs``)."""
        return self._probe

    def set_probe(self, probe: ProbeSet, *, mean: Stats = None, std: Stats = None) -> None:
        """Use another probe set; forgets the evaluations (their pairs were other pairs).

        Args:
            probe: the new probe set.
            mean: normalisation means to undo. Default: the probe set's.
            std: normalisation standard deviations to undo. Default: the probe set's.
        """
        mean = probe.mean if mean is None else mean
        std = probe.std if std is None else std
        rgb1 = _display_rgb(probe.x1, mean, std).cpu()
        rgb2 = _display_rgb(probe.x2, mean, std).cpu()
        self._pairs = [(encode_image(a), encode_image(b)) for a, b in zip(rgb1, rgb2)]
        self._probe = probe
        self._evaluations.clear()

    def add(
        self,
        *,
        epoch: int | None,
        global_step: int | None,
        methods: Mapping[str, MethodRecord],
        sim: Sequence[float] | Tensor | None = None,
        knn_accuracy: float | None = None,
        name: str | None = None,
        write: bool = True,
    ) -> Path:
        """Add one evaluation and rewrite the page.

        Args:
            epoch: the training epoch.
            global_step: the trainer's global step.
            methods: method label -> its :class:`MethodRecord` (see
                :meth:`MethodRecord.from_tensors`), with one entry per probe pair.
            sim: per pair, the similarity of the intact pair.
            knn_accuracy: the kNN accuracy of this evaluation, if measured.
            name: the evaluation's label. Default ``"epoch <e> · step <s>"``.
            write: rewrite the page now. Default ``True``.

        Returns:
            The page's path.

        Raises:
            ValueError: if a record does not have one entry per probe pair.
        """
        n = len(self._pairs)
        for label, record in methods.items():
            lengths = [len(record.maps), len(record.degenerate)] if record.maps else []
            lengths += [len(v) for v in record.scores.values()]
            lengths += [len(v) for v in record.curves.values()]
            if any(length != n for length in lengths):
                raise ValueError(
                    f"`{_OWNER}.LiveDashboard.add`: method {label!r} has results for "
                    f"{sorted(set(lengths))} pairs, but the probe set has {n} pairs."
                )
        sims = tuple(_floats(sim)) if sim is not None else ()
        if sims and len(sims) != n:
            raise ValueError(
                f"`{_OWNER}.LiveDashboard.add`: expected {n} similarities, but got {len(sims)}."
            )
        label = name or " · ".join(
            part
            for part in (
                None if epoch is None else f"epoch {epoch}",
                None if global_step is None else f"step {global_step}",
            )
            if part
        )
        info = CheckpointInfo(label or f"#{len(self._evaluations)}", "", epoch, global_step)
        for method in methods:
            if method not in self._methods:
                self._methods.append(method)
        self._evaluations.append(
            _Evaluation(
                info,
                dict(methods),
                sims,
                None if knn_accuracy is None else float(knn_accuracy),
            )
        )
        self._thin()
        return self.write() if write else self.path

    def add_evaluation(
        self,
        evaluation: ProbeEvaluation,
        *,
        epoch: int | None,
        global_step: int | None,
        name: str | None = None,
        write: bool = True,
    ) -> Path:
        """Add one :class:`lightning_explain.evaluation.ProbeEvaluation` and rewrite the page.

        Every method that produced an explanation enters with its maps, per-pair scores and
        curves; the pair similarities and the kNN accuracy come along.

        Args:
            evaluation: what :func:`lightning_explain.evaluation.evaluate_probe` returned for the
                probe set of this dashboard (the pairs of ``probe``, in order).
            epoch: the training epoch.
            global_step: the trainer's global step.
            name: the evaluation's label. Default ``"epoch <e> · step <s>"``.
            write: rewrite the page now. Default ``True``.

        Returns:
            The page's path.
        """
        records = {
            m.label: MethodRecord.from_evaluation(m)
            for m in evaluation.methods
            if m.explanation is not None
        }
        return self.add(
            epoch=epoch,
            global_step=global_step,
            methods=records,
            sim=evaluation.sim,
            knn_accuracy=evaluation.knn_accuracy,
            name=name,
            write=write,
        )

    def resume(self, *, before_step: int | None = None) -> int:
        """Take back the evaluations of the page already at :attr:`path` (a resumed run's).

        Only a live page of the same probe pairs (the same encoded images) is taken back, and of
        it only the evaluations before ``before_step`` (those after the checkpoint the run
        resumes from are computed again). What the page keeps is what it shows: maps, per-pair
        scores (6 significant digits), curves (16-bit levels), similarities, kNN accuracies.
        A missing, unreadable or other page is left alone (the next write replaces it).

        Args:
            before_step: keep the evaluations whose global step is below it. Default: all.

        Returns:
            How many evaluations were taken back.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
            start = text.index('<script type="application/json" id="dashboard-data">')
            start = text.index(">", start) + 1
            payload = json.loads(text[start : text.index("</script>", start)])
        except (OSError, ValueError):
            return 0
        if (
            not isinstance(payload, dict)
            or payload.get("v") != 1
            or not payload.get("live")
            or payload.get("img") != [[_b64(a), _b64(b)] for a, b in self._pairs]
        ):
            return 0
        try:
            restored = list(_restore(payload, before_step))
        except (KeyError, IndexError, TypeError, ValueError):
            return 0
        if self._metrics is None:
            self._metrics = [MetricColumn(m["k"], m["h"]) for m in payload["metrics"]]
        for evaluation in restored:
            self._evaluations.append(evaluation)
            for method in evaluation.methods:
                if method not in self._methods:
                    self._methods.append(method)
        self._thin()
        return len(restored)

    def _thin(self) -> None:
        evals = self._evaluations
        while len(evals) > self.max_evaluations:

            def gap(k: int) -> tuple[float, int]:
                a, b = evals[k - 1].info, evals[k + 1].info
                sa = a.global_step if a.global_step is not None else k - 1
                sb = b.global_step if b.global_step is not None else k + 1
                return float(sb - sa), k

            del evals[min(range(1, len(evals) - 1), key=gap)]

    def data(self) -> DashboardData:
        """The :class:`DashboardData` of the evaluations kept so far.

        Raises:
            ValueError: before the first evaluation.
        """
        if not self._evaluations:
            raise ValueError(f"`{_OWNER}.LiveDashboard`: no evaluation was added yet.")
        evals = self._evaluations
        columns = self._metrics
        if columns is None:
            keys = list(
                dict.fromkeys(k for e in evals for r in e.methods.values() for k in r.scores)
            )
            columns = [_column(k) for k in keys]
        methods = list(self._methods)
        records = {(i, m): r for i, e in enumerate(evals) for m, r in e.methods.items()}
        n = len(self._pairs)
        return DashboardData(
            checkpoints=[e.info for e in evals],
            methods=methods,
            metrics=columns,
            scores={key: r.mean_scores() for key, r in records.items()},
            pairs=list(self._pairs),
            similarity={i: list(e.sim) for i, e in enumerate(evals) if e.sim},
            curves={key: r.mean_curves() for key, r in records.items() if r.curves},
            one_run=True,
            title=self.title,
            info=self.info,
            knn_accuracy={
                i: e.knn_accuracy for i, e in enumerate(evals) if e.knn_accuracy is not None
            },
            knn_info=self.knn_info,
            maps={key: list(r.maps) for key, r in records.items() if r.maps and n},
            pair_scores={key: dict(r.scores) for key, r in records.items() if r.scores and n},
            pair_curves={
                key: {k: list(v) for k, v in r.curves.items()}
                for key, r in records.items()
                if r.curves and n
            },
            degenerate={key: list(r.degenerate) for key, r in records.items() if r.maps and n},
            refresh_seconds=self.refresh_seconds,
            updated=datetime.datetime.now().isoformat(timespec="seconds"),
        )

    def write(self) -> Path:
        """Rewrite the page atomically now (a no-op before the first evaluation).

        Returns:
            The page's path.
        """
        if not self._evaluations:
            return self.path
        # No static matplotlib picture: the page is rewritten at every evaluation.
        return write_dashboard(self.data(), self.path, static_scatter=False)


def _unpack_curves(block: Mapping[str, Any]) -> tuple[tuple[float, ...], ...]:
    """The rows :func:`_pack_curves` packed (NaN where not finite)."""
    levels = np.frombuffer(base64.b64decode(block["q"]), dtype="<u2").reshape(-1, int(block["n"]))
    lo, hi = float(block["lo"]), float(block["hi"])
    values = np.where(levels == 65535, np.nan, lo + levels * ((hi - lo) / 65534))
    return tuple(tuple(float(v) for v in row) for row in values)


def _restore(payload: Mapping[str, Any], before_step: int | None) -> Iterable[_Evaluation]:
    """The evaluations of a live page's payload (see :func:`_payload`), in its order."""
    keys = [m["k"] for m in payload["metrics"]]
    curve_keys = list(payload["curveKeys"])
    nan = math.nan
    for i, ckpt in enumerate(payload["ckpts"]):
        step = ckpt["s"]
        if before_step is not None and (step is None or step >= before_step):
            continue
        methods: dict[str, MethodRecord] = {}
        for j, method in enumerate(payload["methods"]):
            maps = payload["maps"][i][j]
            scores = payload["pairScores"][i][j]
            curves = payload["pairCurves"][i][j]
            flags = payload["deg"][i][j]
            if maps is None and scores is None and curves is None:
                continue
            methods[method] = MethodRecord(
                maps=tuple((base64.b64decode(a), base64.b64decode(b)) for a, b in (maps or ())),
                scores={
                    k: tuple(nan if v is None else float(v) for v in row)
                    for k, row in zip(keys, scores or ())
                    if row is not None
                },
                curves={
                    k: _unpack_curves(block)
                    for k, block in zip(curve_keys, curves or ())
                    if block is not None
                },
                degenerate=tuple(
                    (flags[2 * p] == "1", flags[2 * p + 1] == "1") for p in range(len(flags) // 2)
                )
                if flags
                else (),
            )
        sim = payload["sim"][i]
        knn = payload["knn"][i]
        yield _Evaluation(
            CheckpointInfo(str(ckpt["n"]), "", ckpt["e"], step),
            methods,
            tuple(nan if v is None else float(v) for v in sim or ()),
            None if knn is None else float(knn),
        )


def _column(metric: str | MetricColumn) -> MetricColumn:
    if isinstance(metric, MetricColumn):
        return metric
    from lightning_explain.metrics import metric_info

    try:
        return MetricColumn(metric, metric_info(metric).higher_is_better)
    except ValueError:
        return MetricColumn(metric, None)


DASHBOARD_FILE = "index.html"
"""The page's file name inside ``dashboard_dir`` (see :func:`update_live_dashboard`)."""


def check_dashboard_dir(
    value: str | os.PathLike[str] | None, *, owner: str = _OWNER
) -> Path | None:
    """Validate a ``dashboard_dir`` argument: ``None``, or a folder path (created when written).

    Args:
        value: ``None`` (no live dashboard) or a ``str`` / :class:`os.PathLike` folder path.
        owner: the name to put in error messages.

    Returns:
        The folder as a :class:`~pathlib.Path`, or ``None``.

    Raises:
        TypeError: for another type.
        ValueError: for an empty path, or a path that is an existing file.

    Example:
        >>> check_dashboard_dir("outputs/live").name
        'live'
        >>> check_dashboard_dir(None) is None
        True
    """
    if value is None:
        return None
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"`{owner}`: expected `dashboard_dir` to be a folder path (str or os.PathLike) or "
            f"None, but got an object of type {type(value).__name__}."
        )
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"`{owner}`: expected `dashboard_dir` to be a non-empty folder path, but got {value!r}."
        )
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"`{owner}`: `dashboard_dir` {text!r} is an existing file; give a folder (the "
            f"dashboard is written to <dashboard_dir>/{DASHBOARD_FILE})."
        )
    return folder


def update_live_dashboard(
    live: LiveDashboard | None,
    folder: str | os.PathLike[str],
    probe: ProbeSet,
    evaluation: ProbeEvaluation,
    *,
    epoch: int,
    global_step: int,
    mean: Stats = None,
    std: Stats = None,
    info: Sequence[tuple[str, str]] = (),
) -> LiveDashboard:
    """Add one evaluation of a training run to its live dashboard, ``<folder>/index.html``.

    What :class:`lightning_explain.PairExplanationCallback` calls on rank 0 after every
    evaluation with ``dashboard_dir=folder``. The first call (``live`` is ``None``) makes the
    :class:`LiveDashboard`; a probe set other than the dashboard's (a new draw) starts it anew.
    The page is rewritten atomically.

    Args:
        live: what the previous call returned, or ``None``.
        folder: the dashboard's folder (created if missing).
        probe: the probe set that was evaluated.
        evaluation: its evaluation (every pair, in the probe set's order).
        epoch: the trainer's epoch.
        global_step: the trainer's global step.
        mean: normalisation means to undo when showing the probe images. Default: the probe
            set's.
        std: normalisation standard deviations to undo. Default: the probe set's.
        info: ``(label, value)`` lines for the Run tab (replace the previous ones).

    Returns:
        The live dashboard, to pass to the next call.

    A page already in ``folder`` (a resumed run's) is continued when it shows the same probe
    images: its evaluations before ``global_step`` are kept (see :meth:`LiveDashboard.resume`).
    """
    path = Path(folder) / DASHBOARD_FILE
    if live is None or live.path != path:
        live = LiveDashboard(path, probe, mean=mean, std=std)
        live.resume(before_step=global_step)
    elif live.probe is not probe:
        live.set_probe(probe, mean=mean, std=std)
    live.info = list(info)
    live.add_evaluation(evaluation, epoch=epoch, global_step=global_step)
    return live
