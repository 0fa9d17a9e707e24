"""Tiny models and a side-effect checker shared by the test suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


class TinyCNN(nn.Module):
    """conv-BN-ReLU x3, global average pool, linear head: ``(B, C, H, W) -> (B, dim)``.

    ``features`` is the last 4-D feature map (stride 2); ``head`` maps pooled features to the embedding.
    """

    def __init__(self, in_channels: int = 3, dim: int = 16, width: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(seed)
            self.features = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                nn.BatchNorm2d(2 * width),
                nn.ReLU(),
                nn.Conv2d(2 * width, 2 * width, 3, padding=1),
                nn.ReLU(),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width, dim), nn.Dropout(0.1))
            # Non-trivial BatchNorm statistics, so eval mode matters.
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)))


class LeftHalfModel(nn.Module):
    """A model that only sees the left half of the image.

    The right half of the input is zeroed and the right half of the feature map is masked before
    pooling, so nothing on the right can change the embedding or receive gradient.
    """

    def __init__(self, in_channels: int = 3, dim: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.net = TinyCNN(in_channels, dim, seed=seed)

    def forward(self, x: Tensor) -> Tensor:
        w = x.shape[-1]
        x = x * (torch.arange(w, device=x.device) < w // 2).to(x.dtype)
        a = self.net.features(x)
        wa = a.shape[-1]
        a = a * (torch.arange(wa, device=x.device) < wa // 2).to(a.dtype)
        return self.net.head(self.net.pool(a))


class CentredLeftHalfModel(LeftHalfModel):
    """:class:`LeftHalfModel` whose embedding of an all-zero (the occlusion fill) image is zero.

    A random CNN maps every image to nearly the same direction (pair cosines of 0.9999), so the
    similarity barely moves under any perturbation. Subtracting the embedding of the fill image
    centres the embeddings, as training does for a real contrastive model.
    """

    def __init__(self, in_channels: int = 3, dim: int = 16, seed: int = 0, size: int = 32) -> None:
        super().__init__(in_channels, dim, seed)
        with torch.no_grad():
            self.eval()
            centre = super().forward(torch.zeros(1, in_channels, size, size))
        self.register_buffer("centre", centre)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) - self.centre


class InvariantLeftHalfModel(nn.Module):
    """Embedding = 4 x 2 average-pooled blocks of the left half of the image.

    Only the left half matters and the embedding direction is invariant to brightness: the setting
    Pixel Invariance assumes (a contrastive model trained to be invariant to colour jitter), in
    which erasing a left block, not jitter, moves the similarity.
    """

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x[..., : x.shape[-1] // 2], (4, 2))
        return pooled.flatten(1)


def positive_pairs(
    b: int, c: int = 3, h: int = 32, w: int = 32, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Two views of the same images (brightness change and a little noise), as the paper's pairs."""
    x1 = images(b, c, h, w, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x2 = (0.9 * x1 + 0.05 + 0.03 * torch.randn(x1.shape, generator=g)).clamp(0, 1)
    return x1, x2


def images(b: int, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> Tensor:
    """Smooth random images in [0, 1] (blobs, so that patches matter), from a private generator."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, c, max(2, h // 8), max(2, w // 8), generator=g)
    fine = torch.rand(b, c, h, w, generator=g)
    up = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (0.8 * up + 0.2 * fine).clamp(0, 1)


def _state(model: nn.Module) -> dict[str, Any]:
    return {
        "grads": {
            n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()
        },
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "rng": torch.get_rng_state(),
    }


def hook_count(model: nn.Module) -> int:
    """Number of hooks registered on any submodule."""
    total = 0
    for m in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
            "_load_state_dict_pre_hooks",
        ):
            total += len(getattr(m, attr, {}) or {})
    return total


def assert_same_state(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["training"] == after["training"], "a submodule's train/eval flag changed"
    assert before["requires_grad"] == after["requires_grad"], "requires_grad flags changed"
    for n, g in before["grads"].items():
        h = after["grads"][n]
        assert (g is None) == (h is None), f"parameter {n}.grad changed from/to None"
        if g is not None:
            assert torch.equal(g, h), f"parameter {n}.grad changed"
    for n, b in before["buffers"].items():
        assert torch.equal(b, after["buffers"][n]), f"buffer {n} changed"
    for n, p in before["params"].items():
        assert torch.equal(p, after["params"][n]), f"parameter {n} changed"
    assert torch.equal(before["rng"], after["rng"]), "the global torch RNG state changed"


@contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Assert that the body leaves ``model`` and the global RNG exactly as found."""
    before = _state(model)
    hooks = hook_count(model)
    yield
    assert_same_state(before, _state(model))
    assert hook_count(model) == hooks, "a hook was left on the model"


def with_grads(model: nn.Module) -> nn.Module:
    """Give every parameter a non-trivial ``.grad`` so that any write to it is detected."""
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    return model


def left_mass(h: Tensor) -> Tensor:
    """Fraction of each ``(B, H, W)`` map's mass in the left half: ``(B,)``."""
    w = h.shape[-1]
    total = h.flatten(1).sum(1).clamp(min=1e-12)
    return h[..., : w // 2].flatten(1).sum(1) / total


ModelFn = Callable[[Tensor], Tensor]
