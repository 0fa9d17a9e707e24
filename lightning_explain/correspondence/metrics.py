"""Scores of correspondence explanations: against the known geometry, and by removing matches.

* :func:`correspondence_scores` (with :func:`match_accuracy` and :func:`match_error_px`): for
  every position of view 2 whose true location (by the :class:`ViewGeometry`) lies inside view 1,
  the best match in view 1 is the row of the largest interaction; a pair scores the share of
  those positions whose best match lies within ``tolerance`` grid cells of the true location
  (Chebyshev distance between cell indices, so ``tolerance=1`` accepts the true cell and its
  eight neighbours, ``tolerance=0`` only the true cell), and the mean distance in view-1 pixels
  between the best match's cell centre and the true location.
* :func:`match_faithfulness`: removing the cells of the top-``k`` matched position pairs from
  both views should lower the similarity more than removing ``k`` random position pairs, or the
  top-``k`` cells of either marginal alone.

All scores are batched tensor code: no Python loop over pairs or positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from lightning_explain._checks import check_int, check_literal, check_positive_int, describe
from lightning_explain._core import Model, PairContext, pair_context
from lightning_explain.correspondence._types import PairInteraction, cell_index_map, grid_centres
from lightning_explain.correspondence.geometry import ViewGeometry
from lightning_explain.correspondence.methods import InteractionSimilarity
from lightning_explain.metrics.functional._common import Substrate, check_substrate, make_substrate

__all__ = [
    "CorrespondenceScores",
    "MatchFaithfulness",
    "correspondence_scores",
    "match_accuracy",
    "match_error_px",
    "match_faithfulness",
]


@dataclass(frozen=True)
class CorrespondenceScores:
    """Per-pair agreement of the best matches with the true geometry.

    Attributes:
        accuracy: ``(B,)`` share of the valid view-2 positions whose best match in view 1 is
            within ``tolerance`` cells of the true location; NaN for a pair without valid
            positions (views that do not overlap).
        error_px: ``(B,)`` mean distance in view-1 pixels between the best match's cell centre
            and the true location, over the valid positions; NaN without valid positions.
        valid: ``(B,)`` int64 number of valid view-2 positions.
    """

    accuracy: Tensor
    error_px: Tensor
    valid: Tensor


def _check_inputs(
    interaction: object, geometry: object, owner: str
) -> tuple[PairInteraction, ViewGeometry]:
    if not isinstance(interaction, PairInteraction):
        raise TypeError(
            f"`{owner}`: expected `interaction` to be a PairInteraction (from "
            f"`explain_interactions`), but got {describe(interaction)}."
        )
    if isinstance(geometry, Tensor):
        geometry = ViewGeometry(geometry)
    if not isinstance(geometry, ViewGeometry):
        raise TypeError(
            f"`{owner}`: expected `geometry` to be a ViewGeometry or a (B, 2, 3) affine tensor, "
            f"but got {describe(geometry)}."
        )
    if len(geometry) != len(interaction):
        raise ValueError(
            f"`{owner}`: expected one geometry per pair ({len(interaction)}), but got "
            f"{len(geometry)}."
        )
    return interaction, geometry.to(interaction.interaction.device)


def correspondence_scores(
    interaction: PairInteraction,
    geometry: Union[ViewGeometry, Tensor],
    *,
    tolerance: int = 1,
) -> CorrespondenceScores:
    """Score the best match of every view-2 position against the true geometry.

    Args:
        interaction: the explanation (:class:`PairInteraction`).
        geometry: view 2 to view 1 (:class:`ViewGeometry`, or a ``(B, 2, 3)`` affine tensor,
            not periodic), e.g. :attr:`ViewPair.geometry` or a probe set's ``geometry``.
        tolerance: cells of slack of :attr:`CorrespondenceScores.accuracy`. Default 1 ("within
            one grid cell"): at a 7 x 7 grid a cell is 32 px of a 224 px image, and a match in the
            neighbouring cell often covers the same object part.

    Returns:
        :class:`CorrespondenceScores` of shape ``(B,)`` each.

    Raises:
        TypeError: for inputs of the wrong type.
        ValueError: for a geometry of another batch size or a negative ``tolerance``.

    Example:
        >>> import torch
        >>> from lightning_explain.correspondence import circular_shift
        >>> r = torch.eye(4)[None].roll(1, dims=2)  # position j of view 2 matches j - 1 of view 1
        >>> inter = PairInteraction(r, (1, 4), (1, 4), torch.ones(1), (4, 16))
        >>> s = correspondence_scores(inter, circular_shift((0, 4), (4, 16)), tolerance=0)
        >>> s.accuracy.tolist(), s.error_px.tolist()
        ([1.0], [0.0])
    """
    owner = "correspondence_scores"
    inter, geo = _check_inputs(interaction, geometry, owner)
    tol = check_int(tolerance, name="tolerance", owner=owner, minimum=0)
    r = inter.interaction
    device = r.device
    (h1, w1), (height, width) = inter.grid1, inter.size
    target, valid = geo.map_points(grid_centres(inter.grid2, device=device))  # (B, n2, 2), (B, n2)
    best = r.argmax(dim=1)  # (B, n2): best position of view 1 for each position of view 2
    pred = grid_centres(inter.grid1, device=device)[best]  # (B, n2, 2)
    # Cell distance between the best match and the cell holding the true location.
    t_col = torch.floor(target[..., 0] * w1).clamp(0, w1 - 1)
    t_row = torch.floor(target[..., 1] * h1).clamp(0, h1 - 1)
    d_col = (t_col - (best % w1)).abs()
    d_row = (t_row - torch.div(best, w1, rounding_mode="floor")).abs()
    diff = pred - target
    if geo.periodic:
        d_col = torch.minimum(d_col, w1 - d_col)
        d_row = torch.minimum(d_row, h1 - d_row)
        diff = torch.remainder(diff + 0.5, 1.0) - 0.5
    hit = (torch.maximum(d_col, d_row) <= tol) & valid
    dist = torch.sqrt((diff[..., 0] * width) ** 2 + (diff[..., 1] * height) ** 2)
    n = valid.sum(dim=1)
    safe = n.clamp(min=1).float()
    nan = torch.full_like(safe, float("nan"))
    accuracy = torch.where(n > 0, hit.sum(dim=1).float() / safe, nan)
    error = torch.where(n > 0, (dist * valid).sum(dim=1) / safe, nan)
    return CorrespondenceScores(accuracy, error, n)


def match_accuracy(
    interaction: PairInteraction, geometry: Union[ViewGeometry, Tensor], *, tolerance: int = 1
) -> Tensor:
    """``(B,)`` share of view-2 positions whose best match is within ``tolerance`` cells of the
    truth (:attr:`CorrespondenceScores.accuracy`; see :func:`correspondence_scores`)."""
    return correspondence_scores(interaction, geometry, tolerance=tolerance).accuracy


def match_error_px(interaction: PairInteraction, geometry: Union[ViewGeometry, Tensor]) -> Tensor:
    """``(B,)`` mean error of the best matches in view-1 pixels
    (:attr:`CorrespondenceScores.error_px`; see :func:`correspondence_scores`)."""
    return correspondence_scores(interaction, geometry).error_px


# --------------------------------------------------------------------------------------------------
# Faithfulness of the matches


@dataclass(frozen=True)
class MatchFaithfulness:
    """Similarity drops when grid cells are removed (``sim - perturbed sim``).

    Attributes:
        sim: ``(B,)`` similarity of the intact pairs.
        matched: ``(B,)`` drop when the cells of the top-``k`` matched position pairs are removed
            from both views (cell ``i`` from view 1 and cell ``j`` from view 2 for every top pair
            ``(i, j)``; the pairs are :meth:`PairInteraction.top_matches` with ``distinct=True``,
            so the ``k`` view-2 cells differ).
        random: ``(B,)`` mean drop over ``n_random`` draws of ``k`` random position pairs (``k``
            distinct cells of each view), removed the same way.
        marginal1: ``(B,)`` drop when the top-``k`` cells of the view-1 marginal (the row sums)
            are removed from view 1 alone.
        marginal2: ``(B,)`` drop when the top-``k`` cells of the view-2 marginal (the column sums)
            are removed from view 2 alone.
        marginal_both: ``(B,)`` drop when the top-``k`` cells of each marginal are removed from
            both views at once (the same number of cells as the matched pairs, without their
            pairing).
    """

    sim: Tensor
    matched: Tensor
    random: Tensor
    marginal1: Tensor
    marginal2: Tensor
    marginal_both: Tensor

    @property
    def marginal(self) -> Tensor:
        """``(B,)`` larger drop of the two single-view marginal removals."""
        return torch.maximum(self.marginal1, self.marginal2)

    @property
    def beats_random(self) -> Tensor:
        """``(B,)`` bool: removing the matches lowers the similarity more than random pairs."""
        return self.matched > self.random

    @property
    def beats_marginal(self) -> Tensor:
        """``(B,)`` bool: removing the matches lowers it more than removing the top cells of
        either marginal alone (:attr:`marginal`)."""
        return self.matched > self.marginal


def _removed(index: Tensor, n: int) -> Tensor:
    """``(..., k)`` positions to ``(..., n)`` bool sets."""
    out = torch.zeros(*index.shape[:-1], n, dtype=torch.bool, device=index.device)
    return out.scatter_(-1, index, True)


def _embed_removed(
    ctx: PairContext, x: Tensor, sets: Tensor, cells: Tensor, fill: Tensor, chunk: int
) -> Tensor:
    """Embeddings of ``x (B, C, H, W)`` with the cells in ``sets (R, B, n)`` filled: ``(R, B, D)``.

    The ``R * B`` perturbed images are embedded in chunks of ``chunk``."""
    r, b = int(sets.shape[0]), int(sets.shape[1])
    masks = sets[:, :, cells].unsqueeze(2)  # (R, B, 1, H, W)
    images = torch.where(masks, fill.unsqueeze(0), x.unsqueeze(0)).flatten(0, 1)
    return ctx.embed_chunked(images, chunk).float().reshape(r, b, -1)


def match_faithfulness(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    interaction: PairInteraction,
    *,
    k: int = 4,
    n_random: int = 8,
    substrate: Substrate = "zero",
    similarity: InteractionSimilarity = "dot",
    seed: int = 0,
    batch_size: int | None = None,
) -> MatchFaithfulness:
    """Do the strongest matches carry the similarity? Remove them and compare with baselines.

    The grid cells of the positions (see :func:`lightning_explain.correspondence.cell_index_map`)
    are filled with the ``substrate`` and the drop of the similarity is compared for: the
    top-``k`` matches of the interaction removed from both views, ``k`` random position pairs
    (``n_random`` draws from a private generator seeded with ``seed``) removed the same way, the
    top-``k`` cells of each marginal removed from its own view alone (what a single-image heatmap
    would remove), and the top-``k`` cells of each marginal removed from both views.

    What to expect. For a model that is bilinear in the cells (linear features of
    non-overlapping cells, average pooling, dot similarity) removing cells ``S1`` and ``S2``
    lowers the similarity by ``sum_S1 rows + sum_S2 columns - sum_{S1 x S2} R``: a correct match
    beats a single marginal removed alone, but the interaction of a removed matched pair is
    counted once, not twice, so removing the marginals' top cells from both views
    (:attr:`MatchFaithfulness.marginal_both`) lowers it about as much as the matches; that
    baseline is reported, not required to lose. Random pairs lose wherever the similarity is
    concentrated.

    Args:
        model: the embedding model the interaction explains.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        interaction: the explanation of ``(x1, x2)``.
        k: number of position pairs (and of marginal cells per view). Default 4.
        n_random: random draws averaged for the baseline. Default 8.
        substrate: what a removed cell becomes: ``"zero"`` (default: nothing, so the drop is the
            removed cells' share), ``"blur"``, ``"mean"`` or a number.
        similarity: ``"dot"`` (default) or ``"cosine"``. The top matches of the two coincide
            (the cosine interactions are the dot interactions divided by ``|z1| |z2|`` per
            pair), but removing corresponding content from *both* views shrinks both
            embeddings alike, which the cosine's normalisation hides: for a view pair that
            differs by a shift, removing true matches leaves the cosine at 1. The dot similarity
            measures what was removed.
        seed: seed of the random pairs. Default 0.
        batch_size: most images per forward. Default ``None``: chosen from the device's memory.

    Returns:
        :class:`MatchFaithfulness` with ``(B,)`` drops.

    Raises:
        TypeError: for inputs or options of the wrong type.
        ValueError: for an interaction of another batch or image size, or bad option values.

    Cost: forwards without autograd, per pair: 2 (intact) + 2 (matched) + 2 (marginals, both
    views) + 1 + 1 (each marginal alone) + ``2 * n_random`` (random pairs).
    """
    owner = "match_faithfulness"
    if not isinstance(interaction, PairInteraction):
        raise TypeError(
            f"`{owner}`: expected `interaction` to be a PairInteraction, but got "
            f"{describe(interaction)}."
        )
    k = check_positive_int(k, name="k", owner=owner)
    n_random = check_positive_int(n_random, name="n_random", owner=owner)
    seed = check_int(seed, name="seed", owner=owner, minimum=0)
    fill = check_substrate(substrate, owner=owner)
    sim_name = check_literal(similarity, InteractionSimilarity, name="similarity", owner=owner)
    with pair_context(model, x1, x2, similarity=sim_name, owner=owner) as ctx:
        if len(interaction) != ctx.batch or interaction.size != ctx.size:
            raise ValueError(
                f"`{owner}`: the interaction explains {len(interaction)} pairs of size "
                f"{interaction.size}, but got {ctx.batch} pairs of size {ctx.size}."
            )
        chunk = ctx.chunk_size(batch_size)
        inter = interaction.to(ctx.device)
        n1, n2 = int(inter.interaction.shape[1]), int(inter.interaction.shape[2])
        cells1 = cell_index_map(inter.grid1, ctx.size, device=ctx.device)
        cells2 = cell_index_map(inter.grid2, ctx.size, device=ctx.device)
        fill1, fill2 = make_substrate(ctx.x1, fill), make_substrate(ctx.x2, fill)
        z = ctx.embed_chunked(torch.cat([ctx.x1, ctx.x2]), chunk).float()
        z1, z2 = z[: ctx.batch], z[ctx.batch :]
        sim = ctx.similarity(z1, z2).float()

        top = inter.top_matches(k, distinct=True)
        m1, m2 = inter.raw_marginals()
        g = ctx.generator(seed)
        # k distinct random cells per view (without replacement, as the matches' view-2 cells).
        u1 = torch.rand(n_random, ctx.batch, n1, generator=g, device=ctx.device)
        u2 = torch.rand(n_random, ctx.batch, n2, generator=g, device=ctx.device)
        draws1 = u1.argsort(dim=-1)[..., : min(k, n1)]
        draws2 = u2.argsort(dim=-1)[..., : min(k, n2)]
        # Rows: 0 matched, 1 marginals (both views / alone), 2.. random draws.
        sets1 = torch.cat(
            [
                _removed(top.i1, n1)[None],
                _removed(m1.flatten(1).topk(min(k, n1), dim=1).indices, n1)[None],
                _removed(draws1, n1),
            ]
        )
        sets2 = torch.cat(
            [
                _removed(top.i2, n2)[None],
                _removed(m2.flatten(1).topk(min(k, n2), dim=1).indices, n2)[None],
                _removed(draws2, n2),
            ]
        )
        p1 = _embed_removed(ctx, ctx.x1, sets1, cells1, fill1, chunk)  # (2 + n_random, B, D)
        p2 = _embed_removed(ctx, ctx.x2, sets2, cells2, fill2, chunk)
        r = int(sets1.shape[0])
        both = ctx.similarity(p1.flatten(0, 1), p2.flatten(0, 1)).float().reshape(r, -1)
        alone1 = ctx.similarity(p1[1], z2).float()
        alone2 = ctx.similarity(z1, p2[1]).float()
        return MatchFaithfulness(
            sim=sim,
            matched=sim - both[0],
            random=(sim - both[2:]).mean(dim=0),
            marginal1=sim - alone1,
            marginal2=sim - alone2,
            marginal_both=sim - both[1],
        )
