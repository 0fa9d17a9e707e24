"""The callback's cost in a real Lightning fit: epoch time with and without it, measured.

A SimCLR run as lightly's own example builds it: torchvision ``resnet18(weights=None)`` backbone
(``fc = Identity``), lightly's ``SimCLRProjectionHead`` and ``NTXentLoss``, SGD with momentum, on
``--images`` generated 32 px images (smooth random colour fields with a few random shapes,
made once with a seeded generator, stored as uint8) served as PIL images through lightly's
``SimCLRTransform(input_size=32, gaussian_blur=0.0)`` (random resized crop, flip, colour jitter,
grayscale) by a ``DataLoader`` with ``--workers`` worker processes: data loading and augmentation
are part of every epoch.

Fits (``Trainer(max_epochs=--epochs)``, CSVLogger, no checkpointing or progress bar), in
interleaved order, ``--rounds`` times each:

* **baseline**: no callback;
* **defaults**: ``PairExplanationCallback()`` at its defaults (every epoch, 8 probe pairs of the
  training set's two views, ``gradcam`` and ``interaction_cam``, the default metrics, images
  logged);
* **every method**: ``PairExplanationCallback(methods=<all registered methods>)``, other
  settings at their defaults;
* any ``--extra`` setting given as JSON keyword arguments (e.g. ``'{"every_n_epochs": 2}'``).

``--base`` adds JSON keyword arguments to every callback fit (the smoke run uses it to make the
evaluation tiny).

An epoch's time is the wall time from one ``on_train_epoch_start`` to the next (the last one
ends at ``on_train_end``), so it contains the callback's epoch-end evaluation; the first epoch
(warm-up) is left out, and the median over the remaining epochs and rounds counts. Epoch times
of separate fits vary by several percent on a shared machine, so the time spent inside the
callback's epoch-end hook (the evaluation, rendering and logging, timed in the same fit) is
reported too, as a share of the baseline epoch: the less noisy measure of its cost. The callback's
fit-start work (its dry run) is reported apart: the time from ``on_fit_start`` to the first
``on_train_epoch_start`` minus the baseline's.

Example::

    OMP_NUM_THREADS=2 python benchmarks/bench_fit.py --images 10000 --epochs 3

``--smoke`` runs a tiny configuration in seconds (used by the test suite).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import machine_line
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_explain import PairExplanationCallback, list_methods


def generated_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``(n, size, size, 3)`` uint8 images: a smooth random colour field and 1-3 random
    axis-aligned rectangles of random colours."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    field = nn.functional.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1)
    rows = torch.arange(size).view(1, size, 1)
    cols = torch.arange(size).view(1, 1, size)
    for _ in range(3):
        lo = torch.randint(0, size // 2, (n, 2), generator=g)
        hi = lo + torch.randint(size // 8, size // 2, (n, 2), generator=g)
        colour = torch.rand(n, 3, 1, 1, generator=g)
        keep = (torch.rand(n, generator=g) < 0.7).view(n, 1, 1)
        inside = (
            (rows >= lo[:, :1, None])
            & (rows < hi[:, :1, None])
            & (cols >= lo[:, 1:, None])
            & (cols < hi[:, 1:, None])
            & keep
        )
        field = torch.where(inside[:, None], colour, field)
    return (field * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


class GeneratedDataset(Dataset[tuple[list[Tensor], int]]):
    """Items ``([view1, view2], label)`` as lightly's datasets give them to a SimCLR run."""

    def __init__(self, images: np.ndarray, transform: Any) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[list[Tensor], int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), i % 10


def make_module(dataset: Dataset[Any], batch_size: int, workers: int) -> Any:
    import lightning as L
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from torchvision.models import resnet18

    class SimCLR(L.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            backbone = resnet18(weights=None)
            backbone.fc = nn.Identity()
            self.backbone = backbone
            self.projection_head = SimCLRProjectionHead(512, 512, 128)
            self.criterion = NTXentLoss()

        def forward(self, x: Tensor) -> Tensor:
            z: Tensor = self.projection_head(self.backbone(x).flatten(1))
            return z

        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            (x0, x1), _ = batch
            loss: Tensor = self.criterion(self(x0), self(x1))
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.06, momentum=0.9)

        def train_dataloader(self) -> DataLoader[Any]:
            return DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=True,
                drop_last=True,
                num_workers=workers,
                persistent_workers=workers > 0,
                generator=torch.Generator().manual_seed(0),
            )

    return SimCLR()


def make_timer() -> Any:
    import lightning as L

    class EpochTimer(L.Callback):  # type: ignore[misc]
        """Wall-clock marks: fit start, every epoch start, train end."""

        def __init__(self) -> None:
            self.fit_start = 0.0
            self.starts: list[float] = []
            self.end = 0.0

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            self.fit_start = time.perf_counter()

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.starts.append(time.perf_counter())

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.end = time.perf_counter()

        def epochs(self) -> list[float]:
            marks = [*self.starts, self.end]
            return [b - a for a, b in itertools.pairwise(marks)]

    return EpochTimer()


def timed_callback(kwargs: dict[str, Any]) -> Any:
    """``PairExplanationCallback(**kwargs)`` that records the wall time of its fit-start and
    epoch-end hooks (the dry run and the evaluations) in ``hook_seconds``."""

    class Timed(PairExplanationCallback):
        hook_seconds: list[float]

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            start = time.perf_counter()
            super().on_fit_start(trainer, pl_module)
            self.fit_start_seconds = time.perf_counter() - start

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            start = time.perf_counter()
            super().on_train_epoch_end(trainer, pl_module)
            self.hook_seconds.append(time.perf_counter() - start)

    callback = Timed(**kwargs)
    callback.hook_seconds = []
    callback.fit_start_seconds = 0.0
    return callback


def fit(
    name: str,
    kwargs: dict[str, Any] | None,
    dataset: Dataset[Any],
    args: argparse.Namespace,
    workdir: Path,
) -> tuple[list[float], float, list[float]]:
    """One fit; returns the epoch times, the fit-start time and the callback's epoch-end hook
    times (one per epoch; empty without the callback)."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    timer = make_timer()
    callbacks: list[Any] = [timer]
    explainer = None if kwargs is None else timed_callback(kwargs)
    if explainer is not None:
        callbacks.append(explainer)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        devices=1,
        logger=CSVLogger(workdir / name),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    module = make_module(dataset, args.batch_size, args.workers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module)
    hooks = [] if explainer is None else list(explainer.hook_seconds)
    return timer.epochs(), timer.starts[0] - timer.fit_start, hooks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="per fit; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=1, help="fits per setting, interleaved")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--no-all", action="store_true", help="skip the every-method fit")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        help="another callback setting as JSON keyword arguments (repeatable)",
    )
    parser.add_argument(
        "--base",
        default="{}",
        help="JSON keyword arguments given to every callback fit (default: none)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.batch_size, args.epochs, args.workers = 64, 32, 2, 0
        args.no_all, args.base = True, '{"n_steps": 4, "probe": {"n_pairs": 2}}'
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is warm-up)")

    from lightly.transforms import SimCLRTransform

    images = generated_images(args.images, args.size)
    transform = SimCLRTransform(input_size=args.size, gaussian_blur=0.0)
    dataset = GeneratedDataset(images, transform)
    base_kwargs = json.loads(args.base)
    settings: dict[str, dict[str, Any] | None] = {"baseline": None, "defaults": {**base_kwargs}}
    if not args.no_all:
        settings["every method"] = {**base_kwargs, "methods": list_methods()}
    for extra in args.extra:
        settings[extra] = {**base_kwargs, **json.loads(extra)}
    print(
        f"{machine_line(torch.device(args.accelerator))}; SimCLR ResNet-18, {args.images} "
        f"generated {args.size} px images, batch {args.batch_size}, {args.workers} loader "
        f"worker(s), {args.epochs} epochs per fit (first left out), {args.rounds} round(s); "
        f"callback settings besides the defaults: {base_kwargs or 'none'}"
    )
    epochs: dict[str, list[float]] = {name: [] for name in settings}
    starts: dict[str, list[float]] = {name: [] for name in settings}
    hooks: dict[str, list[float]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, kwargs in settings.items():
                times, start, hook = fit(
                    f"{r}-{len(epochs[name])}", kwargs, dataset, args, Path(tmp)
                )
                epochs[name] += times[1:]
                starts[name].append(start)
                hooks[name] += hook[1:]
                print(
                    f"  round {r + 1}, {name}: epochs "
                    + ", ".join(f"{t:.2f}" for t in times)
                    + f" s; fit start {start:.2f} s"
                    + (
                        "; evaluations " + ", ".join(f"{t:.2f}" for t in hook) + " s"
                        if hook
                        else ""
                    ),
                    flush=True,
                )
    base = statistics.median(epochs["baseline"])
    base_start = statistics.median(starts["baseline"])
    print(f"baseline epoch: {base:.2f} s (median of {len(epochs['baseline'])})")
    for name in settings:
        if name == "baseline":
            continue
        t = statistics.median(epochs[name])
        extra_start = statistics.median(starts[name]) - base_start
        inside = statistics.median(hooks[name])
        print(
            f"{name}: epoch {t:.2f} s, {t / base:.3f}x the baseline "
            f"({100 * (t / base - 1):+.1f}% of the epoch); time inside the callback's "
            f"epoch-end hook {inside:.2f} s = {100 * inside / base:.1f}% of the baseline epoch; "
            f"fit start +{extra_start:.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
