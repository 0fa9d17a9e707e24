"""What the dashboard embeds: images and maps encoded compactly (WebP, JPEG or PNG), their data
URIs, colour tables, the best-value marks of a score table, and :class:`MethodRecord`, what the page
shows of one method's results of one evaluation. Used by :mod:`lightning_explain.dashboard` and
:mod:`lightning_explain.live_dashboard`.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lightning_explain.evaluation import MethodEvaluation

__all__ = [
    "PALETTE",
    "MethodRecord",
    "as_floats",
    "base64_text",
    "best_rows",
    "data_uri",
    "encode_image",
    "encode_map",
    "image_png",
    "is_flat_image",
    "lut_text",
    "mime_type",
]

_OWNER = "dashboard"

PALETTE: tuple[str, ...] = (
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
"""Colours of the methods, shared by the charts and the check-box swatches (matplotlib's tab10)."""

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


def mime_type(blob: bytes, where: str) -> str:
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
def is_flat_image(blob: bytes) -> bool:
    """Whether an encoded grey map has a single level (an all-zero or constant map)."""
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        low, high = img.convert("L").getextrema()
    return bool(low == high)


def base64_text(blob: bytes) -> str:
    """``blob`` as base64 ASCII text (for data URIs and embedded JSON)."""
    return base64.b64encode(blob).decode("ascii")


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64_text(png)


@functools.lru_cache(maxsize=8)
def lut_text(name: str) -> str:
    """A matplotlib colormap's 256 colours as base64 of ``256 x 3`` bytes."""
    from lightning_explain.render import colormap_lut

    table = colormap_lut(name).numpy()
    if table.shape[0] != 256:
        index = np.minimum((np.arange(256) / 256 * table.shape[0]).astype(int), table.shape[0] - 1)
        table = table[index]
    return base64_text(np.round(np.clip(table, 0, 1) * 255).astype(np.uint8).tobytes())


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
            scores={k: tuple(as_floats(v)) for k, v in (scores or {}).items()},
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


def as_floats(values: Any) -> list[float]:
    """The values of a tensor, array or sequence as a flat list of floats."""
    return [float(v) for v in _as_array(values).reshape(-1)]


def _encode_side(maps: Any) -> tuple[list[bytes], list[bool]]:
    """Encoded maps of one side and whether each is degenerate."""
    if isinstance(maps, (list, tuple)) and all(isinstance(m, (bytes, bytearray)) for m in maps):
        blobs = [bytes(m) for m in maps]
        return blobs, [is_flat_image(b) for b in blobs]
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
