"""Occlusion methods for image pairs: conditional, context-agnostic and pairwise occlusion.

These are the perturbation methods of Sammani et al., "Visualizing and Understanding Contrastive
Learning" (IEEE TIP; arXiv 2206.09753), section "Perturbation-based methods". Every method perturbs
the input images, runs the model without autograd, and turns the change in the pair similarity
``s(f(x1), f(x2))`` into one heatmap per image.

All three build their perturbed images chunk by chunk from rectangle coordinates (no Python loop
over pairs). Each chunk holds at most ``batch_size`` images and goes through the model under
``torch.inference_mode``, so memory is bounded by ``batch_size`` whatever the number of pairs,
window positions or erasures. ``batch_size=None`` (the default) chooses the chunk from the
device's memory (:meth:`~lightning_explain._core.PairContext.chunk_size`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, Union

import torch
from torch import Tensor

from lightning_explain._checks import (
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    check_batch_size,
    check_literal,
    check_positive_int,
    check_range,
    check_real,
)
from lightning_explain._core import Model, PairContext, pair_context, relative_pixels
from lightning_explain.explanation import PairExplanation
from lightning_explain.methods._perturb import (
    IntactPair,
    acc_dtype,
    chunked_scores,
    intact_pair,
    pair_sims,
)
from lightning_explain.similarity import SimilarityFn

__all__ = [
    "Credit",
    "Estimator",
    "WindowOutput",
    "conditional_occlusion",
    "context_agnostic_occlusion",
    "default_stride",
    "default_window",
    "erasing_boxes",
    "pairwise_occlusion",
    "resolve_window",
    "window_starts",
]

Similarity = Union[str, SimilarityFn]

WindowOutput = Literal["coverage", "grid"]
"""What conditional and context-agnostic occlusion return: ``"coverage"`` (default), each pixel
the mean score of the windows covering it; ``"grid"``, the paper's ``n_h x n_w`` grid of window
scores, upsampled bilinearly to the image."""

Credit = Literal["shapley", "both", "norm"]
"""How pairwise occlusion credits a joint erasure: by the Shapley values of the two erasures
(``"shapley"``, the default), to the image of smaller embedding norm (``"norm"``, the paper's
code) or to both images (``"both"``)."""

Estimator = Literal["baseline", "paper"]
"""How pairwise occlusion and context-agnostic occlusion score: ``"baseline"`` (default) against
a baseline (PO: each erasure's credit minus the mean over the erasures; CACO: the partner's
embedding minus the all-fill image's); ``"paper"``, as the paper's code (PO: the softmax vote;
CACO: the raw partner embedding)."""

_ERASING_ATTEMPTS = 10
"""Attempts per rectangle, as in ``torchvision.transforms.RandomErasing``."""


# --------------------------------------------------------------------------------------------------
# Option checks and size-relative defaults


WINDOW_PIXELS = 64
"""The paper's occlusion window at its 224 px reference size."""
STRIDE_PIXELS = 8
"""The paper's occlusion stride at 224 px."""
MIN_WINDOW = 4
"""Smallest default window in pixels (below about 14 px images)."""


def default_window(height: int, width: int) -> int:
    """The default occlusion window for ``height x width`` images: 64/224 of the shorter side,
    at least 4 px (at most half the shorter side on images under 8 px).

    Example:
        >>> default_window(224, 224), default_window(64, 64), default_window(32, 48)
        (64, 18, 9)
    """
    side = min(height, width)
    return min(relative_pixels(WINDOW_PIXELS, side, minimum=MIN_WINDOW), max(1, side // 2))


def default_stride(height: int, width: int) -> int:
    """The default occlusion stride: 8/224 of the shorter side, at least 1 px.

    Example:
        >>> default_stride(224, 224), default_stride(64, 64), default_stride(32, 32)
        (8, 2, 1)
    """
    return relative_pixels(STRIDE_PIXELS, min(height, width), minimum=1)


def _check_window_options(
    window: object, stride: object, fill: object, output: object, batch_size: object, owner: str
) -> tuple[int | None, int | None, float, str, int | None]:
    return (
        None if window is None else check_positive_int(window, name="window", owner=owner),
        None if stride is None else check_positive_int(stride, name="stride", owner=owner),
        check_real(fill, name="fill", owner=owner),
        check_literal(output, WindowOutput, name="output", owner=owner),
        check_batch_size(batch_size, owner=owner),
    )


def resolve_window(
    window: int | None, stride: int | None, size: tuple[int, int], *, owner: str
) -> tuple[int, int]:
    """``(window, stride)`` for ``size = (H, W)`` images: ``None`` becomes the size-relative
    default (:func:`default_window`, :func:`default_stride`); an explicit window must fit.

    Raises:
        ValueError: a window larger than the shorter side, or one that covers the whole image
            (a single position, whose map would rank nothing).
    """
    height, width = size
    side = min(height, width)
    if window is None:
        window = default_window(height, width)
    if stride is None:
        stride = default_stride(height, width)
    if window > side or (window == height and window == width):
        fix = max(1, min(default_window(height, width), side - 1))
        raise ValueError(
            f"`{owner}`: expected `window` smaller than the {height}x{width} images (at most "
            f"{side} px and not the whole image), but got window={window}. A window that does "
            f"not fit leaves at most one position and nothing to rank. Pass e.g. window={fix}, "
            f"or window=None for the size-relative default (64/224 of the shorter side)."
        )
    return window, stride


# --------------------------------------------------------------------------------------------------
# Shared machinery


def window_starts(length: int, window: int | None, stride: int | None) -> list[int]:
    """Start offsets of a sliding window along one axis of ``length`` pixels.

    The window is clamped to ``length``. Offsets are ``0, stride, 2 * stride, ...`` while the window
    fits; if the last one does not end flush with the border (``(length - window) % stride != 0``),
    one final offset ``length - window`` is added so that the last rows/columns are reached too.
    ``None`` stands for the default window or stride of a square ``length x length`` image
    (:func:`default_window`, :func:`default_stride`).
    """
    window = default_window(length, length) if window is None else window
    stride = default_stride(length, length) if stride is None else stride
    window = min(window, length)
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def _cover(starts: Tensor, extent: Tensor, length: int) -> Tensor:
    """Indicator ``(*S, length)`` of the intervals ``[starts, starts + extent)`` along one axis."""
    pos = torch.arange(length, device=starts.device)
    return (pos >= starts.unsqueeze(-1)) & (pos < (starts + extent).unsqueeze(-1))


def _nearest(starts: Tensor, extent: int, length: int) -> Tensor:
    """``(n, length)`` bool: for every pixel of the axis, the windows nearest to it.

    A pixel inside one or more windows gets exactly those (distance 0), so where the windows
    cover the axis this is :func:`_cover`; a pixel that no window covers (``stride > window``)
    gets the nearest window, or the two nearest when it is halfway between them.
    """
    pos = torch.arange(length, device=starts.device)
    ends = starts + extent - 1
    dist = (starts.unsqueeze(1) - pos).clamp(min=0) + (pos - ends.unsqueeze(1)).clamp(min=0)
    return dist == dist.amin(dim=0, keepdim=True)


class _Grid:
    """Sliding-window positions over ``(H, W)`` images and their coverage of the pixels."""

    def __init__(self, size: tuple[int, int], window: int, stride: int, device: torch.device):
        h, w = size
        wh, ww = min(window, h), min(window, w)
        top = torch.tensor(window_starts(h, window, stride), device=device)
        left = torch.tensor(window_starts(w, window, stride), device=device)
        self.rows = _cover(top, torch.full_like(top, wh), h)  # (n_h, H) bool
        self.cols = _cover(left, torch.full_like(left, ww), w)  # (n_w, W) bool
        self.near_rows = _nearest(top, wh, h)  # (n_h, H) bool, = rows where rows cover
        self.near_cols = _nearest(left, ww, w)
        self.n_h, self.n_w = int(top.numel()), int(left.numel())

    @property
    def n_positions(self) -> int:
        return self.n_h * self.n_w

    def masks(self, positions: slice, dtype: torch.dtype) -> Tensor:
        """``(k, 1, 1, H, W)`` window masks of the positions ``positions``, 1 inside the window
        and 0 outside, in ``dtype`` (the weights of a 0/1 lerp, broadcast over images and
        channels)."""
        pos = torch.arange(positions.start, positions.stop, device=self.rows.device)
        r = self.rows[pos // self.n_w].to(dtype)
        c = self.cols[pos % self.n_w].to(dtype)
        return (r.unsqueeze(2) * c.unsqueeze(1))[:, None, None]

    def to_pixels(self, scores: Tensor) -> Tensor:
        """``(P, J)`` per-position scores -> ``(J, H, W)`` maps.

        Each pixel gets the mean score of the windows that cover it (the attribution of captum's
        ``Occlusion``); a pixel that no window covers (``stride > window``) gets the mean score of
        the windows nearest to it along each axis. The window masks are separable, so this is
        two small matrix products.
        """
        rows, cols = self.near_rows.to(scores.dtype), self.near_cols.to(scores.dtype)
        grid = scores.view(self.n_h, self.n_w, -1)
        total = torch.einsum("abj,ah,bw->jhw", grid, rows, cols)
        count = rows.sum(0).unsqueeze(1) * cols.sum(0).unsqueeze(0)
        return total / count

    def to_grid(self, scores: Tensor) -> Tensor:
        """``(P, J)`` per-position scores -> ``(J, n_h, n_w)`` grids (the paper's output)."""
        return scores.view(self.n_h, self.n_w, -1).permute(2, 0, 1)


def _window_maps(
    ctx: PairContext,
    window: int,
    stride: int,
    batch_size: int,
    images_per_position: int,
    build: Callable[[Tensor, Tensor, Tensor], None],
    score: Callable[[IntactPair, Tensor, Tensor], Tensor],
    output: str = "coverage",
) -> tuple[Tensor, Tensor, Tensor]:
    """Raw maps of a sliding-window method for both images, and the sim.

    Items are (window position, image) pairs, position-major, over the ``2B`` images of
    :func:`~lightning_explain.methods._perturb.intact_pair`. ``build(x, masks, out)`` writes the
    perturbed images of ``p`` positions x ``j`` images into ``out``
    ``(images_per_position, p, j, C, H, W)``, from the images ``x`` ``(1, j, C, H, W)`` and the 0/1
    window masks ``(p, 1, 1, H, W)``; ``score(pair, embeddings, img)`` turns their
    ``(images_per_position, k, D)`` embeddings into ``(k,)`` scores. ``output="coverage"``: each
    pixel gets the mean score of the windows that cover it, ``(B, H, W)``; ``"grid"``: the
    ``(B, n_h, n_w)`` grid of scores.
    """
    pair = intact_pair(ctx, batch_size)
    grid = _Grid(ctx.size, window, stride, ctx.device)
    n_img = pair.n_img

    def build_items(positions: slice, images: slice, out: Tensor) -> None:
        x = pair.x[images].unsqueeze(0)  # (1, j, C, H, W)
        build(x, grid.masks(positions, x.dtype), out)

    def score_items(idx: Tensor, zo: Tensor) -> Tensor:
        return score(pair, zo, idx % n_img)

    scores = chunked_scores(
        ctx, grid.n_positions, n_img, images_per_position, build_items, score_items, batch_size
    )
    scores = scores.to(acc_dtype(pair.x)).view(grid.n_positions, n_img)
    raw = grid.to_grid(scores) if output == "grid" else grid.to_pixels(scores)
    return pair.split(raw)


_WindowMaps = Callable[..., tuple[Tensor, Tensor, Tensor]]
"""``(ctx, window, stride, fill, batch_size, output, **extra) -> (raw1, raw2, sim)``."""


def _window_method(
    maps: _WindowMaps,
    owner: str,
    model: Model,
    x1: Tensor,
    x2: Tensor,
    options: tuple[object, object, object, object, object],
    similarity: Similarity,
    **extra: object,
) -> PairExplanation:
    """Check ``(window, stride, fill, output, batch_size)``, resolve the size-relative defaults,
    run ``maps`` in a pair context, normalise.

    ``batch_size=None`` is resolved per device by :meth:`PairContext.chunk_size`.
    """
    window, stride, fill, output, batch_size = _check_window_options(*options, owner)
    with pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx:
        win, step = resolve_window(window, stride, ctx.size, owner=owner)
        h1, h2, sim = maps(ctx, win, step, fill, ctx.chunk_size(batch_size), output, **extra)
        return ctx.finish(h1, h2, sim, minmax=True)


# --------------------------------------------------------------------------------------------------
# Conditional occlusion


def _conditional_occlusion_maps(
    ctx: PairContext,
    window: int,
    stride: int,
    fill: float,
    batch_size: int,
    output: str = "coverage",
) -> tuple[Tensor, Tensor, Tensor]:
    """Raw per-pixel similarity drops ``(B, H, W)`` for both images, and the pair similarity."""

    def build(x: Tensor, mask: Tensor, out: Tensor) -> None:
        # A lerp with 0/1 weights is exactly the image or the fill (vectorised, unlike a where
        # whose condition is broadcast over the channels).
        torch.lerp(x, torch.tensor(fill, dtype=x.dtype, device=x.device), mask, out=out[0])

    def score(pair: IntactPair, zo: Tensor, img: Tensor) -> Tensor:
        return pair.base(img) - pair.conditional_sims(ctx, zo[0], img)

    return _window_maps(ctx, window, stride, batch_size, 1, build, score, output)


def conditional_occlusion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    window: PositiveInt | None = None,
    stride: PositiveInt | None = None,
    fill: float = 0.0,
    output: WindowOutput = "coverage",
    similarity: Similarity = "cosine",
    batch_size: PositiveInt | None = None,
) -> PairExplanation:
    """Conditional occlusion (CO): the similarity drop when a window of one image is filled.

    Sammani et al., "Visualizing and Understanding Contrastive Learning", IEEE TIP (arXiv
    2206.09753), section 2.1 (a) of the project's paper digest. A ``window x window`` square slides
    over ``x1`` with step ``stride``; for every position ``p``::

        h1[p] = s(f(x1), f(x2)) - s(f(x1 with window p set to fill), f(x2))

    with ``f(x2)`` intact (the "condition", embedded once), and symmetrically for ``h2``. Higher
    means the patch matters more to the similarity.

    Sizes: the paper's window 64 and stride 8 are given for 224 px images. The defaults
    (``None``) scale them by the shorter side ``s = min(H, W)``: ``window = round(64 * s / 224)``,
    at least 4 px (:func:`default_window`), and ``stride = round(8 * s / 224)``, at least 1 px
    (:func:`default_stride`). That is 64 / 8 at 224 px (the paper's 21 x 21 positions, bitwise
    the same maps as ``window=64, stride=8``), 18 / 2 at 64 px and 9 / 1 at 32 px (24 x 24
    positions), so a window always hides the same share of the image. Explicit values win. A
    window larger than the shorter side, or as large as a square image, is refused
    (``ValueError``): it would leave one position and an all-zero map.

    Positions: offsets are ``0, stride, 2 * stride, ...``; when ``(H - window) % stride != 0``
    one final position flush with the bottom (right) border is added, so the last rows (columns)
    are always reached. Non-square images are supported.

    Map (``output="coverage"``, default): each pixel gets the mean drop of the windows that cover
    it (the attribution of captum's ``Occlusion``); with ``stride > window`` a pixel that no
    window covers gets the mean drop of the windows nearest to it along each axis. The paper's
    code instead keeps the ``n_h x n_w`` grid of drops and upsamples it bilinearly
    (``output="grid"``), which moves scores away from their windows (at 224 px, window 64, stride
    8, the first window is centred on pixel 32 but its score is drawn centred on pixel 5). The
    signed maps are then min-max normalised per map (paper HEAD) and scaled to max 1. Min-max
    puts the window that raises the similarity most at 0, so where some windows raise it
    (negative drops), windows with no effect at all land mid-scale, not at 0.

    Args:
        model: ``(N, C, H, W) -> (N, D)`` embedding model or callable.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        window: side of the square occluder in pixels. Default None: 64/224 of the shorter side,
            at least 4 (paper: 64 for 224 px images).
        stride: step between window positions in pixels. Default None: 8/224 of the shorter
            side, at least 1 (paper: 8).
        fill: value written into the window, in model-input space (0 is black for raw ``[0, 1]``
            inputs and the dataset mean for normalised inputs, as in the paper).
        output: ``"coverage"`` (default; per-pixel mean over the covering windows) or
            ``"grid"`` (the paper's grid of drops, min-max normalised and upsampled bilinearly).
        similarity: ``"cosine"`` (paper), ``"dot"``, ``"neg_l2"`` or ``(z1, z2) -> (N,)``.
        batch_size: most images per forward pass. Default None: chosen from the device's memory
            (see :meth:`~lightning_explain._core.PairContext.chunk_size`).

    Returns:
        :class:`PairExplanation` with ``h1``, ``h2`` of shape ``(B, H, W)`` and ``sim`` ``(B,)``.

    Raises:
        TypeError: a non-integer ``window``/``stride``, a ``batch_size`` that is neither an int
            nor None, or a non-numeric ``fill``.
        ValueError: ``window``, ``stride`` or ``batch_size`` below 1, a window that does not fit
            the images, an unknown ``output``, a non-finite ``fill``, or malformed images.

    Cost:
        ``2 + 2 * n_h * n_w`` forward passes per pair, no backward: 884 at 224 x 224 with the
        defaults (21 x 21 positions), 1154 at 64 and 32 px (24 x 24).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> e = conditional_occlusion(net, torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
        >>> tuple(e.h1.shape)  # window 5, stride 1 at 16 px
        (1, 16, 16)
    """
    options = (window, stride, fill, output, batch_size)
    return _window_method(
        _conditional_occlusion_maps, "conditional_occlusion", model, x1, x2, options, similarity
    )


# --------------------------------------------------------------------------------------------------
# Context-agnostic conditional occlusion


def _context_agnostic_maps(
    ctx: PairContext,
    window: int,
    stride: int,
    fill: float,
    batch_size: int,
    output: str = "coverage",
    estimator: str = "baseline",
) -> tuple[Tensor, Tensor, Tensor]:
    """Raw per-pixel patch-embedding similarities ``(B, H, W)`` for both images, and the sim."""
    reference: Tensor | None = None
    if estimator != "paper":  # the all-fill image: what "no pixels at all" embeds to
        empty = torch.full((1, *ctx.x1.shape[1:]), fill, dtype=ctx.x1.dtype, device=ctx.device)
        reference = ctx.embed_chunked(empty, 1)

    def build(x: Tensor, mask: Tensor, out: Tensor) -> None:
        value = torch.tensor(fill, dtype=x.dtype, device=x.device)
        torch.lerp(x, value, 1 - mask, out=out[0])  # B_p: only the window's pixels
        torch.lerp(x, value, mask, out=out[1])  # M_p: the image with the window filled

    def score(pair: IntactPair, zo: Tensor, img: Tensor) -> Tensor:
        patch = zo[0] - zo[1]  # g_p = f(B_p) - f(M_p)
        if reference is None:
            return pair.conditional_sims(ctx, patch, img)
        # The partner as a difference too: f(other) - f(all-fill image).
        return pair_sims(ctx, patch, pair.partner[img] - reference, pair.first[img])

    return _window_maps(ctx, window, stride, batch_size, 2, build, score, output)


def context_agnostic_occlusion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    window: PositiveInt | None = None,
    stride: PositiveInt | None = None,
    fill: float = 0.0,
    output: WindowOutput = "coverage",
    estimator: Estimator = "baseline",
    similarity: Similarity = "cosine",
    batch_size: PositiveInt | None = None,
) -> PairExplanation:
    """Context-agnostic conditional occlusion (CACO): what a patch alone says about the partner.

    Sammani et al., arXiv 2206.09753 v1 (removed from the reference code in March 2023), section
    2.1 (b) of the project's paper digest. For every window position ``p`` of image ``x``::

        M_p = x with the window set to fill
        B_p = an all-fill image holding only the window's pixels of x
        g_p = f(B_p) - f(M_p)                    # the patch's own embedding

    ``estimator="paper"``: ``h1[p] = s(g_p(x1), f(x2))``, ``h2[p] = s(f(x1), g_p(x2))``, no
    baseline subtracted. ``estimator="baseline"`` (default): the partner is taken as a
    difference too, ``h1[p] = s(g_p(x1), f(x2) - f(F))`` with ``F`` the all-fill image (embedded
    once per call), so that both sides of the similarity are measured from "no pixels at all".

    Deviates from the paper by default because the patch difference ``g_p`` is compared with a
    raw embedding: where all embeddings share a large common direction (untrained networks,
    similarities above 0.999) that direction dominates ``s`` and the ranking of patches is
    lost. On the saturated known-evidence models at 32 px the paper's variant puts 71% (left
    half), 49% (a fixed quarter patch) and 33% (an object; worst map 1%) of the top-quartile
    pixels in the evidence, the default 100%, 87% and 90%; on centred models both localise
    (99%, 82%, 90% and 100%, 87%, 90%). Measured by ``python -m tests.ground_truth.table``
    (docs/methods/localisation). At 224 px the default therefore differs from the paper's maps;
    pass ``estimator="paper"`` for them.

    Window sizes (the size-relative defaults, 64 / 8 at 224 px),
    positions (an extra flush position on the last row/column, non-square images), the refusal
    of windows that do not fit and the per-pixel map (``output``) are as in
    :func:`conditional_occlusion`; the maps are min-max normalised and scaled to max 1.

    Args:
        model: ``(N, C, H, W) -> (N, D)`` embedding model or callable.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        window: side of the square window in pixels. Default None: 64/224 of the shorter side,
            at least 4 (paper: 64 for 224 px images).
        stride: step between window positions in pixels. Default None: 8/224 of the shorter
            side, at least 1 (paper: 8).
        fill: value of the removed pixels, in model-input space (paper: 0).
        output: ``"coverage"`` (default) or ``"grid"`` (the paper's grid, upsampled bilinearly).
        estimator: ``"baseline"`` (default) or ``"paper"``, see above.
        similarity: ``"cosine"`` (paper), ``"dot"``, ``"neg_l2"`` or ``(z1, z2) -> (N,)``.
        batch_size: most images per forward pass. Default None: chosen from the device's memory
            (see :meth:`~lightning_explain._core.PairContext.chunk_size`).

    Returns:
        :class:`PairExplanation` with ``h1``, ``h2`` of shape ``(B, H, W)`` and ``sim`` ``(B,)``.

    Raises:
        TypeError: a non-integer ``window``/``stride``, a ``batch_size`` that is neither an int
            nor None, or a non-numeric ``fill``.
        ValueError: ``window``, ``stride`` or ``batch_size`` below 1, a window that does not fit
            the images, an unknown ``output``, a non-finite ``fill``, or malformed images.

    Cost:
        ``2 + 4 * n_h * n_w`` forward passes per pair, no backward: 1766 at 224 x 224 with the
        defaults (21 x 21 positions, two images per position and image), 2306 at 64 and 32 px;
        plus one forward pass of the all-fill image per call with ``estimator="baseline"``.
    """
    owner = "context_agnostic_occlusion"
    estimator = check_literal(estimator, Estimator, name="estimator", owner=owner)
    options = (window, stride, fill, output, batch_size)
    return _window_method(
        _context_agnostic_maps, owner, model, x1, x2, options, similarity, estimator=estimator
    )


# --------------------------------------------------------------------------------------------------
# Pairwise occlusion


def erasing_boxes(
    generator: torch.Generator,
    shape: tuple[int, ...],
    size: tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random-erasing rectangles, distributed as ``torchvision.transforms.RandomErasing(p=1)``.

    For each rectangle, up to 10 attempts draw an area ``H * W * U(scale)`` and an aspect ratio
    (height / width) ``exp(U(log ratio))``; sides are rounded; the first attempt whose rectangle is
    strictly smaller than the image is placed uniformly at random. If no attempt fits, nothing is
    erased (torchvision then returns the image unchanged), which is encoded as a ``0 x 0`` box.

    Args:
        generator: source of randomness (on the device the boxes are wanted on).
        shape: batch shape of the boxes, e.g. ``(B, N)``.
        size: image size ``(H, W)``.
        scale: erased fraction of the image area, ``(low, high)``.
        ratio: aspect-ratio range ``(low, high)``.

    Returns:
        ``top, left, height, width``, each a ``shape`` int64 tensor.
    """
    img_h, img_w = size
    device = generator.device
    u = torch.rand((4, *shape, _ERASING_ATTEMPTS), generator=generator, device=device)
    area = img_h * img_w * (scale[0] + (scale[1] - scale[0]) * u[0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[1])
    h = torch.round(torch.sqrt(area * aspect)).long()
    w = torch.round(torch.sqrt(area / aspect)).long()
    fits = (h < img_h) & (w < img_w)
    pick = fits.long().argmax(-1, keepdim=True)  # the first attempt that fits

    def first(t: Tensor) -> Tensor:
        return t.gather(-1, pick).squeeze(-1)

    any_fit = fits.any(-1)
    h, w = first(h) * any_fit, first(w) * any_fit
    top = torch.floor(first(u[2]) * (img_h - h + 1)).long().clamp(max=img_h - h)
    left = torch.floor(first(u[3]) * (img_w - w + 1)).long().clamp(max=img_w - w)
    return top, left, h, w


def _pairwise_occlusion_maps(
    ctx: PairContext,
    n_erasures: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    fill: float,
    estimator: str,
    temperature: float,
    credit: str,
    seed: int,
    batch_size: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Raw ``(B, H, W)`` maps of pairwise occlusion, and the pair similarity."""
    b = ctx.batch
    img_h, img_w = ctx.size
    pair = intact_pair(ctx, batch_size)
    sim = pair.sim
    gen = ctx.generator(seed)
    # Rectangles of x1 first, then of x2: independent draws, shape (2, B, N) each.
    top, left, h, w = erasing_boxes(gen, (2, b, n_erasures), ctx.size, scale, ratio)
    dt = ctx.x1.dtype
    rows = _cover(top, h, img_h).to(dt)  # (2, B, N, H), 0/1
    cols = _cover(left, w, img_w).to(dt)  # (2, B, N, W)
    value = torch.tensor(fill, dtype=dt, device=ctx.device)

    def build(p: slice, n: slice, out: Tensor) -> None:  # items are (pair p, erasure n)
        for k, x in enumerate((ctx.x1, ctx.x2)):
            mask = rows[k, p, n].unsqueeze(3) * cols[k, p, n].unsqueeze(2)  # (p, n, H, W)
            torch.lerp(x[p].unsqueeze(1), value, mask.unsqueeze(2), out=out[k])

    def score(idx: Tensor, zo: Tensor) -> Tensor:
        p = idx // n_erasures
        base = sim[p]
        drop = base - ctx.similarity(zo[0], zo[1])
        # Each erasure alone, against the intact partner (no extra forward pass).
        alone1 = base - ctx.similarity(zo[0], pair.partner[p])  # x1 erased, x2 intact
        alone2 = base - ctx.similarity(pair.partner[b + p], zo[1])  # x2 erased, x1 intact
        x1_weaker = zo[0].norm(dim=1) < zo[1].norm(dim=1)
        return torch.stack([drop, x1_weaker.to(drop.dtype), alone1, alone2], dim=1)

    scores = chunked_scores(ctx, b, n_erasures, 2, build, score, batch_size)
    acc = acc_dtype(ctx.x1)
    drops = scores[:, 0].to(acc).view(b, n_erasures)
    to_x1 = scores[:, 1].view(b, n_erasures).to(torch.bool)
    if credit == "shapley":
        # Shapley values of the two erasures in the game "drop of the erased set":
        # phi_1 = (v({1}) + v({1, 2}) - v({2})) / 2, and phi_1 + phi_2 = d.
        alone1 = scores[:, 2].to(acc).view(b, n_erasures)
        alone2 = scores[:, 3].to(acc).view(b, n_erasures)
        part1, part2 = (alone1 + drops - alone2) / 2, (alone2 + drops - alone1) / 2
    else:
        part1 = part2 = drops

    def weigh(d: Tensor) -> Tensor:
        if estimator == "paper":
            return torch.softmax(d / temperature, dim=1)  # (B, N)
        return d - d.mean(dim=1, keepdim=True)

    w1, w2 = weigh(part1), weigh(part2)
    ones = torch.ones_like(w1)
    if credit == "norm":
        c1, c2 = torch.where(to_x1, w1, 0.0), torch.where(to_x1, 0.0, w2)
        n1, n2 = torch.where(to_x1, ones, 0.0), torch.where(to_x1, 0.0, ones)
    else:
        c1, c2 = w1, w2
        n1 = n2 = ones
    raws = []
    for k, (c, n) in enumerate(((c1, n1), (c2, n2))):
        r, q = rows[k].to(acc), cols[k].to(acc)
        raw = torch.einsum("bn,bnh,bnw->bhw", c, r, q)
        if estimator != "paper":  # a z-score: equal noise at rarely and often erased pixels
            raw = raw / torch.einsum("bn,bnh,bnw->bhw", n, r, q).clamp(min=1.0).sqrt()
        raws.append(raw)
    return raws[0], raws[1], sim


def pairwise_occlusion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    n_erasures: PositiveInt = 100,
    scale: tuple[float, float] = (0.1, 0.3),
    ratio: tuple[float, float] = (1.0, 1.5),
    fill: float = 0.0,
    estimator: Estimator = "baseline",
    temperature: PositiveFloat | None = None,
    credit: Credit | None = None,
    seed: NonNegativeInt = 0,
    similarity: Similarity = "cosine",
    batch_size: PositiveInt | None = None,
) -> PairExplanation:
    """Pairwise occlusion (PO): random erasures of both images at once, credited by the drop.

    Sammani et al., "Visualizing and Understanding Contrastive Learning", IEEE TIP (arXiv
    2206.09753), section 2.1 (c) of the project's paper digest. For ``n = 1..N`` one rectangle of
    ``x1`` and one of ``x2`` are erased together (drawn independently, as
    ``torchvision.transforms.RandomErasing(p=1, scale, ratio, value=fill)``; see
    :func:`erasing_boxes`)::

        d_n  = s(f(x1), f(x2)) - s(f(x1^n), f(x2^n))        # both erased
        a1_n = s(f(x1), f(x2)) - s(f(x1^n), f(x2))          # x1's erasure alone, likewise a2_n

    ``estimator="baseline"`` (default)::

        p1_n = (a1_n + d_n - a2_n) / 2                       # credit="shapley" (default)
        h1   = sum_n (p1_n - mean_m p1_m) [pixel in x1^n's rectangle] / sqrt(#erasures covering it)

    ``estimator="paper"`` (the paper's code)::

        w  = softmax(d / temperature) over n                 # temperature default 1
        h1 = sum_n c1_n * w_n * [pixel erased in x1^n]       # credit="norm" (default) or "both"

    Baseline maps are min-max normalised and scaled to max 1, paper maps divided by their maximum.
    Rectangles come from a generator seeded with ``seed``, independently per pair: a pair's
    rectangles depend on ``seed`` and on its index in the batch. The "alone" similarities use
    the erased embeddings already computed against the intact partner's, so the default costs
    no extra forward pass.

    Credit: ``"shapley"`` (default) splits each joint drop between the two erasures by their
    Shapley values in the game "drop of the erased set" (``p1_n + p2_n = d_n``): each image is
    credited with what its own erasure explains. ``"norm"`` (the paper code's heuristic) gives
    the whole drop to the image whose erased embedding has the smaller L2 norm, ``"both"`` to
    both images.

    Deviates from the paper by default because its softmax vote over raw drops and norm credit
    are unstable across inputs and draws: at temperature 1 the softmax of cosine drops is nearly
    uniform (the map is mostly erasure coverage), and the norm comparison of two different
    erased images can send a vote to the image that did not cause the drop. On the
    known-evidence models at 32 px (4 positive pairs, seeds 0-2) the paper's variant puts on
    average 65% of the top-quartile pixels in the evidence for the left-half model, but only 16%
    for its worst map, and 2% for the worst map of the object model; the default 100% (worst
    98%) and 78% (worst 60%). The spread of per-seed means over all models and sizes is
    0.42-0.80 for the paper's variant and 0.72-1.00 for the default. Measured by
    ``python -m tests.ground_truth.table`` (docs/methods/localisation).

    Deviation from the paper's code: erased pixels are taken from the known rectangles. The code
    detects them as pixels whose channel sum is 0, which also credits every naturally black (or,
    for normalised inputs, mean-coloured) pixel of the image.

    Args:
        model: ``(N, C, H, W) -> (N, D)`` embedding model or callable.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        n_erasures: erasure pairs per image pair ``N`` (paper: 100).
        scale: erased fraction of the image area, ``(low, high)`` in ``(0, 1]`` (paper: (0.1, 0.3)).
        ratio: aspect ratio (height / width) range, ``0 < low <= high`` (paper: (1, 1.5)).
        fill: value of erased pixels, in model-input space (paper: 0).
        estimator: ``"baseline"`` (default) or ``"paper"`` (the softmax vote), see above.
        temperature: softmax temperature over the drops, ``estimator="paper"`` only. Default
            None: 1 (paper). Cosine drops are small, so at temperature 1 the weights are close
            to uniform and the map is mostly erasure coverage; a smaller temperature sharpens
            the vote.
        credit: ``"shapley"``, ``"norm"`` or ``"both"``, see above. Default None:
            ``"shapley"``, or ``"norm"`` (paper code) with ``estimator="paper"``.
        seed: seed of the rectangle generator.
        similarity: ``"cosine"`` (paper), ``"dot"``, ``"neg_l2"`` or ``(z1, z2) -> (N,)``.
        batch_size: most images per forward pass. Default None: chosen from the device's memory
            (see :meth:`~lightning_explain._core.PairContext.chunk_size`).

    Returns:
        :class:`PairExplanation` with ``h1``, ``h2`` of shape ``(B, H, W)`` and ``sim`` ``(B,)``.

    Raises:
        TypeError: a wrongly typed option (``n_erasures``, ``scale``, ``ratio``, ``fill``,
            ``temperature``, ``credit``, ``seed``; ``batch_size`` neither an int nor None).
        ValueError: an out-of-range option (``n_erasures < 1``, ``scale`` outside ``(0, 1]`` or
            unordered, ``ratio`` not positive or unordered, ``temperature <= 0``, a
            ``temperature`` without ``estimator="paper"``, unknown ``estimator`` or ``credit``,
            ``batch_size < 1``) or malformed images.

    Cost:
        ``2 + 2 * n_erasures`` forward passes per pair, no backward: 202 with the defaults.
    """
    owner = "pairwise_occlusion"
    n_erasures = check_positive_int(n_erasures, name="n_erasures", owner=owner)
    scale = check_range(scale, name="scale", owner=owner, upper=1.0)
    ratio = check_range(ratio, name="ratio", owner=owner, upper=None)
    fill = check_real(fill, name="fill", owner=owner)
    estimator = check_literal(estimator, Estimator, name="estimator", owner=owner)
    if temperature is not None:
        temperature = check_real(
            temperature, name="temperature", owner=owner, minimum=0.0, exclusive_minimum=True
        )
        if estimator != "paper":
            raise ValueError(
                f"`{owner}`: expected `temperature` only with estimator='paper' (it is the "
                f"temperature of the paper's softmax vote), but got temperature={temperature!r} "
                f"with estimator={estimator!r}. Pass estimator='paper' with it, or leave "
                f"temperature=None."
            )
    if credit is None:
        credit = "norm" if estimator == "paper" else "shapley"
    credit = check_literal(credit, Credit, name="credit", owner=owner)
    seed = check_positive_int(seed, name="seed", owner=owner, minimum=0)
    batch_size = check_batch_size(batch_size, owner=owner)
    with pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx:
        chunk = ctx.chunk_size(batch_size)
        h1, h2, sim = _pairwise_occlusion_maps(
            ctx,
            n_erasures,
            scale,
            ratio,
            fill,
            estimator,
            1.0 if temperature is None else temperature,
            credit,
            seed,
            chunk,
        )
        return ctx.finish(h1, h2, sim, minmax=estimator != "paper")
