"""Size-relative defaults: the paper's 224 px pixel sizes scaled to the input, bitwise at 224."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2.functional import gaussian_blur as tv_blur

from lightning_explain._core import REFERENCE_SIZE, gaussian_blur, relative_blur, relative_pixels
from lightning_explain.metrics.functional._common import blur
from tests.metrics.reference import paper_blur


@pytest.mark.parametrize(("kernel", "sigma"), [(11, 5.0), (21, 1.3)])
def test_relative_blur_matches_its_restatement(kernel: int, sigma: float) -> None:
    for side in range(1, 700):
        assert relative_blur(side, kernel=kernel, sigma=sigma) == paper_blur(side, kernel, sigma)
    assert relative_blur(REFERENCE_SIZE, kernel=kernel, sigma=sigma) == (kernel, sigma)


def test_relative_pixels() -> None:
    assert relative_pixels(64, 224) == 64
    assert relative_pixels(64, 32, minimum=4) == 9
    assert relative_pixels(8, 16, minimum=1) == 1
    assert relative_pixels(64, 448) == 128


def test_substrate_blur_is_the_papers_at_224_px_and_scaled_below() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 224, 224, generator=g)
    assert torch.equal(blur(x), gaussian_blur(x, 11, 5.0))
    small = torch.rand(2, 3, 32, 48, generator=g)
    torch.testing.assert_close(blur(small), gaussian_blur(small, 3, 5.0 * 32 / 224))
    tiny = torch.rand(1, 3, 1, 5, generator=g)  # no kernel fits one row: unchanged
    assert torch.equal(blur(tiny), tiny)


@pytest.mark.parametrize(
    ("shape", "kernel", "sigma"),
    [((5, 3, 32, 48), 3, 0.71), ((2, 3, 224, 224), 11, 5.0), ((3, 4, 19, 23), 5, 1.5)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_gaussian_blur_is_torchvisions_and_returns_contiguous_images(
    shape, kernel, sigma, dtype
) -> None:
    """The channels-last route on a CPU changes the speed, not the values or the layout."""
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    out = gaussian_blur(x, kernel, sigma)
    assert out.is_contiguous()
    torch.testing.assert_close(out, tv_blur(x, [kernel, kernel], [sigma, sigma]), rtol=0, atol=1e-6)
    maps = x[:, 0]
    torch.testing.assert_close(
        gaussian_blur(maps, kernel, sigma),
        tv_blur(maps.unsqueeze(1), [kernel, kernel], [sigma, sigma]).squeeze(1),
        rtol=0,
        atol=1e-6,
    )
