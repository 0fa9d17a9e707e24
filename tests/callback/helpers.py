"""Tiny self-supervised LightningModules and multi-view datasets for the callback tests.

Everything is built for one Lightning namespace at a time (``lightning.pytorch`` or
``pytorch_lightning``), so that both Trainers can be tested with the same models.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset


def base_images(n: int, size: int = 16, seed: int = 0) -> Tensor:
    """``(n, 3, size, size)`` smooth images in [0, 1] from a private generator."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    fine = torch.rand(n, 3, size, size, generator=g)
    up = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (0.8 * up + 0.2 * fine).clamp(0, 1)


class Augment:
    """A random flip plus noise: draws from the global torch RNG (as torchvision transforms do)
    and from the global NumPy RNG (as lightly's GaussianBlur does)."""

    def __call__(self, x: Tensor) -> Tensor:
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        scale = 0.02 + 0.05 * float(np.random.random_sample())
        return x + scale * torch.randn_like(x)


class MultiView:
    """Returns ``[view1, view2]`` like lightly's ``MultiViewTransform``."""

    def __init__(self) -> None:
        self.transforms = [Augment(), Augment()]

    def __call__(self, x: Tensor) -> list[Tensor]:
        return [t(x) for t in self.transforms]


class TwoViewDataset(Dataset[Any]):
    """Items ``([v1, v2], label)``; the views are drawn from the global RNG in ``__getitem__``."""

    def __init__(self, n: int = 16, size: int = 16, seed: int = 0) -> None:
        self.images = base_images(n, size, seed)
        self.transform: Any = MultiView()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        x = self.images[i]
        if self.transform is None:
            return x, i % 2
        return self.transform(x), i % 2


class PairDataset(Dataset[Any]):
    """Items ``(x1, x2)``: a fixed pair dataset."""

    def __init__(self, n: int = 8, size: int = 16, seed: int = 1) -> None:
        self.a = base_images(n, size, seed)
        self.b = self.a.flip(-1)

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> Any:
        return self.a[i], self.b[i]


class Encoder(nn.Module):
    """conv-BN-ReLU x2, pool, linear, dropout: ``(B, 3, H, W) -> (B, 8)``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8, 8), nn.Dropout(0.2))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)))


def contrastive_loss(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """A small NT-Xent: each view's positive is the other view of its image."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.t() / temperature
    n = z1.shape[0]
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool), -1e9)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, targets)


def namespace(name: str) -> Any:
    return importlib.import_module(name)


def make_module_class(ns: str = "lightning.pytorch") -> type:
    """A SimCLR-like LightningModule of namespace ``ns`` (``forward`` returns the embedding)."""
    L = namespace(ns)

    class SSLModule(L.LightningModule):  # type: ignore[misc, name-defined]
        def __init__(self, lr: float = 0.05, batch_size: int = 4, n: int = 16, val: bool = True):
            super().__init__()
            torch.manual_seed(0)
            self.backbone = Encoder()
            self.lr = lr
            self.batch_size = batch_size
            self.n = n
            self.val = val

        def forward(self, x: Tensor) -> Tensor:
            return self.backbone(x)

        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            (v1, v2), _ = batch
            loss = contrastive_loss(self(v1), self(v2))
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            (v1, v2), _ = batch
            self.log("val_loss", contrastive_loss(self(v1), self(v2)))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

        def train_dataloader(self) -> DataLoader[Any]:
            return DataLoader(TwoViewDataset(self.n), batch_size=self.batch_size, shuffle=True)

        def val_dataloader(self) -> Any:
            if not self.val:
                return []
            return DataLoader(TwoViewDataset(8, seed=5), batch_size=4)

    return SSLModule


def trainer(ns: str = "lightning.pytorch", **kwargs: Any) -> Any:
    """A quiet CPU Trainer of namespace ``ns``."""
    L = namespace(ns)
    defaults: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)


FAST: dict[str, Any] = dict(
    probe={"n_pairs": 2}, n_steps=4, metrics=["insertion_simultaneous", "deletion_simultaneous"]
)
"""Cheap callback settings for tests."""


def backbone_embedding(module: Any, x: Tensor) -> Tensor:
    """An embedding function for the dotted-path form of ``embedding``."""
    out: Tensor = module.backbone(x)
    return out


def spatial_embedding(module: Any, x: Tensor) -> Tensor:
    """A wrong embedding: returns a 4-D feature map."""
    out: Tensor = module.backbone.features(x)
    return out
