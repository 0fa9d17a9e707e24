"""End to end with lightly: a tiny SimCLR (lightly heads, loss and transform, on scikit-learn digits
upsampled to 32 px) trained for 2 epochs with the callback and all four loggers at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from tests.callback.test_trackers_e2e import (
    check_csv,
    check_mlflow,
    check_tensorboard,
    check_wandb,
    make_loggers,
)

N_IMAGES, BATCH = 64, 16
STEPS = [4, 8]
LABELS = ["gradcam", "interaction_cam"]  # a single entry per method keeps its name


class Digits(Dataset[Any]):
    """scikit-learn's 8x8 digits as 32x32 RGB PIL images (no download); items (image, label).

    Like a torchvision dataset, it applies its ``transform`` attribute (set by lightly's
    ``LightlyDataset.from_torch_dataset``)."""

    def __init__(self, n: int) -> None:
        from PIL import Image
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.images = [
            Image.fromarray((digits.images[i] * 255 / 16).astype("uint8"))
            .resize((32, 32), Image.BILINEAR)
            .convert("RGB")
            for i in range(n)
        ]
        self.labels = [int(t) for t in digits.target[:n]]
        self.transform: Any = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        image = self.images[i]
        return (image if self.transform is None else self.transform(image)), self.labels[i]


def make_simclr() -> Any:
    import pytorch_lightning as pl
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    class SimCLR(pl.LightningModule):  # type: ignore[misc]
        """lightly's SimCLR example with a small CNN backbone; forward returns projections."""

        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1),
                nn.BatchNorm2d(16),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.Conv2d(32, 32, 3, stride=2, padding=1),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
            self.projection_head = SimCLRProjectionHead(32, 32, 16)
            self.criterion = NTXentLoss(temperature=0.5)

        def forward(self, x: Tensor) -> Tensor:
            return self.projection_head(self.backbone(x))

        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            (x0, x1), _, _ = batch
            loss = self.criterion(self(x0), self(x1))
            self.log("train_loss_ssl", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.06)

    return SimCLR()


@pytest.mark.slow
def test_lightly_simclr_with_all_loggers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("lightly", "sklearn", "wandb", "tensorboard", "mlflow"):
        pytest.importorskip(module)
    import pytorch_lightning as pl
    from lightly.data import LightlyDataset
    from lightly.transforms import SimCLRTransform
    from lightly.transforms.utils import IMAGENET_NORMALIZE

    from lightning_explain.pl import PairExplanationCallback

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    pl.seed_everything(0)
    transform = SimCLRTransform(input_size=32, min_scale=0.3, gaussian_blur=0.5, cj_prob=0.5)
    dataset = LightlyDataset.from_torch_dataset(Digits(N_IMAGES), transform=transform)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True)
    cb = PairExplanationCallback(
        ["gradcam", {"name": "interaction_cam", "reduction": "max"}],
        metrics=["insertion_simultaneous", "deletion_conditional"],
        embedding="backbone",
        probe={"n_pairs": 3},
        n_steps=8,
    )
    loggers = make_loggers("pytorch_lightning", tmp_path)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=list(loggers.values()),
        callbacks=[cb],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(make_simclr(), train_dataloaders=loader)
    loggers["wandb"].experiment.finish()

    # The probe set: two SimCLR views from the training set, normalisation detected.
    probe = cb.probe
    assert probe is not None
    assert probe.source == "train"
    assert probe.pairing == "two_views"
    assert probe.x1.shape == (3, 3, 32, 32)
    assert probe.mean == pytest.approx(tuple(IMAGENET_NORMALIZE["mean"]))
    assert probe.std == pytest.approx(tuple(IMAGENET_NORMALIZE["std"]))

    metrics = trainer.callback_metrics
    assert float(metrics["explain/errors"]) == 0
    for label in LABELS:
        for metric in ("insertion_simultaneous", "deletion_conditional"):
            assert torch.isfinite(metrics[f"explain/{label}/{metric}"])

    for label in LABELS:
        check_tensorboard(loggers["tensorboard"], steps=STEPS, label=label, size=32, n_pairs=3)
        check_mlflow(loggers["mlflow"], tmp_path, steps=STEPS, label=label)
        check_csv(loggers["csv"], steps=STEPS, label=label)
        check_wandb(tmp_path, n_images=len(STEPS), label=label, n_pairs=3)
