"""Shared machinery of the pairwise faithfulness metrics: option types and their checks,
substrates, pixel ranks, the chunked perturbation engine, the curve area, and the family protocol
through which the functions, the metric classes and :func:`~lightning_explain.metrics.evaluate`
run every metric.

Nothing here loops over pairs. The perturbation engine walks over chunks of the flattened
``(pairs x steps)`` grid; every chunk builds its perturbed images with broadcast ``torch.lerp``
calls weighted by a 0/1 comparison of the rank tensor (one per rectangular block of the grid), in
buffers reused by every chunk, and embeds them in one forward pass.

**Families.** Each file of ``metrics/functional/`` holds the maths of one family of metrics in two
helpers, ``_<family>_update(inputs, requests) -> state`` (every forward pass that the requested
metrics of the family need, shared between them) and ``_<family>_compute(state, options) ->
(scores, curve)`` (the formula of one metric), and publishes them as a :class:`MetricFamily` named
``FAMILY``. The registry row of a metric key names the family file and the family's options for
that key. :func:`score_maps` and :func:`score_pairs` run any mix of requests with one ``update``
per family; the public functions, the metric classes and ``evaluate`` all go through them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
import torch
from torch import Tensor

from lightning_explain._checks import (
    check_batch_size,
    check_literal,
    check_real,
    describe,
    literal_choices,
)
from lightning_explain._core import (
    Model,
    PairContext,
    check_embedding,
    check_heatmap,
    gaussian_blur,
    grid_blocks,
    pair_context,
    relative_blur,
    upsample_maps,
)
from lightning_explain.explanation import PairExplanation
from lightning_explain.similarity import SimilarityFn

__all__ = [
    "BLUR_KERNEL",
    "BLUR_SIGMA",
    "Comparison",
    "Direction",
    "MapInputs",
    "MetricFamily",
    "Mode",
    "PairInputs",
    "Scored",
    "Side",
    "Substrate",
    "SubstrateName",
    "Ties",
    "Track",
    "auc",
    "blur",
    "check_direction",
    "check_intact",
    "check_mode",
    "check_second_map",
    "check_substrate",
    "check_ties",
    "intact_embeddings",
    "make_substrate",
    "mean_of_sides",
    "minmax_mask",
    "perturbation_curves",
    "perturbed_sides",
    "pixel_ranks",
    "prepare_map",
    "relative_drop",
    "resolve_batch_size",
    "score_maps",
    "score_pairs",
    "similarity",
    "unpack_explanation",
]

Mode = Literal["simultaneous", "conditional"]
"""``"simultaneous"``: both images perturbed at each step, each by its own map.
``"conditional"``: one image perturbed while the other stays intact as the condition (which one:
:data:`Direction`)."""

Direction = Literal["both", "x1", "x2"]
"""Which image a conditional metric perturbs. ``"both"`` (the default everywhere): the mean of the
two directions, ``x1`` perturbed by ``h1`` with ``x2`` intact as the condition and ``x2`` perturbed
by ``h2`` with ``x1`` intact; ``"x1"``: only ``x1`` perturbed (``x2`` intact); ``"x2"``: only ``x2``
perturbed (``x1`` intact). Simultaneous metrics perturb both images anyway and ignore it.

Why ``"both"``: the paper's code is direction-agnostic (it scores whichever image it is given, and
the paper does not say which one its tables perturbed); the mean of both directions makes a
conditional score symmetric under swapping the pair, as the simultaneous scores are."""

Side = Literal["x1", "x2"]
"""One perturbed image of a conditional metric."""

Ties = Literal["raster", "paper"]
"""How insertion/deletion orders pixels of equal saliency. ``"raster"`` (default): ties in raster
order (row-major, earlier first), the same on every device. ``"paper"``: the authors' order,
``torch.flip(torch.argsort(h), dims=[-1])``: descending, ties in the reverse of the order that
torch's default (unstable) sort leaves them in. That order is not a documented rule: it depends on
the device, the dtype and the torch version (on CPU with torch 2.14 it is neither raster nor
reverse raster). It only matters for maps with ties, e.g. the exact zeros of clamped maps."""

SubstrateName = Literal["blur", "zero", "mean"]
"""The named substrates: the blurred image, zeros, each image's per-channel mean."""

Substrate = Union[SubstrateName, float]
"""What a perturbed pixel becomes (deletion) or starts from (insertion): a name or a constant."""

BLUR_KERNEL = 11
"""Kernel of the paper's substrate blur at its 224 px reference size (scaled by :func:`blur`)."""
BLUR_SIGMA = 5.0
"""Sigma of the paper's substrate blur at 224 px (scaled by :func:`blur`)."""

_MODE_HINT = (
    "'simultaneous' perturbs both images at each step; 'conditional' perturbs one image while "
    "the other stays intact (which one: `direction`)."
)
_DIRECTION_HINT = (
    "'both' averages the two conditional directions, 'x1' perturbs only x1 (x2 intact), 'x2' only "
    "x2 (x1 intact)."
)
_SIDES: dict[str, tuple[Side, ...]] = {"both": ("x1", "x2"), "x1": ("x1",), "x2": ("x2",)}


# --------------------------------------------------------------------------------------------------
# Argument checks


def check_mode(mode: object, *, owner: str) -> Mode:
    """Return ``mode`` if it is one of :data:`Mode`; otherwise raise a ``ValueError``."""
    checked: Mode = check_literal(mode, Mode, name="mode", owner=owner, hint=_MODE_HINT)
    return checked


def check_direction(direction: object, *, owner: str) -> Direction:
    """Return ``direction`` if it is one of :data:`Direction`; otherwise raise a ``ValueError``."""
    checked: Direction = check_literal(
        direction, Direction, name="direction", owner=owner, hint=_DIRECTION_HINT
    )
    return checked


def check_substrate(substrate: object, *, owner: str) -> Substrate:
    """Return ``substrate`` if it is a name of :data:`SubstrateName` or a finite number (as
    float); otherwise raise (``ValueError`` for an unknown name, ``TypeError`` for another type)."""
    if isinstance(substrate, str):
        name: SubstrateName = check_literal(
            substrate, SubstrateName, name="substrate", owner=owner, hint="Or pass a number."
        )
        return name
    if isinstance(substrate, (int, float)) and not isinstance(substrate, bool):
        return check_real(substrate, name="substrate", owner=owner)
    names = ", ".join(repr(c) for c in literal_choices(SubstrateName))
    raise TypeError(
        f"`{owner}`: expected `substrate` to be one of {names} or a number, but got "
        f"{describe(substrate)}."
    )


def check_second_map(h2: object, *, mode: Mode, direction: Direction, owner: str) -> None:
    """Raise a ``ValueError`` if ``h2`` is None although ``mode``/``direction`` perturb ``x2``."""
    if h2 is not None or (mode == "conditional" and direction == "x1"):
        return
    if mode == "simultaneous":
        raise ValueError(
            f"`{owner}`: mode='simultaneous' perturbs both images, so it needs `h2`, but got None."
        )
    raise ValueError(
        f"`{owner}`: mode='conditional' with direction={direction!r} perturbs x2 by its map, so it "
        'needs `h2`, but got None. Pass `h2`, or `direction="x1"` to perturb x1 only (x2 intact).'
    )


def perturbed_sides(direction: Direction) -> tuple[Side, ...]:
    """The perturbed images of a conditional metric: ``("x1", "x2")`` for ``"both"``, else one."""
    return _SIDES[direction]


def mean_of_sides(values: Sequence[Tensor]) -> Tensor:
    """The value of one side, or ``0.5 * (x1 side + x2 side)`` for both directions."""
    if len(values) == 1:
        return values[0]
    first, second = values
    return 0.5 * (first + second)


def resolve_batch_size(batch_size: object, ctx: PairContext) -> int:
    """``batch_size`` if given (a positive int), else the device default of
    :meth:`~lightning_explain._core.PairContext.chunk_size`: on CUDA a quarter of the free device
    memory over an activation estimate, at most 1024 images; elsewhere a 256 MiB budget, at most
    256 images (256 at 32 px, 85 at 64 px, 6 at 224 px, where small chunks run faster on a CPU).
    """
    return ctx.chunk_size(check_batch_size(batch_size, owner=ctx.owner))


def prepare_map(h: object, x: Tensor, *, name: str, owner: str) -> Tensor:
    """Validate a ``(B, h, w)`` map for images ``x`` and upsample it bilinearly to ``(B, H, W)``."""
    checked = check_heatmap(h, x, name=name, owner=owner)
    return upsample_maps(checked, (int(x.shape[2]), int(x.shape[3])))


def unpack_explanation(explanation: object, *, owner: str) -> tuple[Tensor, Tensor]:
    """``(h1, h2)`` from a :class:`PairExplanation` or a ``(h1, h2)`` tuple."""
    if isinstance(explanation, PairExplanation):
        return explanation.h1, explanation.h2
    if isinstance(explanation, (tuple, list)) and len(explanation) == 2:
        h1, h2 = explanation
        if isinstance(h1, Tensor) and isinstance(h2, Tensor):
            return h1, h2
    raise TypeError(
        f"`{owner}`: expected `explanation` to be a PairExplanation (from "
        f"`lightning_explain.explain`) or a tuple (h1, h2) of (B, H, W) tensors, but got "
        f"{type(explanation).__name__}."
    )


def check_intact(intact: object, ctx: PairContext) -> tuple[Tensor, Tensor]:
    """Validate given ``intact=(z1, z2)`` embeddings of the unperturbed pair: ``(B, D)`` each."""
    owner = ctx.owner
    if not isinstance(intact, (tuple, list)) or len(intact) != 2:
        raise TypeError(
            f"`{owner}`: expected `intact` to be a tuple (z1, z2) of (B, D) embeddings of the "
            f"unperturbed images, or None, but got {describe(intact)}."
        )
    checked: list[Tensor] = []
    for name, z, x in (("z1", intact[0], ctx.x1), ("z2", intact[1], ctx.x2)):
        if not isinstance(z, Tensor) or not z.is_floating_point():
            raise TypeError(
                f"`{owner}`: expected `intact[{len(checked)}]` ({name}) to be a float tensor, "
                f"but got {describe(z)}."
            )
        checked.append(check_embedding(z.detach().to(ctx.device, torch.float32), x, owner=owner))
    if checked[0].shape != checked[1].shape:
        raise ValueError(
            f"`{owner}`: expected `intact` embeddings of one shape (B, D), but got "
            f"{tuple(checked[0].shape)} and {tuple(checked[1].shape)}."
        )
    return checked[0], checked[1]


def intact_embeddings(ctx: PairContext, batch_size: int) -> tuple[Tensor, Tensor]:
    """The ``(B, D)`` embeddings ``(z1, z2)`` of the unperturbed images, in one chunked pass."""
    z = ctx.embed_chunked(torch.cat([ctx.x1, ctx.x2]), batch_size)
    return z[: ctx.batch], z[ctx.batch :]


# --------------------------------------------------------------------------------------------------
# Substrates and maps


def blur(x: Tensor) -> Tensor:
    """The paper's Gaussian blur of ``(B, C, H, W)`` images, scaled to the image size.

    The paper blurs its 224 px images with kernel 11, sigma 5 (:data:`BLUR_KERNEL`,
    :data:`BLUR_SIGMA`). Here both are relative to that reference and scaled by the shorter side
    ``s = min(H, W)`` (:func:`~lightning_explain._core.relative_blur`): kernel ``11 * s / 224``
    rounded to the nearest odd size, at least 3, sigma ``5 * s / 224``. That is k=11, sigma=5 at
    224 px (bitwise the paper's blur), k=3, sigma=1.43 at 64 px and k=3, sigma=0.71 at 32 px, so
    the substrate keeps the same share of the image's detail at every size (an 11 px, sigma 5 blur
    of a 32 px image would wash out a sixth of its side per sigma). On images smaller than 2
    pixels on a side the kernel shrinks to ``2 * min(H, W) - 1``, which reflect padding allows.
    """
    kernel, sigma = relative_blur(
        min(int(x.shape[-2]), int(x.shape[-1])), kernel=BLUR_KERNEL, sigma=BLUR_SIGMA
    )
    if kernel <= 1:
        return x.clone()
    return gaussian_blur(x, kernel, sigma)


def _channel_mean(x: Tensor) -> Tensor:
    return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()


_SUBSTRATES: dict[str, Callable[[Tensor], Tensor]] = {
    "blur": blur,
    "zero": torch.zeros_like,
    "mean": _channel_mean,
}


def make_substrate(x: Tensor, substrate: Substrate) -> Tensor:
    """The ``(B, C, H, W)`` substrate image of each image in ``x`` (``substrate`` checked by
    :func:`check_substrate`).

    ``"blur"``: the blurred image (k=11, sigma=5 at 224 px, scaled to the size, see
    :func:`blur`); ``"zero"``: zeros (black for [0, 1] inputs, the
    dataset mean for normalised inputs); ``"mean"``: each image's per-channel mean; a number: that
    constant.
    """
    if isinstance(substrate, str):
        return _SUBSTRATES[substrate](x)
    return torch.full_like(x, float(substrate))


def check_ties(ties: object, *, owner: str) -> Ties:
    """Return ``ties`` if it is one of :data:`Ties`; otherwise raise a ``ValueError``."""
    checked: Ties = check_literal(
        ties,
        Ties,
        name="ties",
        owner=owner,
        hint="'raster' breaks ties in raster order; 'paper' as the authors' code does.",
    )
    return checked


def pixel_ranks(h: Tensor, ties: Ties = "raster") -> Tensor:
    """Rank of every pixel of ``(B, H, W)`` maps in descending saliency: ``(B, H * W)`` int64.

    Rank 0 is the most salient pixel. ``ties="raster"``: ties are broken in raster order
    (row-major, earlier first), via a stable descending sort; ``"paper"``: see :data:`Ties`.
    """
    flat = h.flatten(1)
    if ties == "paper":
        order = torch.flip(torch.argsort(flat, dim=1), dims=[1])
    else:
        order = _raster_order(flat)
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=h.device).expand_as(order)
    ranks.scatter_(1, order, positions)
    return ranks


_EXACT_IN_FLOAT32 = (torch.float32, torch.float16, torch.bfloat16)


def _raster_order(flat: Tensor) -> Tensor:
    """Pixel indices of ``(B, N)`` values in descending order, ties in index order: ``(B, N)``.

    What ``torch.argsort(flat, dim=1, descending=True, stable=True)`` returns. On a CPU, for
    values of at most 32 bits without NaN, it is computed as numpy's sort of one unique int64 key per
    pixel (the value's order-preserving bits, negated, times ``N``, plus the index), whose
    vectorised quicksort is several times faster than torch's stable sort on a CPU (measured in
    ``docs/performance.md``). Keys are unique, so the order is the stable one, whatever the sort
    algorithm. Other devices and dtypes (float64) use torch's sort.
    """
    n = int(flat.shape[1])
    if (
        flat.device.type != "cpu"
        or flat.dtype not in _EXACT_IN_FLOAT32
        or n >= 2**31
        or bool(torch.isnan(flat).any())
    ):
        return torch.argsort(flat, dim=1, descending=True, stable=True)
    # + 0.0 turns -0.0 into 0.0 (equal values, one key); float16/bfloat16 widen exactly.
    bits = (flat.detach().to(torch.float32) + 0.0).view(torch.int32).to(torch.int64)
    # Order-preserving integers: flip the magnitude bits of negative values.
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    key = (-ordered) * n + torch.arange(n, dtype=torch.int64)
    return torch.from_numpy(np.sort(key.numpy(), axis=1) % n)


def minmax_mask(h: Tensor) -> Tensor:
    """Min-max normalise ``(B, H, W)`` maps to [0, 1]; a constant map becomes all zeros."""
    flat = h.flatten(1)
    low = flat.amin(dim=1).view(-1, 1, 1)
    span = (flat.amax(dim=1) - flat.amin(dim=1)).view(-1, 1, 1)
    scaled = (h - low) / span.clamp(min=torch.finfo(h.dtype).tiny)
    return torch.where(span > 0, scaled, torch.zeros_like(h))


def relative_drop(base: Tensor, out: Tensor) -> Tensor:
    """Average-Drop term per pair: ``max(0, b - o) / |b|``; for ``b == 0`` it is ``1[o < b]``.

    For ``b > 0`` this is the paper's ``max(0, b - o) / b``.
    """
    diff = (base - out).clamp(min=0)
    safe = base.abs().clamp(min=torch.finfo(base.dtype).tiny)
    return torch.where(base != 0, diff / safe, (out < base).to(base.dtype))


def auc(curve: Tensor) -> Tensor:
    """Normalised trapezoid area of ``(B, T + 1)`` curves over x in [0, 1]: ``(B,)``."""
    n_steps = curve.shape[1] - 1
    if n_steps == 0:
        return curve[:, 0].clone()
    return torch.trapezoid(curve, dx=1.0 / n_steps, dim=1)


def similarity(ctx: PairContext, za: Tensor, zb: Tensor) -> Tensor:
    """``ctx.similarity`` with a check that a custom similarity returns ``(N,)``."""
    sim = ctx.similarity(za, zb)
    if not isinstance(sim, Tensor) or sim.shape != (za.shape[0],):
        shape = tuple(sim.shape) if isinstance(sim, Tensor) else type(sim).__name__
        raise ValueError(
            f"`{ctx.owner}`: expected `similarity` to map two (N, D) embedding batches to (N,) "
            f"with N={za.shape[0]}, but got {shape}."
        )
    return sim


# --------------------------------------------------------------------------------------------------
# The perturbation engine


@dataclass(frozen=True)
class Track:
    """A sequence of perturbed images per pair.

    At step ``t`` (``0 <= t <= n_steps``) the image of pair ``b`` is ``finish[b]`` at pixels with
    ``rank[b] < t * k`` and ``start[b]`` elsewhere, all channels together, ``k = ceil(H*W / n_steps)``.

    Attributes:
        start: ``(B, C, H, W)`` images at step 0.
        finish: ``(B, C, H, W)`` images the ranked pixels are taken from.
        rank: ``(B, H * W)`` pixel ranks (see :func:`pixel_ranks`).
        intact: ``(end, z)`` when one end of the track is the unperturbed image whose ``(B, D)``
            embeddings ``z`` are already known: ``end`` is ``"start"`` (deletion: step 0) or
            ``"finish"`` (insertion: step ``n_steps``). That step is then not embedded again.
    """

    start: Tensor
    finish: Tensor
    rank: Tensor
    intact: tuple[Literal["start", "finish"], Tensor] | None = None


@dataclass(frozen=True)
class Comparison:
    """One similarity curve: track ``track`` against track ``other`` at the same step
    (simultaneous), or against the fixed ``(B, D)`` embeddings ``condition`` (conditional)."""

    track: int
    other: int | None = None
    condition: Tensor | None = None


def _intact_ends(
    tracks: Sequence[Track], comparisons: Sequence[Comparison]
) -> list[tuple[Literal["start", "finish"], Tensor]] | None:
    """Every track's :attr:`Track.intact` if all are known and both tracks of every simultaneous
    comparison have it at the same end (so that the remaining steps line up); else None."""
    ends = [tr.intact for tr in tracks]
    known = [e for e in ends if e is not None]
    if not tracks or len(known) != len(ends):
        return None
    for comp in comparisons:
        if comp.other is not None and known[comp.track][0] != known[comp.other][0]:
            return None
    return known


def perturbation_curves(
    ctx: PairContext,
    tracks: Sequence[Track],
    comparisons: Sequence[Comparison],
    *,
    n_steps: int,
    batch_size: int,
) -> list[Tensor]:
    """Similarity curves ``(B, n_steps + 1)``, one per comparison, in chunked forward passes.

    The flattened ``(pairs x steps)`` grid is walked in chunks of ``batch_size // len(tracks)``
    items; each chunk writes the perturbed images of every track into one buffer, with one
    broadcast ``torch.lerp`` per rectangular block of pairs x steps (no per-item gathers; 0/1
    weights from one comparison of the ranks, so the pixels are exactly ``start`` or ``finish``
    for finite images), in image and weight buffers reused by every chunk, and
    embeds them together (split into forwards of at most ``batch_size`` images), under
    ``torch.inference_mode`` (and :func:`lightning_explain.perturbation_autocast` if active).
    The similarities of all comparisons of a chunk are one call of ``ctx.similarity`` (which is
    row-wise), not one per comparison.
    Cost: ``len(tracks) * B * (n_steps + 1)`` image forwards, or ``len(tracks) * B * n_steps``
    when every track's intact end is known (:attr:`Track.intact`): that point of each curve is
    the similarity of the known embeddings.
    """
    batch = ctx.batch
    height, width = ctx.size
    k = math.ceil(height * width / n_steps)
    n_points = n_steps + 1
    known = _intact_ends(tracks, comparisons)
    n_walked = n_points if known is None else n_steps
    # Step of walked point i for each track: i, or i + 1 when the track's step 0 is known.
    offsets = [0] * len(tracks) if known is None else [int(end == "start") for end, _ in known]
    total = batch * n_walked
    per_chunk = max(1, batch_size // len(tracks))
    channels = int(tracks[0].start.shape[1])
    dtype = functools.reduce(
        torch.promote_types, [t.dtype for tr in tracks for t in (tr.start, tr.finish)]
    )
    starts = [tr.start.to(dtype) for tr in tracks]
    finishes = [tr.finish.to(dtype) for tr in tracks]
    # One row of lerp weights per distinct (ranks, step offset): tracks that share both (e.g.
    # two substrates of one image and kind) share their weights.
    weight_keys: dict[tuple[int, int], int] = {}
    weight_of = [
        weight_keys.setdefault((id(tr.rank), off), len(weight_keys))
        for tr, off in zip(tracks, offsets)
    ]
    weight_src = {w: (tr.rank, off) for w, tr, off in zip(weight_of, tracks, offsets)}
    pieces: list[list[Tensor]] = [[] for _ in comparisons]
    hw = height * width
    with torch.inference_mode():
        # Buffers reused by every chunk (the last one uses their leading part), not allocated
        # anew per chunk.
        image_buf = torch.empty(
            (len(tracks) * per_chunk, channels, height, width), dtype=dtype, device=ctx.device
        )
        weight_buf = torch.empty((len(weight_src), per_chunk, hw), dtype=dtype, device=ctx.device)
        # Views made once, narrowed per block (a chunk costs a few kernels, not many indexings):
        # pair and step axes for broadcasting, and the pixel count taken at every step.
        start_views = [t.unsqueeze(1) for t in starts]  # (B, 1, C, H, W)
        finish_views = [t.unsqueeze(1) for t in finishes]
        rank_views = {w: rank.unsqueeze(1) for w, (rank, _) in weight_src.items()}  # (B, 1, HW)
        taken = (torch.arange(n_points + 1, device=ctx.device) * k).view(1, -1, 1)
        pair_of = torch.arange(total, device=ctx.device) // n_walked
        for lo in range(0, total, per_chunk):
            hi = min(lo + per_chunk, total)
            n = hi - lo
            pair = pair_of[lo:hi]
            # Blocks of the chunk (see grid_blocks): pairs p0:p0+np, steps s0:s0+ns, at rows
            # row:row+np*ns of each track's part of the chunk.
            blocks, row = [], 0
            for pairs, steps_of in grid_blocks(lo, hi, n_walked):
                np_, ns = pairs.stop - pairs.start, steps_of.stop - steps_of.start
                blocks.append((pairs.start, np_, steps_of.start, ns, row))
                row += np_ * ns
            # 1.0 where the step has taken the pixel from `finish`, else 0.0, written as floats by
            # the comparison itself.
            for w, (_, offset) in weight_src.items():
                for p0, np_, s0, ns, row in blocks:
                    torch.lt(
                        rank_views[w].narrow(0, p0, np_),
                        taken.narrow(1, s0 + offset, ns),
                        out=weight_buf[w].narrow(0, row, np_ * ns).view(np_, ns, hw),
                    )
            # The chunk's perturbed images of every track, written in place block by block: no
            # gathered copies of the images, ranks or weights. lerp with weights 0 and 1 returns
            # start and finish exactly (finite images): the choice of torch.where, in a kernel
            # that is vectorised on a CPU (torch.where broadcast over the channels is not).
            images = image_buf.narrow(0, 0, len(tracks) * n)
            for t, w in enumerate(weight_of):
                part = images.narrow(0, t * n, n)
                for p0, np_, _, ns, row in blocks:
                    torch.lerp(
                        start_views[t].narrow(0, p0, np_),
                        finish_views[t].narrow(0, p0, np_),
                        weight_buf[w].narrow(0, row, np_ * ns).view(np_, ns, 1, height, width),
                        out=part.narrow(0, row, np_ * ns).view(np_, ns, channels, height, width),
                    )
            z = torch.split(ctx.embed_chunked(images, batch_size), n)
            # Every comparison of the chunk in one similarity call (similarities are row-wise).
            sims = similarity(
                ctx,
                torch.cat([z[comp.track] for comp in comparisons]),
                torch.cat([_partner(comp, z, pair) for comp in comparisons]),
            )
            for out, sim in zip(pieces, torch.split(sims, n)):
                out.append(sim)
        curves = [torch.cat(out).view(batch, n_walked) for out in pieces]
        if known is not None:
            # The known end of each curve: the similarity of the intact embeddings, every
            # comparison in one call.
            z_known = [z for _, z in known]
            every = torch.arange(batch, device=ctx.device)
            ends = similarity(
                ctx,
                torch.cat([z_known[comp.track] for comp in comparisons]),
                torch.cat([_partner(comp, z_known, every) for comp in comparisons]),
            )
            for i, (comp, end) in enumerate(zip(comparisons, torch.split(ends, batch))):
                parts = [end.unsqueeze(1), curves[i]]
                curves[i] = torch.cat(parts if known[comp.track][0] == "start" else parts[::-1], 1)
    return curves


def _partner(comp: Comparison, z: Sequence[Tensor], pair: Tensor) -> Tensor:
    """What track ``comp.track`` is compared with for the items of ``pair``."""
    if comp.other is not None:
        return z[comp.other]
    if comp.condition is None:
        raise ValueError("a Comparison needs `other` or `condition`")
    return comp.condition[pair]


# --------------------------------------------------------------------------------------------------
# Families: one way for the functions, the metric classes and evaluate to run a metric

Scored = tuple[Tensor, Union[Tensor, None]]
"""What a family's compute returns for one metric: ``(B,)`` scores and the ``(B, n_steps + 1)``
curve (None for metrics without curves)."""


@dataclass(frozen=True)
class MapInputs:
    """What every map-scoring family sees inside one open pair context.

    Attributes:
        ctx: the open pair context (checked images ``ctx.x1``, ``ctx.x2`` of shape
            ``(B, C, H, W)``, the similarity, the owner for error messages).
        map1: ``(B, H, W)`` map of ``x1`` at image resolution.
        map2: ``(B, H, W)`` map of ``x2`` at image resolution, or None (only ``x1`` perturbed).
        intact: ``(z1, z2)``, the ``(B, D)`` embeddings of the unperturbed images: the condition
            of the conditional metrics, the known end of every curve, the base of average_*.
        batch_size: images per forward pass.
        n_steps: steps per insertion/deletion curve (families without curves ignore it).
        direction: which image the conditional metrics perturb (:data:`Direction`).
        ties: the insertion/deletion order of equal-saliency pixels (:data:`Ties`).
    """

    ctx: PairContext
    map1: Tensor
    map2: Tensor | None
    intact: tuple[Tensor, Tensor]
    batch_size: int
    n_steps: int
    direction: Direction
    ties: Ties = "raster"


@dataclass(frozen=True)
class PairInputs:
    """What a family that re-explains the pairs (max-sensitivity) sees.

    Attributes:
        model: the embedding model.
        x1: ``(B, C, H, W)`` first images (unchecked).
        x2: ``(B, C, H, W)`` second images (unchecked).
        method: the explanation method's name (None: the family raises, naming the fix).
        method_options: options for every ``explain`` call.
        owner: name used in error messages.
    """

    model: Model
    x1: Tensor
    x2: Tensor
    method: object
    method_options: Mapping[str, Any]
    owner: str


@dataclass(frozen=True)
class MetricFamily:
    """The entry points of one family file (``metrics/functional/<name>.py``), published there as
    ``FAMILY`` and found through the registry (:meth:`MetricInfo.load
    <lightning_explain.metrics.MetricInfo.load>`).

    Attributes:
        name: the family file, e.g. ``"insertion_deletion"``.
        inputs: ``"maps"``: ``update`` receives :class:`MapInputs` (it scores maps, inside the pair
            context shared by every map family of an ``evaluate`` call); ``"pairs"``: it receives
            :class:`PairInputs` (it re-explains the pairs itself).
        check: ``(options, owner) -> options``: validate one metric's options and return them
            complete (raises ``TypeError``/``ValueError`` naming the option).
        update: ``(inputs, [options, ...]) -> state``: every forward pass that the requested
            metrics need, shared between them (the ``_<family>_update`` helper).
        compute: ``(state, options) -> (scores, curve or None)``: one metric's formula (the
            ``_<family>_compute`` helper).
    """

    name: str
    inputs: Literal["maps", "pairs"]
    check: Callable[[Mapping[str, Any], str], dict[str, Any]]
    update: Callable[[Any, Sequence[Mapping[str, Any]]], Any]
    compute: Callable[[Any, Mapping[str, Any]], Scored]


Request = tuple[MetricFamily, Mapping[str, Any]]


def _run_families(
    inputs: MapInputs | PairInputs, requests: Sequence[Request], kind: Literal["maps", "pairs"]
) -> list[Scored]:
    """One ``update`` per family (over all of its requests, in order), then one ``compute`` per
    request."""
    grouped: dict[str, tuple[MetricFamily, list[Mapping[str, Any]]]] = {}
    for family, options in requests:
        if family.inputs != kind:
            raise ValueError(f"family {family.name!r} takes {family.inputs!r} inputs, not {kind!r}")
        grouped.setdefault(family.name, (family, []))[1].append(options)
    states = {name: family.update(inputs, options) for name, (family, options) in grouped.items()}
    return [family.compute(states[family.name], options) for family, options in requests]


def score_maps(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None,
    requests: Sequence[Request],
    *,
    similarity: Union[str, SimilarityFn],
    n_steps: int,
    batch_size: int | None,
    direction: Direction,
    intact: object = None,
    ties: Ties = "raster",
    owner: str,
) -> list[Scored]:
    """Score maps with any mix of map-family requests in one pair context.

    Opens the pair context (input checks, eval mode, no side effects), upsamples the maps, embeds
    the intact images once (unless ``intact=(z1, z2)`` is given), runs each family's ``update``
    once over all of its requests and returns ``compute`` of every request, in order.

    Args:
        model: ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        h1: ``(B, h, w)`` map of ``x1``.
        h2: ``(B, h, w)`` map of ``x2``, or None when no request perturbs ``x2``.
        requests: ``(family, options)`` per metric.
        similarity: the pair similarity.
        n_steps: steps per curve.
        batch_size: images per forward pass, or None (chosen per device).
        direction: which image the conditional metrics perturb.
        intact: ``(z1, z2)`` embeddings of the unperturbed images, or None.
        ties: the insertion/deletion order of equal-saliency pixels (:data:`Ties`).
        owner: name used in error messages.

    Returns:
        ``(scores, curve or None)`` per request.
    """
    with pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx:
        chunk = resolve_batch_size(batch_size, ctx)
        map1 = prepare_map(h1, ctx.x1, name="h1", owner=owner)
        map2 = None if h2 is None else prepare_map(h2, ctx.x2, name="h2", owner=owner)
        known = intact_embeddings(ctx, chunk) if intact is None else check_intact(intact, ctx)
        inputs = MapInputs(
            ctx=ctx,
            map1=map1,
            map2=map2,
            intact=known,
            batch_size=chunk,
            n_steps=n_steps,
            direction=direction,
            ties=check_ties(ties, owner=owner),
        )
        return _run_families(inputs, requests, "maps")


def score_pairs(inputs: PairInputs, requests: Sequence[Request]) -> list[Scored]:
    """Run pair-family requests (families that re-explain): one ``update`` per family, then
    ``compute`` of every request, in order."""
    return _run_families(inputs, requests, "pairs")
