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
    """Train TinyContrastive for 2 epochs with PairExplanationCallback and ModelCheckpoint.

    ``pytorch_lightning`` (a core dependency; the namespace lightly uses) rather than
    ``lightning.pytorch``, so the tests need no extra.
    """
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    from lightning_explain.pl import PairExplanationCallback
    from tests.cli.tiny_module import TinyContrastive, TwoViews

    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    callback = PairExplanationCallback(
        ["input_x_gradient"],
        ["insertion_simultaneous"],
        probe={"n_pairs": 4, "pairing": "two_views", "source": "train"},
        n_steps=4,
        log_images=False,
    )

    def fit(max_epochs: int, root_dir: Path, callbacks: list[pl.Callback]) -> None:
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            default_root_dir=root_dir,
            callbacks=callbacks,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            devices=1,
        )
        trainer.fit(TinyContrastive(), DataLoader(TwoViews(), batch_size=8))

    fit(
        2,
        root,
        [callback, ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1, every_n_epochs=1)],
    )
    epochs = tuple(sorted((root / "ckpt").glob("*.ckpt")))
    assert len(epochs) == 2, epochs
    other = root / "other"
    other.mkdir()
    odd = other / "model<b>bold.ckpt"
    shutil.copy(epochs[1], odd)
    probe = callback.save_probe(root / "probe.pt")

    # A checkpoint of the same model trained without the callback: no probe set stored.
    fit(1, root / "plain", [ModelCheckpoint(dirpath=root / "plain", save_top_k=-1)])
    plain = next((root / "plain").glob("*.ckpt"))
    return Run(epochs=(epochs[0], epochs[1]), odd=odd, plain=plain, probe=probe)


@dataclass(frozen=True)
class Comparison:
    """The output folder and exit code of one ``compare`` run."""

    out: Path
    code: int
    stdout: str
    stderr: str


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` in-process; returns the exit code, stdout and stderr."""
    import contextlib
    import io

    from lightning_explain.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


COMPARE_METHODS = ("gradcam", "input_x_gradient")
COMPARE_METRICS = ("insertion_simultaneous", "deletion_simultaneous", "average_drop_simultaneous")


@pytest.fixture(scope="session")
def one_run(run: Run, tmp_path_factory: pytest.TempPathFactory) -> Comparison:
    """Both epochs of the run (probe set taken from the checkpoint), also logged to TensorBoard."""
    out = tmp_path_factory.mktemp("one_run")
    code, stdout, stderr = run_cli(
        [
            "compare",
            str(run.epochs[0]),
            str(run.epochs[1]),
            "--model-class",
            MODEL_CLASS,
            "--methods",
            ",".join(COMPARE_METHODS),
            "--metrics",
            *COMPARE_METRICS,
            "--n-steps",
            "8",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--tensorboard",
            str(out / "tb"),
        ]
    )
    return Comparison(out, code, stdout, stderr)


@pytest.fixture(scope="session")
def mixed(run: Run, tmp_path_factory: pytest.TempPathFactory) -> Comparison:
    """Both epochs plus a copy named ``model<b>bold.ckpt`` in another folder, with a probe file,
    also logged to W&B (offline)."""
    out = tmp_path_factory.mktemp("mixed")
    code, stdout, stderr = run_cli(
        [
            "compare",
            str(run.epochs[0]),
            str(run.epochs[1]),
            str(run.odd),
            "--probe",
            str(run.probe),
            "--model-class",
            MODEL_CLASS,
            "--methods",
            *COMPARE_METHODS,
            "--metrics",
            ",".join(COMPARE_METRICS),
            "--n-steps",
            "8",
            "--batch-size",
            "16",
            "--title",
            "Run <i>tiny</i> & co",
            "--out",
            str(out),
            "--wandb",
            "le-test",
        ]
    )
    return Comparison(out, code, stdout, stderr)
