"""Rendering of pairwise explanations: heatmap overlays, pair grids and matplotlib figures.

Everything here is batched torch code on the images' device; only the finished picture is moved to
the CPU. Colormaps come from matplotlib (``matplotlib.colormaps[name]``) and are applied through a
lookup table on torch, with the same indexing matplotlib uses, so an overlay shows exactly the
colours of ``plt.imshow(h, cmap=name)``.

Figures are built with :class:`matplotlib.figure.Figure` and drawn with the Agg canvas directly,
never through ``pyplot``: nothing opens a window, nothing is registered in pyplot's figure manager
(so nothing leaks when a figure is not closed), and the user's interactive backend is left alone.

The paper's notebooks show a heatmap by multiplying the image with it; here a heatmap is blended over
the image with a colormap (``jet`` by default), as Grad-CAM visualisations usually are, so the image
stays readable where the map is zero.

Reference: Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive Learning",
IEEE TIP (arXiv 2206.09753).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Literal, Union

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from torch import Tensor

from lightning_explain._core import check_heatmap, upsample_maps

__all__ = [
    "captioned",
    "colormap_lut",
    "curves_figure",
    "figure_to_image",
    "overlay",
    "pair_figure",
    "pair_grid",
    "picture_figure",
    "to_rgb",
]

Stats = Union[Sequence[float], Tensor, None]
"""Per-channel normalisation statistics: a sequence of ``C`` (or 1) numbers, a tensor, or ``None``."""

CmapLike = Union[str, Colormap]
"""A registered matplotlib colormap name (``"jet"``, ``"viridis"``, ...) or a ``Colormap``."""


# --------------------------------------------------------------------------------------------------
# Checks


def _describe(t: object) -> str:
    if isinstance(t, Tensor):
        return f"a {t.dtype} tensor of shape {tuple(t.shape)}"
    return f"an object of type {type(t).__name__}"


def _check_images(x: object, *, name: str, owner: str) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(
            f"`{owner}`: expected `{name}` to be a float tensor of shape (B, C, H, W), but got "
            f"{_describe(x)}. Convert uint8 images with `x.float() / 255`."
        )
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"`{owner}`: expected `{name}` of shape (B, C, H, W) with C = 1 (grey) or 3 (RGB), but "
            f"got shape {tuple(x.shape)}. Select the channels to show, e.g. `x[:, :3]`."
        )
    if x.shape[0] == 0:
        raise ValueError(
            f"`{owner}`: expected at least one image in `{name}`, but got an empty batch."
        )
    return x


def _check_alpha(alpha: object, *, owner: str) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(
            f"`{owner}`: expected `alpha` to be a number in [0, 1] (the heatmap's opacity), but "
            f"got {alpha!r}."
        )
    return float(alpha)


def _stats(values: Stats, *, name: str, channels: int, like: Tensor, owner: str) -> Tensor | None:
    """``mean``/``std`` as a ``(1, C, 1, 1)`` tensor on ``like``'s device, or ``None``."""
    if values is None:
        return None
    try:
        t = torch.as_tensor(values, dtype=torch.float32).flatten()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"`{owner}`: expected `{name}` to be a sequence of {channels} numbers, but got "
            f"{values!r}."
        ) from err
    if t.numel() not in (1, channels) or not torch.isfinite(t).all():
        raise ValueError(
            f"`{owner}`: expected `{name}` to hold 1 or {channels} finite numbers (one per image "
            f"channel), but got {values!r}. Pass the values your data transform normalised with, "
            f"e.g. `{name}=(0.485, 0.456, 0.406)` for ImageNet statistics."
        )
    return t.to(like.device).expand(channels).view(1, channels, 1, 1)


# --------------------------------------------------------------------------------------------------
# Colours


def _table(cm: Colormap) -> Tensor:
    # Integer input indexes the colormap's own table directly, which is what matplotlib does for
    # floats in [0, 1] after scaling by N.
    table = np.asarray(cm(np.arange(cm.N)), dtype=np.float32)[:, :3]
    return torch.from_numpy(np.ascontiguousarray(table))


@functools.lru_cache(maxsize=32)
def _named_table(name: str) -> Tensor:
    import matplotlib

    try:
        cm = matplotlib.colormaps[name]
    except KeyError as err:
        raise ValueError(
            f"`render`: unknown colormap {name!r}. Pass a name from `matplotlib.colormaps` "
            f"(e.g. 'jet', 'viridis', 'inferno', 'turbo') or a `matplotlib.colors.Colormap`."
        ) from err
    return _table(cm)


def colormap_lut(cmap: CmapLike = "jet", *, device: torch.device | str | None = None) -> Tensor:
    """The RGB lookup table of a matplotlib colormap as an ``(N, 3)`` float tensor in [0, 1].

    ``N`` is the colormap's own resolution (256 for the continuous maps such as ``jet``). A value
    ``v`` in [0, 1] is coloured by entry ``min(floor(v * N), N - 1)``, exactly as
    ``matplotlib.colormaps[cmap](v)`` does.

    Args:
        cmap: a registered colormap name or a :class:`matplotlib.colors.Colormap`. Default ``"jet"``.
        device: where to put the table. Default: CPU.

    Raises:
        TypeError: if ``cmap`` is neither a string nor a ``Colormap``.
        ValueError: for an unknown colormap name.
    """
    if not isinstance(cmap, (str, Colormap)):
        raise TypeError(
            f"`render`: expected `cmap` to be a colormap name or a matplotlib Colormap, but got "
            f"{_describe(cmap)}."
        )
    table = _named_table(cmap) if isinstance(cmap, str) else _table(cmap)
    return table.to(device if device is not None else "cpu", copy=True)


def _colorize(h: Tensor, cmap: CmapLike) -> Tensor:
    """``(B, H, W)`` values in [0, 1] -> ``(B, 3, H, W)`` colours (one gather, no Python loop)."""
    lut = colormap_lut(cmap, device=h.device).to(h.dtype)
    n = lut.shape[0]
    index = (h.clamp(0, 1) * n).floor().long().clamp_(0, n - 1)
    return lut[index].permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------------
# Tensors


def to_rgb(x: Tensor, mean: Stats = None, std: Stats = None) -> Tensor:
    """Turn (possibly normalised) model inputs back into displayable RGB images.

    Computes ``x * std + mean`` per channel (the inverse of ``torchvision.transforms.Normalize``),
    clamps to [0, 1] and repeats single-channel images to three channels.

    Args:
        x: ``(B, C, H, W)`` float images with ``C`` = 1 or 3.
        mean: per-channel means used for normalisation (``C`` or 1 numbers). Default ``None``: 0.
        std: per-channel standard deviations (``C`` or 1 numbers). Default ``None``: 1.

    Returns:
        ``(B, 3, H, W)`` float32 images in [0, 1] on ``x``'s device.

    Raises:
        TypeError: if ``x`` is not a float tensor or a statistic is not numeric.
        ValueError: for a wrong shape or a statistic with the wrong number of values.
    """
    x = _check_images(x, name="x", owner="render.to_rgb")
    channels = int(x.shape[1])
    x = x.detach().float()
    s = _stats(std, name="std", channels=channels, like=x, owner="render.to_rgb")
    m = _stats(mean, name="mean", channels=channels, like=x, owner="render.to_rgb")
    if s is not None:
        x = x * s
    if m is not None:
        x = x + m
    x = torch.nan_to_num(x, nan=0.0).clamp(0, 1)
    return x.expand(-1, 3, -1, -1).contiguous() if channels == 1 else x


def overlay(
    x: Tensor,
    h: Tensor,
    *,
    mean: Stats = None,
    std: Stats = None,
    cmap: CmapLike = "jet",
    alpha: float = 0.5,
) -> Tensor:
    """Blend heatmaps over their images with a colormap.

    ``out = (1 - alpha) * to_rgb(x, mean, std) + alpha * cmap(h)``.

    Args:
        x: ``(B, C, H, W)`` float images, ``C`` = 1 or 3, possibly normalised (see ``mean``/``std``).
        h: ``(B, H, W)`` heatmaps in [0, 1] (``(B, 1, H, W)`` is accepted too). Smaller maps are
            upsampled bilinearly to ``(H, W)``; values are clamped to [0, 1].
        mean: normalisation means to undo (see :func:`to_rgb`). Default ``None``.
        std: normalisation standard deviations to undo. Default ``None``.
        cmap: matplotlib colormap name or ``Colormap``. Default ``"jet"``.
        alpha: opacity of the heatmap colours. Default 0.5.

    Returns:
        ``(B, 3, H, W)`` float32 RGB images in [0, 1] on ``x``'s device.

    Raises:
        TypeError: for non-tensor or non-float inputs.
        ValueError: for mismatched shapes, non-finite maps, a bad ``alpha`` or an unknown colormap.
    """
    x = _check_images(x, name="x", owner="render.overlay")
    alpha = _check_alpha(alpha, owner="render.overlay")
    h = check_heatmap(h, x, name="h", owner="render.overlay").detach().float()
    h = upsample_maps(h, (int(x.shape[2]), int(x.shape[3])))
    rgb = to_rgb(x, mean, std)
    return ((1 - alpha) * rgb + alpha * _colorize(h, cmap)).clamp_(0, 1)


def _pair_tiles(
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor,
    *,
    mean: Stats,
    std: Stats,
    cmap: CmapLike,
    alpha: float,
    owner: str,
) -> Tensor:
    """``(B, 4, 3, H, W)``: image 1, overlay 1, image 2, overlay 2 for every pair."""
    x1 = _check_images(x1, name="x1", owner=owner)
    x2 = _check_images(x2, name="x2", owner=owner)
    if x1.shape != x2.shape:
        raise ValueError(
            f"`{owner}`: expected `x1` and `x2` of the same shape, but got {tuple(x1.shape)} and "
            f"{tuple(x2.shape)}."
        )
    if x1.device != x2.device:
        raise ValueError(
            f"`{owner}`: expected `x1` and `x2` on the same device, but got {x1.device} and "
            f"{x2.device}."
        )
    for name, h in (("h1", h1), ("h2", h2)):
        check_heatmap(h, x1, name=name, owner=owner)
    tiles = [
        to_rgb(x1, mean, std),
        overlay(x1, h1, mean=mean, std=std, cmap=cmap, alpha=alpha),
        to_rgb(x2, mean, std),
        overlay(x2, h2, mean=mean, std=std, cmap=cmap, alpha=alpha),
    ]
    return torch.stack(tiles, dim=1)


def _mark(tiles: Tensor, marks: Tensor) -> Tensor:
    """Red frame and diagonal cross on the overlay tiles (1 and 3) flagged in ``marks (B, 2)``."""
    if marks.shape != (tiles.shape[0], 2):
        raise ValueError(
            f"`render.pair_grid`: expected `marks` of shape ({tiles.shape[0]}, 2), but got "
            f"{tuple(marks.shape)}."
        )
    tiles = tiles.clone()
    h, w = int(tiles.shape[-2]), int(tiles.shape[-1])
    edge = max(1, min(h, w) // 24)
    red = torch.tensor([1.0, 0.0, 0.0], device=tiles.device, dtype=tiles.dtype).view(3, 1, 1)
    rows = torch.arange(h, device=tiles.device).view(-1, 1)
    cols = torch.arange(w, device=tiles.device).view(1, -1)
    frame = (rows < edge) | (rows >= h - edge) | (cols < edge) | (cols >= w - edge)
    diag = ((rows * w - cols * h).abs() < edge * max(h, w)) | (
        (rows * w - (w - 1 - cols) * h).abs() < edge * max(h, w)
    )
    paint = frame | diag
    for b, side in marks.nonzero().tolist():
        tile = tiles[b, 1 + 2 * side]
        tiles[b, 1 + 2 * side] = torch.where(paint, red, tile)
    return tiles


def pair_grid(
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor,
    *,
    mean: Stats = None,
    std: Stats = None,
    cmap: CmapLike = "jet",
    alpha: float = 0.5,
    padding: int = 2,
    pad_value: float = 1.0,
    min_tile: int = 0,
    marks: Tensor | None = None,
) -> Tensor:
    """One image of all probe pairs: a row per pair with image 1, overlay 1, image 2, overlay 2.

    Built with :func:`torchvision.utils.make_grid` (``nrow=4``). This is the picture the trackers
    receive (W&B media panel, TensorBoard images, MLflow image artifacts, PNG files).

    Args:
        x1: ``(B, C, H, W)`` first images of the pairs (``C`` = 1 or 3, possibly normalised).
        x2: ``(B, C, H, W)`` second images.
        h1: ``(B, H, W)`` heatmaps of ``x1`` in [0, 1] (smaller maps are upsampled).
        h2: ``(B, H, W)`` heatmaps of ``x2`` in [0, 1].
        mean: normalisation means to undo. Default ``None``.
        std: normalisation standard deviations to undo. Default ``None``.
        cmap: matplotlib colormap. Default ``"jet"``.
        alpha: heatmap opacity in the overlays. Default 0.5.
        padding: pixels between tiles (and around the grid). Default 2.
        pad_value: grey level of the padding in [0, 1]. Default 1.0 (white).
        min_tile: smallest tile side in pixels: smaller images are enlarged by an integer factor
            (images nearest-neighbour, heatmaps bilinearly) so that 32 px probes stay legible in
            tracker UIs. Default 0 (native size).
        marks: ``(B, 2)`` bool: overlays to mark as not explanations (degenerate maps: all zero or
            constant), drawn with a red frame and a diagonal cross. Default ``None``.

    Returns:
        ``(3, B * H' + (B + 1) * padding, 4 * W' + 5 * padding)`` uint8 tensor (CHW) on the CPU,
        with ``H' = k * H``, ``W' = k * W`` and ``k = ceil(min_tile / min(H, W))`` (at least 1).

    Raises:
        TypeError: for non-tensor or non-float inputs.
        ValueError: for mismatched shapes, a negative ``padding`` or a bad ``alpha``/colormap.
    """
    from torchvision.utils import make_grid

    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(
            f"`render.pair_grid`: expected `padding` to be a non-negative int, but got {padding!r}."
        )
    if isinstance(min_tile, bool) or not isinstance(min_tile, int) or min_tile < 0:
        raise ValueError(
            f"`render.pair_grid`: expected `min_tile` to be a non-negative int, but got {min_tile!r}."
        )
    side = min(int(x1.shape[-2]), int(x1.shape[-1])) if x1.ndim == 4 else 0
    if side and min_tile > side:
        k = -(-min_tile // side)
        size = (int(x1.shape[-2]) * k, int(x1.shape[-1]) * k)
        x1, x2 = (F.interpolate(x, size=size, mode="nearest") for x in (x1, x2))
        h1, h2 = (
            F.interpolate(h.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False)
            .squeeze(1)
            .clamp(0, 1)
            for h in (h1, h2)
        )
    tiles = _pair_tiles(
        x1, x2, h1, h2, mean=mean, std=std, cmap=cmap, alpha=alpha, owner="render.pair_grid"
    )
    if marks is not None:
        tiles = _mark(tiles, marks.to(tiles.device).bool())
    grid: Tensor = make_grid(
        tiles.flatten(0, 1), nrow=4, padding=padding, pad_value=float(pad_value)
    )
    return grid.mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu()


# --------------------------------------------------------------------------------------------------
# Figures


def _new_figure(width: float, height: float, *, constrained: bool = True) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(width, height), layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def pair_figure(
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor,
    *,
    captions: Sequence[str] | None = None,
    mean: Stats = None,
    std: Stats = None,
    cmap: CmapLike = "jet",
    alpha: float = 0.5,
    tile_inches: float = 1.8,
) -> Figure:
    """A matplotlib figure of the probe pairs: one row per pair, titled with its caption.

    Columns are image 1, overlay 1, image 2, overlay 2, as in :func:`pair_grid`. Used for PNG files
    and for MLflow/TensorBoard figures, where a caption such as ``"sim 0.83 | ins 0.71 del 0.22"``
    should stay attached to its row.

    Args:
        x1: ``(B, C, H, W)`` first images (``C`` = 1 or 3, possibly normalised).
        x2: ``(B, C, H, W)`` second images.
        h1: ``(B, H, W)`` heatmaps of ``x1`` in [0, 1].
        h2: ``(B, H, W)`` heatmaps of ``x2`` in [0, 1].
        captions: ``B`` row titles, or ``None`` for ``"pair 0"``, ``"pair 1"``, ... Default ``None``.
        mean: normalisation means to undo. Default ``None``.
        std: normalisation standard deviations to undo. Default ``None``.
        cmap: matplotlib colormap. Default ``"jet"``.
        alpha: heatmap opacity. Default 0.5.
        tile_inches: width of one tile in inches. Default 1.8.

    Returns:
        A :class:`~matplotlib.figure.Figure` with an Agg canvas (not managed by pyplot).

    Raises:
        ValueError: if ``captions`` does not hold one string per pair, plus the errors of
            :func:`pair_grid`.
    """
    owner = "render.pair_figure"
    tiles = _pair_tiles(x1, x2, h1, h2, mean=mean, std=std, cmap=cmap, alpha=alpha, owner=owner)
    b, _, _, height, width = tiles.shape
    if captions is None:
        captions = [f"pair {i}" for i in range(b)]
    elif isinstance(captions, str) or len(captions) != b:
        raise ValueError(
            f"`{owner}`: expected `captions` to be a list of {b} strings (one per pair), but got "
            f"{captions!r}."
        )
    if not (isinstance(tile_inches, (int, float)) and tile_inches > 0):
        raise ValueError(f"`{owner}`: expected `tile_inches` > 0, but got {tile_inches!r}.")
    pictures = tiles.permute(0, 1, 3, 4, 2).cpu().numpy()
    tile_h = tile_inches * height / width
    fig = _new_figure(4 * tile_inches, b * (tile_h + 0.35))
    rows = fig.subfigures(b, 1, squeeze=False)[:, 0]
    headers = ("image 1", "overlay 1", "image 2", "overlay 2")
    for i, row in enumerate(rows):
        row.suptitle(str(captions[i]), fontsize="medium")
        axes = row.subplots(1, 4)
        for j, ax in enumerate(axes):
            ax.imshow(pictures[i, j], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(headers[j], fontsize="small")
    return fig


def _as_curves(name: str, curve: object) -> Tensor:
    owner = "render.curves_figure"
    if not isinstance(curve, Tensor) or not curve.is_floating_point():
        raise TypeError(
            f"`{owner}`: expected curve {name!r} to be a float tensor of shape (B, T + 1), but got "
            f"{_describe(curve)}."
        )
    c = curve.detach().float().cpu()
    if c.ndim == 1:
        c = c.unsqueeze(0)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] < 2:
        raise ValueError(
            f"`{owner}`: expected curve {name!r} of shape (B, T + 1) with B >= 1 and T >= 1, but "
            f"got shape {tuple(curve.shape)}."
        )
    if not torch.isfinite(c).all():
        raise ValueError(f"`{owner}`: curve {name!r} contains NaN or infinite values.")
    return c


def curves_figure(
    curves: Mapping[str, Tensor],
    *,
    title: str = "",
    band: Literal["minmax", "std", "none"] = "minmax",
    xlabel: str = "fraction of pixels",
    ylabel: str = "similarity",
) -> Figure:
    """Plot insertion/deletion similarity curves: the mean over pairs with a shaded band.

    Each curve is plotted against the fraction of pixels inserted or deleted, ``t / T`` in [0, 1].
    The legend shows each curve's AUC, the trapezoidal area under the *mean* curve on that [0, 1]
    axis, which equals the mean of the per-pair AUCs (the paper's normalised AUC).

    Args:
        curves: name -> ``(B, T + 1)`` similarity curves (a ``(T + 1,)`` tensor is one pair).
            Curves may have different ``T``.
        title: axes title. Default ``""``.
        band: ``"minmax"`` (shade between the lowest and highest pair), ``"std"`` (mean ± one
            standard deviation over pairs) or ``"none"``. Default ``"minmax"``.
        xlabel: x-axis label. Default ``"fraction of pixels"``.
        ylabel: y-axis label. Default ``"similarity"``.

    Returns:
        A :class:`~matplotlib.figure.Figure` with an Agg canvas (not managed by pyplot).

    Raises:
        TypeError: if a curve is not a float tensor.
        ValueError: for an empty mapping, a bad shape, non-finite values or an unknown ``band``.
    """
    owner = "render.curves_figure"
    if not isinstance(curves, Mapping) or len(curves) == 0:
        raise ValueError(
            f"`{owner}`: expected a non-empty mapping name -> (B, T + 1) curve, but got {curves!r}."
        )
    if band not in ("minmax", "std", "none"):
        raise ValueError(
            f"`{owner}`: expected `band` to be one of ('minmax', 'std', 'none'), but got {band!r}."
        )
    # A fixed layout, sized for tick labels, axis labels and a one-line title: constrained layout
    # would cost ~40% of drawing this figure, once per method and evaluation.
    fig = _new_figure(5.0, 3.6, constrained=False)
    fig.subplots_adjust(left=0.16, right=0.97, bottom=0.14, top=0.9 if title else 0.95)
    ax = fig.add_subplot()
    for name, curve in curves.items():
        c = _as_curves(name, curve)
        steps = c.shape[1] - 1
        frac = torch.linspace(0, 1, steps + 1)
        mean = c.mean(dim=0)
        auc = float(torch.trapezoid(mean, frac))
        (line,) = ax.plot(frac.numpy(), mean.numpy(), label=f"{name} (AUC {auc:.3f})")
        if band != "none" and c.shape[0] > 1:
            if band == "minmax":
                low, high = c.amin(dim=0), c.amax(dim=0)
            else:
                spread = c.std(dim=0)
                low, high = mean - spread, mean + spread
            ax.fill_between(
                frac.numpy(), low.numpy(), high.numpy(), color=line.get_color(), alpha=0.2, lw=0
            )
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, y=1.0)  # placed, not auto-positioned over tick labels (none on top)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def figure_to_image(figure: Figure, *, dpi: float | None = None) -> Tensor:
    """Rasterise a matplotlib figure with the Agg renderer into a ``(3, H, W)`` uint8 tensor.

    Works for figures made by pyplot or not, without switching pyplot's backend. The figure is left
    open and usable.

    Args:
        figure: the figure to draw.
        dpi: resolution. Default ``None``: the figure's own dpi.

    Returns:
        ``(3, H, W)`` uint8 RGB tensor on the CPU (alpha dropped after compositing on white).

    Raises:
        TypeError: if ``figure`` is not a matplotlib ``Figure``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(figure, Figure):
        raise TypeError(
            f"`render.figure_to_image`: expected a matplotlib Figure, but got {_describe(figure)}."
        )
    # Draw on an Agg canvas and read its buffer (what savefig to PNG draws, without encoding and
    # decoding a PNG); the figure's own canvas and dpi are put back afterwards.
    own_canvas, own_dpi = figure.canvas, figure.dpi
    try:
        canvas = own_canvas if isinstance(own_canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
        if dpi is not None:
            figure.set_dpi(dpi)
        canvas.draw()  # type: ignore[no-untyped-call]
        buffer = canvas.buffer_rgba()  # type: ignore[no-untyped-call]
        rgba = np.asarray(buffer, dtype=np.float32) / 255.0
    finally:
        figure.set_dpi(own_dpi)
        figure.set_canvas(own_canvas)
    rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    out = torch.from_numpy(np.round(rgb * 255.0).astype(np.uint8))
    return out.permute(2, 0, 1).contiguous()


def picture_figure(image: Tensor, *, dpi: float) -> Figure:
    """A figure that shows ``image`` pixel for pixel when drawn at ``dpi``: what a figure drawn
    elsewhere (on another rank, by :func:`figure_to_image` at ``dpi``) becomes again for a sink
    that takes figures. Drawing it costs one image copy instead of the figure's text and lines;
    saved or rasterised at ``dpi`` it gives the pixels of ``image``.

    Args:
        image: ``(3, H, W)`` uint8 image.
        dpi: the resolution the figure will be drawn at (the ``dpi`` the image was drawn at).

    Returns:
        A ``W / dpi`` x ``H / dpi`` inch :class:`~matplotlib.figure.Figure` with an Agg canvas.

    Raises:
        TypeError: if ``image`` is not a ``(3, H, W)`` uint8 tensor.
        ValueError: if ``dpi`` is not positive.
    """
    if not isinstance(image, Tensor) or image.dtype != torch.uint8 or image.ndim != 3:
        raise TypeError(
            f"`render.picture_figure`: expected a (3, H, W) uint8 image, but got {_describe(image)}."
        )
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not dpi > 0:
        raise ValueError(f"`render.picture_figure`: expected `dpi` > 0, but got {dpi!r}.")
    height, width = int(image.shape[1]), int(image.shape[2])
    fig = _new_figure(width / dpi, height / dpi, constrained=False)
    fig.set_dpi(dpi)
    fig.figimage(image.permute(1, 2, 0).cpu().numpy(), xo=0, yo=0, origin="upper")
    return fig


def captioned(image: Tensor, caption: str, *, font_size: int = 12) -> Tensor:
    """``image`` with ``caption`` written in black on a white band under it, for viewers that show
    no caption (PNG files): the text the trackers get beside the image, on the image.

    Args:
        image: ``(3, H, W)`` uint8 image.
        caption: the text; one line per ``\\n``, long lines wrapped at the image width.
        font_size: text size in pixels. Default 12.

    Returns:
        ``(3, H + band, W)`` uint8 tensor on the CPU (``band`` fits the wrapped lines).

    Raises:
        TypeError: if ``image`` is not a ``(3, H, W)`` uint8 tensor.

    Example:
        >>> import torch
        >>> out = captioned(torch.zeros(3, 40, 200, dtype=torch.uint8), "pair 0 (item 3), sim 0.91")
        >>> out.shape[0], out.shape[2], out.shape[1] > 40
        (3, 200, True)
    """
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    if not isinstance(image, Tensor) or image.dtype != torch.uint8 or image.ndim != 3:
        raise TypeError(
            f"`render.captioned`: expected a (3, H, W) uint8 image, but got {_describe(image)}."
        )
    font = ImageFont.load_default(size=font_size)
    width = int(image.shape[2])
    left, top, right, bottom = font.getbbox("M")
    char_w = max(1, int(right - left))
    line_h = int(bottom - top) + max(2, font_size // 3)
    per_line = max(8, (width - 8) // char_w)
    lines = [w for part in str(caption).splitlines() for w in textwrap.wrap(part, per_line) or [""]]
    band = len(lines) * line_h + 8
    canvas = Image.new("RGB", (width, int(image.shape[1]) + band), "white")
    canvas.paste(Image.fromarray(image.permute(1, 2, 0).cpu().numpy()), (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = int(image.shape[1]) + 4
    for line in lines:
        draw.text((4, y), line, fill="black", font=font)
        y += line_h
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()
