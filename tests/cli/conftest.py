"""Session fixtures of the CLI tests: one tiny training run with checkpoints, and one comparison."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

MODEL_CLASS = "tests.cli.tiny_module:TinyContrastive"


@dataclass(frozen=True)
class Run:
    """Checkpoints of one tiny run (epochs 0 and 1) and a copy with markup in its file name."""

    epochs: tuple[Path, Path]
    odd: Path
    plain: Path
    probe: Path


@pytest.fixture(scope="session")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Train TinyContrastive for 2 epochs with PairExplanationCallback and ModelCheckpoint."""
    import lightning.pytorch as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    from lightning_explain.callback import PairExplanationCallback
    from tests.cli.tiny_module import TinyContrastive, TwoViews

    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    callback = PairExplanationCallback(
        ["input_x_gradient"],
        ["insertion_simultaneous"],
        n_pairs=4,
        n_steps=4,
        log_images=False,
        pairing="two_views",
        probe_source="train",
    )
    trainer = L.Trainer(
        max_epochs=2,
        default_root_dir=root,
        callbacks=[
            callback,
            ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1, every_n_epochs=1),
        ],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(TinyContrastive(), DataLoader(TwoViews(), batch_size=8))
    epochs = tuple(sorted((root / "ckpt").glob("*.ckpt")))
    assert len(epochs) == 2, epochs
    other = root / "other"
    other.mkdir()
    odd = other / "model<b>bold.ckpt"
    shutil.copy(epochs[1], odd)
    probe = callback.save_probe(root / "probe.pt")

    # A checkpoint of the same model trained without the callback: no probe set stored.
    plain_trainer = L.Trainer(
        max_epochs=1,
        default_root_dir=root / "plain",
        callbacks=[ModelCheckpoint(dirpath=root / "plain", save_top_k=-1)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    plain_trainer.fit(TinyContrastive(), DataLoader(TwoViews(), batch_size=8))
    plain = next((root / "plain").glob("*.ckpt"))
    return Run(epochs=(epochs[0], epochs[1]), odd=odd, plain=plain, probe=probe)
