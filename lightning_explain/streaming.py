"""Large offline evaluations: score many pairs streamed from disk through a Lightning ``Trainer``.

The training callback and ``lightning-explain compare`` evaluate a small probe set held in memory.
To score thousands of pairs (the paper evaluates on ImageNet's validation images), the pairs are
read batch by batch from a dataset (:class:`ImageFolderPairs`: an image folder, decoded and
transformed per item in the ``DataLoader``; :class:`ProbePairs`: a probe file), each batch goes
through the evaluation engine (:func:`lightning_explain.evaluate_probe`), and only the per-pair
scores are kept: memory is bounded by one batch of pairs and its perturbation chunks, whatever
the number of pairs.

The loop is Lightning's prediction loop (``Trainer.predict`` with ``inference_mode=False``, so
gradient methods can run), which brings devices, strategies (``"ddp"`` on several GPUs or CPU
processes) and the progress bar; under a distributed strategy each rank scores its share of the
batches and rank 0 gathers the per-pair scores, dropping the duplicates a ``DistributedSampler``
adds to even out the shares. The result is the paper-style method x metric table of means
(:func:`evaluate_stream`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_explain._checks import check_bool, check_positive_int, describe
from lightning_explain._lightning import gather_objects
from lightning_explain.data.probe import ProbeSet, default_clean_transform
from lightning_explain.evaluation import (
    DEFAULT_METHODS,
    MethodEntry,
    MethodSpec,
    evaluate_module,
    parse_methods,
)
from lightning_explain.metrics import DEFAULT_METRICS
from lightning_explain.metrics._registry import resolve_metrics

__all__ = ["ImageFolderPairs", "ProbePairs", "StreamResult", "evaluate_stream"]

_OWNER = "evaluate_stream"


class ProbePairs(Dataset[tuple[Tensor, Tensor, int]]):
    """The pairs of a :class:`~lightning_explain.data.ProbeSet` (or a probe file) as a dataset of
    ``(x1, x2, index)`` items."""

    def __init__(self, probe: Union[ProbeSet, str, Path]) -> None:
        self.probe = probe if isinstance(probe, ProbeSet) else ProbeSet.load(probe)

    def __len__(self) -> int:
        return len(self.probe)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        return self.probe.x1[i], self.probe.x2[i], int(i)


class ImageFolderPairs(Dataset[tuple[Tensor, Tensor, int]]):
    """Pairs made from the images of a folder, the paper's way: a clean view (resize the shorter
    side to ``size / 0.875``, centre-crop ``size``) against an augmented view (random resized
    crop to ``size``, horizontal flip, colour jitter), as ``(x1, x2, index)`` in [0, 1].

    The images are found and decoded by ``torchvision.datasets.ImageFolder`` (class sub-folders)
    one item at a time, so nothing but the current batch is held in memory. The augmentation of
    item ``i`` is drawn with the global RNG forked and seeded with ``seed`` and ``i`` (the caller's
    RNG state is restored), so the pairs are the same on every run, in any worker, on any rank.

    Args:
        root: the folder (``root/<class>/<image>``).
        size: side of the square views in pixels. Default 224.
        seed: seed of the augmentations. Default 0.
        mean: per-channel mean of a ``Normalize`` applied to both views (the model's input
            normalisation). Default ``None``: no normalisation.
        std: per-channel std of that ``Normalize``. Default ``None``.
    """

    def __init__(
        self,
        root: Union[str, Path],
        *,
        size: int = 224,
        seed: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        from torchvision.datasets import ImageFolder
        from torchvision.transforms import v2

        self.size = check_positive_int(size, name="size", owner="ImageFolderPairs")
        self.seed = int(seed)
        if not Path(root).is_dir():
            raise ValueError(
                f"`ImageFolderPairs`: expected `root` to be a folder of class sub-folders of "
                f"images, but {str(root)!r} is not a folder."
            )
        self.images = ImageFolder(str(root))
        if (mean is None) != (std is None):
            raise ValueError(
                "`ImageFolderPairs`: pass both `mean` and `std` (the model's input "
                f"normalisation) or neither, but got mean={mean!r}, std={std!r}."
            )
        self.clean = default_clean_transform((self.size, self.size), mean, std)
        steps: list[Any] = [
            v2.ToImage(),
            v2.RandomResizedCrop(self.size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(0.4, 0.4, 0.4, 0.1),
            v2.ToDtype(torch.float32, scale=True),
        ]
        if mean is not None and std is not None:
            steps.append(v2.Normalize(list(mean), list(std)))
        self.augment = v2.Compose(steps)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        image, _ = self.images[i]
        x1 = self.clean(image)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + int(i))
            x2 = self.augment(image)
        return x1, x2, int(i)


@dataclass
class StreamResult:
    """What :func:`evaluate_stream` measured.

    Attributes:
        scores: method label -> metric key -> ``(N,)`` per-pair scores in dataset order.
        sim: ``(N,)`` similarity of each pair.
        indices: ``(N,)`` dataset index of each pair (sorted, without duplicates).
        failures: ``"<stage> <label>: <error>"`` of every batch part that failed.
        seconds: wall time on rank 0 from the start of the prediction loop (processes
            launched, devices set up) to the gathered scores.
    """

    scores: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    sim: Tensor = field(default_factory=lambda: torch.zeros(0))
    indices: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    failures: list[str] = field(default_factory=list)
    seconds: float = math.nan

    @property
    def n_pairs(self) -> int:
        """Number of distinct pairs scored."""
        return int(self.indices.numel())

    def means(self, label: str) -> dict[str, float]:
        """Metric key -> mean over the pairs with a finite score (NaN when none)."""
        out: dict[str, float] = {}
        for key, values in self.scores.get(label, {}).items():
            finite = values[torch.isfinite(values)]
            out[key] = float(finite.double().mean()) if finite.numel() else math.nan
        return out


def _scorer_class() -> type:
    try:
        import lightning.pytorch as L
    except ImportError:  # pragma: no cover - pytorch_lightning only
        import pytorch_lightning as L  # type: ignore[no-redef]

    class PairScorer(L.LightningModule):  # type: ignore[misc]
        """Runs the evaluation engine on every predicted batch and keeps the per-pair scores."""

        def __init__(
            self, module: nn.Module, specs: list[MethodSpec], keys: list[str], options: Any
        ) -> None:
            super().__init__()
            self.module = module
            self.specs, self.keys, self.options = specs, keys, options
            self.parts: list[dict[str, Any]] = []
            self.started = self.ended = math.nan

        def on_predict_start(self) -> None:
            self.started = time.perf_counter()

        def on_predict_end(self) -> None:
            self.ended = time.perf_counter()

        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            x1, x2, index = batch
            evaluation = evaluate_module(
                self.module,
                (x1, x2),
                self.specs,
                self.keys,
                device=x1.device,
                errors="collect",
                owner=_OWNER,
                **self.options,
            )
            self.parts.append(
                {
                    "index": index.cpu(),
                    "sim": None if evaluation.sim is None else evaluation.sim.cpu(),
                    "scores": {
                        m.label: {k: v.cpu() for k, v in m.scores.items()}
                        for m in evaluation.methods
                    },
                    "failures": [f.message() for f in evaluation.failures],
                }
            )

    return PairScorer


def evaluate_stream(
    module: nn.Module,
    dataset: Dataset[Any],
    methods: Sequence[Union[MethodEntry, MethodSpec]] = DEFAULT_METHODS,
    metrics: Union[str, Sequence[str], None] = None,
    *,
    batch_pairs: int = 16,
    num_workers: int = 0,
    accelerator: str = "auto",
    devices: Union[int, str, list[int]] = 1,
    strategy: str = "auto",
    progress: bool = True,
    **options: Any,
) -> StreamResult | None:
    """Score every pair of ``dataset`` with every method and metric, streaming.

    Args:
        module: the model (an ``nn.Module``, e.g. a LightningModule); moved to the device by
            Lightning.
        dataset: items ``(x1, x2, index)`` (:class:`ImageFolderPairs`, :class:`ProbePairs`, or
            any dataset of that form).
        methods: method entries, as :func:`lightning_explain.evaluate_probe`.
        metrics: metric keys; ``None``: the default set.
        batch_pairs: pairs per engine call (the memory bound, besides the perturbation chunks).
            Default 16.
        num_workers: ``DataLoader`` worker processes (decoding and augmentation). Default 0.
        accelerator: Lightning accelerator (``"cpu"``, ``"gpu"``, ``"auto"``). Default ``"auto"``.
        devices: Lightning devices (e.g. ``2``). Default 1.
        strategy: Lightning strategy (``"ddp"`` for several processes). Default ``"auto"``.
        progress: show Lightning's progress bar. Default ``True``.
        **options: the other keyword arguments of
            :func:`lightning_explain.evaluation.evaluate_module` (``embedding``, ``similarity``,
            ``layer``, ``seed``, ``batch_size``, ``n_steps``, ``autocast``, ...).

    Returns:
        The :class:`StreamResult` on global rank 0; ``None`` on the other ranks.

    Raises:
        ValueError / TypeError: for bad arguments, before any pair is read.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"`{_OWNER}`: expected `module` to be an nn.Module (Lightning moves it to the "
            f"device), but got {describe(module)}."
        )
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError(
            f"`{_OWNER}`: expected `dataset` to be a map-style dataset of (x1, x2, index) "
            f"items such as ImageFolderPairs or ProbePairs, but got {describe(dataset)}."
        )
    batch_pairs = check_positive_int(batch_pairs, name="batch_pairs", owner=_OWNER)
    num_workers = check_positive_int(num_workers, name="num_workers", owner=_OWNER, minimum=0)
    progress = check_bool(progress, name="progress", owner=_OWNER)
    specs = parse_methods(methods, owner=_OWNER)
    keys = list(DEFAULT_METRICS) if metrics is None else resolve_metrics(metrics, owner=_OWNER)
    import lightning.pytorch as L

    scorer = _scorer_class()(module, specs, keys, options)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
    )
    loader = DataLoader(dataset, batch_size=batch_pairs, shuffle=False, num_workers=num_workers)
    with torch.random.fork_rng(devices=[]):  # the DataLoader draws its base seed from it
        trainer.predict(scorer, loader, return_predictions=False)
    parts = gather_objects(
        scorer.parts, rank=int(trainer.global_rank), world_size=int(trainer.world_size)
    )
    seconds = time.perf_counter() - scorer.started  # the loop and the gather, no start-up
    if not trainer.is_global_zero:
        return None
    return _merge(
        [p for rank_parts in parts for p in rank_parts], [s.label for s in specs], keys, seconds
    )


def _merge(
    parts: list[dict[str, Any]], labels: list[str], keys: list[str], seconds: float
) -> StreamResult:
    """Join the batch parts of every rank in dataset order, one entry per dataset index."""
    result = StreamResult(seconds=seconds)
    if not parts:
        return result
    index = torch.cat([p["index"] for p in parts])
    order = torch.argsort(index, stable=True)
    keep = torch.ones_like(order, dtype=torch.bool)
    sorted_index = index[order]
    keep[1:] = sorted_index[1:] != sorted_index[:-1]  # a DistributedSampler repeats some items
    chosen = order[keep]
    result.indices = index[chosen]
    n = index.numel()

    def column(values: list[Tensor | None]) -> Tensor:
        full = torch.cat(
            [
                torch.full((len(p["index"]),), math.nan) if v is None else v.float()
                for p, v in zip(parts, values)
            ]
        )
        return full[chosen] if full.numel() == n else torch.full((len(chosen),), math.nan)

    result.sim = column([p["sim"] for p in parts])
    for label in labels:
        result.scores[label] = {
            key: column([p["scores"].get(label, {}).get(key) for p in parts]) for key in keys
        }
    result.failures = [message for p in parts for message in p["failures"]]
    return result
