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
from lightning_explain._core import Model, PairContext, pair_context
from lightning_explain.explanation import PairExplanation
from lightning_explain.methods._perturb import IntactPair, acc_dtype, chunked_scores, intact_pair
from lightning_explain.similarity import SimilarityFn

__all__ = ["conditional_occlusion", "context_agnostic_occlusion", "pairwise_occlusion"]

Similarity = Union[str, SimilarityFn]

Credit = Literal["norm", "both"]
"""How pairwise occlusion credits an erasure: to the image of smaller embedding norm (``"norm"``,
the paper's code) or to both images (``"both"``)."""

_ERASING_ATTEMPTS = 10
"""Attempts per rectangle, as in ``torchvision.transforms.RandomErasing``."""


# --------------------------------------------------------------------------------------------------
# Option checks


def _check_window_options(
    window: object, stride: object, fill: object, batch_size: object, owner: str
) -> tuple[int, int, float, int | None]:
    return (
        check_positive_int(window, name="window", owner=owner),
        check_positive_int(stride, name="stride", owner=owner),
        check_real(fill, name="fill", owner=owner),
        check_batch_size(batch_size, owner=owner),
    )


# --------------------------------------------------------------------------------------------------
# Shared machinery


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of a sliding window along one axis of ``length`` pixels.

    The window is clamped to ``length``. Offsets are ``0, stride, 2 * stride, ...`` while the window
    fits; if the last one does not end flush with the border (``(length - window) % stride != 0``),
    one final offset ``length - window`` is added so that the last rows/columns are covered too.
    """
    window = min(window, length)
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def _cover(starts: Tensor, extent: Tensor, length: int) -> Tensor:
    """Indicator ``(*S, length)`` of the intervals ``[starts, starts + extent)`` along one axis."""
    pos = torch.arange(length, device=starts.device)
    return (pos >= starts.unsqueeze(-1)) & (pos < (starts + extent).unsqueeze(-1))


class _Grid:
    """Sliding-window positions over ``(H, W)`` images and their coverage of the pixels."""

    def __init__(self, size: tuple[int, int], window: int, stride: int, device: torch.device):
        h, w = size
        wh, ww = min(window, h), min(window, w)
        top = torch.tensor(window_starts(h, window, stride), device=device)
        left = torch.tensor(window_starts(w, window, stride), device=device)
        self.rows = _cover(top, torch.full_like(top, wh), h)  # (n_h, H) bool
        self.cols = _cover(left, torch.full_like(left, ww), w)  # (n_w, W) bool
        self.n_h, self.n_w = int(top.numel()), int(left.numel())

    @property
    def n_positions(self) -> int:
        return self.n_h * self.n_w

    def masks(self, pos: Tensor) -> Tensor:
        """``(k,)`` position indices -> ``(k, 1, H, W)`` boolean window masks."""
        r = self.rows[pos // self.n_w]
        c = self.cols[pos % self.n_w]
        return (r.unsqueeze(2) & c.unsqueeze(1)).unsqueeze(1)

    def to_pixels(self, scores: Tensor) -> Tensor:
        """``(P, J)`` per-position scores -> ``(J, H, W)`` maps.

        Each pixel gets the mean score of the windows that cover it (the attribution of captum's
        ``Occlusion``). The window masks are separable, so this is two small matrix products.
        """
        rows, cols = self.rows.to(scores.dtype), self.cols.to(scores.dtype)
        grid = scores.view(self.n_h, self.n_w, -1)
        total = torch.einsum("abj,ah,bw->jhw", grid, rows, cols)
        count = rows.sum(0).unsqueeze(1) * cols.sum(0).unsqueeze(0)
        return total / count


def _window_maps(
    ctx: PairContext,
    window: int,
    stride: int,
    batch_size: int,
    images_per_position: int,
    build: Callable[[IntactPair, Tensor, Tensor], Tensor],
    score: Callable[[IntactPair, Tensor, Tensor], Tensor],
) -> tuple[Tensor, Tensor, Tensor]:
    """Raw per-pixel maps ``(B, H, W)`` of a sliding-window method for both images, and the sim.

    Items are (window position, image) pairs, position-major, over the ``2B`` images of
    :func:`~lightning_explain.methods._perturb.intact_pair`. ``build(pair, masks, img)`` turns the
    ``(k, 1, H, W)`` window masks and image indices ``(k,)`` of ``k`` items into their
    ``images_per_position * k`` perturbed images; ``score(pair, embeddings, img)`` turns their
    ``(images_per_position, k, D)`` embeddings into ``(k,)`` scores. Each pixel gets the mean
    score of the windows that cover it.
    """
    pair = intact_pair(ctx, batch_size)
    grid = _Grid(ctx.size, window, stride, ctx.device)
    n_img = pair.n_img

    def build_items(idx: Tensor) -> Tensor:
        return build(pair, grid.masks(idx // n_img), idx % n_img)

    def score_items(idx: Tensor, zo: Tensor) -> Tensor:
        return score(pair, zo, idx % n_img)

    n_items = grid.n_positions * n_img
    scores = chunked_scores(ctx, n_items, images_per_position, build_items, score_items, batch_size)
    raw = grid.to_pixels(scores.to(acc_dtype(pair.x)).view(grid.n_positions, n_img))
    return pair.split(raw)


_WindowMaps = Callable[[PairContext, int, int, float, int], tuple[Tensor, Tensor, Tensor]]


def _window_method(
    maps: _WindowMaps,
    owner: str,
    model: Model,
    x1: Tensor,
    x2: Tensor,
    options: tuple[object, object, object, object],
    similarity: Similarity,
) -> PairExplanation:
    """Check ``(window, stride, fill, batch_size)``, run ``maps`` in a pair context, normalise.

    ``batch_size=None`` is resolved per device by :meth:`PairContext.chunk_size`.
    """
    window, stride, fill, batch_size = _check_window_options(*options, owner)
    with pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx:
        h1, h2, sim = maps(ctx, window, stride, fill, ctx.chunk_size(batch_size))
        return ctx.finish(h1, h2, sim, minmax=True)


# --------------------------------------------------------------------------------------------------
# Conditional occlusion


def _conditional_occlusion_maps(
    ctx: PairContext, window: int, stride: int, fill: float, batch_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Raw per-pixel similarity drops ``(B, H, W)`` for both images, and the pair similarity."""

    def build(pair: IntactPair, mask: Tensor, img: Tensor) -> Tensor:
        return torch.where(mask, fill, pair.x[img])

    def score(pair: IntactPair, zo: Tensor, img: Tensor) -> Tensor:
        return pair.base(img) - pair.conditional_sims(ctx, zo[0], img)

    return _window_maps(ctx, window, stride, batch_size, 1, build, score)


def conditional_occlusion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    window: PositiveInt = 64,
    stride: PositiveInt = 8,
    fill: float = 0.0,
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

    Positions: the window is clamped to the image size along each axis (a 64 px window on a 32 px
    high image occludes whole columns). Offsets are ``0, stride, 2 * stride, ...``; when
    ``(H - window) % stride != 0`` one final position flush with the bottom (right) border is added,
    so the last rows (columns) are always covered. Non-square images are supported.

    Map: each pixel gets the mean drop of the windows that cover it (the attribution of captum's
    ``Occlusion``). The paper's code instead keeps the ``n_h x n_w`` grid of drops and upsamples it
    bilinearly, which moves scores away from their windows (at 224 px, window 64, stride 8, the
    first window is centred on pixel 32 but its score is drawn centred on pixel 5). The signed
    maps are then min-max normalised per map (paper HEAD) and scaled to max 1. Min-max puts the
    window that raises the similarity most at 0, so where some windows raise it (negative drops),
    windows with no effect at all land mid-scale, not at 0.

    Args:
        model: ``(N, C, H, W) -> (N, D)`` embedding model or callable.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        window: side of the square occluder in pixels (paper: 64 for 224 px images).
        stride: step between window positions in pixels (paper: 8).
        fill: value written into the window, in model-input space (0 is black for raw ``[0, 1]``
            inputs and the dataset mean for normalised inputs, as in the paper).
        similarity: ``"cosine"`` (paper), ``"dot"``, ``"neg_l2"`` or ``(z1, z2) -> (N,)``.
        batch_size: most images per forward pass. Default None: chosen from the device's memory
            (see :meth:`~lightning_explain._core.PairContext.chunk_size`).

    Returns:
        :class:`PairExplanation` with ``h1``, ``h2`` of shape ``(B, H, W)`` and ``sim`` ``(B,)``.

    Raises:
        TypeError: a non-integer ``window``/``stride``, a ``batch_size`` that is neither an int
            nor None, or a non-numeric ``fill``.
        ValueError: ``window``, ``stride`` or ``batch_size`` below 1, a non-finite ``fill``, or
            malformed images.

    Cost:
        ``2 + 2 * n_h * n_w`` forward passes per pair, no backward: 884 at 224 x 224 with the
        defaults (21 x 21 positions).
    """
    options = (window, stride, fill, batch_size)
    return _window_method(
        _conditional_occlusion_maps, "conditional_occlusion", model, x1, x2, options, similarity
    )


# --------------------------------------------------------------------------------------------------
# Context-agnostic conditional occlusion


def _context_agnostic_maps(
    ctx: PairContext, window: int, stride: int, fill: float, batch_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Raw per-pixel patch-embedding similarities ``(B, H, W)`` for both images, and the sim."""

    def build(pair: IntactPair, mask: Tensor, img: Tensor) -> Tensor:
        x = pair.x[img]
        alone = torch.where(mask, x, fill)  # B_p: only the window's pixels
        without = torch.where(mask, fill, x)  # M_p: the image with the window filled
        return torch.cat([alone, without])

    def score(pair: IntactPair, zo: Tensor, img: Tensor) -> Tensor:
        patch = zo[0] - zo[1]  # g_p = f(B_p) - f(M_p)
        return pair.conditional_sims(ctx, patch, img)

    return _window_maps(ctx, window, stride, batch_size, 2, build, score)


def context_agnostic_occlusion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    window: PositiveInt = 64,
    stride: PositiveInt = 8,
    fill: float = 0.0,
    similarity: Similarity = "cosine",
    batch_size: PositiveInt | None = None,
) -> PairExplanation:
    """Context-agnostic conditional occlusion (CACO): what a patch alone says about the partner.

    Sammani et al., arXiv 2206.09753 v1 (removed from the reference code in March 2023), section
    2.1 (b) of the project's paper digest. For every window position ``p`` of image ``x``::

        M_p = x with the window set to fill
        B_p = an all-fill image holding only the window's pixels of x
        g_p = f(B_p) - f(M_p)                    # the patch's own embedding
        h1[p] = s(g_p(x1), f(x2)),  h2[p] = s(f(x1), g_p(x2))

    No baseline is subtracted. Windows, positions (clamped window, extra flush position on the
    last row/column, non-square images) and the per-pixel map (mean over the covering windows) are
    as in :func:`conditional_occlusion`; the maps are min-max normalised and scaled to max 1.

    Args:
        model: ``(N, C, H, W) -> (N, D)`` embedding model or callable.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        window: side of the square window in pixels (paper: 64 for 224 px images).
        stride: step between window positions in pixels (paper: 8).
        fill: value of the removed pixels, in model-input space (paper: 0).
        similarity: ``"cosine"`` (paper), ``"dot"``, ``"neg_l2"`` or ``(z1, z2) -> (N,)``.
        batch_size: most images per forward pass. Default None: chosen from the device's memory
            (see :meth:`~lightning_explain._core.PairContext.chunk_size`).

    Returns:
        :class:`PairExplanation` with ``h1``, ``h2`` of shape ``(B, H, W)`` and ``sim`` ``(B,)``.

    Raises:
        TypeError: a non-integer ``window``/``stride``, a ``batch_size`` that is neither an int
            nor None, or a non-numeric ``fill``.
        ValueError: ``window``, ``stride`` or ``batch_size`` below 1, a non-finite ``fill``, or
            malformed images.

    Cost:
        ``2 + 4 * n_h * n_w`` forward passes per pair, no backward: 1766 at 224 x 224 with the
        defaults (21 x 21 positions, two images per position and image).
    """
    options = (window, stride, fill, batch_size)
    return _window_method(
        _context_agnostic_maps, "context_agnostic_occlusion", model, x1, x2, options, similarity
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
    temperature: float,
    credit: str,
    seed: int,
    batch_size: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Raw ``(B, H, W)`` vote maps of pairwise occlusion, and the pair similarity."""
    b = ctx.batch
    img_h, img_w = ctx.size
    sim = intact_pair(ctx, batch_size).sim
    gen = ctx.generator(seed)
    # Rectangles of x1 first, then of x2: independent draws, shape (2, B, N) each.
    top, left, h, w = erasing_boxes(gen, (2, b, n_erasures), ctx.size, scale, ratio)
    rows = _cover(top, h, img_h)  # (2, B, N, H)
    cols = _cover(left, w, img_w)  # (2, B, N, W)

    def build(idx: Tensor) -> Tensor:  # items are (pair, erasure), pair-major
        pair, n = idx // n_erasures, idx % n_erasures
        out = []
        for k, x in enumerate((ctx.x1, ctx.x2)):
            mask = rows[k, pair, n].unsqueeze(2) & cols[k, pair, n].unsqueeze(1)
            out.append(torch.where(mask.unsqueeze(1), fill, x[pair]))
        return torch.cat(out)

    def score(idx: Tensor, zo: Tensor) -> Tensor:
        drop = sim[idx // n_erasures] - ctx.similarity(zo[0], zo[1])
        x1_weaker = zo[0].norm(dim=1) < zo[1].norm(dim=1)
        return torch.stack([drop, x1_weaker.to(drop.dtype)], dim=1)

    scores = chunked_scores(ctx, b * n_erasures, 2, build, score, batch_size)
    acc = acc_dtype(ctx.x1)
    drops = scores[:, 0].to(acc).view(b, n_erasures)
    weights = torch.softmax(drops / temperature, dim=1)  # (B, N)
    if credit == "norm":
        to_x1 = scores[:, 1].view(b, n_erasures).to(torch.bool)
        c1 = torch.where(to_x1, weights, 0.0)
        c2 = torch.where(to_x1, 0.0, weights)
    else:
        c1 = c2 = weights
    raw1 = torch.einsum("bn,bnh,bnw->bhw", c1, rows[0].to(acc), cols[0].to(acc))
    raw2 = torch.einsum("bn,bnh,bnw->bhw", c2, rows[1].to(acc), cols[1].to(acc))
    return raw1, raw2, sim


def pairwise_occlusion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    n_erasures: PositiveInt = 100,
    scale: tuple[float, float] = (0.1, 0.3),
    ratio: tuple[float, float] = (1.0, 1.5),
    fill: float = 0.0,
    temperature: PositiveFloat = 1.0,
    credit: Credit = "norm",
    seed: NonNegativeInt = 0,
    similarity: Similarity = "cosine",
    batch_size: PositiveInt | None = None,
) -> PairExplanation:
    """Pairwise occlusion (PO): random erasures of both images at once, voted by the drop.

    Sammani et al., "Visualizing and Understanding Contrastive Learning", IEEE TIP (arXiv
    2206.09753), section 2.1 (c) of the project's paper digest. For ``n = 1..N`` one rectangle of
    ``x1`` and one of ``x2`` are erased together (drawn independently, as
    ``torchvision.transforms.RandomErasing(p=1, scale, ratio, value=fill)``; see
    :func:`erasing_boxes`)::

        d_n = s(f(x1), f(x2)) - s(f(x1^n), f(x2^n))
        w   = softmax(d / temperature) over n          # paper: temperature 1
        h1  = sum_n c1_n * w_n * [pixel erased in x1^n], likewise h2

    Each map is then divided by its maximum (paper). Rectangles come from a generator seeded with
    ``seed``, independently per pair: a pair's rectangles depend on ``seed`` and on its index in
    the batch.

    Credit ``c``: ``"norm"`` (default, the paper code's heuristic): only the image whose erased
    embedding has the smaller L2 norm gets the vote (``c1_n = [||f(x1^n)|| < ||f(x2^n)||]``,
    ``c2_n = 1 - c1_n``). In the paper's setting (two views of one image, a trained, centred
    embedding) it localises well: on a centred model that only sees the left half of the image,
    63-79% of each map's mass falls on the left half at ``temperature=1``. It compares the norms of
    two different images, so for unrelated pairs or an untrained model (all embeddings pointing the
    same way) it can send every vote to one image and leave the other map empty. ``"both"`` adds
    ``w_n`` to the erased rectangles of both images: it never empties a map, but it also credits
    the erasure that did not cause the drop, so its maps are flatter (about 50% left-half mass at
    ``temperature=1`` on the same model).

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
        temperature: softmax temperature over the drops (paper: 1). Cosine drops are small, so at
            temperature 1 the weights are close to uniform and the map is mostly erasure coverage;
            a smaller temperature sharpens the vote.
        credit: ``"norm"`` (paper code, default) or ``"both"``, see above.
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
            unordered, ``ratio`` not positive or unordered, ``temperature <= 0``, unknown
            ``credit``, ``batch_size < 1``) or malformed images.

    Cost:
        ``2 + 2 * n_erasures`` forward passes per pair, no backward: 202 with the defaults.
    """
    owner = "pairwise_occlusion"
    n_erasures = check_positive_int(n_erasures, name="n_erasures", owner=owner)
    scale = check_range(scale, name="scale", owner=owner, upper=1.0)
    ratio = check_range(ratio, name="ratio", owner=owner, upper=None)
    fill = check_real(fill, name="fill", owner=owner)
    temperature = check_real(temperature, name="temperature", owner=owner)
    if temperature <= 0:
        raise ValueError(f"`{owner}`: expected `temperature` > 0, but got {temperature!r}.")
    credit = check_literal(credit, Credit, name="credit", owner=owner)
    seed = check_positive_int(seed, name="seed", owner=owner, minimum=0)
    batch_size = check_batch_size(batch_size, owner=owner)
    with pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx:
        chunk = ctx.chunk_size(batch_size)
        h1, h2, sim = _pairwise_occlusion_maps(
            ctx, n_erasures, scale, ratio, fill, temperature, credit, seed, chunk
        )
        return ctx.finish(h1, h2, sim)
