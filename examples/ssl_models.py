"""Self-supervised LightningModules and data for the examples, built from lightly's parts.

Models (``MODELS``): SimCLR, BYOL, SimSiam, Barlow Twins and MoCo on a small ResNet backbone
(torchvision ``BasicBlock`` with a 32-px-friendly stem), each with lightly's heads and loss. Every
model has an ``embed(x)`` method returning the embedding the paper explains: the projection head
output (the predictor output for BYOL and SimSiam).

Data (:class:`SSLDataModule`): by default scikit-learn's handwritten digits (1,797 labelled 8x8
images that ship inside scikit-learn), upsampled to 32 px RGB; or, with ``data=PATH``, CIFAR-10 or
STL-10 in torchvision's on-disk format, or any ImageFolder. Nothing is ever downloaded.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightly.loss import BarlowTwinsLoss, NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules import heads
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import SimCLRTransform
from lightly.utils.scheduler import cosine_schedule
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.models.resnet import BasicBlock

# ------------------------------------------------------------------------------------------------
# Backbone


def small_resnet(widths: tuple[int, ...] = (16, 32, 64, 128)) -> nn.Sequential:
    """A small ResNet (one ``BasicBlock`` per stage) for 32-96 px images: ``(B, 3, H, W) -> (B, D)``.

    The stem is a 3x3 stride-1 convolution without max pooling (as for CIFAR), so a 32 px image
    leaves the last stage as a 4x4 feature map: the layer the class-activation methods explain.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(3, widths[0], 3, padding=1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    ]
    cin = widths[0]
    for i, w in enumerate(widths):
        stride = 1 if i == 0 else 2
        down = None
        if stride != 1 or cin != w:
            down = nn.Sequential(nn.Conv2d(cin, w, 1, stride=stride, bias=False), nn.BatchNorm2d(w))
        layers.append(BasicBlock(cin, w, stride=stride, downsample=down))
        cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------------------------
# Models


class _SSLModule(pl.LightningModule):
    """Common parts: backbone, optimiser, the two-view training step."""

    def __init__(self, lr: float = 0.06, max_epochs: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = small_resnet()
        self.feature_dim = 128

    def embed(self, x: Tensor) -> Tensor:  # overridden by every model
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.embed(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        (x0, x1), _ = batch
        loss = self.pair_loss(x0, x1)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        (x0, x1), _ = batch
        loss = self.pair_loss(x0, x1)
        self.log("val/loss", loss, prog_bar=True)
        return loss

    def pair_loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        raise TypeError(f"{type(self).__name__} must define pair_loss")

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(
            self.parameters(), lr=self.hparams["lr"], momentum=0.9, weight_decay=5e-4
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(1, self.hparams["max_epochs"])
        )
        return [opt], [sched]


class SimCLR(_SSLModule):
    """SimCLR: projection head + NT-Xent loss. Explained embedding: the projection."""

    def __init__(self, lr: float = 0.06, max_epochs: int = 10, temperature: float = 0.2) -> None:
        super().__init__(lr, max_epochs)
        self.projection_head = heads.SimCLRProjectionHead(self.feature_dim, 256, 64)
        self.criterion = NTXentLoss(temperature=temperature)

    def embed(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x))

    def pair_loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        return self.criterion(self.embed(x0), self.embed(x1))


class _Momentum(_SSLModule):
    """Shared parts of the momentum-encoder models (BYOL, MoCo)."""

    def _momentum_copies(self, *names: str) -> None:
        for name in names:
            module = copy.deepcopy(getattr(self, name))
            deactivate_requires_grad(module)
            setattr(self, f"{name}_momentum", module)

    def _tau(self) -> float:
        max_steps = max(1, int(self.trainer.estimated_stepping_batches))
        return cosine_schedule(self.global_step, max_steps, 0.99, 1.0)


class BYOL(_Momentum):
    """BYOL: online projection + prediction heads, momentum target. Embedding: the prediction."""

    def __init__(self, lr: float = 0.06, max_epochs: int = 10) -> None:
        super().__init__(lr, max_epochs)
        self.projection_head = heads.BYOLProjectionHead(self.feature_dim, 256, 64)
        self.prediction_head = heads.BYOLPredictionHead(64, 256, 64)
        self._momentum_copies("backbone", "projection_head")
        self.criterion = NegativeCosineSimilarity()

    def embed(self, x: Tensor) -> Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x)))

    def _target(self, x: Tensor) -> Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x)).detach()

    def pair_loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        if self.training:
            tau = self._tau()
            update_momentum(self.backbone, self.backbone_momentum, m=tau)
            update_momentum(self.projection_head, self.projection_head_momentum, m=tau)
        return 0.5 * (
            self.criterion(self.embed(x0), self._target(x1))
            + self.criterion(self.embed(x1), self._target(x0))
        )


class SimSiam(_SSLModule):
    """SimSiam: projection + prediction, stop-gradient. Embedding: the prediction (as the paper)."""

    def __init__(self, lr: float = 0.06, max_epochs: int = 10) -> None:
        super().__init__(lr, max_epochs)
        self.projection_head = heads.SimSiamProjectionHead(self.feature_dim, 256, 64)
        self.prediction_head = heads.SimSiamPredictionHead(64, 32, 64)
        self.criterion = NegativeCosineSimilarity()

    def embed(self, x: Tensor) -> Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x)))

    def pair_loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        z0 = self.projection_head(self.backbone(x0))
        z1 = self.projection_head(self.backbone(x1))
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        return 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))


class BarlowTwins(_SSLModule):
    """Barlow Twins: projector + cross-correlation loss. Embedding: the projection."""

    def __init__(self, lr: float = 0.06, max_epochs: int = 10) -> None:
        super().__init__(lr, max_epochs)
        self.projection_head = heads.BarlowTwinsProjectionHead(self.feature_dim, 512, 512)
        self.criterion = BarlowTwinsLoss()

    def embed(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x))

    def pair_loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        return self.criterion(self.embed(x0), self.embed(x1))


class MoCo(_Momentum):
    """MoCo v2: momentum key encoder and a memory bank of negatives. Embedding: the query projection."""

    def __init__(
        self, lr: float = 0.06, max_epochs: int = 10, memory_bank_size: int = 1024
    ) -> None:
        super().__init__(lr, max_epochs)
        self.projection_head = heads.MoCoProjectionHead(self.feature_dim, 256, 64)
        self._momentum_copies("backbone", "projection_head")
        self.criterion = NTXentLoss(temperature=0.2, memory_bank_size=(memory_bank_size, 64))

    def embed(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x))

    def pair_loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        if self.training:
            tau = self._tau()
            update_momentum(self.backbone, self.backbone_momentum, m=tau)
            update_momentum(self.projection_head, self.projection_head_momentum, m=tau)
        key = self.projection_head_momentum(self.backbone_momentum(x1)).detach()
        return self.criterion(self.embed(x0), key)


MODELS: dict[str, type[_SSLModule]] = {
    "simclr": SimCLR,
    "byol": BYOL,
    "simsiam": SimSiam,
    "barlowtwins": BarlowTwins,
    "moco": MoCo,
}

# ------------------------------------------------------------------------------------------------
# Data


class ImageListDataset(Dataset[tuple[Any, int]]):
    """PIL images and integer labels, with an optional transform."""

    def __init__(self, images: list[Image.Image], labels: list[int], transform: Any = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = self.images[i]
        return (self.transform(img) if self.transform else img), self.labels[i]


def digits_images(size: int = 32) -> tuple[list[Image.Image], list[int]]:
    """scikit-learn's digits as ``size``-px RGB PIL images (white strokes on black) and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    imgs = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    imgs = nn.functional.interpolate(imgs, size=(size, size), mode="bilinear", align_corners=False)
    arr = (imgs.clamp(0, 1) * 255).to(torch.uint8).repeat(1, 3, 1, 1).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr], [int(t) for t in digits.target]


def folder_dataset(path: Path) -> Dataset[tuple[Any, int]]:
    """CIFAR-10 or STL-10 in torchvision's on-disk format, or an ImageFolder; never downloaded."""
    from torchvision import datasets

    if (path / "cifar-10-batches-py").is_dir():
        return datasets.CIFAR10(str(path), train=True, download=False)
    if (path / "stl10_binary").is_dir():
        return datasets.STL10(str(path), split="train", download=False)
    if path.is_dir():
        return datasets.ImageFolder(str(path))
    raise FileNotFoundError(
        f"--data {path}: expected a folder holding CIFAR-10 ('cifar-10-batches-py/'), STL-10 "
        f"('stl10_binary/') or an ImageFolder (one sub-folder per class); nothing is downloaded."
    )


class _Transformed(Dataset[tuple[Any, int]]):
    def __init__(self, base: Dataset[tuple[Any, int]], transform: Any) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img, label = self.base[i]
        return self.transform(img.convert("RGB")), label


class SSLDataModule(pl.LightningDataModule):
    """Two-view training/validation data with lightly's ``SimCLRTransform``.

    Args:
        data: ``None`` for scikit-learn's digits, or a path to CIFAR-10 / STL-10 / an ImageFolder.
        input_size: image side in pixels.
        batch_size: training batch size.
        val_fraction: share of the images held out for validation (and the callback's probes).
        limit: use only the first ``limit`` images (quick runs).
        num_workers: data loader workers.
    """

    def __init__(
        self,
        data: str | None = None,
        input_size: int = 32,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        limit: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.data, self.input_size, self.batch_size = data, input_size, batch_size
        self.val_fraction, self.limit, self.num_workers = val_fraction, limit, num_workers
        self.transform = SimCLRTransform(
            input_size=input_size, min_scale=0.3, gaussian_blur=0.0, cj_strength=0.5
        )

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            images, labels = digits_images(self.input_size)
            base: Dataset[tuple[Any, int]] = ImageListDataset(images, labels)
        else:
            base = folder_dataset(Path(self.data))
        n = len(base)  # type: ignore[arg-type]
        if self.limit:
            n = min(n, self.limit)
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(n, generator=g).tolist()
        n_val = max(1, int(n * self.val_fraction))
        self.train_set = _Transformed(Subset(base, order[n_val:]), self.transform)
        self.val_set = _Transformed(Subset(base, order[:n_val]), self.transform)
        self.val_plain = Subset(base, order[:n_val])

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)
