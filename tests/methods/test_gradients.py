"""Gradient family: input x gradient, SmoothGrad, Averaged Transforms, integrated gradients.

captum computes the oracle gradients independently of our implementation (captum is a test-only
dependency); loop-based references check the pair generalisation of Averaged Transforms.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, Saliency
from torch import Tensor, nn

from lightning_explain._core import finalize_maps, gaussian_blur
from lightning_explain.methods._photometric import builtin_transform
from lightning_explain.methods.gradients import (
    averaged_transforms,
    input_x_gradient,
    integrated_gradients,
    integrated_gradients_attributions,
    smoothgrad,
    smoothgrad_noise,
)
from tests.helpers import TinyCNN, hook_count, images, untouched
from tests.metrics.reference import paper_blur

SIZE = (32, 32)


def _scaled_blur(x: Tensor) -> Tensor:
    """The paper's k=11, sigma=5 blur of 224 px images, scaled to ``x`` (k=3 at 32 px)."""
    k, sigma = paper_blur(min(int(x.shape[-2]), int(x.shape[-1])))
    return gaussian_blur(x, k, sigma)


@pytest.fixture
def model() -> TinyCNN:
    return TinyCNN().eval()


@pytest.fixture
def pair() -> tuple[Tensor, Tensor]:
    return images(2, seed=21), images(2, seed=22)


def _cos(model: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda a, b: F.cosine_similarity(model(a), model(b), dim=1)


def _maps(grad_times_input: Tensor) -> Tensor:
    """The family's reduction, then the public normalisation: ``max_c |.|`` -> max 1."""
    return finalize_maps(grad_times_input.abs().amax(dim=1), SIZE)


class _PairCos(nn.Module):
    """``(a, b) -> cos(f(a), f(b))`` as a module, for captum attributions that need one."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return F.cosine_similarity(self.net(a), self.net(b), dim=1)


# --------------------------------------------------------------------------------------------------
# captum oracles


def test_input_x_gradient_matches_captum(model: TinyCNN, pair: tuple[Tensor, Tensor]) -> None:
    x1, x2 = pair
    a1, a2 = InputXGradient(_cos(model)).attribute((x1.clone(), x2.clone()))
    e = input_x_gradient(model, x1, x2)
    torch.testing.assert_close(e.h1, _maps(a1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(e.h2, _maps(a2), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(e.sim, _cos(model)(x1, x2).detach())


def test_guided_input_x_gradient_matches_captum_guided_backprop(
    model: TinyCNN, pair: tuple[Tensor, Tensor]
) -> None:
    x1, x2 = pair
    e = input_x_gradient(model, x1, x2, guided=True)
    for m in model.modules():  # captum's hooks cannot handle in-place ReLUs
        if isinstance(m, nn.ReLU):
            m.inplace = False
    g1, g2 = GuidedBackprop(_PairCos(model)).attribute((x1.clone(), x2.clone()))
    torch.testing.assert_close(e.h1, _maps(x1 * g1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(e.h2, _maps(x2 * g2), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("noise", [None, 0.3])
def test_smoothgrad_matches_captum_with_the_same_noise(
    model: TinyCNN, pair: tuple[Tensor, Tensor], noise: float | None
) -> None:
    x1, x2 = pair
    eps = smoothgrad_noise(x1, x2, n_samples=4, noise=noise, seed=5)
    assert eps.shape == (4, *x1.shape)
    # One noise tensor per pair and sample, added to both images; its scale follows the rule.
    both = torch.cat([x1.flatten(1), x2.flatten(1)], dim=1)
    sigma = 0.15 / (both.amax(1) - both.amin(1)) if noise is None else torch.full((2,), noise)
    torch.testing.assert_close(eps.transpose(0, 1).flatten(1).std(1), sigma, rtol=0.05, atol=0)
    saliency = Saliency(_cos(model))
    grads = [saliency.attribute((x1 + n, x2 + n), abs=False) for n in eps]
    g1 = torch.stack([g[0] for g in grads]).mean(0)
    g2 = torch.stack([g[1] for g in grads]).mean(0)
    # batch_size=3 splits chunks across samples and pairs.
    e = smoothgrad(model, x1, x2, n_samples=4, noise=noise, seed=5, batch_size=3)
    torch.testing.assert_close(e.h1, _maps(x1 * g1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(e.h2, _maps(x2 * g2), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(e.sim, _cos(model)(x1, x2).detach())


@pytest.mark.parametrize("baseline", ["blur", "black"])
def test_integrated_gradients_matches_captum(
    model: TinyCNN, pair: tuple[Tensor, Tensor], baseline: str
) -> None:
    x1, x2 = pair
    attr1, attr2 = integrated_gradients_attributions(
        model, x1, x2, baseline=baseline, n_steps=16, batch_size=5
    )
    cos = _cos(model)
    ig1 = IntegratedGradients(cos)
    ig2 = IntegratedGradients(lambda b, a: cos(a, b))
    for ig, x, other, attr in ((ig1, x1, x2, attr1), (ig2, x2, x1, attr2)):
        base = _scaled_blur(x) if baseline == "blur" else torch.zeros_like(x)
        ref = ig.attribute(
            x,
            baselines=base,
            additional_forward_args=(other,),
            n_steps=16,
            method="riemann_middle",
        )
        torch.testing.assert_close(attr, ref, atol=1e-6, rtol=1e-4)
    e = integrated_gradients(model, x1, x2, baseline=baseline, n_steps=16)
    torch.testing.assert_close(e.h1, _maps(attr1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(e.h2, _maps(attr2), atol=1e-5, rtol=1e-4)


def _spatial_cnn() -> nn.Module:
    """A CNN whose linear head sees the flattened feature map, so blurring moves the embedding."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 8 * 8, 16),
        ).eval()


@pytest.mark.parametrize("net", ["tiny", "spatial"])
@pytest.mark.parametrize("baseline", ["blur", "black"])
def test_integrated_gradients_completeness(net: str, baseline: str) -> None:
    # float64, so that the check measures the Riemann sum, not rounding.
    model = (TinyCNN() if net == "tiny" else _spatial_cnn()).double().eval()
    x1, x2 = images(2, seed=21).double(), images(2, seed=22).double()
    attr1, attr2 = integrated_gradients_attributions(model, x1, x2, baseline=baseline, n_steps=64)
    cos = _cos(model)
    with torch.no_grad():
        b1 = _scaled_blur(x1) if baseline == "blur" else torch.zeros_like(x1)
        b2 = _scaled_blur(x2) if baseline == "blur" else torch.zeros_like(x2)
        gain1 = cos(x1, x2) - cos(b1, x2)
        gain2 = cos(x1, x2) - cos(x1, b2)
    for attr, gain in ((attr1, gain1), (attr2, gain2)):
        assert (gain.abs() > 1e-8).all()  # a non-trivial check (float64 rounding is ~1e-16)
        # A few percent of the similarity gain; where the gain is a small difference of large
        # opposite contributions (the spatial net), also allow 0.1% of the attribution mass.
        err = (attr.sum((1, 2, 3)) - gain).abs()
        tol = 0.03 * gain.abs() + 1e-3 * attr.abs().sum((1, 2, 3))
        assert (err <= tol).all(), (err.tolist(), gain.tolist())
        if net == "tiny":
            assert (err <= 0.03 * gain.abs()).all(), (err.tolist(), gain.tolist())


# --------------------------------------------------------------------------------------------------
# Guided and blurred variants


@pytest.mark.parametrize(
    ("method", "options"),
    [
        (input_x_gradient, {}),
        (smoothgrad, {"n_samples": 4}),
        (averaged_transforms, {"steps": 3, "transform": "blur"}),
    ],
)
def test_guided_differs_and_leaves_no_hooks(
    model: TinyCNN, pair: tuple[Tensor, Tensor], method: Callable[..., object], options: dict
) -> None:
    x1, x2 = pair
    plain = method(model, x1, x2, **options)
    hooks = hook_count(model)
    inplace = [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]
    with untouched(model):
        guided = method(model, x1, x2, guided=True, **options)
    assert hook_count(model) == hooks
    assert [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)] == inplace
    assert not torch.allclose(plain.h1, guided.h1, atol=1e-3)
    assert not torch.allclose(plain.h2, guided.h2, atol=1e-3)
    torch.testing.assert_close(plain.sim, guided.sim)  # guidance changes gradients only


@pytest.mark.parametrize(
    ("method", "options"),
    [
        (input_x_gradient, {}),
        (input_x_gradient, {"guided": True}),
        (smoothgrad, {"n_samples": 4}),
        (averaged_transforms, {"steps": 3, "transform": "color_jitter", "noise": True}),
    ],
)
def test_blur_is_the_blurred_plain_map(
    model: TinyCNN, pair: tuple[Tensor, Tensor], method: Callable[..., object], options: dict
) -> None:
    x1, x2 = pair
    plain = method(model, x1, x2, **options)
    blurred = method(model, x1, x2, blur=True, **options)
    # The plain map is the raw map scaled by a positive factor, and blurring is linear, so the
    # blurred map equals the normalised blur of the plain map.
    torch.testing.assert_close(blurred.h1, finalize_maps(_scaled_blur(plain.h1), SIZE))
    torch.testing.assert_close(blurred.h2, finalize_maps(_scaled_blur(plain.h2), SIZE))
    assert not torch.allclose(blurred.h1, plain.h1, atol=1e-3)


# --------------------------------------------------------------------------------------------------
# Averaged Transforms


def _at_reference(
    model: nn.Module, x1: Tensor, x2: Tensor, tx1: Tensor, tx2: Tensor, steps: int
) -> tuple[Tensor, Tensor]:
    """Loop-based pair Averaged Transforms: each image walks to its transform, partner intact."""
    cos = _cos(model)
    g1, g2 = torch.zeros_like(x1), torch.zeros_like(x2)
    for k in range(steps):
        lam = 1 - k / steps
        a = (lam * x1 + (1 - lam) * tx1).requires_grad_(True)
        b = (lam * x2 + (1 - lam) * tx2).requires_grad_(True)
        g1 += torch.autograd.grad(cos(a, x2).sum(), a)[0]
        g2 += torch.autograd.grad(cos(x1, b).sum(), b)[0]
    return _maps(x1 * g1 / steps), _maps(x2 * g2 / steps)


@pytest.mark.parametrize("transform", ["blur", "callable"])
def test_averaged_transforms_matches_loop_reference(
    model: TinyCNN, pair: tuple[Tensor, Tensor], transform: str
) -> None:
    x1, x2 = pair

    def invert(x: Tensor) -> Tensor:
        return 1 - x

    t: object = invert if transform == "callable" else "blur"
    tx = invert if transform == "callable" else _scaled_blur
    ref1, ref2 = _at_reference(model, x1, x2, tx(x1), tx(x2), steps=4)
    e = averaged_transforms(model, x1, x2, transform=t, steps=4, batch_size=3)
    torch.testing.assert_close(e.h1, ref1, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(e.h2, ref2, atol=1e-5, rtol=1e-4)


def test_averaged_transforms_with_one_step_is_input_x_gradient(
    model: TinyCNN, pair: tuple[Tensor, Tensor]
) -> None:
    x1, x2 = pair
    ref = input_x_gradient(model, x1, x2)
    e = averaged_transforms(model, x1, x2, steps=1, transform="color_jitter")
    torch.testing.assert_close(e.h1, ref.h1, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(e.h2, ref.h2, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("transform", ["combine", "color_jitter", "blur", "grayscale", "solarize"])
@pytest.mark.parametrize("channels", [1, 3])
def test_averaged_transforms_every_transform(transform: str, channels: int) -> None:
    net = TinyCNN(in_channels=channels).eval()
    x1, x2 = images(2, channels, seed=23), images(2, channels, seed=24)
    with untouched(net):
        e = averaged_transforms(net, x1, x2, transform=transform, steps=3, seed=1)
    assert e.h1.shape == e.h2.shape == (2, *SIZE)
    for h in (e.h1, e.h2):
        assert torch.isfinite(h).all()
        assert (h >= 0).all()
        torch.testing.assert_close(h.flatten(1).amax(1), torch.ones(2))
    again = averaged_transforms(net, x1, x2, transform=transform, steps=3, seed=1)
    assert torch.equal(e.h1, again.h1)
    assert torch.equal(e.h2, again.h2)


def test_builtin_transforms_do_what_they_say() -> None:
    x = images(2, 3, seed=25)
    g = torch.Generator().manual_seed(0)
    gray = builtin_transform("grayscale", x, g)
    assert torch.allclose(gray[:, 0], gray[:, 1])
    assert torch.allclose(gray[:, 1], gray[:, 2])
    sol = builtin_transform("solarize", x, g)
    torch.testing.assert_close(sol, torch.where(x >= 0.5, 1 - x, x))
    jit = builtin_transform("color_jitter", x, torch.Generator().manual_seed(0))
    assert not torch.allclose(jit, x, atol=1e-3)
    assert torch.equal(jit, builtin_transform("color_jitter", x, torch.Generator().manual_seed(0)))
    assert not torch.equal(
        jit, builtin_transform("color_jitter", x, torch.Generator().manual_seed(1))
    )
    # ImageNet-normalised images (outside [0, 1]) and 2-channel images work.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    normed = (x - mean) / std
    for name in ("combine", "color_jitter", "blur", "grayscale", "solarize"):
        for inp in (normed, images(2, 2, seed=26), images(1, 3, 4, 6, seed=27)):
            out = builtin_transform(name, inp, torch.Generator().manual_seed(3))
            assert out.shape == inp.shape
            assert torch.isfinite(out).all()
            lo = torch.minimum(inp.amin(), torch.tensor(0.0))
            hi = torch.maximum(inp.amax(), torch.tensor(1.0))
            assert out.amin() >= lo - 1e-5
            assert out.amax() <= hi + 1e-5


def test_averaged_transforms_noise_and_seeds(model: TinyCNN, pair: tuple[Tensor, Tensor]) -> None:
    x1, x2 = pair
    plain = averaged_transforms(model, x1, x2, transform="blur", steps=4)
    noisy = averaged_transforms(model, x1, x2, transform="blur", steps=4, noise=True, seed=0)
    same = averaged_transforms(
        model, x1, x2, transform="blur", steps=4, noise=True, seed=0, batch_size=5
    )
    other = averaged_transforms(model, x1, x2, transform="blur", steps=4, noise=True, seed=1)
    assert not torch.allclose(plain.h1, noisy.h1, atol=1e-3)
    torch.testing.assert_close(noisy.h1, same.h1)  # batch_size does not change the draws
    torch.testing.assert_close(noisy.h2, same.h2)
    assert not torch.allclose(noisy.h1, other.h1, atol=1e-3)
    # With two steps there is no interior interpolant: the noise has nothing to act on.
    two = averaged_transforms(model, x1, x2, transform="blur", steps=2)
    two_noisy = averaged_transforms(model, x1, x2, transform="blur", steps=2, noise=True)
    assert torch.equal(two.h1, two_noisy.h1)


def test_averaged_transforms_random_callable_is_seeded(
    model: TinyCNN, pair: tuple[Tensor, Tensor]
) -> None:
    x1, x2 = pair

    def noisy(x: Tensor) -> Tensor:
        return x + 0.2 * torch.randn_like(x)  # draws from the global RNG

    with untouched(model):  # the global RNG is left as found
        a = averaged_transforms(model, x1, x2, transform=noisy, steps=3, seed=4)
    b = averaged_transforms(model, x1, x2, transform=noisy, steps=3, seed=4)
    c = averaged_transforms(model, x1, x2, transform=noisy, steps=3, seed=5)
    assert torch.equal(a.h1, b.h1)
    assert not torch.allclose(a.h1, c.h1, atol=1e-3)


# --------------------------------------------------------------------------------------------------
# Batching


def test_pairs_are_independent_of_their_batch(model: TinyCNN) -> None:
    x1, x2 = images(3, seed=28), images(3, seed=29)
    for fn, opts in (
        (integrated_gradients, {"n_steps": 4, "batch_size": 5}),
        (averaged_transforms, {"steps": 3, "transform": "color_jitter", "batch_size": 4}),
        (input_x_gradient, {}),
    ):
        full = fn(model, x1, x2, **opts)
        one = fn(model, x1[1:2], x2[1:2], **opts)
        torch.testing.assert_close(one.h1[0], full.h1[1], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(one.h2[0], full.h2[1], atol=1e-5, rtol=1e-4)


def test_smoothgrad_batch_size_does_not_change_the_result(
    model: TinyCNN, pair: tuple[Tensor, Tensor]
) -> None:
    x1, x2 = pair
    a = smoothgrad(model, x1, x2, n_samples=5, seed=2, batch_size=1)
    b = smoothgrad(model, x1, x2, n_samples=5, seed=2, batch_size=64)
    torch.testing.assert_close(a.h1, b.h1, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.h2, b.h2, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# Bad options


@pytest.mark.parametrize(
    ("method", "options", "error", "match"),
    [
        (averaged_transforms, {"steps": 0}, ValueError, "`steps` >= 1"),
        (averaged_transforms, {"transform": "sepia"}, ValueError, "color_jitter.*'sepia'"),
        (averaged_transforms, {"transform": 3}, TypeError, "transform"),
        (averaged_transforms, {"noise": 0.1}, TypeError, "`noise` to be a bool"),
        (
            averaged_transforms,
            {"transform": lambda x: x[:, :1]},
            ValueError,
            "`transform` callable to return",
        ),
        (smoothgrad, {"n_samples": 0}, ValueError, "`n_samples` >= 1"),
        (smoothgrad, {"n_samples": 2.5}, TypeError, "`n_samples` to be an int"),
        (smoothgrad, {"noise": -0.1}, ValueError, "`noise`"),
        (smoothgrad, {"seed": "a"}, TypeError, "`seed`"),
        (smoothgrad, {"batch_size": 0}, ValueError, "`batch_size`"),
        (integrated_gradients, {"baseline": "white"}, ValueError, r"\['blur', 'black'\].*'white'"),
        (integrated_gradients, {"n_steps": 0}, ValueError, "`n_steps` >= 1"),
        (input_x_gradient, {"guided": "yes"}, TypeError, "`guided` to be a bool"),
        (input_x_gradient, {"blur": 1}, TypeError, "`blur` to be a bool"),
    ],
)
def test_bad_options(
    model: TinyCNN,
    pair: tuple[Tensor, Tensor],
    method: Callable[..., object],
    options: dict,
    error: type[Exception],
    match: str,
) -> None:
    x1, x2 = pair
    with pytest.raises(error, match=match):
        method(model, x1, x2, **options)


def test_non_differentiable_model_is_reported(pair: tuple[Tensor, Tensor]) -> None:
    net = TinyCNN().eval()
    x1, x2 = pair
    with pytest.raises(ValueError, match="differentiable `model`"):
        input_x_gradient(lambda x: net(x).detach(), x1, x2)
