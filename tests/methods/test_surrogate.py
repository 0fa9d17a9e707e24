"""Pixel Invariance: each step against a reference, and the public function's behaviour."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms.v2 import RandomErasing
from torchvision.transforms.v2 import functional as TF

from lightning_explain import explain
from lightning_explain._core import gaussian_blur
from lightning_explain.methods import surrogate as S
from lightning_explain.methods.surrogate import pixel_invariance
from tests.helpers import TinyCNN, images, left_mass, untouched, with_grads

FAST = {"n_augmentations": 16, "epochs": 5}


class LeftBlocks(nn.Module):
    """Embedding = 4 x 2 average-pooled blocks of the left half of the image.

    Only the left half matters, and erasing a block visibly lowers the cosine similarity, so the
    augmentation labels carry the signal Pixel Invariance needs.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x[..., : x.shape[-1] // 2], (4, 2)).flatten(1)


# --------------------------------------------------------------------------------------------------
# Augmentations


def _torchvision_augment(x: Tensor, p: S.AugmentParams) -> Tensor:
    """Per-image reference with torchvision's kernels and the drawn parameters."""
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    out = []
    for k in range(x.shape[0]):
        img = x[k]
        if p.jitter[k]:
            for op in p.order[k].tolist():
                img = ops[op](img, float(p.factors[k, op]))
        if p.gray[k]:
            img = TF.rgb_to_grayscale(img, num_output_channels=img.shape[0])
        if p.erase[k]:
            top, left, h, w = p.box[k].tolist()
            img = TF.erase(img, top, left, h, w, torch.tensor(0.0))
        out.append(img)
    return torch.stack(out)


@pytest.mark.parametrize(("c", "h", "w"), [(3, 16, 24), (1, 20, 12)])
def test_augment_matches_torchvision_kernels(c: int, h: int, w: int) -> None:
    n = 300
    x = images(n, c, h, w, seed=1)
    p = S._draw_augmentations(n, h, w, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(S._augment(x, p), _torchvision_augment(x, p), atol=2e-5, rtol=0)


def test_hue_is_defined_for_normalised_inputs() -> None:
    # Shift and positive scale of all channels commute with the hue rotation.
    x = images(4, 3, 8, 8, seed=2)
    shift = torch.tensor([0.1, -0.2, 0.3, 0.05]).view(-1, 1, 1)
    ref = S._adjust_hue(x, shift)
    torch.testing.assert_close(S._adjust_hue(2.0 * x - 1.5, shift), 2.0 * ref - 1.5)


def test_augment_does_not_clip_normalised_inputs() -> None:
    x = (images(64, 3, 8, 8, seed=3) - 0.45) / 0.22  # roughly ImageNet-normalised, beyond [0, 1]
    p = S._draw_augmentations(64, 8, 8, generator=torch.Generator().manual_seed(1))
    out = S._augment(x, p)
    untouched_rows = ~(p.jitter | p.gray | p.erase)
    assert untouched_rows.any()
    torch.testing.assert_close(out[untouched_rows], x[untouched_rows])
    assert out.min() < -1.0  # negative values survive
    flat_x, flat_o = x.flatten(1), out.flatten(1)
    assert (flat_o.amin(1) >= flat_x.amin(1).clamp(max=0) - 1e-6).all()
    assert (flat_o.amax(1) <= flat_x.amax(1).clamp(min=1) + 1e-6).all()


def test_draw_distributions() -> None:
    n, h, w = 20000, 32, 32
    p = S._draw_augmentations(n, h, w, generator=torch.Generator().manual_seed(2))
    assert abs(p.jitter.float().mean().item() - 0.8) < 0.02
    assert abs(p.gray.float().mean().item() - 0.2) < 0.02
    assert abs(p.erase.float().mean().item() - 0.5) < 0.02
    assert (p.factors[:, :3] >= 0.2).all()
    assert (p.factors[:, :3] <= 1.8).all()
    assert (p.factors[:, 3].abs() <= 0.2).all()
    assert (p.order.sort(dim=1).values == torch.arange(4)).all()  # permutations
    assert len({tuple(o) for o in p.order.tolist()}) == 24
    top, left, eh, ew = p.box[p.erase].unbind(1)
    assert (top >= 0).all()
    assert (left >= 0).all()
    assert (top + eh <= h).all()
    assert (left + ew <= w).all()
    assert (eh < h).all()
    assert (ew < w).all()
    area = (eh * ew).float() / (h * w)
    assert area.min() > 0.01
    assert area.max() < 0.37
    assert (p.box[~p.erase] == 0).all()


def test_erasing_boxes_follow_torchvision() -> None:
    # Same box distribution as torchvision's RandomErasing (statistically), on a small image where
    # some draws do not fit and are retried.
    n, h, w = 4000, 12, 20
    p = S._draw_augmentations(n, h, w, generator=torch.Generator().manual_seed(3))
    ours = p.box[p.erase].float()
    eraser = RandomErasing(p=1.0, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torch.tensor(
            [
                [d["i"], d["j"], d["h"], d["w"]]
                for d in (eraser.make_params([torch.zeros(3, h, w)]) for _ in range(n))
                if d["v"] is not None
            ],
            dtype=torch.float32,
        )
    torch.testing.assert_close(ours.mean(0), theirs.mean(0), atol=0.25, rtol=0.05)
    torch.testing.assert_close(ours.std(0), theirs.std(0), atol=0.25, rtol=0.08)


# --------------------------------------------------------------------------------------------------
# Labels and targets


def test_augmented_rows_match_per_image_loop() -> None:
    model = LeftBlocks()
    b, t, grid = 2, 5, (6, 9)
    x = torch.cat([images(b, 3, 12, 18, seed=4), images(b, 3, 12, 18, seed=5)])
    z = model(x)
    p = S._draw_augmentations(2 * b * t, 12, 18, generator=torch.Generator().manual_seed(4))
    cos = torch.nn.functional.cosine_similarity
    u, y, z_aug = S._augmented_rows(
        model, cos, x, z, p, n_aug=t, grid=grid, batch_size=3, keep_embeddings=True
    )
    assert u.shape == (2 * b, t, 3 * 6 * 9)
    assert y.shape == (2 * b, t)
    assert z_aug is not None
    for k in range(2 * b):
        partner = (k + b) % (2 * b)
        for n in range(t):
            aug = S._augment(x[k : k + 1], p[torch.tensor([k * t + n])])
            za = model(aug)
            # The partner stays intact; the similarity keeps the pair's order (x1, x2).
            first, second = (za, z[partner : partner + 1])
            if k >= b:
                first, second = second, first
            torch.testing.assert_close(y[k, n], cos(first, second)[0])
            torch.testing.assert_close(z_aug[k, n], za[0])
            pure = F.interpolate(x[k : k + 1], size=grid, mode="bilinear", antialias=True)
            small = F.interpolate(aug, size=grid, mode="bilinear", antialias=True)
            torch.testing.assert_close(u[k, n], ((pure + small) / 2).flatten())
    # Chunking does not change anything.
    u2, y2, _ = S._augmented_rows(model, cos, x, z, p, n_aug=t, grid=grid, batch_size=64)
    torch.testing.assert_close(u2, u)
    torch.testing.assert_close(y2, y)


def test_bce_targets() -> None:
    y = torch.tensor([[-0.5, 0.3, 1.2], [2.0, 4.0, 3.0], [7.0, 7.0, 7.0]])
    torch.testing.assert_close(
        S._bce_targets(y, cosine=True), torch.tensor([[0.0, 0.3, 1.0], [1.0, 1.0, 1.0], [1.0] * 3])
    )
    torch.testing.assert_close(
        S._bce_targets(y, cosine=False),
        torch.tensor([[0.0, 0.8 / 1.7, 1.0], [0.0, 1.0, 0.5], [1.0, 1.0, 1.0]]),
    )


def test_standardised_targets() -> None:
    y = torch.tensor([[0.2, 0.4, 0.6], [0.99998, 0.99999, 1.0], [7.0, 7.0, 7.0]])
    got = S._standardised_targets(y)
    # (y - mean) / std with the unbiased std: -1, 0, 1 for both rows; constant labels: 0.5.
    expected = torch.sigmoid(torch.tensor([[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=0)
    # Offset and scale of the labels do not matter: a saturated model gets a centred one's targets.
    torch.testing.assert_close(
        S._standardised_targets(1.0 + 1e-4 * y[:1]), got[:1], atol=1e-3, rtol=0
    )


def test_targets_option_selects_the_papers_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Tensor] = {}
    fit = S._fit_surrogates

    def spy(u: Tensor, y: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        seen["targets"] = y
        return fit(u, y, *args, **kwargs)

    monkeypatch.setattr(S, "_fit_surrogates", spy)
    x1, x2 = images(1, 3, 8, 8, seed=1), images(1, 3, 8, 8, seed=2)
    pixel_invariance(LeftBlocks(), x1, x2, targets="paper", **FAST)
    paper = seen["targets"]
    pixel_invariance(LeftBlocks(), x1, x2, **FAST)
    default = seen["targets"]
    assert paper.amin() >= 0
    assert paper.amax() <= 1
    torch.testing.assert_close(default.logit().mean(1), torch.zeros(2), atol=1e-4, rtol=0)
    assert not torch.allclose(paper, default)


def test_nmf_labels_match_sklearn() -> None:
    from sklearn.decomposition import NMF

    z = torch.randn(3, 40, 12, generator=torch.Generator().manual_seed(5))
    got = S._nmf_labels(z, n_components=4, random_state=7)
    assert got.shape == (3, 40)
    for k in range(3):
        model = NMF(n_components=4, init="random", random_state=7, max_iter=200)
        want = model.fit_transform(torch.relu(z[k]).numpy()).mean(axis=1)
        np.testing.assert_allclose(got[k].numpy(), want, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------------------
# Surrogate fit


def _reference_fit(
    pure: Tensor,
    aug: Tensor,
    y: Tensor,
    w0: Tensor,
    b0: Tensor,
    *,
    lr: float,
    l1: float,
    epochs: int,
    y_inv: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """The paper's loop for one image: nn.Linear, torch.optim.SGD, autograd."""
    lin = nn.Linear(pure.shape[1], 1).double()
    with torch.no_grad():
        lin.weight.copy_(w0.view(1, -1))
        lin.bias.copy_(b0.view(1))
    opt = torch.optim.SGD(lin.parameters(), lr=lr)
    bce = nn.BCEWithLogitsLoss(reduction="sum")
    for _ in range(epochs):
        pred = ((lin(pure) + lin(aug)) / 2).squeeze(1)
        loss = bce(pred, y) + l1 * sum(p.abs().sum() for p in lin.parameters())
        if y_inv is not None:
            loss = loss + nn.MSELoss()(torch.sigmoid(pred), y_inv)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lin.weight.detach().view(-1), lin.bias.detach().view(())


@pytest.mark.parametrize("use_nmf", [False, True])
def test_batched_fit_matches_per_image_sgd(use_nmf: bool) -> None:
    g = torch.Generator().manual_seed(6)
    k, t, f = 3, 12, 2 * 5 * 5
    pure = torch.rand(k, f, generator=g, dtype=torch.float64)
    aug = torch.rand(k, t, f, generator=g, dtype=torch.float64)
    y = torch.rand(k, t, generator=g, dtype=torch.float64)
    y_inv = torch.rand(k, t, generator=g, dtype=torch.float64) if use_nmf else None
    w0 = (torch.rand(k, f, generator=g, dtype=torch.float64) - 0.5) * 0.2
    b0 = (torch.rand(k, generator=g, dtype=torch.float64) - 0.5) * 0.2
    opts = {"lr": 0.02, "l1": 0.2, "epochs": 40}
    u = (pure.unsqueeze(1) + aug) / 2
    w, b = S._fit_surrogates(u, y, w0, b0, y_inv=y_inv, **opts)
    for i in range(k):
        ref_w, ref_b = _reference_fit(
            pure[i].expand(t, f),
            aug[i],
            y[i],
            w0[i],
            b0[i],
            y_inv=None if y_inv is None else y_inv[i],
            **opts,
        )
        torch.testing.assert_close(w[i], ref_w, atol=1e-5, rtol=0)
        torch.testing.assert_close(b[i], ref_b, atol=1e-5, rtol=0)
    assert not torch.allclose(w, w0)  # the fit moved


# --------------------------------------------------------------------------------------------------
# Weights to heatmap


def test_weights_to_maps() -> None:
    w = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[4.0, 5.0], [6.0, 8.0]]])  # (C=2, 2, 2)
    flat = w.view(1, -1)  # K = 1 surrogate
    # Max over channels -> [[4, 5], [6, 8]]; min-max -> [[0, 0.25], [0.5, 1]]; threshold 0.5.
    got = S._weights_to_maps(flat, 2, (2, 2), threshold=0.5, blur=False)
    torch.testing.assert_close(got, torch.tensor([[[0.0, 0.0], [0.5, 1.0]]]))
    got = S._weights_to_maps(flat, 2, (2, 2), threshold=0.0, blur=False)
    torch.testing.assert_close(got, torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]))
    assert (S._weights_to_maps(torch.ones(2, 12), 3, (2, 2), threshold=0.5, blur=False) == 0).all()
    big = torch.randn(2, 3 * 16 * 20, generator=torch.Generator().manual_seed(8))
    raw = S._weights_to_maps(big, 3, (16, 20), threshold=0.5, blur=False)
    # The paper's k=11, sigma=5 on its 64 px grid, scaled to the 16 px grid: k=3, sigma=1.25.
    torch.testing.assert_close(
        S._weights_to_maps(big, 3, (16, 20), threshold=0.5, blur=True), gaussian_blur(raw, 3, 1.25)
    )
    big64 = torch.randn(1, 3 * 64 * 64, generator=torch.Generator().manual_seed(9))
    raw64 = S._weights_to_maps(big64, 3, (64, 64), threshold=0.5, blur=False)
    assert torch.equal(
        S._weights_to_maps(big64, 3, (64, 64), threshold=0.5, blur=True),
        gaussian_blur(raw64, 11, 5.0),
    )
    small = S._weights_to_maps(big[:, : 3 * 16], 3, (4, 4), threshold=0.5, blur=True)
    assert small.shape == (2, 4, 4)
    assert torch.isfinite(small).all()


@pytest.mark.parametrize(
    ("hw", "size", "grid"),
    [
        ((224, 224), 64, (64, 64)),
        ((224, 224), None, (64, 64)),  # the default: 64/224 of the shorter side
        ((32, 48), None, (9, 14)),
        ((64, 64), None, (18, 18)),
        ((32, 48), 64, (32, 48)),
        ((40, 96), 16, (16, 38)),
        ((96, 40), 16, (38, 16)),
    ],
)
def test_surrogate_grid(hw: tuple[int, int], size: int | None, grid: tuple[int, int]) -> None:
    assert S._surrogate_grid(*hw, size) == grid


# --------------------------------------------------------------------------------------------------
# The public function


def test_localises_a_left_half_model_with_informative_labels() -> None:
    # LeftBlocks is invariant to brightness and its similarity drops when a left block is erased:
    # the setting the paper assumes (a contrastive model is trained to be invariant to jitter).
    x1, x2 = images(4, 3, 32, 32, seed=9), images(4, 3, 32, 32, seed=10)
    e = pixel_invariance(LeftBlocks(), x1, x2, n_augmentations=128, epochs=100)
    frac = torch.cat([left_mass(e.h1), left_mass(e.h2)])
    assert frac.mean() > 0.65, frac.tolist()
    assert (frac > 0.5).sum() >= 7, frac.tolist()


@pytest.mark.parametrize(("c", "h", "w"), [(1, 24, 40), (3, 40, 20)])
def test_one_channel_and_non_square(c: int, h: int, w: int) -> None:
    x1, x2 = images(2, c, h, w, seed=11), images(2, c, h, w, seed=12)
    e = pixel_invariance(LeftBlocks(), x1, x2, size=8, **FAST)
    assert e.h1.shape == e.h2.shape == (2, h, w)
    for m in (e.h1, e.h2):
        assert torch.isfinite(m).all()
        assert (m >= 0).all()
        assert torch.allclose(m.flatten(1).amax(1), torch.ones(2))


def test_seeds_reproducible_and_rngs_untouched() -> None:
    model = with_grads(TinyCNN())
    x1, x2 = images(2, seed=13), images(2, seed=14)
    np.random.seed(0)
    np_state = np.random.get_state()[1].copy()
    with untouched(model):  # also checks the global torch RNG
        a = pixel_invariance(model, x1, x2, seed=3, nmf=True, n_components=3, **FAST)
        b = pixel_invariance(model, x1, x2, seed=3, nmf=True, n_components=3, **FAST)
        c = pixel_invariance(model, x1, x2, seed=4, nmf=True, n_components=3, **FAST)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(a.h1, b.h1)
    assert torch.equal(a.h2, b.h2)
    assert not torch.equal(a.h1, c.h1)


def test_nmf_term_gets_augmentation_embeddings(monkeypatch: pytest.MonkeyPatch) -> None:
    model = LeftBlocks()
    x1, x2 = images(1, 3, 16, 16, seed=15), images(1, 3, 16, 16, seed=16)
    seen: dict[str, object] = {}

    def spy(z: Tensor, *, n_components: int, random_state: int) -> Tensor:
        seen.update(z=z, n_components=n_components, random_state=random_state)
        return torch.zeros(z.shape[:2])

    monkeypatch.setattr(S, "_nmf_labels", spy)
    pixel_invariance(model, x1, x2, nmf=True, n_components=4, seed=-1, **FAST)
    t = FAST["n_augmentations"]
    p = S._draw_augmentations(2 * t, 16, 16, generator=torch.Generator().manual_seed(-1))
    x = torch.cat([x1, x2])
    want = model(S._augment(x.repeat_interleave(t, dim=0), p)).view(2, t, -1)
    torch.testing.assert_close(seen["z"], want)
    assert seen["n_components"] == 4
    assert seen["random_state"] == 2**32 - 1


def test_epochs_default_depends_on_nmf(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    fit = S._fit_surrogates

    def spy(*args: object, **kwargs: object) -> tuple[Tensor, Tensor]:
        calls.append(int(kwargs["epochs"]))  # type: ignore[call-overload]
        return fit(*args, **{**kwargs, "epochs": 1})  # type: ignore[arg-type]

    monkeypatch.setattr(S, "_fit_surrogates", spy)
    x1, x2 = images(1, 3, 8, 8, seed=17), images(1, 3, 8, 8, seed=18)
    pixel_invariance(LeftBlocks(), x1, x2, n_augmentations=4)
    pixel_invariance(LeftBlocks(), x1, x2, n_augmentations=4, nmf=True, n_components=2)
    assert calls == [1000, 100]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n_augmentations": 1}, "n_augmentations"),
        ({"size": 3}, "size"),
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"l1": -0.2}, "l1"),
        ({"epochs": 0}, "epochs"),
        ({"n_components": 0}, "n_components"),
        ({"batch_size": 0}, "batch_size"),
        ({"targets": "raw"}, "targets"),
    ],
)
def test_bad_options_raise_value_error(options: dict[str, object], match: str) -> None:
    x = images(1, 3, 8, 8)
    with pytest.raises(ValueError, match=f"`pixel_invariance`: expected `{match}`"):
        explain(LeftBlocks(), x, x, method="pixel_invariance", **options)


@pytest.mark.parametrize(
    "options", [{"nmf": 1}, {"blur": "yes"}, {"lr": "0.1"}, {"seed": 1.5}, {"n_augmentations": 8.0}]
)
def test_bad_option_types_raise_type_error(options: dict[str, object]) -> None:
    x = images(1, 3, 8, 8)
    with pytest.raises(TypeError, match="pixel_invariance"):
        pixel_invariance(LeftBlocks(), x, x, **options)  # type: ignore[arg-type]


def test_missing_sklearn_is_reported_before_any_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.decomposition", None)
    calls = []

    def model(x: Tensor) -> Tensor:
        calls.append(1)
        return x.flatten(1)

    x = images(1, 3, 8, 8)
    with pytest.raises(ModuleNotFoundError, match=r"pip install lightning-explain\[sklearn\]"):
        pixel_invariance(model, x, x, nmf=True, **FAST)
    assert calls == []
    assert math.isfinite(float(pixel_invariance(model, x, x, **FAST).sim))  # nmf=False still works
