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

from lightning_explain._core import PairContext, check_heatmap, check_positive_int, upsample_maps
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
    "default_batch_size",
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

CPU_BATCH_CAP = 256
"""Default number of images per forward pass on CPU (and other non-CUDA devices)."""

CUDA_BATCH_CAP = 1024
"""Upper bound of the default number of images per forward pass on CUDA."""

CUDA_BYTES_PER_INPUT_BYTE = 64
"""Activation memory assumed per byte of input image on CUDA when choosing the default chunk
(generous for ResNet-style encoders under ``torch.inference_mode``)."""

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


def default_batch_size(x: Tensor) -> int:
    """Default number of images per forward pass for image batch ``x``.

    :func:`lightning_explain._perf.auto_batch_size`: on CUDA a quarter of the free device memory
    divided by an activation estimate of :data:`CUDA_BYTES_PER_INPUT_BYTE` bytes per input byte,
    capped at :data:`CUDA_BATCH_CAP` (``torch.cuda.mem_get_info``; no allocator state is touched);
    elsewhere a 2 GiB budget, capped at :data:`CPU_BATCH_CAP`.
    """
    from lightning_explain._perf import auto_batch_size

    cap = CUDA_BATCH_CAP if x.device.type == "cuda" else CPU_BATCH_CAP
    return auto_batch_size(
        x.device,
        tuple(x.shape[1:]),
        cap,
        dtype=x.dtype,
        bytes_per_input_byte=CUDA_BYTES_PER_INPUT_BYTE,
    )


def resolve_batch_size(batch_size: object, x: Tensor, *, owner: str) -> int:
    """``batch_size`` if given (a positive int), else :func:`default_batch_size`."""
    if batch_size is None:
        return default_batch_size(x)
    return check_positive_int(batch_size, name="batch_size", owner=owner)


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
    """

    start: Tensor
    finish: Tensor
    rank: Tensor


@dataclass(frozen=True)
class Comparison:
    """One similarity curve: track ``track`` against track ``other`` at the same step
    (simultaneous), or against the fixed ``(B, D)`` embeddings ``condition`` (conditional)."""

    track: int
    other: int | None = None
    condition: Tensor | None = None


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
    ``torch.inference_mode``. Cost: ``len(tracks) * B * (n_steps + 1)`` image forwards.
    """
    batch = ctx.batch
    height, width = ctx.size
    k = math.ceil(height * width / n_steps)
    n_points = n_steps + 1
    total = batch * n_points
    per_chunk = max(1, batch_size // len(tracks))
    pieces: list[list[Tensor]] = [[] for _ in comparisons]
    with torch.inference_mode():
        for lo in range(0, total, per_chunk):
            idx = torch.arange(lo, min(lo + per_chunk, total), device=ctx.device)
            pair = idx // n_points
            threshold = ((idx % n_points) * k).unsqueeze(1)
            masks: dict[int, Tensor] = {}
            images = []
            for tr in tracks:
                key = id(tr.rank)
                if key not in masks:
                    masks[key] = (tr.rank[pair] < threshold).view(-1, 1, height, width)
                images.append(torch.where(masks[key], tr.finish[pair], tr.start[pair]))
            flat = torch.cat(images)
            z = torch.split(
                torch.cat([ctx.embed(c) for c in torch.split(flat, batch_size)]), len(idx)
            )
            for out, comp in zip(pieces, comparisons):
                if comp.other is not None:
                    other = z[comp.other]
                else:
                    if comp.condition is None:
                        raise ValueError("a Comparison needs `other` or `condition`")
                    other = comp.condition[pair]
                out.append(similarity(ctx, z[comp.track], other))
    return [torch.cat(p).view(batch, n_points) for p in pieces]
