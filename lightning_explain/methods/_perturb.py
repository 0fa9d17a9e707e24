"""Shared machinery of the perturbation methods (occlusion, RISE).

Every perturbation method embeds the intact pair once (:func:`intact_pair`), then embeds perturbed
images chunk by chunk under ``torch.inference_mode`` and reduces each chunk's embeddings to scores
(:func:`chunked_scores`), so memory is bounded by ``batch_size`` whatever the number of pairs,
window positions, erasures or masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_explain._core import PairContext

__all__ = ["IntactPair", "acc_dtype", "chunked_scores", "intact_pair", "pair_sims"]


def acc_dtype(x: Tensor) -> torch.dtype:
    """The dtype maps are accumulated in: ``x``'s dtype, at least float32."""
    return torch.promote_types(x.dtype, torch.float32)


def chunked_scores(
    ctx: PairContext,
    n_items: int,
    images_per_item: int,
    build: Callable[[Tensor], Tensor],
    score: Callable[[Tensor, Tensor], Tensor],
    batch_size: int,
) -> Tensor:
    """Embed perturbed images chunk by chunk and reduce each item's embeddings to scores.

    Args:
        ctx: the open pair context.
        n_items: number of items (e.g. window positions times images).
        images_per_item: images built per item.
        build: ``(k,) item indices -> (images_per_item * k, C, H, W)`` images, grouped by variant
            (all items' first image, then all items' second image, ...).
        score: ``(item indices (k,), embeddings (images_per_item, k, D)) -> (k, ...)`` scores.
        batch_size: most images per forward pass.

    Returns:
        ``(n_items, ...)`` scores, concatenated in item order.
    """
    per_chunk = max(1, batch_size // images_per_item)
    out: list[Tensor] = []
    for start in range(0, n_items, per_chunk):
        idx = torch.arange(start, min(n_items, start + per_chunk), device=ctx.device)
        z = ctx.embed_chunked(build(idx), batch_size)
        out.append(score(idx, z.view(images_per_item, idx.numel(), -1)))
    return torch.cat(out)


def pair_sims(ctx: PairContext, z_left: Tensor, z_right: Tensor, first: Tensor) -> Tensor:
    """Similarities of perturbed embeddings with their intact partners.

    For items of the first image (``first`` true) the perturbed embedding is the left argument,
    ``s(z_perturbed, f(x2))``; for the second image it is the right one, ``s(f(x1), z_perturbed)``.
    ``z_left`` holds the perturbed embedding, ``z_right`` the partner's.
    """
    f = first.unsqueeze(1)
    return ctx.similarity(torch.where(f, z_left, z_right), torch.where(f, z_right, z_left))


@dataclass(frozen=True)
class IntactPair:
    """The ``2B`` images ``x = cat([x1, x2])`` of ``B`` pairs and their intact embeddings.

    Image ``j < B`` is ``x1[j]``, image ``B + j`` is ``x2[j]``; the partner of an image is the other
    image of its pair.

    Attributes:
        x: ``(2B, C, H, W)`` images.
        sim: ``(B,)`` similarities of the intact pairs.
        partner: ``(2B, D)`` embedding of each image's intact partner.
        first: ``(2B,)`` bool, true for the images of ``x1``.
    """

    x: Tensor
    sim: Tensor
    partner: Tensor
    first: Tensor

    @property
    def n_img(self) -> int:
        """Number of images ``2B``."""
        return int(self.x.shape[0])

    def base(self, img: Tensor) -> Tensor:
        """``(k,)`` intact similarity of the pair of each image index in ``img``."""
        return self.sim[img % self.sim.shape[0]]

    def conditional_sims(self, ctx: PairContext, z: Tensor, img: Tensor) -> Tensor:
        """``(k,)`` similarities of embeddings ``z`` ``(k, D)`` standing in for the images ``img``
        with their intact partners: ``s(z, f(x2))`` for an image of ``x1``, ``s(f(x1), z)`` for one
        of ``x2``."""
        return pair_sims(ctx, z, self.partner[img], self.first[img])

    def split(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(2B, ...)`` per-image results -> ``(those of x1, those of x2, sim)``."""
        b = int(self.sim.shape[0])
        return raw[:b], raw[b:], self.sim


def intact_pair(ctx: PairContext, batch_size: int) -> IntactPair:
    """Embed ``cat([x1, x2])`` in chunks of ``batch_size`` and pair every image with its partner."""
    x = torch.cat([ctx.x1, ctx.x2])
    b = ctx.batch
    z = ctx.embed_chunked(x, batch_size)
    return IntactPair(
        x=x,
        sim=ctx.similarity(z[:b], z[b:]),
        partner=torch.cat([z[b:], z[:b]]),
        first=torch.arange(x.shape[0], device=ctx.device) < b,
    )
