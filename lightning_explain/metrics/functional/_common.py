"""Shared machinery of the pairwise faithfulness metrics: argument checks, substrates, pixel ranks,
the chunked perturbation engine and the curve area.

Nothing here loops over pairs. The perturbation engine walks over chunks of the flattened
``(pairs x steps)`` grid; every chunk builds its perturbed images with one vectorised
``torch.where`` on a rank tensor and embeds them in one forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Union

import torch
from torch import Tensor

from lightning_explain._core import PairContext, check_batch_size, check_heatmap, upsample_maps
from lightning_explain._core import gaussian_blur as _core_blur
from lightning_explain.explanation import PairExplanation

__all__ = [
    "MODES",
    "SUBSTRATES",
    "Comparison",
    "Mode",
    "Substrate",
    "Track",
    "auc",
    "blur",
    "check_mode",
    "make_substrate",
    "minmax_mask",
    "perturbation_curves",
    "pixel_ranks",
    "prepare_map",
    "relative_drop",
    "resolve_batch_size",
    "similarity",
    "unpack_explanation",
]

Mode = Literal["simultaneous", "conditional"]
"""``"simultaneous"``: both images perturbed at each step, each by its own map.
``"conditional"``: one image perturbed while the other stays intact as the condition."""

Substrate = Union[Literal["blur", "zero", "mean"], float]
"""What a perturbed pixel becomes (deletion) or starts from (insertion)."""

MODES: tuple[str, ...] = ("simultaneous", "conditional")
SUBSTRATES: tuple[str, ...] = ("blur", "zero", "mean")

BLUR_KERNEL = 11
BLUR_SIGMA = 5.0


# --------------------------------------------------------------------------------------------------
# Argument checks


def check_mode(mode: object, *, owner: str) -> Mode:
    """Return ``mode`` if it is ``"simultaneous"`` or ``"conditional"``; otherwise raise."""
    if mode not in MODES:
        raise ValueError(
            f"`{owner}`: expected `mode` to be one of {list(MODES)}, but got {mode!r}. "
            "'simultaneous' perturbs both images at each step; 'conditional' perturbs x1 while "
            "x2 stays intact."
        )
    return mode  # type: ignore[return-value]


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


# --------------------------------------------------------------------------------------------------
# Substrates and maps


def blur(x: Tensor) -> Tensor:
    """The paper's Gaussian blur (torchvision, kernel 11, sigma 5) of ``(B, C, H, W)`` images.

    For images smaller than 6 pixels on a side the kernel is shrunk to ``2 * min(H, W) - 1`` so
    that torchvision's reflect padding stays valid.
    """
    kernel = min(BLUR_KERNEL, 2 * min(int(x.shape[-2]), int(x.shape[-1])) - 1)
    return _core_blur(x, kernel, BLUR_SIGMA)


def make_substrate(x: Tensor, substrate: object, *, owner: str) -> Tensor:
    """The ``(B, C, H, W)`` substrate image of each image in ``x``.

    ``"blur"``: the blurred image (k=11, sigma=5); ``"zero"``: zeros (black for [0, 1] inputs, the
    dataset mean for normalised inputs); ``"mean"``: each image's per-channel mean; a number: that
    constant.
    """
    if isinstance(substrate, str):
        if substrate == "blur":
            return blur(x)
        if substrate == "zero":
            return torch.zeros_like(x)
        if substrate == "mean":
            return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
        raise ValueError(
            f"`{owner}`: expected `substrate` to be one of {list(SUBSTRATES)} or a number, but got "
            f"{substrate!r}."
        )
    if isinstance(substrate, (int, float)) and not isinstance(substrate, bool):
        if not math.isfinite(float(substrate)):
            raise ValueError(f"`{owner}`: expected a finite `substrate`, but got {substrate!r}.")
        return torch.full_like(x, float(substrate))
    raise TypeError(
        f"`{owner}`: expected `substrate` to be one of {list(SUBSTRATES)} or a number, but got "
        f"an object of type {type(substrate).__name__}."
    )


def pixel_ranks(h: Tensor) -> Tensor:
    """Rank of every pixel of ``(B, H, W)`` maps in descending saliency: ``(B, H * W)`` int64.

    Rank 0 is the most salient pixel. Ties are broken in raster order (row-major, earlier first),
    via a stable descending sort.
    """
    flat = h.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=h.device).expand_as(order)
    ranks.scatter_(1, order, positions)
    return ranks


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
    items; each chunk builds the perturbed images of every track with one ``torch.where`` and
    embeds them together (split into forwards of at most ``batch_size`` images), under
    ``torch.inference_mode`` (and :func:`lightning_explain.perturbation_autocast` if active).
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
    pieces: list[list[Tensor]] = [[] for _ in comparisons]
    with torch.inference_mode():
        for lo in range(0, total, per_chunk):
            idx = torch.arange(lo, min(lo + per_chunk, total), device=ctx.device)
            pair = idx // n_walked
            step = idx % n_walked
            masks: dict[tuple[int, int], Tensor] = {}
            images = []
            for tr, offset in zip(tracks, offsets):
                key = (id(tr.rank), offset)
                if key not in masks:
                    threshold = ((step + offset) * k).unsqueeze(1)
                    masks[key] = (tr.rank[pair] < threshold).view(-1, 1, height, width)
                images.append(torch.where(masks[key], tr.finish[pair], tr.start[pair]))
            z = torch.split(ctx.embed_chunked(torch.cat(images), batch_size), len(idx))
            for out, comp in zip(pieces, comparisons):
                out.append(similarity(ctx, z[comp.track], _partner(comp, z, pair)))
        curves = [torch.cat(out).view(batch, n_walked) for out in pieces]
        if known is not None:
            # The known end of each curve: the similarity of the intact embeddings.
            z_known = [z for _, z in known]
            every = torch.arange(batch, device=ctx.device)
            for i, comp in enumerate(comparisons):
                end = similarity(ctx, z_known[comp.track], _partner(comp, z_known, every))
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
