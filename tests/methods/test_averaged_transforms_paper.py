"""Averaged Transforms as the authors' code designs it (``design="paper"``) and the paper's
max-sensitivity protocol for it (``path_noise``), each against a per-pair loop restatement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_explain._core import finalize_maps
from lightning_explain.methods.gradients import averaged_transforms
from tests.helpers import TinyCNN, hook_count, images, untouched

SIZE = (32, 32)


def _maps(grad_times_input: Tensor) -> Tensor:
    return finalize_maps(grad_times_input.abs().amax(dim=1), SIZE)


def _paper_loop(
    model: nn.Module, x: Tensor, tx: Tensor, steps: int, offset: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One image at a time, as the authors' notebook runs it: mixed images from numpy's
    ``arange(1, 0, -1 / steps)``, ``cos(f(m_0), f(m_k))`` for every ``k >= 1``, gradients
    averaged, the first map times the pure image, the second times the last mixed image."""
    h1, h2 = [], []
    for i in range(x.shape[0]):
        pure, other = x[i : i + 1], tx[i : i + 1]
        mixed = [float(lam) * pure + (1 - float(lam)) * other for lam in np.arange(1, 0, -1 / steps)]
        if offset is not None:
            mixed = [m + offset[i : i + 1] for m in mixed]
        g1, g2 = [], []
        for partner in mixed[1:]:
            a = mixed[0].clone().requires_grad_(True)
            b = partner.clone().requires_grad_(True)
            s = F.cosine_similarity(model(a), model(b), dim=1).sum()
            ga, gb = torch.autograd.grad(s, [a, b])
            g1.append(ga)
            g2.append(gb)
        h1.append(mixed[0] * torch.cat(g1).mean(0, keepdim=True))
        h2.append(mixed[-1] * torch.cat(g2).mean(0, keepdim=True))
    return _maps(torch.cat(h1)), _maps(torch.cat(h2))


@pytest.fixture
def model() -> TinyCNN:
    return TinyCNN().eval()


@pytest.fixture
def pair() -> tuple[Tensor, Tensor]:
    x = images(3, seed=41)
    return x, 0.6 * x.flip(-1) + 0.2  # x2: a pixel-aligned "transform" of x1


@pytest.mark.parametrize("steps", [2, 5, 10])
def test_paper_design_matches_the_per_image_loop(
    model: TinyCNN, pair: tuple[Tensor, Tensor], steps: int
) -> None:
    x1, x2 = pair
    ref1, ref2 = _paper_loop(model, x1, x2, steps)
    with untouched(model):
        e = averaged_transforms(model, x1, x2, design="paper", steps=steps, batch_size=4)
    torch.testing.assert_close(e.h1, ref1, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(e.h2, ref2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(e.sim, F.cosine_similarity(model(x1), model(x2), dim=1))
    assert hook_count(model) == 0


def test_paper_design_second_map_uses_the_last_mixed_image(
    model: TinyCNN, pair: tuple[Tensor, Tensor]
) -> None:
    """The second map is not the pair design's map of x2, nor x2 times its gradient."""
    x1, x2 = pair
    paper = averaged_transforms(model, x1, x2, design="paper")
    ours = averaged_transforms(model, x1, x2)
    assert not torch.allclose(paper.h2, ours.h2, atol=1e-3)
    assert not torch.allclose(paper.h1, ours.h1, atol=1e-3)


def test_paper_design_path_noise_equals_noise_on_both_inputs(
    model: TinyCNN, pair: tuple[Tensor, Tensor]
) -> None:
    """The walk is linear in (x1, x2), so noise on every mixed image is noise on the inputs."""
    x1, x2 = pair
    e = torch.empty_like(x1).uniform_(-0.2, 0.2, generator=torch.Generator().manual_seed(3))
    on_path = averaged_transforms(model, x1, x2, design="paper", steps=4, path_noise=e)
    on_inputs = averaged_transforms(model, x1 + e, x2 + e, design="paper", steps=4)
    ref1, ref2 = _paper_loop(model, x1, x2, 4, offset=e)
    torch.testing.assert_close(on_path.h1, on_inputs.h1, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(on_path.h2, on_inputs.h2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(on_path.h1, ref1, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(on_path.h2, ref2, atol=1e-5, rtol=1e-4)


def test_pair_design_path_noise_is_added_after_the_transform(
    model: TinyCNN, pair: tuple[Tensor, Tensor]
) -> None:
    """Pair design: the noise shifts every point of both walks and the intact partners, and the
    maps multiply the noisy pure image; the transform sees the clean images."""
    x1, x2 = pair[0], images(3, seed=42)
    e = torch.empty_like(x1).uniform_(-0.2, 0.2, generator=torch.Generator().manual_seed(4))

    def invert(x: Tensor) -> Tensor:
        return 1 - x

    steps = 3
    g1, g2 = torch.zeros_like(x1), torch.zeros_like(x2)
    for k in range(steps):
        lam = 1 - k / steps
        a = (lam * x1 + (1 - lam) * invert(x1) + e).requires_grad_(True)
        b = (lam * x2 + (1 - lam) * invert(x2) + e).requires_grad_(True)
        g1 += torch.autograd.grad(F.cosine_similarity(model(a), model(x2 + e)).sum(), a)[0]
        g2 += torch.autograd.grad(F.cosine_similarity(model(x1 + e), model(b)).sum(), b)[0]
    got = averaged_transforms(model, x1, x2, transform=invert, steps=steps, path_noise=e)
    torch.testing.assert_close(got.h1, _maps((x1 + e) * g1 / steps), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got.h2, _maps((x2 + e) * g2 / steps), atol=1e-5, rtol=1e-4)
    inputs = averaged_transforms(model, x1 + e, x2 + e, transform=invert, steps=steps)
    assert not torch.allclose(got.h1, inputs.h1, atol=1e-4)  # T(x + e) != T(x) + e


def test_paper_design_noise_is_seeded_and_on_the_interior_only(
    model: TinyCNN, pair: tuple[Tensor, Tensor]
) -> None:
    x1, x2 = pair
    plain = averaged_transforms(model, x1, x2, design="paper", steps=5)
    noisy = averaged_transforms(model, x1, x2, design="paper", steps=5, noise=True, seed=1)
    again = averaged_transforms(model, x1, x2, design="paper", steps=5, noise=True, seed=1)
    other = averaged_transforms(model, x1, x2, design="paper", steps=5, noise=True, seed=2)
    assert torch.equal(noisy.h1, again.h1)
    assert not torch.allclose(plain.h1, noisy.h1, atol=1e-3)
    assert not torch.allclose(noisy.h1, other.h1, atol=1e-3)
    # With two steps there is no interior image, so noise changes nothing.
    two = averaged_transforms(model, x1, x2, design="paper", steps=2)
    two_noisy = averaged_transforms(model, x1, x2, design="paper", steps=2, noise=True)
    assert torch.equal(two.h1, two_noisy.h1)
    assert torch.equal(two.h2, two_noisy.h2)


def test_bad_paper_design_options(model: TinyCNN, pair: tuple[Tensor, Tensor]) -> None:
    x1, x2 = pair
    with pytest.raises(ValueError, match=r"design='paper'.*no `transform`.*x2 = T\(x1\)"):
        averaged_transforms(model, x1, x2, design="paper", transform="blur")
    with pytest.raises(ValueError, match="steps >= 2"):
        averaged_transforms(model, x1, x2, design="paper", steps=1)
    with pytest.raises(ValueError, match=r"design.*'pair'.*'paper'"):
        averaged_transforms(model, x1, x2, design="authors")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"path_noise.*shape \(3, 3, 32, 32\)"):
        averaged_transforms(model, x1, x2, path_noise=torch.zeros(1, 3, 32, 32))
    with pytest.raises(TypeError, match="path_noise"):
        averaged_transforms(model, x1, x2, path_noise=0.1)  # type: ignore[arg-type]
