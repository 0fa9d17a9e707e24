"""Errors and registry behaviour of the public entry point."""

from __future__ import annotations

import pytest
import torch

from lightning_explain import explain, get_method, list_methods, method_info
from tests.helpers import TinyCNN, images


def test_registry_lists_all_paper_methods() -> None:
    assert set(list_methods()) >= {
        "conditional_occlusion",
        "context_agnostic_occlusion",
        "pairwise_occlusion",
        "gradcam",
        "interaction_cam",
        "input_x_gradient",
        "smoothgrad",
        "averaged_transforms",
        "pixel_invariance",
        "integrated_gradients",
        "rise",
    }
    assert list_methods("cam") == ["gradcam", "interaction_cam"]
    for name in list_methods():
        assert callable(get_method(name))
        assert get_method(name).__name__ == name
        assert method_info(name).defaults() is not None


def test_unknown_method_lists_valid_names() -> None:
    with pytest.raises(
        ValueError,
        match=r"Unknown explanation method 'gradcm'.*'gradcam'.*Valid methods: .*smoothgrad",
    ):
        explain(TinyCNN(), images(1), images(1), method="gradcm")


def test_unknown_option_lists_valid_options() -> None:
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['windw'\].*window"):
        explain(TinyCNN(), images(1), images(1), method="conditional_occlusion", windw=3)


@pytest.mark.parametrize(
    ("x1", "x2", "exc", "match"),
    [
        (
            torch.rand(3, 32, 32),
            torch.rand(3, 32, 32),
            ValueError,
            r"`x1` of shape \(B, C, H, W\).*unsqueeze",
        ),
        (torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 40), ValueError, "same shape"),
        (
            torch.randint(0, 255, (1, 3, 32, 32)),
            torch.rand(1, 3, 32, 32),
            TypeError,
            "floating-point",
        ),
        ([1, 2], torch.rand(1, 3, 32, 32), TypeError, "`x1` to be a float tensor"),
        (torch.rand(0, 3, 32, 32), torch.rand(0, 3, 32, 32), ValueError, "empty batch"),
    ],
)
def test_bad_images(x1: object, x2: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        explain(TinyCNN(), x1, x2, method="input_x_gradient")  # type: ignore[arg-type]


def test_device_mismatch() -> None:
    x1 = torch.rand(1, 3, 32, 32)
    x2 = torch.rand(1, 3, 32, 32, device="meta")
    with pytest.raises(ValueError, match="same device"):
        explain(TinyCNN(), x1, x2, method="gradcam")


@pytest.mark.parametrize("method", ["gradcam", "input_x_gradient", "conditional_occlusion"])
def test_model_output_not_2d(method: str) -> None:
    net = TinyCNN()
    with pytest.raises(ValueError, match=r"embeddings of shape \(\d+, D\).*Flatten"):
        explain(lambda x: net.pool(net.features(x)), images(1), images(1), method=method)


def test_model_returns_tuple() -> None:
    net = TinyCNN()
    with pytest.raises(TypeError, match="several outputs"):
        explain(lambda x: (net(x), net(x)), images(1), images(1), method="input_x_gradient")


def test_non_finite_embeddings() -> None:
    net = TinyCNN()
    with pytest.raises(ValueError, match="non-finite embeddings"):
        explain(lambda x: net(x) * float("nan"), images(1), images(1), method="gradcam")


def test_unknown_similarity() -> None:
    with pytest.raises(
        ValueError, match=r"`similarity` to be one of \['cosine', 'dot', 'neg_l2'\]"
    ):
        explain(TinyCNN(), images(1), images(1), method="input_x_gradient", similarity="l1")


@pytest.mark.parametrize("similarity", ["cosine", "dot", "neg_l2"])
def test_similarities(similarity: str) -> None:
    net = TinyCNN().eval()
    x1, x2 = images(2, seed=1), images(2, seed=2)
    e = explain(net, x1, x2, method="input_x_gradient", similarity=similarity)
    with torch.no_grad():
        z1, z2 = net(x1), net(x2)
    expected = {
        "cosine": torch.nn.functional.cosine_similarity(z1, z2),
        "dot": (z1 * z2).sum(1),
        "neg_l2": -(z1 - z2).norm(dim=1),
    }[similarity]
    torch.testing.assert_close(e.sim, expected, atol=1e-5, rtol=1e-4)


def test_callable_model_eval_mode_is_restored() -> None:
    net = TinyCNN().train()
    e = explain(lambda x: net(x), images(2), images(2), method="gradcam")
    assert net.training
    assert all(m.training for m in net.modules())
    assert e.h1.shape == (2, 32, 32)
