"""Average Drop / Average Increase against the loop reference, and their edge-case rules."""

from __future__ import annotations

import pytest
import torch

from lightning_explain.metrics import average_drop, average_increase, evaluate
from tests.helpers import images
from tests.metrics.reference import centered_cnn, drop_increase_ref

TOL = 1e-5


@pytest.mark.parametrize(
    ("seed", "b", "c", "h", "w", "size"),
    [
        (0, 4, 3, 24, 32, None),
        (1, 1, 3, 20, 20, None),
        (2, 3, 1, 16, 24, None),
        (3, 3, 3, 28, 28, (7, 7)),
    ],
)
@pytest.mark.parametrize(
    ("mode", "direction"),
    [
        ("simultaneous", "both"),
        ("conditional", "both"),
        ("conditional", "x1"),
        ("conditional", "x2"),
    ],
)
def test_matches_reference(seed, b, c, h, w, size, mode, direction):
    model = centered_cnn(seed, c)
    g = torch.Generator().manual_seed(seed)
    x1, x2 = images(b, c, h, w, seed=seed), images(b, c, h, w, seed=seed + 9)
    mh, mw = size or (h, w)
    h1, h2 = torch.rand(b, mh, mw, generator=g), torch.rand(b, mh, mw, generator=g)
    drop = average_drop(model, x1, x2, h1, h2, mode=mode, direction=direction)
    inc = average_increase(model, x1, x2, h1, h2, mode=mode, direction=direction)
    ref_drop, ref_inc = drop_increase_ref(
        model.eval(), x1, x2, h1, h2, mode=mode, direction=direction
    )
    assert drop.shape == inc.shape == (b,)
    assert torch.allclose(drop.double(), torch.tensor(ref_drop, dtype=torch.float64), atol=TOL)
    assert torch.equal(inc.double(), torch.tensor(ref_inc, dtype=torch.float64))


def test_evaluate_keys_match_functional_and_average_both_directions():
    model = centered_cnn(4)
    g = torch.Generator().manual_seed(4)
    x1, x2 = images(6, seed=4), images(6, seed=5)
    h1, h2 = torch.rand(6, 32, 32, generator=g), torch.rand(6, 32, 32, generator=g)
    keys = [
        "average_drop_simultaneous",
        "average_drop_conditional",
        "average_increase_simultaneous",
        "average_increase_conditional",
    ]
    s = evaluate(model, x1, x2, (h1, h2), keys)
    assert torch.allclose(s[keys[0]], average_drop(model, x1, x2, h1, h2), atol=TOL)
    assert torch.allclose(s[keys[2]], average_increase(model, x1, x2, h1, h2), atol=TOL)
    d12 = average_drop(model, x1, x2, h1, mode="conditional", direction="x1")
    d21 = average_drop(model, x2, x1, h2, mode="conditional", direction="x1")
    i12 = average_increase(model, x1, x2, h1, mode="conditional", direction="x1")
    i21 = average_increase(model, x2, x1, h2, mode="conditional", direction="x1")
    assert torch.allclose(s[keys[1]], 0.5 * (d12 + d21), atol=TOL)
    assert torch.allclose(s[keys[3]], 0.5 * (i12 + i21), atol=TOL)
    # the functions' default direction is the same mean of both directions
    both = average_drop(model, x1, x2, h1, h2, mode="conditional")
    assert torch.allclose(both, s[keys[1]], atol=TOL)
    assert (d12 - d21).abs().max() > 1e-3  # the directions differ, so the mean is not vacuous


def test_constant_map_masks_everything_and_full_map_keeps_the_image():
    model = centered_cnn(5)
    x1, x2 = images(2, seed=1), images(2, seed=2)
    const = torch.full((2, 32, 32), 0.3)
    with torch.no_grad():
        model.eval()
        base = torch.cosine_similarity(model(x1), model(x2))
        masked = torch.cosine_similarity(model(0 * x1), model(x2))
    expected = (base - masked).clamp(min=0) / base
    got = average_drop(model, x1, x2, const, mode="conditional", direction="x1")
    assert torch.allclose(got, expected, atol=TOL)
    # a map whose min-max mask is 1 everywhere except one pixel keeps the pair almost intact
    nearly_full = torch.ones(2, 32, 32)
    nearly_full[:, 0, 0] = 0
    assert average_drop(model, x1, x2, nearly_full, nearly_full).max() < 0.05


def _pool_model() -> torch.nn.Module:
    """Embedding = per-channel means, so masks move embeddings in ways computed by hand."""
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def _halves(left: tuple[float, float], right: tuple[float, float]) -> torch.Tensor:
    """A (1, 2, 4, 4) image with per-channel values ``left`` on the left half, ``right`` on the right."""
    x = torch.zeros(1, 2, 4, 4)
    for c in range(2):
        x[0, c, :, :2] = left[c]
        x[0, c, :, 2:] = right[c]
    return x


KEEP_LEFT = torch.zeros(1, 4, 4)
KEEP_LEFT[:, :, :2] = 1.0
KEEP_RIGHT = 1.0 - KEEP_LEFT


def test_negative_baseline_uses_its_magnitude():
    """b < 0: drop = max(0, b - o) / |b| (the paper's / b would make a drop negative)."""
    model = _pool_model()
    x1 = _halves((1.0, 0.0), (0.0, 1.0))  # z1 = (0.5, 0.5)
    x2 = _halves((-1.0, 0.0), (-1.0, 0.0))  # z2 = (-1, 0)
    b = -(0.5**0.5)  # cos(z1, z2)
    o = -1.0  # cos(z1' = (0.5, 0), z2)
    drop = average_drop(model, x1, x2, KEEP_LEFT, mode="conditional", direction="x1")
    assert drop.item() == pytest.approx((b - o) / abs(b), abs=1e-5)
    assert (
        average_increase(model, x1, x2, KEEP_LEFT, mode="conditional", direction="x1").item() == 0.0
    )


def test_neg_l2_drop_is_relative_distance_growth():
    model = _pool_model()
    x1 = _halves((1.0, 0.0), (1.0, 0.0))  # z1 = (1, 0)
    x2 = _halves((0.0, 0.0), (1.0, 0.0))  # z2 = (0.5, 0): b = -0.5
    # masking x2 to its (zero) left half gives z2' = (0, 0): o = -1, drop = 0.5 / 0.5
    drop = average_drop(
        model, x2, x1, KEEP_LEFT, mode="conditional", direction="x1", similarity="neg_l2"
    )
    assert drop.item() == pytest.approx(1.0, abs=1e-3)


def test_zero_baseline_counts_any_drop_as_full():
    model = _pool_model()
    x1 = _halves((1.0, 0.0), (0.0, -1.0))  # z1 = (0.5, -0.5)
    x2 = _halves((1.0, 1.0), (1.0, 1.0))  # z2 = (1, 1): b = 0
    dropped = average_drop(model, x1, x2, KEEP_RIGHT, mode="conditional", direction="x1")  # o < 0
    assert dropped.item() == 1.0
    kept = average_drop(model, x1, x2, KEEP_LEFT, mode="conditional", direction="x1")  # o > 0
    assert kept.item() == 0.0
    assert (
        average_increase(model, x1, x2, KEEP_LEFT, mode="conditional", direction="x1").item() == 1.0
    )
