"""The correspondence metric against a brute-force reference, and the faithfulness check."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_explain.correspondence import (
    PairInteraction,
    ViewGeometry,
    circular_shift,
    correspondence_scores,
    match_accuracy,
    match_error_px,
    match_faithfulness,
    point_to_point,
    random_views,
)
from tests.correspondence._models import (
    bilinear_cnn,
    circular_cnn,
    shifted_pair,
    sparse_shifted_pair,
)


def _brute_force(
    r: torch.Tensor,
    grid1: tuple[int, int],
    grid2: tuple[int, int],
    size: tuple[int, int],
    affine: torch.Tensor,
    tolerance: int,
    periodic: bool,
) -> tuple[list[float], list[float]]:
    """Loop over pairs and view-2 cells, in plain Python."""
    (h1, w1), (h2, w2), (height, width) = grid1, grid2, size
    accs: list[float] = []
    errs: list[float] = []
    for b in range(r.shape[0]):
        a = affine[b].tolist()
        hits, dists, n = 0, 0.0, 0
        for j in range(h2 * w2):
            u2, v2 = (j % w2 + 0.5) / w2, (j // w2 + 0.5) / h2
            u1 = a[0][0] * u2 + a[0][1] * v2 + a[0][2]
            v1 = a[1][0] * u2 + a[1][1] * v2 + a[1][2]
            if periodic:
                u1, v1 = u1 % 1.0, v1 % 1.0
            elif not (0 <= u1 <= 1 and 0 <= v1 <= 1):
                continue
            n += 1
            column = [float(r[b, i, j]) for i in range(h1 * w1)]
            best = column.index(max(column))
            br, bc = best // w1, best % w1
            tr, tc = min(int(v1 * h1), h1 - 1), min(int(u1 * w1), w1 - 1)
            dr, dc = abs(tr - br), abs(tc - bc)
            du, dv = (bc + 0.5) / w1 - u1, (br + 0.5) / h1 - v1
            if periodic:
                dr, dc = min(dr, h1 - dr), min(dc, w1 - dc)
                du, dv = (du + 0.5) % 1.0 - 0.5, (dv + 0.5) % 1.0 - 0.5
            hits += max(dr, dc) <= tolerance
            dists += math.hypot(du * width, dv * height)
        accs.append(hits / n if n else math.nan)
        errs.append(dists / n if n else math.nan)
    return accs, errs


@pytest.mark.parametrize("tolerance", [0, 1])
@pytest.mark.parametrize("periodic", [False, True])
def test_scores_match_a_brute_force_reference(tolerance: int, periodic: bool) -> None:
    g = torch.Generator().manual_seed(0)
    grid1, grid2, size = (4, 5), (3, 4), (40, 50)
    r = torch.randn(5, 20, 12, generator=g)
    if periodic:
        geo = circular_shift(torch.tensor([[3, 7], [0, 0], [40, 11], [-5, 2], [9, 9]]), size)
    else:
        views = random_views(torch.rand(5, 3, 60, 60, generator=g), size=size, seed=2)
        geo = views.geometry
    inter = PairInteraction(r, grid1, grid2, r.sum((1, 2)), size)
    scores = correspondence_scores(inter, geo, tolerance=tolerance)
    accs, errs = _brute_force(r, grid1, grid2, size, geo.affine, tolerance, periodic)
    torch.testing.assert_close(scores.accuracy, torch.tensor(accs), equal_nan=True)
    torch.testing.assert_close(scores.error_px, torch.tensor(errs), equal_nan=True)
    torch.testing.assert_close(
        match_accuracy(inter, geo, tolerance=tolerance), scores.accuracy, equal_nan=True
    )
    if tolerance == 1:
        torch.testing.assert_close(match_error_px(inter, geo), scores.error_px, equal_nan=True)


def test_pairs_without_overlap_score_nan() -> None:
    r = torch.rand(2, 4, 4)
    inter = PairInteraction(r, (2, 2), (2, 2), r.sum((1, 2)), (8, 8))
    affine = torch.tensor([[[1.0, 0, 5.0], [0, 1.0, 0]], [[1.0, 0, 0], [0, 1.0, 0]]])
    s = correspondence_scores(inter, affine)
    assert math.isnan(float(s.accuracy[0]))
    assert s.valid.tolist() == [0, 4]
    assert not math.isnan(float(s.accuracy[1]))


def test_perfect_and_wrong_matches_on_the_grid() -> None:
    # The identity geometry: a diagonal interaction is perfect, a transposed grid is not.
    eye = torch.eye(16)[None]
    inter = PairInteraction(eye, (4, 4), (4, 4), torch.ones(1), (32, 32))
    identity = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])
    s = correspondence_scores(inter, identity, tolerance=0)
    assert s.accuracy.tolist() == [1.0]
    assert s.error_px.tolist() == [0.0]
    far = eye[:, :, torch.arange(16).flip(0)]  # view-2 cell j matches the opposite cell
    s = correspondence_scores(
        PairInteraction(far, (4, 4), (4, 4), torch.ones(1), (32, 32)), identity
    )
    assert float(s.accuracy) < 0.5
    assert float(s.error_px) > 8


# --------------------------------------------------------------------------------------------------
# Faithfulness of the matches


def test_removing_the_top_matches_lowers_the_similarity_most() -> None:
    net = circular_cnn()
    x1, x2 = sparse_shifted_pair(b=8, share=0.25)
    r = point_to_point(net, x1, x2, layer="2", similarity="dot")
    f = match_faithfulness(net, x1, x2, r, k=4, n_random=8)
    torch.testing.assert_close(f.sim, r.sim, rtol=1e-4, atol=1e-6)
    # Margins measured at 0.22 and 0.085 of the similarity; asked for half of that.
    assert ((f.matched - f.random) / f.sim > 0.1).all(), (f.matched, f.random)
    assert ((f.matched - f.marginal) / f.sim > 0.04).all(), (f.matched, f.marginal1, f.marginal2)


def test_with_dense_evidence_random_pairs_come_close() -> None:
    """Where every cell carries as much evidence (noise everywhere), a removed match is counted
    once in the drop while a random pair counts twice, so the matches beat random pairs by
    little: the check is not won by construction."""
    net = circular_cnn()
    x1, x2 = shifted_pair(b=8)
    r = point_to_point(net, x1, x2, layer="2", similarity="dot")
    f = match_faithfulness(net, x1, x2, r, k=4, n_random=8)
    assert float(((f.matched - f.random) / f.sim).mean()) < 0.05


def test_the_faithfulness_check_can_fail_for_a_wrong_explanation() -> None:
    net = circular_cnn()
    x1, x2 = shifted_pair(b=4)
    r = point_to_point(net, x1, x2, layer="2", similarity="dot")
    # Weakest matches first: the "explanation" points at the least important pairs.
    wrong = PairInteraction(-r.interaction, r.grid1, r.grid2, r.sim, r.size)
    f = match_faithfulness(net, x1, x2, wrong, k=4)
    assert not f.beats_random.any(), (f.matched, f.random)


def test_faithfulness_is_exact_for_a_bilinear_model_with_disjoint_cells() -> None:
    # Stride-4 4x4 conv: each cell is one receptive field, so removing cells (zeros) removes
    # exactly their rows and columns: drop = rows(S1) + cols(S2) - R(S1 x S2).
    net = bilinear_cnn()
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    r = point_to_point(net, x1, x2, layer="0", similarity="dot")
    f = match_faithfulness(net, x1, x2, r, k=3)
    top = r.top_matches(3, distinct=True)
    s1 = torch.zeros(3, 64, dtype=torch.bool).scatter_(1, top.i1, True).float()
    s2 = torch.zeros(3, 64, dtype=torch.bool).scatter_(1, top.i2, True).float()
    rows, cols = r.interaction.sum(2), r.interaction.sum(1)
    expected = (
        (s1 * rows).sum(1)
        + (s2 * cols).sum(1)
        - torch.einsum("bi,bij,bj->b", s1, r.interaction, s2)
    )
    torch.testing.assert_close(f.matched, expected, rtol=1e-3, atol=1e-5)
    m1 = torch.zeros(3, 64).scatter_(1, rows.topk(3, dim=1).indices, 1.0)
    torch.testing.assert_close(f.marginal1, (m1 * rows).sum(1), rtol=1e-3, atol=1e-5)


def test_faithfulness_checks_its_arguments() -> None:
    net = bilinear_cnn()
    x1, x2 = shifted_pair(b=2)
    r = point_to_point(net, x1, x2, layer="0")
    with pytest.raises(TypeError, match="`interaction`"):
        match_faithfulness(net, x1, x2, r.interaction)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="explains 2 pairs"):
        match_faithfulness(net, x1[:1], x2[:1], r)
    with pytest.raises(ValueError, match="`k`"):
        match_faithfulness(net, x1, x2, r, k=0)
    with pytest.raises(ValueError, match="substrate"):
        match_faithfulness(net, x1, x2, r, substrate="noise")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="similarity"):
        match_faithfulness(net, x1, x2, r, similarity="neg_l2")  # type: ignore[arg-type]


def test_scores_check_their_arguments() -> None:
    r = torch.rand(2, 4, 4)
    inter = PairInteraction(r, (2, 2), (2, 2), r.sum((1, 2)), (8, 8))
    with pytest.raises(TypeError, match="`interaction`"):
        correspondence_scores(r, circular_shift((0, 0), (8, 8), batch=2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`geometry`"):
        correspondence_scores(inter, "shift")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one geometry per pair"):
        correspondence_scores(inter, circular_shift((0, 0), (8, 8), batch=3))
    with pytest.raises(ValueError, match="`tolerance`"):
        correspondence_scores(inter, ViewGeometry(torch.zeros(2, 2, 3)), tolerance=-1)
