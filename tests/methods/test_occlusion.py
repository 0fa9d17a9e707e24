"""Conditional, context-agnostic and pairwise occlusion: oracles, loop references, edge cases."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_explain import explain
from lightning_explain._core import finalize_maps, pair_context
from lightning_explain.methods.occlusion import (
    _conditional_occlusion_maps,
    _context_agnostic_maps,
    default_stride,
    default_window,
    erasing_boxes,
    resolve_window,
    window_starts,
)
from tests.helpers import TinyCNN, images, left_mass

OCCLUSION = ["conditional_occlusion", "context_agnostic_occlusion", "pairwise_occlusion"]


class Centred(nn.Module):
    """TinyCNN embedding minus the embedding of a grey image.

    A random CNN maps every image to nearly the same direction (cosine ~0.9999), so similarity
    changes are ~1e-4 and a 1e-5 tolerance would say nothing; centring makes them O(0.1).
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.net = TinyCNN(in_channels).eval()
        with torch.no_grad():
            self.register_buffer("ref", self.net(torch.full((1, in_channels, 8, 8), 0.5)))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) - self.ref


class LeftCells(nn.Module):
    """Centred mean colour of a 4 x 2 grid of cells of the left half; the right half is ignored."""

    def forward(self, x: Tensor) -> Tensor:
        left = x[..., : x.shape[-1] // 2] - 0.5
        return F.adaptive_avg_pool2d(left, (4, 2)).flatten(1)


class Counting(nn.Module):
    """Wraps a model and records the size of every forward batch."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batches: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.batches.append(int(x.shape[0]))
        return self.model(x)


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Independent restatement of the documented window positions."""
    window = min(window, length)
    out = list(range(0, length - window + 1, stride))
    return out if out[-1] == length - window else [*out, length - window]


def _cos(a: Tensor, b: Tensor) -> float:
    return float(F.cosine_similarity(a.view(1, -1), b.view(1, -1)))


def _loop_occlusion(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor,
    window: int,
    stride: int,
    fill: float,
    context_agnostic: bool,
    estimator: str = "paper",
) -> tuple[Tensor, Tensor]:
    """Per-pair, per-position loop reference of CO / CACO raw maps (mean over covering windows).

    CACO's ``estimator="baseline"`` compares the patch difference with the partner's difference
    from the all-fill image; ``"paper"`` with the partner itself.
    """
    model.eval()
    b, _, h, w = x1.shape
    wh, ww = min(window, h), min(window, w)
    raw = torch.zeros(2, b, h, w, dtype=torch.float64)
    count = torch.zeros(h, w, dtype=torch.float64)
    with torch.no_grad():
        empty = model(torch.full_like(x1[:1], fill))[0]
        for i in range(b):
            z = [model(x1[i : i + 1])[0], model(x2[i : i + 1])[0]]
            for side, x in enumerate((x1[i], x2[i])):
                partner = z[1 - side]
                if context_agnostic and estimator == "baseline":
                    partner = partner - empty
                for top in _starts(h, window, stride):
                    for left in _starts(w, window, stride):
                        win = (slice(None), slice(top, top + wh), slice(left, left + ww))
                        without = x.clone()
                        without[win] = fill
                        zo = model(without[None])[0]
                        if context_agnostic:
                            alone = torch.full_like(x, fill)
                            alone[win] = x[win]
                            score = _cos(model(alone[None])[0] - zo, partner)
                        else:
                            score = _cos(z[0], z[1]) - _cos(zo, partner)
                        raw[side, i, top : top + wh, left : left + ww] += score
                        if i == 0 and side == 0:
                            count[top : top + wh, left : left + ww] += 1
    assert (count > 0).all(), "the reference positions must cover every pixel"
    raw /= count
    return raw[0].float(), raw[1].float()


# --------------------------------------------------------------------------------------------------
# Window positions


@pytest.mark.parametrize(
    ("length", "window", "stride", "expected"),
    [
        (224, 64, 8, list(range(0, 161, 8))),  # paper: 21 positions, flush already
        (30, 8, 5, [0, 5, 10, 15, 20, 22]),  # extra flush position
        (24, 8, 8, [0, 8, 16]),
        (16, 64, 8, [0]),  # window clamped to the image
        (5, 1, 1, [0, 1, 2, 3, 4]),
    ],
)
def test_window_starts(length: int, window: int, stride: int, expected: list[int]) -> None:
    assert window_starts(length, window, stride) == expected
    assert len(window_starts(224, 64, 8)) == 21


# --------------------------------------------------------------------------------------------------
# Conditional occlusion


@pytest.mark.parametrize(("window", "stride"), [(8, 4), (8, 8)])
def test_conditional_occlusion_matches_captum(window: int, stride: int) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    model = Centred()
    x1, x2 = images(2, 3, 24, 32, seed=1), images(2, 3, 24, 32, seed=2)  # (24-8), (32-8) % 4 == 0
    with pair_context(model, x1, x2) as ctx:
        raw1, raw2, _ = _conditional_occlusion_maps(ctx, window, stride, 0.25, 64)
    with torch.no_grad():
        z1, z2 = model(x1), model(x2)
        kwargs: dict[str, Any] = {
            "sliding_window_shapes": (3, window, window),
            "strides": (3, stride, stride),
            "baselines": 0.25,
            "perturbations_per_eval": 16,  # captum stacks 16 perturbed copies of the batch
        }

        def cos_to(z: Tensor, first: bool) -> Callable[[Tensor], Tensor]:
            def fn(x: Tensor) -> Tensor:
                partner = z.repeat(x.shape[0] // z.shape[0], 1)
                zx = model(x)
                return (
                    F.cosine_similarity(zx, partner) if first else F.cosine_similarity(partner, zx)
                )

            return fn

        a1 = captum_attr.Occlusion(cos_to(z2, True)).attribute(x1, **kwargs)
        a2 = captum_attr.Occlusion(cos_to(z1, False)).attribute(x2, **kwargs)
    assert raw1.abs().max() > 1e-2  # the drops are large enough for the tolerance to matter
    torch.testing.assert_close(raw1, a1[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(raw2, a2[:, 0], atol=1e-5, rtol=0)
    e = explain(
        model, x1, x2, method="conditional_occlusion", window=window, stride=stride, fill=0.25
    )
    torch.testing.assert_close(
        e.h1, finalize_maps(a1[:, 0], (24, 32), minmax=True), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        e.h2, finalize_maps(a2[:, 0], (24, 32), minmax=True), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize(
    ("context_agnostic", "estimator"), [(False, "-"), (True, "paper"), (True, "baseline")]
)
def test_occlusion_matches_loop_reference(context_agnostic: bool, estimator: str) -> None:
    # Non-square, with an extra flush position on both axes: rows 0,4,8 + 10; cols 0,4,8,12 + 14.
    model = Centred()
    x1, x2 = images(2, 3, 16, 20, seed=3), images(2, 3, 16, 20, seed=4)
    ref1, ref2 = _loop_occlusion(model, x1, x2, 6, 4, 0.1, context_agnostic, estimator)
    opts: dict[str, Any] = {"estimator": estimator} if context_agnostic else {}
    maps = _context_agnostic_maps if context_agnostic else _conditional_occlusion_maps
    with pair_context(model, x1, x2) as ctx:
        raw1, raw2, _ = maps(ctx, 6, 4, 0.1, 64, **opts)
    torch.testing.assert_close(raw1, ref1, atol=1e-5, rtol=0)
    torch.testing.assert_close(raw2, ref2, atol=1e-5, rtol=0)
    method = "context_agnostic_occlusion" if context_agnostic else "conditional_occlusion"
    e = explain(model, x1, x2, method=method, window=6, stride=4, fill=0.1, **opts)
    torch.testing.assert_close(e.h1, finalize_maps(ref1, (16, 20), minmax=True), atol=1e-4, rtol=0)
    torch.testing.assert_close(e.h2, finalize_maps(ref2, (16, 20), minmax=True), atol=1e-4, rtol=0)


def test_window_as_high_as_the_image_slides_along_the_width() -> None:
    model = Centred()
    x1, x2 = images(1, 3, 16, 40, seed=5), images(1, 3, 16, 40, seed=6)
    e = explain(model, x1, x2, method="conditional_occlusion", window=16, stride=8)
    # The window spans the full height, so scores vary along the width only.
    for h in (e.h1, e.h2):
        assert torch.equal(h, h[:, :1].expand_as(h))
        assert h.amax() == 1
        assert h.amin() < 1


@pytest.mark.parametrize("method", ["conditional_occlusion", "context_agnostic_occlusion"])
@pytest.mark.parametrize(("size", "window"), [((16, 40), 24), ((16, 40), 64), ((12, 12), 12)])
def test_window_that_does_not_fit_is_refused(
    method: str, size: tuple[int, int], window: int
) -> None:
    # Larger than the shorter side, or the whole image: at most one position, an all-zero map.
    x1, x2 = images(1, 3, *size, seed=5), images(1, 3, *size, seed=6)
    with pytest.raises(ValueError, match=rf"`window`.*window={window}.*Pass e\.g\. window=\d+"):
        explain(Centred(), x1, x2, method=method, window=window)


@pytest.mark.parametrize(
    ("size", "window", "stride"), [(224, 64, 8), (64, 18, 2), (32, 9, 1), (16, 5, 1), (8, 4, 1)]
)
def test_default_window_and_stride_scale_with_the_size(size: int, window: int, stride: int) -> None:
    assert default_window(size, size) == window
    assert default_stride(size, size) == stride
    assert resolve_window(None, None, (size, size), owner="x") == (window, stride)
    assert resolve_window(7, 3, (size, size), owner="x") == (7, 3)  # explicit values win
    # The shorter side sets the defaults of non-square images.
    assert default_window(size, 3 * size) == window


def test_default_window_at_224_px_is_bitwise_the_papers() -> None:
    model = Centred()
    x1, x2 = images(1, 3, 224, 224, seed=1), images(1, 3, 224, 224, seed=2)
    default = explain(model, x1, x2, method="conditional_occlusion")
    paper = explain(model, x1, x2, method="conditional_occlusion", window=64, stride=8)
    assert torch.equal(default.h1, paper.h1)
    assert torch.equal(default.h2, paper.h2)


@pytest.mark.parametrize("method", ["conditional_occlusion", "context_agnostic_occlusion"])
def test_default_window_localises_at_32_px(method: str) -> None:
    # The paper's absolute 64 px window clamped to 32 px images left one position (all-zero maps).
    x1 = images(2, 3, 32, 32, seed=9)
    x2 = 0.8 * x1 + 0.2 * images(2, 3, 32, 32, seed=10)
    e = explain(LeftCells(), x1, x2, method=method)
    for h in (e.h1, e.h2):
        assert (h.flatten(1).amax(1) == 1).all()
        assert (left_mass(h) > 0.8).all()


@pytest.mark.parametrize("output", ["coverage", "grid"])
def test_stride_larger_than_the_window_gives_a_full_map(output: str) -> None:
    # 3 px windows every 8 px (starts 0, 8, 16, 24 and a flush 29) leave gaps between them.
    x1 = images(1, 3, 32, 32, seed=9)
    x2 = 0.8 * x1 + 0.2 * images(1, 3, 32, 32, seed=10)
    opts: dict[str, Any] = {"window": 3, "stride": 8, "output": output}
    e = explain(LeftCells(), x1, x2, method="conditional_occlusion", **opts)
    for h in (e.h1, e.h2):
        assert h.amax() == 1
        assert left_mass(h) > 0.8
        if output == "coverage":  # a gap pixel takes the nearest window's value (both at a tie)
            torch.testing.assert_close(h[..., 3], h[..., 2])
            torch.testing.assert_close(h[..., 7], h[..., 8])
            torch.testing.assert_close(h[..., 5], (h[..., 2] + h[..., 8]) / 2)
            torch.testing.assert_close(h[:, 4], h[:, 2])


def test_grid_output_is_the_papers_grid_upsampled_bilinearly() -> None:
    model = Centred()
    x1, x2 = images(2, 3, 20, 24, seed=3), images(2, 3, 20, 24, seed=4)
    with pair_context(model, x1, x2) as ctx:
        grid1, grid2, _ = _conditional_occlusion_maps(ctx, 8, 4, 0.0, 64, "grid")
    assert grid1.shape == (2, 4, 5)  # rows 0, 4, 8, 12; cols 0, 4, 8, 12, 16
    ref1, _ = _loop_occlusion(model, x1, x2, 8, 4, 0.0, False)
    # A window's grid score is the drop of that window: the loop's mean over windows at a pixel
    # covered by one window only (the top-left corner) equals the first grid cell.
    torch.testing.assert_close(grid1[:, 0, 0], ref1[:, 0, 0], atol=1e-5, rtol=0)
    e = explain(model, x1, x2, method="conditional_occlusion", window=8, stride=4, output="grid")
    low = grid1.flatten(1).amin(1).view(-1, 1, 1, 1)
    up = F.interpolate(
        grid1.unsqueeze(1) - low, size=(20, 24), mode="bilinear", align_corners=False
    )[:, 0]
    torch.testing.assert_close(e.h1, up / up.flatten(1).amax(1).view(-1, 1, 1), atol=1e-5, rtol=0)
    assert grid2.shape == (2, 4, 5)


def test_conditional_occlusion_localises_for_a_positive_pair() -> None:
    # The paper's setting: x2 is a view of x1, so occluding what the model sees lowers the similarity.
    x1 = images(4, 3, 32, 32, seed=9)
    x2 = 0.8 * x1 + 0.2 * images(4, 3, 32, 32, seed=10)
    e = explain(LeftCells(), x1, x2, method="conditional_occlusion", window=8, stride=4)
    for h in (e.h1, e.h2):
        assert (left_mass(h) > 0.8).all()


# --------------------------------------------------------------------------------------------------
# Pairwise occlusion


def _loop_pairwise(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor,
    n: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    fill: float,
    temperature: float,
    credit: str,
    seed: int,
    estimator: str = "paper",
) -> tuple[Tensor, Tensor]:
    """Per-pair, per-erasure loop reference of pairwise occlusion.

    ``"paper"``: softmax votes of the drops, credited by ``credit``. ``"baseline"``: each image's
    Shapley share of the drop (``credit="shapley"``) or the drop itself, minus its mean over the
    erasures, summed over the erasures covering a pixel and divided by the square root of their
    number.
    """
    model.eval()
    b, _, h, w = x1.shape
    top, left, hh, ww = erasing_boxes(
        torch.Generator().manual_seed(seed), (2, b, n), (h, w), scale, ratio
    )
    raw = torch.zeros(2, b, h, w)
    count = torch.zeros(2, b, h, w)
    with torch.no_grad():
        for i in range(b):
            z1, z2 = model(x1[i : i + 1])[0], model(x2[i : i + 1])[0]
            base = _cos(z1, z2)
            drops, x1_weaker, alone = [], [], []
            for k in range(n):
                erased = []
                for side, x in enumerate((x1[i], x2[i])):
                    t, lf = int(top[side, i, k]), int(left[side, i, k])
                    y = x.clone()
                    y[:, t : t + int(hh[side, i, k]), lf : lf + int(ww[side, i, k])] = fill
                    erased.append(model(y[None])[0])
                drops.append(base - _cos(erased[0], erased[1]))
                x1_weaker.append(bool(erased[0].norm() < erased[1].norm()))
                alone.append((base - _cos(erased[0], z2), base - _cos(z1, erased[1])))
            d = torch.tensor(drops)
            weights = [torch.softmax(d / temperature, dim=0)] * 2
            if estimator == "baseline":
                a = torch.tensor(alone)  # (n, 2)
                parts = [d, d]
                if credit == "shapley":
                    parts = [(a[:, 0] + d - a[:, 1]) / 2, (a[:, 1] + d - a[:, 0]) / 2]
                weights = [p - p.mean() for p in parts]
            for k in range(n):
                for side in (0, 1):
                    if credit == "norm" and x1_weaker[k] != (side == 0):
                        continue
                    t, lf = int(top[side, i, k]), int(left[side, i, k])
                    th, tw = t + int(hh[side, i, k]), lf + int(ww[side, i, k])
                    raw[side, i, t:th, lf:tw] += weights[side][k]
                    count[side, i, t:th, lf:tw] += 1
    if estimator == "baseline":
        raw = raw / count.clamp(min=1).sqrt()
    minmax = estimator == "baseline"
    return finalize_maps(raw[0], (h, w), minmax=minmax), finalize_maps(
        raw[1], (h, w), minmax=minmax
    )


@pytest.mark.parametrize(
    ("estimator", "credit", "temperature"),
    [
        ("paper", "both", 1.0),
        ("paper", "norm", 0.1),
        ("baseline", None, None),  # the default: Shapley credit
        ("baseline", "both", None),
        ("baseline", "norm", None),
    ],
)
def test_pairwise_occlusion_matches_loop_reference(
    estimator: str, credit: str | None, temperature: float | None
) -> None:
    model = Centred()
    x1, x2 = images(2, 3, 20, 24, seed=7), images(2, 3, 20, 24, seed=8)
    opts: dict[str, Any] = {
        "n_erasures": 12,
        "scale": (0.05, 0.4),
        "ratio": (0.5, 2.0),
        "fill": 0.2,
        "estimator": estimator,
        "temperature": temperature,
        "credit": credit,
        "seed": 5,
    }
    e = explain(model, x1, x2, method="pairwise_occlusion", **opts)
    resolved = credit or ("norm" if estimator == "paper" else "shapley")
    ref1, ref2 = _loop_pairwise(
        model, x1, x2, 12, (0.05, 0.4), (0.5, 2.0), 0.2, temperature or 1.0, resolved, 5, estimator
    )
    # Mean-subtracted votes are small and min-max rescales them: float32 rounding reaches 3e-5.
    atol = 1e-4 if estimator == "baseline" else 1e-5
    torch.testing.assert_close(e.h1, ref1, atol=atol, rtol=0)
    torch.testing.assert_close(e.h2, ref2, atol=atol, rtol=0)


def test_erasing_boxes_follow_torchvision_random_erasing() -> None:
    transforms = pytest.importorskip("torchvision.transforms")
    size, scale, ratio, n = (40, 56), (0.1, 0.3), (1.0, 1.5), 4000
    top, left, h, w = erasing_boxes(torch.Generator().manual_seed(0), (n,), size, scale, ratio)
    assert ((h > 0) & (h < size[0]) & (w > 0) & (w < size[1])).all()
    assert ((top >= 0) & (top + h <= size[0]) & (left >= 0) & (left + w <= size[1])).all()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        img = torch.zeros(3, *size)
        tv = torch.tensor(
            [transforms.RandomErasing.get_params(img, scale, ratio, [0.0])[:4] for _ in range(n)],
            dtype=torch.float64,
        )
    ours = torch.stack([top, left, h, w], dim=1).double()
    # Same distribution: means and spreads agree to a few standard errors.
    se = tv.std(0) / math.sqrt(n)
    assert ((ours.mean(0) - tv.mean(0)).abs() < 5 * se * math.sqrt(2)).all()
    assert ((ours.std(0) - tv.std(0)).abs() < 0.1 * tv.std(0)).all()


def test_erasing_boxes_that_never_fit_erase_nothing() -> None:
    # scale 1 on a square image: h == H on every attempt; torchvision then leaves the image as is.
    _, _, h, w = erasing_boxes(
        torch.Generator().manual_seed(0), (5,), (8, 8), (1.0, 1.0), (1.0, 1.0)
    )
    assert (h == 0).all()
    assert (w == 0).all()


def test_pairwise_occlusion_does_not_credit_black_pixels() -> None:
    # The paper's code finds erased pixels by channel sum == 0, so black image regions were credited
    # on every erasure. Here credit follows the rectangles only.
    x1, x2 = images(1, 3, 24, 24, seed=1), images(1, 3, 24, 24, seed=2)
    x1[..., :, :6] = 0.0
    opts: dict[str, Any] = {
        "n_erasures": 3,
        "scale": (0.02, 0.05),
        "seed": 2,
        "credit": "both",
        "estimator": "paper",
    }
    e = explain(Centred(), x1, x2, method="pairwise_occlusion", **opts)
    top, left, h, w = erasing_boxes(
        torch.Generator().manual_seed(2), (2, 1, 3), (24, 24), (0.02, 0.05), (1.0, 1.5)
    )
    covered = torch.zeros(24, 24, dtype=torch.bool)
    for k in range(3):
        t, lf = int(top[0, 0, k]), int(left[0, 0, k])
        covered[t : t + int(h[0, 0, k]), lf : lf + int(w[0, 0, k])] = True
    assert not covered[:, :6].all()
    assert (e.h1[0][~covered] == 0).all()
    assert (e.h1[0][covered] > 0).all()


# --------------------------------------------------------------------------------------------------
# Shared behaviour


FAST_OPTS: dict[str, dict[str, Any]] = {
    "conditional_occlusion": {"window": 6, "stride": 4},
    "context_agnostic_occlusion": {"window": 6, "stride": 4},
    "pairwise_occlusion": {"n_erasures": 10},
}


@pytest.mark.parametrize("method", OCCLUSION)
def test_chunking_does_not_change_results(method: str) -> None:
    model = Centred()
    x1, x2 = images(2, 3, 12, 16, seed=1), images(2, 3, 12, 16, seed=2)
    ref = explain(model, x1, x2, method=method, batch_size=1000, **FAST_OPTS[method])
    for batch_size in (1, 7):
        counted = Counting(model)
        e = explain(counted, x1, x2, method=method, batch_size=batch_size, **FAST_OPTS[method])
        assert max(counted.batches) <= batch_size
        # Equal up to float rounding (CPU convolutions may pick another kernel per batch size).
        torch.testing.assert_close(e.h1, ref.h1, atol=1e-4, rtol=0)
        torch.testing.assert_close(e.h2, ref.h2, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("method", "per_pair"),
    [
        # 2 baselines + per image: positions (4 x 5) x 1 or 2 images, or erasures.
        ("conditional_occlusion", 2 + 2 * 20),
        ("context_agnostic_occlusion", 2 + 4 * 20),
        ("pairwise_occlusion", 2 + 2 * 10),
    ],
)
def test_documented_forward_cost(method: str, per_pair: int) -> None:
    counted = Counting(Centred())
    x1, x2 = images(3, 3, 16, 20, seed=1), images(3, 3, 16, 20, seed=2)
    explain(counted, x1, x2, method=method, **FAST_OPTS[method])
    # CACO's default estimator embeds the all-fill image once per call.
    per_call = 1 if method == "context_agnostic_occlusion" else 0
    assert sum(counted.batches) == 3 * per_pair + per_call


@pytest.mark.parametrize("method", OCCLUSION)
def test_single_pair_one_channel_non_square(method: str) -> None:
    model = Centred(in_channels=1)
    x1, x2 = images(1, 1, 18, 26, seed=1), images(1, 1, 18, 26, seed=2)
    e = explain(model, x1, x2, method=method, **FAST_OPTS[method])
    for h in (e.h1, e.h2):
        assert h.shape == (1, 18, 26)
        assert h.amax() == pytest.approx(1.0)
        assert h.amin() >= 0
    torch.testing.assert_close(e.sim, F.cosine_similarity(model(x1), model(x2)).detach())


Case = tuple[str, dict[str, Any], type[Exception], str]
BAD: list[Case] = [
    *[
        (m, {k: v}, exc, k)
        for m in ("conditional_occlusion", "context_agnostic_occlusion")
        for k, v, exc in [
            ("window", 0, ValueError),
            ("window", 2.5, TypeError),
            ("stride", 0, ValueError),
            ("stride", True, TypeError),
            ("fill", "black", TypeError),
            ("fill", float("nan"), ValueError),
            ("batch_size", 0, ValueError),
        ]
    ],
    ("pairwise_occlusion", {"n_erasures": 0}, ValueError, "n_erasures"),
    ("pairwise_occlusion", {"n_erasures": 3.0}, TypeError, "n_erasures"),
    ("pairwise_occlusion", {"scale": (0.0, 0.3)}, ValueError, "scale"),
    ("pairwise_occlusion", {"scale": (0.1, 1.5)}, ValueError, "scale"),
    ("pairwise_occlusion", {"scale": (0.3, 0.1)}, ValueError, "scale"),
    ("pairwise_occlusion", {"scale": 0.2}, TypeError, "scale"),
    ("pairwise_occlusion", {"ratio": (-1.0, 1.5)}, ValueError, "ratio"),
    ("pairwise_occlusion", {"ratio": (1.0, "a")}, TypeError, "ratio"),
    ("pairwise_occlusion", {"temperature": 0.0, "estimator": "paper"}, ValueError, "temperature"),
    ("pairwise_occlusion", {"temperature": 0.5}, ValueError, "temperature` only with"),
    ("pairwise_occlusion", {"estimator": "softmax"}, ValueError, "estimator"),
    ("context_agnostic_occlusion", {"estimator": "x"}, ValueError, "estimator"),
    ("conditional_occlusion", {"output": "pixels"}, ValueError, "output"),
    ("pairwise_occlusion", {"credit": "x1"}, ValueError, "credit"),
    ("pairwise_occlusion", {"seed": -1}, ValueError, "seed"),
    ("pairwise_occlusion", {"seed": 1.5}, TypeError, "seed"),
    ("pairwise_occlusion", {"fill": None}, TypeError, "fill"),
    ("pairwise_occlusion", {"batch_size": 0}, ValueError, "batch_size"),
]


@pytest.mark.parametrize(("method", "options", "exc", "name"), BAD)
def test_bad_options_name_the_option(
    method: str, options: dict[str, Any], exc: type[Exception], name: str
) -> None:
    with pytest.raises(exc, match=rf"`{method}`: expected `{name}"):
        explain(TinyCNN(), images(1), images(1), method=method, **options)


def test_custom_similarity_argument_order() -> None:
    # h1 scores s(f(x1 occluded), f(x2)); h2 scores s(f(x1), f(x2 occluded)).
    calls: list[tuple[Tensor, Tensor]] = []

    def sim(z1: Tensor, z2: Tensor) -> Tensor:
        calls.append((z1, z2))
        return F.cosine_similarity(z1, z2)

    model = Centred()
    x1, x2 = images(1, 3, 16, 16, seed=1), images(1, 3, 16, 16, seed=2)
    explain(model, x1, x2, method="conditional_occlusion", window=8, stride=8, similarity=sim)
    with torch.no_grad():
        z1, z2 = model(x1)[0], model(x2)[0]
    left, right = calls[1]  # calls[0] is the unperturbed pair
    assert left.shape[0] == 8  # 4 positions x 2 images in one chunk, x1 and x2 alternating
    torch.testing.assert_close(right[0::2], z2.expand(4, -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(left[1::2], z1.expand(4, -1), atol=1e-6, rtol=0)
    assert not torch.allclose(left[0::2], z1.expand(4, -1), atol=1e-4)
