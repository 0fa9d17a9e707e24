"""Average Drop and Average Increase for image pairs (after Chattopadhay et al., Grad-CAM++,
WACV 2018), adapted to pairs by Sammani et al., "Visualizing and Understanding Contrastive
Learning" (IEEE TIP; arXiv 2206.09753).

Each image is masked by its own min-max-normalised map, ``x' = minmax(h) * x``, and the similarity
of the masked pair ``o`` is compared with the intact similarity ``b``.
"""

from __future__ import annotations

from typing import Literal, Union

import torch
from torch import Tensor

from lightning_explain._core import Model, PairContext, pair_context
from lightning_explain.metrics.functional._common import (
    Mode,
    check_mode,
    minmax_mask,
    prepare_map,
    relative_drop,
    resolve_batch_size,
    similarity,
)
from lightning_explain.similarity import SimilarityFn

__all__ = ["average_drop", "average_increase", "masked_similarities"]


def masked_similarities(
    ctx: PairContext,
    map1: Tensor,
    map2: Tensor | None,
    *,
    batch_size: int,
    intact: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Embed intact and masked images once and return the similarities the metrics need.

    Args:
        ctx: the open pair context.
        map1: ``(B, H, W)`` map of ``x1`` at image resolution.
        map2: ``(B, H, W)`` map of ``x2`` or None (then only ``x1`` is masked).
        batch_size: images per forward.
        intact: ``(z1, z2)`` embeddings of the intact images if already computed.

    Returns:
        ``"base"``: ``sim(f(x1), f(x2))``; ``"masked1"``: ``sim(f(x1'), f(x2))``; and, with
        ``map2``, ``"masked2"``: ``sim(f(x1), f(x2'))`` and ``"both"``: ``sim(f(x1'), f(x2'))``.
        Each ``(B,)``. Cost: ``2 + (number of maps)`` forwards per pair (the 2 intact ones are
        skipped when ``intact`` is given).
    """
    images = [minmax_mask(map1).unsqueeze(1) * ctx.x1]
    if map2 is not None:
        images.append(minmax_mask(map2).unsqueeze(1) * ctx.x2)
    if intact is None:
        images = [ctx.x1, ctx.x2, *images]
    with torch.inference_mode():
        z = torch.split(ctx.embed_chunked(torch.cat(images), batch_size), ctx.batch)
        if intact is not None:
            z = (intact[0], intact[1], *z)
        out = {"base": similarity(ctx, z[0], z[1]), "masked1": similarity(ctx, z[2], z[1])}
        if map2 is not None:
            out["masked2"] = similarity(ctx, z[0], z[3])
            out["both"] = similarity(ctx, z[2], z[3])
    return {k: v.clone() for k, v in out.items()}


def _run(
    kind: Literal["average_drop", "average_increase"],
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None,
    *,
    mode: str,
    similarity: Union[str, SimilarityFn],
    batch_size: int | None,
) -> Tensor:
    owner = kind
    mode = check_mode(mode, owner=owner)
    if mode == "simultaneous" and h2 is None:
        raise ValueError(
            f"`{owner}`: mode='simultaneous' masks both images, so it needs `h2`, but got None."
        )
    with pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx:
        chunk = resolve_batch_size(batch_size, ctx)
        map1 = prepare_map(h1, ctx.x1, name="h1", owner=owner)
        map2 = None if h2 is None else prepare_map(h2, ctx.x2, name="h2", owner=owner)
        sims = masked_similarities(
            ctx, map1, map2 if mode == "simultaneous" else None, batch_size=chunk
        )
    base = sims["base"]
    out = sims["both"] if mode == "simultaneous" else sims["masked1"]
    if kind == "average_drop":
        return relative_drop(base, out)
    return (out > base).to(base.dtype)


def average_drop(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = None,
    *,
    mode: Mode = "simultaneous",
    similarity: Union[str, SimilarityFn] = "cosine",
    batch_size: int | None = None,
) -> Tensor:
    """Relative similarity drop when each image keeps only what its map marks (lower is better).

    ``x' = minmax(h) * x`` (a constant map becomes an all-zero mask: it marks nothing). With
    ``b = sim(f(x1), f(x2))`` and ``o`` the similarity with the masked image(s):

    * ``mode="simultaneous"`` (SAD): ``o = sim(f(x1'), f(x2'))``;
    * ``mode="conditional"`` (CAD): ``o = sim(f(x1'), f(x2))``, ``x2`` intact (swap the arguments
      for the other side; :func:`lightning_explain.metrics.evaluate` averages both directions).

    Score per pair: ``max(0, b - o) / b`` (the paper's) when ``b > 0``. Our extension for
    ``b <= 0``, where the paper's ratio flips sign or divides by zero: ``max(0, b - o) / |b|``
    (e.g. a relative growth of the distance for ``similarity="neg_l2"``), and ``1[o < b]`` when
    ``b == 0``. The dataset value is the mean over pairs (a fraction, not a percentage).

    Args:
        model: ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        h1: ``(B, h, w)`` map of ``x1`` (upsampled bilinearly if smaller than the image).
        h2: ``(B, h, w)`` map of ``x2``; required in simultaneous mode, unused in conditional mode.
        mode: ``"simultaneous"`` (default) or ``"conditional"``.
        similarity: ``"cosine"`` (default), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass (default None: chosen from the device's memory, as
            in :func:`lightning_explain.metrics.insertion`).

    Returns:
        ``(B,)`` drops (``>= 0``; may exceed 1 when ``o < 0 < b``).

    Cost:
        4 forwards per pair in simultaneous mode (2 intact + 2 masked), 3 in conditional mode.

    Raises:
        ValueError: malformed images or maps, unknown ``mode``, missing ``h2`` in simultaneous
            mode.
    """
    return _run(
        "average_drop",
        model,
        x1,
        x2,
        h1,
        h2,
        mode=mode,
        similarity=similarity,
        batch_size=batch_size,
    )


def average_increase(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = None,
    *,
    mode: Mode = "simultaneous",
    similarity: Union[str, SimilarityFn] = "cosine",
    batch_size: int | None = None,
) -> Tensor:
    """Whether masking by the maps increases the similarity: ``1[o > b]`` (higher is better).

    Masked images, ``b``, ``o`` and modes as in :func:`average_drop` (the paper's SIC / CID). The
    indicator is well defined for any sign of ``b``.

    Args:
        model: ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        h1: ``(B, h, w)`` map of ``x1``.
        h2: ``(B, h, w)`` map of ``x2``; required in simultaneous mode.
        mode: ``"simultaneous"`` (default) or ``"conditional"``.
        similarity: ``"cosine"`` (default), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass.

    Returns:
        ``(B,)`` values in ``{0, 1}``.

    Cost:
        As :func:`average_drop`.
    """
    return _run(
        "average_increase",
        model,
        x1,
        x2,
        h1,
        h2,
        mode=mode,
        similarity=similarity,
        batch_size=batch_size,
    )
