"""Ground truth from the augmentation geometry: crops, flips, shifts, and probe sets that keep it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_explain.correspondence import (
    ViewGeometry,
    circular_shift,
    geometry_from_crops,
    grid_centres,
    random_views,
)
from lightning_explain.data import ProbeSet


def _smooth_images(b: int, size: int = 64) -> torch.Tensor:
    """Low-frequency images, so that bilinear resizing barely changes the value at a point."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(b, 3, 4, 4, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)


def _sample(x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Values of ``(B, C, H, W)`` images at normalised ``(B, N, 2)`` points: ``(B, C, N)``."""
    return F.grid_sample(x, (points * 2 - 1)[:, :, None], align_corners=False)[..., 0]


def test_crop_geometry_by_hand() -> None:
    # View 1: the whole 20 x 20 image; view 2: its bottom-right quarter, flipped.
    g = geometry_from_crops([[0, 0, 20, 20]], [[10, 10, 10, 10]], [False], [True])
    points = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]])
    mapped, valid = g.map_points(points)
    # View-2 (0, 0) is the quarter's top-right corner after the flip: source (20, 10) -> (1, 0.5).
    torch.testing.assert_close(mapped[0], torch.tensor([[1.0, 0.5], [0.5, 1.0], [0.75, 0.75]]))
    assert valid.all()
    # Flipping view 1 too mirrors the u coordinate of the result.
    g2 = geometry_from_crops([[0, 0, 20, 20]], [[10, 10, 10, 10]], [True], [True])
    torch.testing.assert_close(g2.map_points(points)[0][0, :, 0], 1 - mapped[0, :, 0])
    # Points of view 1 that view 2 does not show map outside [0, 1] and are invalid.
    out = geometry_from_crops([[10, 10, 10, 10]], [[0, 0, 20, 20]])
    assert out.map_points(torch.tensor([[0.1, 0.1], [0.9, 0.9]]))[1].tolist() == [[False, True]]


def test_random_views_geometry_matches_the_pixels() -> None:
    images = _smooth_images(6)
    views = random_views(images, size=32, scale=(0.3, 1.0), seed=3)
    assert views.flips1.any() or views.flips2.any()  # the flip path is exercised
    points = grid_centres((8, 8)).expand(6, -1, -1)
    mapped, valid = views.geometry.map_points(points)
    v2 = _sample(views.x2, points)
    v1 = _sample(views.x1, mapped)
    err = (v1 - v2).abs().mean(dim=1)[valid]
    assert valid.sum() > 40
    assert float(err.mean()) < 0.02, float(err.mean())
    # A wrong geometry (no flips recorded) does not match: the check can fail.
    wrong = geometry_from_crops(views.boxes1, views.boxes2)
    flipped = views.flips1 ^ views.flips2
    m_wrong, ok = wrong.map_points(points)
    bad = (_sample(views.x1, m_wrong) - v2).abs().mean(dim=1)[ok & flipped[:, None]]
    assert float(bad.mean()) > 5 * float(err.mean())


def test_random_views_are_reproducible_and_leave_the_global_rng_alone() -> None:
    images = _smooth_images(3)
    state = torch.get_rng_state()
    a = random_views(images, seed=7)
    assert torch.equal(state, torch.get_rng_state())
    b = random_views(images, seed=7)
    assert torch.equal(a.x1, b.x1)
    assert torch.equal(a.boxes2, b.boxes2)
    assert not torch.equal(a.boxes1, random_views(images, seed=8).boxes1)


def test_inverse_composes_to_the_identity() -> None:
    views = random_views(_smooth_images(4), seed=1)
    points = torch.rand(4, 10, 2)
    there, _ = views.geometry.map_points(points)
    back, _ = views.geometry.inverse().map_points(there)
    torch.testing.assert_close(back, points, rtol=1e-4, atol=1e-5)


def test_circular_shift_is_periodic() -> None:
    g = circular_shift((4, 8), (16, 16))
    mapped, valid = g.map_points(grid_centres((4, 4)))
    # View-2 cell (0, 0) shows view-1 cell (-1, -2) mod 4 = (3, 2).
    torch.testing.assert_close(mapped[0, 0], torch.tensor([2.5 / 4, 3.5 / 4]))
    assert valid.all()
    assert g.periodic


def test_bad_geometry_arguments_name_the_argument() -> None:
    with pytest.raises(ValueError, match="`boxes1` of shape"):
        geometry_from_crops([[0, 0, 1]], [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="height and width > 0"):
        geometry_from_crops([[0, 0, 0, 1]], [[0, 0, 1, 1]])
    with pytest.raises(TypeError, match="`boxes2`"):
        geometry_from_crops([[0, 0, 1, 1]], "boxes")
    with pytest.raises(ValueError, match="`flips1`"):
        geometry_from_crops([[0, 0, 1, 1]], [[0, 0, 1, 1]], [True, False])
    with pytest.raises(ValueError, match="as many boxes"):
        geometry_from_crops([[0, 0, 1, 1]] * 2, [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="`affine`"):
        ViewGeometry(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="`shifts`"):
        circular_shift(torch.zeros(2, 3), (8, 8))
    with pytest.raises(ValueError, match="`size`"):
        random_views(_smooth_images(1), size=0)
    with pytest.raises(ValueError, match="`flip_p`"):
        random_views(_smooth_images(1), flip_p=2.0)
    with pytest.raises(TypeError, match="`seed`"):
        random_views(_smooth_images(1), seed=1.5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Probe sets made by the package record the geometry


def test_probe_sets_keep_the_geometry_through_subset_shard_save_and_load(tmp_path) -> None:
    views = random_views(_smooth_images(5, size=32), seed=4)
    probe = views.to_probe_set(seed=4)
    torch.testing.assert_close(probe.geometry, views.geometry.affine)
    assert probe.extra["flips1"] == str(views.flips1.tolist())
    assert torch.equal(probe.subset(2).geometry, probe.geometry[:2])
    parts = [probe.shard(r, 2) for r in range(2)]
    assert torch.equal(torch.cat([p.geometry for p in parts]), probe.geometry)
    loaded = ProbeSet.load(probe.save(tmp_path / "probe.pt"))
    assert torch.equal(loaded.geometry, probe.geometry)
    torch.testing.assert_close(ViewGeometry.from_probe(loaded).affine, views.geometry.affine)


def test_probe_sets_without_geometry_stay_readable() -> None:
    views = random_views(_smooth_images(2, size=16), seed=0)
    data = views.to_probe_set().to_dict()
    del data["geometry"]  # a file written before the field existed
    old = ProbeSet.from_dict(data)
    assert old.geometry is None
    with pytest.raises(ValueError, match="recorded no view geometry"):
        ViewGeometry.from_probe(old)
    with pytest.raises(TypeError, match="`probe`"):
        ViewGeometry.from_probe("probe.pt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`geometry`"):
        ProbeSet(views.x1, views.x2, (0, 1), 0, "two_views", "x", geometry=torch.zeros(3, 2, 3))


def test_scale_of_the_crop_is_in_the_affine() -> None:
    views = random_views(_smooth_images(4), scale=(0.25, 0.25), ratio=(1.0, 1.0), seed=0)
    a = views.geometry.affine
    # Equal-area square crops: view 2's scale relative to view 1 is 1 in both axes.
    torch.testing.assert_close(a[:, 0, 0].abs(), torch.ones(4))
    torch.testing.assert_close(a[:, 1, 1], torch.ones(4))
    assert math.isclose(float(views.boxes1[0, 2]), 32.0)
