"""RISE for pairs: the masks, a loop reference, chunking, edge cases and bad options."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_explain import explain
from lightning_explain._core import finalize_maps
from lightning_explain.methods.rise import rise_mask_params, rise_masks
from tests.helpers import TinyCNN, images, left_mass
from tests.methods.test_occlusion import Centred, Counting, LeftCells


def _masks(n: int, cell: int, p_keep: float, size: tuple[int, int], seed: int) -> Tensor:
    grids, shifts = rise_mask_params(torch.Generator().manual_seed(seed), n, cell, p_keep, size)
    return rise_masks(grids, shifts, size)


def test_masks_follow_rise_construction() -> None:
    # The RISE reference code, restated: resize each grid with skimage (order 1, mode "reflect",
    # no anti-aliasing) to (s + 1) * ceil(size / s), then crop at the shift.
    resize = pytest.importorskip("skimage.transform").resize
    size, s = (15, 22), 5
    grids, shifts = rise_mask_params(torch.Generator().manual_seed(0), 40, s, 0.5, size)
    assert set(grids.unique().tolist()) <= {0.0, 1.0}
    # Shifts cover 0 <= dy < ceil(15 / 5) = 3 and 0 <= dx < ceil(22 / 5) = 5.
    assert set(shifts[:, 0].tolist()) == {0, 1, 2}
    assert set(shifts[:, 1].tolist()) == {0, 1, 2, 3, 4}
    masks = rise_masks(grids, shifts, size)
    assert masks.shape == (40, 15, 22)
    for n in range(40):
        up = resize(
            grids[n].double().numpy(), (18, 30), order=1, mode="reflect", anti_aliasing=False
        )
        dy, dx = int(shifts[n, 0]), int(shifts[n, 1])
        ref = torch.from_numpy(up[dy : dy + 15, dx : dx + 22]).float()
        torch.testing.assert_close(masks[n], ref, atol=1e-6, rtol=0)
    assert masks.min() >= 0
    assert masks.max() <= 1


@pytest.mark.parametrize("p_keep", [0.2, 0.5, 0.9])
def test_masks_keep_p_keep_on_average(p_keep: float) -> None:
    masks = _masks(1000, 8, p_keep, (32, 40), seed=1)
    assert masks.mean().item() == pytest.approx(p_keep, abs=0.02)


@pytest.mark.parametrize("estimator", ["paper", "baseline"])
def test_rise_matches_loop_reference(estimator: str) -> None:
    model = Centred()
    x1, x2 = images(2, 3, 16, 20, seed=1), images(2, 3, 16, 20, seed=2)
    n, cell, p_keep, seed = 24, 4, 0.6, 3
    e = explain(
        model,
        x1,
        x2,
        method="rise",
        n_masks=n,
        cell=cell,
        p_keep=p_keep,
        seed=seed,
        estimator=estimator,
    )
    masks = _masks(n, cell, p_keep, (16, 20), seed)
    model.eval()
    raw = torch.zeros(2, 2, 16, 20)
    with torch.no_grad():
        for i in range(2):
            z1, z2 = model(x1[i : i + 1]), model(x2[i : i + 1])
            sims = torch.zeros(2, n)
            for k in range(n):
                sims[0, k] = F.cosine_similarity(model(x1[i : i + 1] * masks[k]), z2)[0]
                sims[1, k] = F.cosine_similarity(z1, model(x2[i : i + 1] * masks[k]))[0]
            if estimator == "baseline":  # the mean over the masks subtracted
                sims -= sims.mean(dim=1, keepdim=True)
            for k in range(n):
                raw[0, i] += sims[0, k] * masks[k]
                raw[1, i] += sims[1, k] * masks[k]
    # paper: divided by N * p_keep; baseline: by each pixel's summed mask value (its coverage)
    raw /= n * p_keep if estimator == "paper" else masks.sum(0)
    torch.testing.assert_close(
        e.h1, finalize_maps(raw[0], (16, 20), minmax=True), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        e.h2, finalize_maps(raw[1], (16, 20), minmax=True), atol=1e-4, rtol=0
    )


def test_rise_localises_for_a_positive_pair() -> None:
    x1 = images(4, 3, 32, 32, seed=9)
    x2 = 0.8 * x1 + 0.2 * images(4, 3, 32, 32, seed=10)
    e = explain(LeftCells(), x1, x2, method="rise", n_masks=256)
    for h in (e.h1, e.h2):
        assert (left_mass(h) > 0.55).all()


def test_seed_changes_the_masks() -> None:
    model = Centred()
    x1, x2 = images(1, seed=1), images(1, seed=2)
    a = explain(model, x1, x2, method="rise", n_masks=16, seed=0)
    b = explain(model, x1, x2, method="rise", n_masks=16, seed=1)
    assert not torch.allclose(a.h1, b.h1)


def test_chunking_does_not_change_results() -> None:
    model = Centred()
    x1, x2 = images(2, 3, 12, 16, seed=1), images(2, 3, 12, 16, seed=2)
    ref = explain(model, x1, x2, method="rise", n_masks=20, batch_size=1000)
    for batch_size in (1, 7):
        counted = Counting(model)
        e = explain(counted, x1, x2, method="rise", n_masks=20, batch_size=batch_size)
        assert max(counted.batches) <= batch_size
        # Equal up to float rounding (CPU convolutions may pick another kernel per batch size).
        torch.testing.assert_close(e.h1, ref.h1, atol=1e-4, rtol=0)
        torch.testing.assert_close(e.h2, ref.h2, atol=1e-4, rtol=0)


def test_documented_forward_cost() -> None:
    counted = Counting(Centred())
    explain(counted, images(3, seed=1), images(3, seed=2), method="rise", n_masks=10)
    assert sum(counted.batches) == 3 * (2 + 2 * 10)


def test_single_pair_one_channel_non_square() -> None:
    model = Centred(in_channels=1)
    x1, x2 = images(1, 1, 18, 26, seed=1), images(1, 1, 18, 26, seed=2)
    e = explain(model, x1, x2, method="rise", n_masks=16, cell=5)
    for h in (e.h1, e.h2):
        assert h.shape == (1, 18, 26)
        assert h.amax() == pytest.approx(1.0)
        assert h.amin() >= 0


def test_cell_larger_than_image() -> None:
    e = explain(
        Centred(), images(1, 3, 6, 6), images(1, 3, 6, 6, seed=1), method="rise", n_masks=8, cell=10
    )
    assert e.h1.shape == (1, 6, 6)
    assert math.isclose(float(e.h1.amax()), 1.0, abs_tol=1e-6)


@pytest.mark.parametrize(
    ("options", "exc", "name"),
    [
        ({"n_masks": 0}, ValueError, "n_masks"),
        ({"n_masks": 2.0}, TypeError, "n_masks"),
        ({"cell": 0}, ValueError, "cell"),
        ({"p_keep": 0.0}, ValueError, "p_keep"),
        ({"p_keep": 1.5}, ValueError, "p_keep"),
        ({"p_keep": "half"}, TypeError, "p_keep"),
        ({"seed": -1}, ValueError, "seed"),
        ({"batch_size": 0}, ValueError, "batch_size"),
    ],
)
def test_bad_options_name_the_option(
    options: dict[str, Any], exc: type[Exception], name: str
) -> None:
    with pytest.raises(exc, match=rf"`rise`: expected `{name}"):
        explain(TinyCNN(), images(1), images(1), method="rise", **options)
