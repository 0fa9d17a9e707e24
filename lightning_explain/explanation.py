"""The result type shared by every explanation method."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PairExplanation"]


@dataclass(frozen=True)
class PairExplanation:
    """Two heatmaps explaining the similarity of a batch of image pairs.

    Attributes:
        h1: ``(B, H, W)`` heatmap of the first image of each pair. Finite, ``>= 0``, at input
            resolution, each map scaled so that its maximum is 1 (an all-zero map stays zero).
        h2: ``(B, H, W)`` heatmap of the second image, same conventions.
        sim: ``(B,)`` similarity of the unperturbed pair, ``s(f(x1), f(x2))``.
    """

    h1: Tensor
    h2: Tensor
    sim: Tensor

    def to(self, device: torch.device | str) -> PairExplanation:
        """Return a copy with every tensor on ``device``."""
        return PairExplanation(self.h1.to(device), self.h2.to(device), self.sim.to(device))

    def swap(self) -> PairExplanation:
        """Return the explanation of the swapped pair ``(x2, x1)``: ``h1`` and ``h2`` exchanged."""
        return PairExplanation(self.h2, self.h1, self.sim)

    def __len__(self) -> int:
        return int(self.sim.shape[0])
