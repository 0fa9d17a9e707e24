"""``batch_size=None``: every chunked method picks its chunk per device, with the same results."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from lightning_explain import explain
from lightning_explain._core import pair_context
from lightning_explain.methods import method_info
from tests.helpers import images
from tests.methods.options import FAST
from tests.methods.test_occlusion import Centred, Counting

NO_GRAD = [
    "conditional_occlusion",
    "context_agnostic_occlusion",
    "pairwise_occlusion",
    "rise",
    "pixel_invariance",
]
AUTOGRAD = ["smoothgrad", "averaged_transforms", "integrated_gradients"]
CHUNKED = NO_GRAD + AUTOGRAD


def _pairs(b: int, size: int) -> tuple[Tensor, Tensor]:
    return images(b, 3, size, size, seed=1), images(b, 3, size, size, seed=2)


def _default_chunk(x1: Tensor, x2: Tensor, *, autograd: bool) -> int:
    with pair_context(lambda x: x.flatten(1), x1, x2) as ctx:
        return ctx.chunk_size(None, autograd=autograd)


@pytest.mark.parametrize("method", CHUNKED)
def test_batch_size_defaults_to_none(method: str) -> None:
    assert method_info(method).defaults()["batch_size"] is None


@pytest.mark.parametrize("method", CHUNKED)
def test_default_chunk_gives_the_same_maps(method: str) -> None:
    model = Centred()
    x1, x2 = _pairs(2, 16)
    auto = explain(model, x1, x2, method=method, **FAST[method])
    fixed = explain(model, x1, x2, method=method, batch_size=7, **FAST[method])
    # Equal up to float rounding (CPU convolutions may pick another kernel per batch size).
    torch.testing.assert_close(auto.h1, fixed.h1, atol=1e-4, rtol=0)
    torch.testing.assert_close(auto.h2, fixed.h2, atol=1e-4, rtol=0)
    torch.testing.assert_close(auto.sim, fixed.sim, atol=1e-5, rtol=0)


def _never_called(x: Tensor) -> Tensor:
    raise AssertionError("the model ran before the options were checked")


@pytest.mark.parametrize("method", CHUNKED)
@pytest.mark.parametrize(
    ("value", "exc"),
    [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError), ("64", TypeError)],
)
def test_bad_batch_size_fails_before_any_forward(
    method: str, value: object, exc: type[Exception]
) -> None:
    x1, x2 = _pairs(1, 16)
    with pytest.raises(exc, match=rf"`{method}`: expected `batch_size`"):
        explain(_never_called, x1, x2, method=method, batch_size=value, **FAST[method])


# Options for 2 pairs of 32 px images with more perturbed images than one default chunk holds:
# (method, options, images per item, perturbed images in all).
LARGE: list[tuple[str, dict[str, Any], int, int]] = [
    ("conditional_occlusion", {"window": 8, "stride": 2}, 1, 13 * 13 * 4),
    ("context_agnostic_occlusion", {"window": 8, "stride": 4}, 2, 2 * 7 * 7 * 4),
    ("pairwise_occlusion", {"n_erasures": 100}, 2, 2 * 100 * 2),
    ("rise", {"n_masks": 128}, 1, 128 * 4),
    ("pixel_invariance", {"n_augmentations": 100, "epochs": 2}, 1, 100 * 4),
    ("smoothgrad", {"n_samples": 48}, 2, 2 * 48 * 2),
    ("averaged_transforms", {"steps": 48}, 1, 48 * 4),
    ("integrated_gradients", {"n_steps": 48}, 1, 48 * 4),
]


@pytest.mark.parametrize(("method", "options", "per_item", "total"), LARGE)
def test_default_chunk_is_used(
    method: str, options: dict[str, Any], per_item: int, total: int
) -> None:
    x1, x2 = _pairs(2, 32)
    chunk = _default_chunk(x1, x2, autograd=method in AUTOGRAD)
    expected = min(per_item * (chunk // per_item), total)
    assert expected > 64  # the old fixed default: 32 px images on the CPU get larger chunks
    counted = Counting(Centred())
    explain(counted, x1, x2, method=method, **options)
    assert max(counted.batches) == expected
    if method in AUTOGRAD:  # forward + backward chunks are smaller than inference-only ones
        assert expected < min(total, _default_chunk(x1, x2, autograd=False))


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("smoothgrad", {"n_samples": 1}),
        ("averaged_transforms", {"steps": 1}),
        ("integrated_gradients", {"n_steps": 1}),
    ],
)
def test_gradient_methods_embed_the_intact_pairs_with_the_inference_chunk(
    method: str, options: dict[str, Any]
) -> None:
    # Enough pairs that the 2B intact images fit one inference chunk but not one autograd chunk.
    x1, x2 = _pairs(1, 32)
    autograd = _default_chunk(x1, x2, autograd=True)
    inference = _default_chunk(x1, x2, autograd=False)
    b = autograd // 2 + 1
    if 2 * b > inference:
        pytest.skip("the inference chunk is no larger than the autograd chunk on this device")
    x1, x2 = _pairs(b, 32)
    counted = Counting(Centred())
    explain(counted, x1, x2, method=method, **options)
    assert counted.batches[0] == 2 * b  # the intact pairs: one inference chunk
    assert max(counted.batches[1:]) <= autograd  # the gradient chunks
