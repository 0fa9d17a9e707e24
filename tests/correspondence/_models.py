"""Tiny models with exact answers for the correspondence tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def bilinear_cnn(
    *, channels: int = 16, dim: int = 8, stride: int = 4, relu: bool = False, seed: int = 0
) -> nn.Sequential:
    """Bias-free conv (stride ``stride``) -> [ReLU] -> global average pool -> bias-free linear.

    Without ``relu`` the embedding is linear in the conv's output and in the input, so the dot
    similarity is exactly bilinear in the positions of both images.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers: list[nn.Module] = [nn.Conv2d(3, channels, stride, stride=stride, bias=False)]
        if relu:
            layers.append(nn.ReLU())
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, dim, bias=False)]
        return nn.Sequential(*layers)


def circular_cnn(*, seed: int = 0) -> nn.Sequential:
    """Circular-padding CNN of stride 4, bias-free: shifting the input by a multiple of 4 pixels
    circularly shifts its ``features`` map (module ``"2"``, 8 x 8 at 32 px) by a whole cell.

    128 channels and a 64-dim embedding keep the per-position contributions nearly orthogonal,
    so a position's best match is itself.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, padding_mode="circular", bias=False),
            nn.ReLU(),
            nn.Conv2d(32, 128, 4, stride=4, bias=False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(128, 64, bias=False),
        )


class TokenModel(nn.Module):
    """A ViT-like model: patch embedding, a class token, one token mixer, mean of patch tokens.

    ``blocks`` outputs ``(N, 1 + h * w, D)`` tokens; the embedding is the mean over the patch
    tokens followed by a bias-free linear head, so the interactions at ``blocks`` are exact.
    """

    def __init__(self, dim: int = 16, patch: int = 8, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.patch = nn.Conv2d(3, dim, patch, stride=patch, bias=False)
            self.cls = nn.Parameter(torch.randn(1, 1, dim))
            self.blocks = nn.Linear(dim, dim, bias=False)
            self.head = nn.Linear(dim, 8, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)  # (N, h * w, D)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        t = self.blocks(t)
        return self.head(t[:, 1:].mean(dim=1))


def shifted_pair(
    b: int = 4, shift: tuple[int, int] = (8, 12), seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Gaussian-noise images and their circular shift by ``shift`` = ``(dy, dx)`` pixels."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(b, 3, 32, 32, generator=g)
    return x1, torch.roll(x1, shift, dims=(2, 3))


def sparse_shifted_pair(
    b: int = 4, shift: tuple[int, int] = (8, 12), share: float = 0.25, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """As :func:`shifted_pair`, with noise in about ``share`` of the 4 x 4 cells and zeros
    elsewhere: the similarity rests on a few matched cells, as it rests on objects in photos."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, 32, 32, generator=g)
    keep = (torch.rand(b, 1, 8, 8, generator=g) < share).float()
    x1 = x * keep.repeat_interleave(4, 2).repeat_interleave(4, 3)
    return x1, torch.roll(x1, shift, dims=(2, 3))
