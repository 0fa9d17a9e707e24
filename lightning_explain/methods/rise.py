"""RISE for image pairs: randomised input sampling, scored by the pair similarity.

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models",
BMVC 2018 (arXiv 1806.07421), applied to the pair similarity ``s(f(x1), f(x2))`` in the
conditional way of Sammani et al. (arXiv 2206.09753): one image is masked while its partner stays
intact. RISE is not part of the paper's code; it is offered as a black-box baseline.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

import torch
from torch import Tensor

from lightning_explain._checks import (
    Bounds,
    NonNegativeInt,
    PositiveInt,
    check_batch_size,
    check_literal,
    check_positive_int,
    check_real,
)
from lightning_explain._core import Model, PairContext, pair_context
from lightning_explain.explanation import PairExplanation
from lightning_explain.methods._perturb import acc_dtype, chunked_scores, intact_pair
from lightning_explain.similarity import SimilarityFn

__all__ = ["Estimator", "rise", "rise_mask_params", "rise_masks"]

Estimator = Literal["baseline", "paper"]
"""How RISE weights its masks: ``"baseline"`` (default) by the similarity minus its mean over
the masks, normalised by each pixel's mask coverage; ``"paper"`` by the raw similarity, as in
RISE."""

_ACCUMULATE_CHUNK = 64
"""Masks per step when summing masks into the maps (fixed, so results do not depend on
``batch_size``)."""

_KEEP_MASKS_BYTES = 64 * 2**20
"""All masks of a call are built once and kept (for the forwards and the sums) when they take at
most this much memory; otherwise each chunk builds its own, and the sums build them again."""


def rise_mask_params(
    generator: torch.Generator, n_masks: int, cell: int, p_keep: float, size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Draw the random part of RISE masks: binary ``cell x cell`` grids and shifts.

    Args:
        generator: source of randomness (on the device the masks are wanted on).
        n_masks: number of masks ``N``.
        cell: grid side ``s`` (RISE: 8 for 224 px images).
        p_keep: probability that a grid cell is kept (1) rather than masked (0).
        size: image size ``(H, W)``.

    Returns:
        ``grids`` ``(N, s, s)`` float tensor of 0/1 and ``shifts`` ``(N, 2)`` int64 tensor of
        ``(dy, dx)`` offsets, ``0 <= dy < ceil(H / s)`` and ``0 <= dx < ceil(W / s)``.
    """
    device = generator.device
    grids = (torch.rand(n_masks, cell, cell, generator=generator, device=device) < p_keep).float()
    cells = torch.tensor([math.ceil(size[0] / cell), math.ceil(size[1] / cell)], device=device)
    u = torch.rand(n_masks, 2, generator=generator, device=device)
    shifts = torch.minimum(torch.floor(u * cells).long(), cells - 1)
    return grids, shifts


def _linear_resize_matrix(
    src: int, dst: int, *, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """``(dst, src)`` matrix of 1-D linear interpolation from ``src`` to ``dst`` samples.

    Pixel-centre aligned (``align_corners=False``) with mirror boundary handling (``d c b | a b c d``),
    i.e. ``skimage.transform.resize(order=1, mode="reflect", anti_aliasing=False)``, the resize of
    the RISE reference code. (``F.interpolate`` clamps at the border instead, which changes the
    outer half cell of every mask by up to about 0.6.)
    """
    u = (torch.arange(dst, dtype=torch.float64) + 0.5) * src / dst - 0.5  # built on the CPU
    i0 = torch.floor(u).long()
    t = u - i0

    def mirror(i: Tensor) -> Tensor:
        i = torch.where(i < 0, -i, i)
        i = torch.where(i > src - 1, 2 * (src - 1) - i, i)
        return i.clamp(0, src - 1)

    rows = torch.arange(dst)
    out = torch.zeros(dst, src, dtype=torch.float64)
    out.index_put_((rows, mirror(i0)), 1 - t, accumulate=True)
    out.index_put_((rows, mirror(i0 + 1)), t, accumulate=True)
    return out.to(device=device, dtype=dtype)


def rise_masks(grids: Tensor, shifts: Tensor, size: tuple[int, int]) -> Tensor:
    """Smooth RISE masks ``(k, H, W)`` in ``[0, 1]`` from ``(k, s, s)`` grids and ``(k, 2)`` shifts.

    As in RISE: each grid is resized linearly to ``(s + 1) * ceil(H / s)`` by
    ``(s + 1) * ceil(W / s)`` pixels (mirror boundary, as ``skimage.transform.resize`` with
    ``order=1, mode="reflect"``) and an ``H x W`` window is cropped at offset ``shifts``. The
    resize is separable, so each mask is ``A_h[rows] @ grid @ A_w[cols].T`` and the full upsampled
    grid is never built.
    """
    return _MaskMaker(grids, shifts, size)(slice(0, grids.shape[0]))


class _MaskMaker:
    """RISE masks of any range of mask indices, with the resize matrices built once."""

    def __init__(self, grids: Tensor, shifts: Tensor, size: tuple[int, int]):
        img_h, img_w = size
        s = grids.shape[-1]
        dev, dt = grids.device, grids.dtype
        resize_h = _linear_resize_matrix(s, (s + 1) * math.ceil(img_h / s), device=dev, dtype=dt)
        resize_w = _linear_resize_matrix(s, (s + 1) * math.ceil(img_w / s), device=dev, dtype=dt)
        self.grids = grids
        self.resize_h, self.resize_w = resize_h, resize_w
        self.rows = torch.arange(img_h, device=dev)
        self.cols = torch.arange(img_w, device=dev)
        self.shifts = shifts

    def __call__(self, part: slice) -> Tensor:
        """``(k, H, W)`` masks of the mask indices ``part``."""
        shifts = self.shifts[part]
        rows = shifts[:, 0:1] + self.rows  # (k, H)
        cols = shifts[:, 1:2] + self.cols  # (k, W)
        return torch.einsum(
            "kyi,kij,kxj->kyx", self.resize_h[rows], self.grids[part], self.resize_w[cols]
        )


def _rise_maps(
    ctx: PairContext,
    n_masks: int,
    cell: int,
    p_keep: float,
    seed: int,
    batch_size: int,
    estimator: str = "baseline",
) -> tuple[Tensor, Tensor, Tensor]:
    """Raw ``(B, H, W)`` RISE saliency of both images, and the pair similarity."""
    pair = intact_pair(ctx, batch_size)
    x, n_img = pair.x, pair.n_img
    acc = acc_dtype(x)
    grids, shifts = rise_mask_params(ctx.generator(seed), n_masks, cell, p_keep, ctx.size)
    maker = _MaskMaker(grids.to(acc), shifts, ctx.size)
    fits = n_masks * ctx.size[0] * ctx.size[1] * torch.finfo(acc).bits // 8 <= _KEEP_MASKS_BYTES
    kept = maker(slice(0, n_masks)) if fits else None

    def make_masks(part: slice) -> Tensor:
        return maker(part) if kept is None else kept[part]

    def build(masks: slice, images: slice, out: Tensor) -> None:  # items are (mask, image)
        weight = make_masks(masks).to(x.dtype)[:, None, None]  # (k, 1, 1, H, W)
        torch.mul(x[images].unsqueeze(0), weight, out=out[0])

    def score(idx: Tensor, zo: Tensor) -> Tensor:
        return pair.conditional_sims(ctx, zo[0], idx % n_img)

    sims = chunked_scores(ctx, n_masks, n_img, 1, build, score, batch_size)
    sims = sims.to(acc).view(n_masks, n_img)
    if estimator != "paper":
        sims = sims - sims.mean(dim=0, keepdim=True)
    raw = torch.zeros(n_img, *ctx.size, dtype=acc, device=ctx.device)
    coverage = torch.zeros(ctx.size, dtype=acc, device=ctx.device)
    for start in range(0, n_masks, _ACCUMULATE_CHUNK):
        part = slice(start, min(n_masks, start + _ACCUMULATE_CHUNK))
        masks = make_masks(part)
        raw += torch.einsum("mj,mhw->jhw", sims[part], masks)
        coverage += masks.sum(0)
    if estimator == "paper":
        raw /= n_masks * p_keep
    else:
        raw /= coverage.clamp(min=torch.finfo(acc).tiny)
    return pair.split(raw)


def rise(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    n_masks: PositiveInt = 1000,
    cell: PositiveInt = 8,
    p_keep: Annotated[float, Bounds(0.0, 1.0, exclusive_minimum=True)] = 0.5,
    estimator: Estimator = "baseline",
    seed: NonNegativeInt = 0,
    similarity: Union[str, SimilarityFn] = "cosine",
    batch_size: PositiveInt | None = None,
) -> PairExplanation:
    """RISE for pairs: masks weighted by the similarity of the masked image to its intact partner.

    Petsiuk et al., BMVC 2018 (arXiv 1806.07421), conditioned on the partner as in Sammani et al.
    (arXiv 2206.09753). ``N`` random binary ``cell x cell`` grids (each cell kept with probability
    ``p_keep``) are resized linearly to ``(cell + 1) * ceil(H / cell)`` by
    ``(cell + 1) * ceil(W / cell)`` pixels (mirror boundary, as the RISE code's
    ``skimage.transform.resize``) and cropped at a random shift, giving smooth masks
    ``M_n`` in ``[0, 1]`` (see :func:`rise_masks`). With ``s1_n = s(f(x1 * M_n), f(x2))`` (and
    ``s2_n = s(f(x1), f(x2 * M_n))`` for ``h2``)::

        estimator="baseline" (default):  h1 = sum_n (s1_n - mean_m s1_m) * M_n / sum_n M_n
        estimator="paper" (RISE):        h1 = sum_n s1_n * M_n / (N * p_keep)

    Deviates from RISE by default because its estimator weights each mask by the raw
    similarity: the map is then the mask coverage (which varies by a few per cent between
    pixels) times the mean similarity plus the small signal, and where the similarity varies
    little under masking the coverage noise wins. On the known-evidence models with similarities
    above 0.999 (an untrained network's), at 32 px, the paper's estimator puts 59% (left half),
    21% (a fixed quarter patch) and 14% (an object) of the top-quartile pixels in the evidence,
    the baseline-subtracted, coverage-normalised one 98%, 88% and 90%; on centred models both
    localise (97-98% on the left half). Measured by ``python -m tests.ground_truth.table``
    (docs/methods/localisation). The cost is the same.

    Sizes: ``cell`` counts grid cells per side, so a cell is ``H / cell`` pixels at every image
    size (28 px at 224 px, 4 px at 32 px); no pixel default needs scaling.

    The same masks serve every pair and both directions, so swapping ``x1`` and ``x2`` swaps the
    maps. The maps are min-max normalised and scaled to max 1 (the constant offset of RISE maps
    carries no information).

    Args:
        model: ``(N, C, H, W) -> (N, D)`` embedding model or callable.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        n_masks: number of random masks ``N`` (RISE uses 4000-8000 for ImageNet classifiers).
        cell: side ``s`` of the low-resolution grid (RISE: 8 at 224 px).
        p_keep: probability of keeping a grid cell, in ``(0, 1]`` (RISE: 0.5).
        estimator: ``"baseline"`` (default) or ``"paper"`` (RISE's raw-similarity weights), see
            above.
        seed: seed of the mask generator.
        similarity: ``"cosine"`` (paper), ``"dot"``, ``"neg_l2"`` or ``(z1, z2) -> (N,)``.
        batch_size: most images per forward pass. Default None: chosen from the device's memory
            (see :meth:`~lightning_explain._core.PairContext.chunk_size`).

    Returns:
        :class:`PairExplanation` with ``h1``, ``h2`` of shape ``(B, H, W)`` and ``sim`` ``(B,)``.

    Raises:
        TypeError: a wrongly typed option (``batch_size`` must be an int or None).
        ValueError: ``n_masks``, ``cell`` or ``batch_size`` below 1, ``p_keep`` outside
            ``(0, 1]``, an unknown ``estimator``, a negative ``seed``, or malformed images.

    Cost:
        ``2 + 2 * n_masks`` forward passes per pair, no backward: 2002 with the defaults.
    """
    owner = "rise"
    n_masks = check_positive_int(n_masks, name="n_masks", owner=owner)
    cell = check_positive_int(cell, name="cell", owner=owner)
    p_keep = check_real(p_keep, name="p_keep", owner=owner)
    if not 0.0 < p_keep <= 1.0:
        raise ValueError(f"`{owner}`: expected `p_keep` in (0, 1], but got {p_keep!r}.")
    estimator = check_literal(estimator, Estimator, name="estimator", owner=owner)
    seed = check_positive_int(seed, name="seed", owner=owner, minimum=0)
    batch_size = check_batch_size(batch_size, owner=owner)
    with pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx:
        chunk = ctx.chunk_size(batch_size)
        h1, h2, sim = _rise_maps(ctx, n_masks, cell, p_keep, seed, chunk, estimator)
        return ctx.finish(h1, h2, sim, minmax=True)
