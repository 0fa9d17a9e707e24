"""Max-sensitivity: loop reference with a stand-in explainer, noise protocol, real-method run."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

import lightning_explain.metrics.functional.sensitivity as ms_module
from lightning_explain.explanation import PairExplanation
from lightning_explain.metrics import MaxSensitivity, evaluate, max_sensitivity
from tests.helpers import images, untouched, with_grads
from tests.metrics.reference import centered_cnn


def input_x_gradient(model: Any, x1: Tensor, x2: Tensor, method: str, **options: Any):
    """A stand-in explainer (|x * d cos / dx|, max over channels, max-normalised)."""
    a = x1.detach().clone().requires_grad_(True)
    b = x2.detach().clone().requires_grad_(True)
    with torch.enable_grad(), torch.inference_mode(False):
        sim = torch.cosine_similarity(model(a), model(b))
        g1, g2 = torch.autograd.grad(sim.sum(), (a, b))
    maps = []
    for x, g in ((a, g1), (b, g2)):
        h = (x.detach() * g).abs().amax(dim=1)
        maps.append(h / h.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1))
    return PairExplanation(maps[0], maps[1], sim.detach())


@pytest.fixture
def fake_explain(monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[Tensor, Tensor, dict[str, Any]]] = []

    def explain(model: Any, x1: Tensor, x2: Tensor, method: str = "gradcam", **options: Any):
        calls.append((x1.clone(), x2.clone(), dict(options)))
        return input_x_gradient(model, x1, x2, method, **options)

    monkeypatch.setattr(ms_module, "explain", explain)
    return calls


def reference(model, x1, x2, *, n_samples, radius, seed):
    """Per sample, per pair, batch-1 explanations; relative L2 change; max; mean of images."""
    g = torch.Generator().manual_seed(seed)
    noises = [(torch.rand(x1.shape, generator=g) * 2 - 1) * radius for _ in range(n_samples)]
    out = []
    for p in range(x1.shape[0]):
        ref = input_x_gradient(model, x1[p : p + 1], x2[p : p + 1], "x")
        worst = [0.0, 0.0]
        for noise in noises:
            e = input_x_gradient(
                model, x1[p : p + 1] + noise[p : p + 1], x2[p : p + 1] + noise[p : p + 1], "x"
            )
            for i, (r, n) in enumerate(((ref.h1, e.h1), (ref.h2, e.h2))):
                worst[i] = max(worst[i], float((r - n).norm() / r.norm()))
        out.append(0.5 * (worst[0] + worst[1]))
    return torch.tensor(out)


@pytest.mark.parametrize(("b", "c", "h", "w"), [(3, 3, 16, 24), (1, 1, 20, 20)])
def test_matches_loop_reference(fake_explain, b, c, h, w):
    model = centered_cnn(b, c)
    x1, x2 = images(b, c, h, w, seed=1), images(b, c, h, w, seed=2)
    got = max_sensitivity(model, x1, x2, "input_x_gradient", n_samples=4, radius=0.1, seed=3)
    ref = reference(model.eval(), x1, x2, n_samples=4, radius=0.1, seed=3)
    assert got.shape == (b,)
    assert torch.allclose(got, ref, atol=1e-4)
    assert (got > 0).all()


def test_same_noise_on_both_images_and_batched_calls(fake_explain):
    model = centered_cnn(0)
    x1, x2 = images(2, seed=1), images(2, seed=2)
    max_sensitivity(model, x1, x2, "input_x_gradient", n_samples=5, radius=0.2, seed=0)
    # one reference call, then all 5 samples x 2 pairs in one call (default: max(B, 64) pairs)
    assert [len(c[0]) for c in fake_explain] == [2, 10]
    noisy1, noisy2, _ = fake_explain[1]
    n1 = noisy1 - x1.repeat(5, 1, 1, 1)
    n2 = noisy2 - x2.repeat(5, 1, 1, 1)
    assert torch.allclose(n1, n2, atol=1e-6)
    assert n1.abs().max() <= 0.2 + 1e-6
    assert n1.abs().max() > 0.15  # uniform on [-0.2, 0.2], not a smaller spread


def test_chunking_and_seed(fake_explain):
    model = centered_cnn(1)
    x1, x2 = images(3, seed=1), images(3, seed=2)
    a = max_sensitivity(model, x1, x2, "input_x_gradient", n_samples=3, seed=7)
    b = max_sensitivity(
        model, x1, x2, "input_x_gradient", n_samples=3, seed=7, explain_batch_size=2
    )
    c = max_sensitivity(model, x1, x2, "input_x_gradient", n_samples=3, seed=8)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c)


def test_zero_radius_gives_zero(fake_explain):
    model = centered_cnn(2)
    x1, x2 = images(2, seed=3), images(2, seed=4)
    got = max_sensitivity(model, x1, x2, "input_x_gradient", n_samples=2, radius=0.0)
    assert torch.allclose(got, torch.zeros(2), atol=1e-6)


def test_method_options_are_forwarded(fake_explain):
    model = centered_cnn(3)
    x1, x2 = images(1, seed=3), images(1, seed=4)
    max_sensitivity(
        model, x1, x2, "smoothgrad", n_samples=1, options={"n_samples": 4, "seed": 2}, layer="x"
    )
    assert all(c[2] == {"n_samples": 4, "seed": 2, "layer": "x"} for c in fake_explain)
    with pytest.raises(ValueError, match="both in `options` and as keyword"):
        max_sensitivity(model, x1, x2, "smoothgrad", options={"layer": 1}, layer=2)


def test_evaluate_and_wrapper_use_method_options(fake_explain):
    model = with_grads(centered_cnn(4))
    x1, x2 = images(2, seed=5), images(2, seed=6)
    with untouched(model):
        scores = evaluate(
            model,
            x1,
            x2,
            None,
            ["max_sensitivity"],
            method="input_x_gradient",
            method_options={"seed": 5},
        )
    # evaluate's similarity reaches the method unless method_options sets one
    assert fake_explain[0][2] == {"seed": 5, "similarity": "cosine"}
    evaluate(model, x1, x2, None, "max_sensitivity", similarity="dot", method="input_x_gradient")
    assert fake_explain[-1][2] == {"similarity": "dot"}
    direct = max_sensitivity(model, x1, x2, "input_x_gradient", options={"seed": 5})
    assert torch.allclose(scores["max_sensitivity"], direct)
    metric = MaxSensitivity("input_x_gradient", n_samples=10, method_options={"seed": 5})
    metric.update(model, x1[:1], x2[:1])
    metric.update(model, x1[1:], x2[1:])
    # the noise of a pair depends on its batch, so compare with the same two batches
    first = max_sensitivity(model, x1[:1], x2[:1], "input_x_gradient", options={"seed": 5})
    second = max_sensitivity(model, x1[1:], x2[1:], "input_x_gradient", options={"seed": 5})
    assert torch.allclose(metric.compute(), 0.5 * (first + second).sum(), atol=1e-5)


def test_needs_a_known_method():
    model = centered_cnn(5)
    x1, x2 = images(1, seed=1), images(1, seed=2)
    with pytest.raises(ValueError, match="needs the explanation method"):
        evaluate(model, x1, x2, None, ["max_sensitivity"])
    with pytest.raises(ValueError, match="needs the explanation method"):
        max_sensitivity(model, x1, x2, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Valid methods"):
        max_sensitivity(model, x1, x2, "grad_cam_typo")
    with pytest.raises(ValueError, match="n_samples"):
        max_sensitivity(model, x1, x2, "input_x_gradient", n_samples=0)
    with pytest.raises(ValueError, match="radius"):
        max_sensitivity(model, x1, x2, "input_x_gradient", radius=-1.0)


def test_with_a_registered_method():
    """End to end through ``lightning_explain.explain`` with the real input x gradient method."""
    model = with_grads(centered_cnn(6))
    x1, x2 = images(2, seed=7), images(2, seed=8)
    with untouched(model):
        got = max_sensitivity(model, x1, x2, "input_x_gradient", n_samples=3, radius=0.05)
    assert got.shape == (2,)
    assert torch.isfinite(got).all()
    assert (got > 0).all()
    assert torch.allclose(
        got, max_sensitivity(model, x1, x2, "input_x_gradient", n_samples=3, radius=0.05)
    )
    smaller = max_sensitivity(model, x1, x2, "input_x_gradient", n_samples=3, radius=0.0)
    assert torch.allclose(smaller, torch.zeros(2), atol=1e-6)
