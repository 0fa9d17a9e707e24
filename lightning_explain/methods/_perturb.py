"""Shared machinery of the perturbation methods (occlusion, RISE).

Every perturbation method embeds the intact pair once (:func:`intact_pair`), then embeds perturbed
images chunk by chunk under ``torch.inference_mode`` and reduces each chunk's embeddings to scores
(:func:`chunked_scores`), so memory is bounded by ``batch_size`` whatever the number of pairs,
window positions, erasures or masks. The items of every method form a grid of groups x members
(window positions x images, masks x images, pairs x erasures), so each chunk's images are written
by broadcasting over a few rectangles of that grid rather than gathered item by item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_explain._core import PairContext, grid_blocks

__all__ = [
    "BuildBlock",
    "IntactPair",
    "acc_dtype",
    "chunked_scores",
    "intact_pair",
    "pair_sims",
]


def acc_dtype(x: Tensor) -> torch.dtype:
    """The dtype maps are accumulated in: ``x``'s dtype, at least float32."""
    return torch.promote_types(x.dtype, torch.float32)


BuildBlock = Callable[[slice, slice, Tensor], None]
"""``(groups, members, out)``: write the perturbed images of the items ``groups x members`` into
``out``, a ``(images_per_item, n_groups, n_members, C, H, W)`` view of the chunk's buffer."""


def chunked_scores(
    ctx: PairContext,
    n_groups: int,
    group_size: int,
    images_per_item: int,
    build: BuildBlock,
    score: Callable[[Tensor, Tensor], Tensor],
    batch_size: int,
) -> Tensor:
    """Embed perturbed images chunk by chunk and reduce each item's embeddings to scores.

    Items form a group-major grid: item ``i`` is member ``i % group_size`` of group
    ``i // group_size`` (e.g. a window position and an image, or a pair and an erasure). Each
    chunk's items are covered by at most three rectangles of groups x members
    (:func:`~lightning_explain._core.grid_blocks`), and ``build`` writes each rectangle's images
    straight into one image buffer by broadcasting, without gathering images or masks per item.
    The buffer is allocated once and reused by every chunk (the last one uses its leading part).

    Args:
        ctx: the open pair context.
        n_groups: number of groups.
        group_size: members per group.
        images_per_item: images built per item.
        build: ``(groups, members, out)`` (two slices) writes the images of the items
            ``groups x members`` into ``out``, shape ``(images_per_item, n_groups, n_members, C,
            H, W)`` (all items' first image, then all items' second image, ...).
        score: ``(item indices (k,), embeddings (images_per_item, k, D)) -> (k, ...)`` scores.
        batch_size: most images per forward pass.

    Returns:
        ``(n_groups * group_size, ...)`` scores, concatenated in item order.
    """
    n_items = n_groups * group_size
    per_chunk = max(1, batch_size // images_per_item)
    shape = ctx.x1.shape[1:]
    buffer = torch.empty(
        images_per_item * min(per_chunk, n_items), *shape, dtype=ctx.x1.dtype, device=ctx.device
    )
    out: list[Tensor] = []
    for start in range(0, n_items, per_chunk):
        stop = min(n_items, start + per_chunk)
        k = stop - start
        images = buffer[: images_per_item * k].view(images_per_item, k, *shape)
        offset = 0
        for groups, members in grid_blocks(start, stop, group_size):
            rows, cols = groups.stop - groups.start, members.stop - members.start
            block = images[:, offset : offset + rows * cols]
            build(groups, members, block.view(images_per_item, rows, cols, *shape))
            offset += rows * cols
        idx = torch.arange(start, stop, device=ctx.device)
        z = ctx.embed_chunked(buffer[: images_per_item * k], batch_size)
        out.append(score(idx, z.view(images_per_item, k, -1)))
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
