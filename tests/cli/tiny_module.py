"""A tiny contrastive LightningModule and two-view dataset for the CLI tests.

Importable as ``tests.cli.tiny_module:TinyContrastive`` (the ``--model-class`` of the tests).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from tests.helpers import images


class TinyContrastive(pl.LightningModule):
    """conv-BN-ReLU-conv backbone + linear projection, trained with a SimCLR-style NT-Xent loss."""

    def __init__(self, width: int = 8, dim: int = 16, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        (v1, v2), _ = batch
        z = F.normalize(self(torch.cat([v1, v2])), dim=1)
        n = v1.shape[0]
        logits = z @ z.T / 0.5
        logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
        targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
        return F.cross_entropy(logits, targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class TwoViews(Dataset[tuple[list[Tensor], Tensor]]):
    """Items ``([view1, view2], label)``: an image and its flipped, brightened copy."""

    def __init__(self, n: int = 16, size: int = 32, seed: int = 0) -> None:
        self.x = images(n, 3, size, size, seed=seed)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[list[Tensor], Tensor]:
        x = self.x[i]
        return [x, (x.flip(-1) * 0.9 + 0.05).clamp(0, 1)], torch.tensor(0)
