"""Rendering of correspondences: the two views side by side, the top matches drawn as lines.

The images go through the package's renderer (:func:`lightning_explain.render.to_rgb`, or
:func:`lightning_explain.render.overlay` with the marginals); the lines are coloured by strength
with a matplotlib colormap (:func:`lightning_explain.render.colormap_lut`) and drawn with PIL, as
:func:`lightning_explain.render.captioned` writes its text.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_explain._checks import check_int, check_positive_int, describe
from lightning_explain.correspondence._types import PairInteraction, grid_centres
from lightning_explain.render import CmapLike, Stats, colormap_lut, overlay, to_rgb

__all__ = ["match_grid"]


def match_grid(
    x1: Tensor,
    x2: Tensor,
    interaction: PairInteraction,
    *,
    k: int = 12,
    distinct: bool = True,
    mean: Stats = None,
    std: Stats = None,
    cmap: CmapLike = "viridis",
    heatmaps: bool = False,
    alpha: float = 0.5,
    padding: int = 2,
    gap: int | None = None,
    min_tile: int = 0,
    line_width: int | None = None,
) -> Tensor:
    """One image of all pairs: a row per pair with view 1 and view 2 side by side and the top
    ``k`` matches drawn as lines between the centres of the matched cells.

    A line's colour is its interaction divided by the strongest drawn interaction of that pair
    (clamped to ``[0, 1]``), through ``cmap``; the strongest lines are drawn last, on top.

    Args:
        x1: ``(B, C, H, W)`` first images (``C`` = 1 or 3, possibly normalised).
        x2: ``(B, C, H, W)`` second images.
        interaction: their :class:`PairInteraction`.
        k: lines per pair. Default 12: enough to show the correspondence field, few enough to
            read.
        distinct: at most one line per position of view 2 (its best match); see
            :meth:`PairInteraction.top_matches`. Default ``True``.
        mean: normalisation means to undo (see :func:`lightning_explain.render.to_rgb`).
        std: normalisation standard deviations to undo.
        cmap: matplotlib colormap of the lines. Default ``"viridis"`` (perceptually uniform;
            weak lines dark, strong lines yellow).
        heatmaps: blend the marginals (:meth:`PairInteraction.marginals`) over the views with
            ``"jet"``, as the pair grids do. Default ``False``.
        alpha: heatmap opacity when ``heatmaps``. Default 0.5.
        padding: pixels around the rows. Default 2.
        gap: pixels between the two views. Default ``None``: a tenth of the tile width.
        min_tile: smallest tile side in pixels: smaller images are enlarged by an integer factor
            (nearest neighbour). Default 0 (native size).
        line_width: in pixels. Default ``None``: ``max(1, tile side // 64)``.

    Returns:
        ``(3, B * H' + (B + 1) * padding, 2 * W' + gap + 2 * padding)`` uint8 tensor (CHW) on the
        CPU, ``H' = f * H``, ``W' = f * W``, ``f = ceil(min_tile / min(H, W))`` (at least 1).

    Raises:
        TypeError: for inputs of the wrong type.
        ValueError: for shapes that do not match the interaction, or bad option values.

    Example:
        >>> import torch
        >>> r = torch.rand(2, 4, 4)
        >>> inter = PairInteraction(r, (2, 2), (2, 2), r.sum((1, 2)), (16, 16))
        >>> img = match_grid(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16), inter, k=3)
        >>> tuple(img.shape), img.dtype
        ((3, 38, 38), torch.uint8)
    """
    from PIL import Image, ImageDraw

    owner = "correspondence.match_grid"
    if not isinstance(interaction, PairInteraction):
        raise TypeError(
            f"`{owner}`: expected `interaction` to be a PairInteraction, but got "
            f"{describe(interaction)}."
        )
    for name, x in (("x1", x1), ("x2", x2)):
        if not isinstance(x, Tensor) or x.ndim != 4:
            raise TypeError(
                f"`{owner}`: expected `{name}` to be a (B, C, H, W) tensor, but got {describe(x)}."
            )
        if x.shape[0] != len(interaction) or tuple(x.shape[2:]) != interaction.size:
            raise ValueError(
                f"`{owner}`: expected `{name}` of shape ({len(interaction)}, C, "
                f"{interaction.size[0]}, {interaction.size[1]}) as the interaction, but got "
                f"{tuple(x.shape)}."
            )
    k = check_positive_int(k, name="k", owner=owner)
    padding = check_int(padding, name="padding", owner=owner, minimum=0)
    min_tile = check_int(min_tile, name="min_tile", owner=owner, minimum=0)
    if heatmaps:
        e = interaction.marginals()
        t1 = overlay(x1, e.h1.to(x1.device), mean=mean, std=std, alpha=alpha)
        t2 = overlay(x2, e.h2.to(x2.device), mean=mean, std=std, alpha=alpha)
    else:
        t1, t2 = to_rgb(x1, mean, std), to_rgb(x2, mean, std)
    height, width = interaction.size
    factor = max(1, -(-min_tile // min(height, width)))
    if factor > 1:
        t1, t2 = (F.interpolate(t, scale_factor=factor, mode="nearest") for t in (t1, t2))
    th, tw = height * factor, width * factor
    gap = max(2, tw // 10) if gap is None else check_int(gap, name="gap", owner=owner, minimum=0)
    lw = (
        max(1, min(th, tw) // 64)
        if line_width is None
        else check_positive_int(line_width, name="line_width", owner=owner)
    )
    b = len(interaction)
    full_w = 2 * tw + gap + 2 * padding
    rows = torch.ones(b, th + padding, full_w, 3)
    rows[:, :th, padding : padding + tw] = t1.permute(0, 2, 3, 1).float().cpu()
    rows[:, :th, padding + tw + gap : padding + 2 * tw + gap] = t2.permute(0, 2, 3, 1).float().cpu()
    canvas = torch.cat([torch.ones(padding, full_w, 3), rows.reshape(-1, full_w, 3)])
    picture = Image.fromarray((canvas.numpy() * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)

    inter = interaction.to("cpu")
    top = inter.top_matches(k, distinct=distinct)
    peak = top.strength.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
    level = (top.strength / peak).clamp(0, 1)  # (B, k)
    lut = colormap_lut(cmap)
    colours = (lut[(level * lut.shape[0]).floor().long().clamp(0, lut.shape[0] - 1)] * 255).round()
    c1 = grid_centres(inter.grid1)[top.i1] * torch.tensor([tw, th])  # (B, k, 2) in tile pixels
    c2 = grid_centres(inter.grid2)[top.i2] * torch.tensor([tw, th])
    offset_y = padding + torch.arange(b).float() * (th + padding)  # (B,)
    p1 = c1 + torch.stack([torch.full((b,), float(padding)), offset_y], dim=1)[:, None]
    p2 = c2 + torch.stack([torch.full((b,), float(padding + tw + gap)), offset_y], dim=1)[:, None]
    radius = lw + 1
    order = level.argsort(dim=1)  # weakest first: the strongest lines end on top
    for i in range(b):
        for j in order[i].tolist():
            colour = tuple(int(c) for c in colours[i, j].tolist())
            a, z = tuple(p1[i, j].tolist()), tuple(p2[i, j].tolist())
            draw.line([a, z], fill=colour, width=lw)
            for x, y in (a, z):
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).contiguous()
