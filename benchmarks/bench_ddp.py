"""Wall time of one callback evaluation under DDP with 1 and 2 processes, by part.

Every rank explains and scores its share of the probe pairs (``ProbeSet.shard``), rank 0 gathers,
every rank draws a share of the pictures and rank 0 logs them. The script fits a model for
``--epochs`` epochs with the callback at its default methods (or ``--methods``) and metrics on
``--pairs`` probe pairs, once per process count, and prints the
median wall time of the callback's epoch-end hook on rank 0 (the first evaluation, which pays
for imports, is left out), measured inside the fit, split into its parts:

- ``explain+score``: explaining and scoring the rank's share of the pairs (the slowest rank);
- ``gather``: on rank 0, the wait for the other ranks and the gather of their results;
- ``draw``: on rank 0, drawing its share of the pictures, the wait for the other ranks' shares
  and their gather (with more than one process: every rank draws a share); the slowest rank's
  own drawing is printed beside it;
- ``log``: on rank 0, logging the scalars, pictures and curve files (with one process this
  includes drawing every picture).

``render+log`` is ``draw`` + ``log``: everything rank 0 spends on pictures and logging.

``--model tiny`` is the test suite's two-convolution CNN (16 px), where rendering dominates;
``--model resnet18`` is torchvision's ResNet-18 (``weights=None``, ``fc = Identity``) at
``--size`` px, where the model does. ``OMP_NUM_THREADS=1`` is set for every process, so that
``N`` processes use ``N`` cores; ``--accelerator gpu`` gives each process a GPU of its own (NCCL)
instead of a core (gloo).

Example::

    python benchmarks/bench_ddp.py --devices 1 2 --model resnet18

``--smoke`` runs a tiny configuration (used by the test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("hook", "explain+score", "gather", "draw", "log", "render+log")


def child(args: argparse.Namespace) -> None:
    """One fit with ``args.child`` processes; every rank writes its timings to ``args.out``."""
    sys.path.insert(0, str(ROOT))
    import lightning.pytorch as L
    import torch
    from torch.utils.data import DataLoader

    from lightning_explain import PairExplanationCallback
    from tests.callback.helpers import TwoViewDataset, make_module_class

    class Timed(PairExplanationCallback):
        """Times the hook and its parts; the dry run at fit start is not counted."""

        times: dict[str, list[float]]
        inside = False

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self.inside = True
            start = time.perf_counter()
            try:
                super().on_train_epoch_end(trainer, pl_module)
            finally:
                self.inside = False
            self.times["hook"].append(time.perf_counter() - start)

        def _timed(self, part: str, fn: Any, *a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            out = fn(*a, **k)
            if self.inside:
                self.times[part].append(time.perf_counter() - start)
            return out

        def _evaluate(self, *a: Any, **k: Any) -> Any:
            return self._timed("explain+score", super()._evaluate, *a, **k)

        def _evaluate_sharded(self, *a: Any, **k: Any) -> Any:
            return self._timed("sharded", super()._evaluate_sharded, *a, **k)

        def _render_sharded(self, *a: Any, **k: Any) -> Any:
            return self._timed("draw", super()._render_sharded, *a, **k)

        def _compute_and_log(self, trainer: Any, probe: Any, *a: Any, **k: Any) -> Any:
            self.times["pairs"] = [float(len(probe))]
            return self._timed("log", super()._compute_and_log, trainer, probe, *a, **k)

    base = make_module_class()

    class Module(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(n=max(32, args.pairs), batch_size=8)
            if args.model == "resnet18":
                from torchvision.models import resnet18

                torch.manual_seed(0)
                self.backbone = resnet18(weights=None)
                self.backbone.fc = torch.nn.Identity()

        def train_dataloader(self) -> Any:
            return DataLoader(TwoViewDataset(self.n, size=args.size), batch_size=8, shuffle=True)

        def val_dataloader(self) -> Any:
            return DataLoader(
                TwoViewDataset(max(8, args.pairs), size=args.size, seed=5), batch_size=4
            )

    import lightning_explain.callback as callback_module

    draw_share = callback_module.render_jobs

    def timed_draw_share(*a: Any, **k: Any) -> Any:
        return cb._timed("own draw", draw_share, *a, **k)

    callback_module.render_jobs = timed_draw_share  # type: ignore[assignment]

    torch.set_num_threads(1)
    L.seed_everything(0)
    methods: dict[str, Any] = {}
    if args.methods == ["all"]:
        from lightning_explain import list_methods

        methods["methods"] = list_methods()
    elif args.methods:
        methods["methods"] = args.methods
    cb = Timed(probe={"n_pairs": args.pairs}, n_steps=args.steps, **methods)
    cb.times = {
        "hook": [],
        "explain+score": [],
        "sharded": [],
        "draw": [],
        "own draw": [],
        "log": [],
    }
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=args.child,
        strategy="ddp" if args.child > 1 else "auto",
        max_epochs=args.epochs,
        logger=L.loggers.CSVLogger(args.out_dir, name="csv"),
        callbacks=[cb],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Module())
    Path(f"{args.out}.{trainer.global_rank}").write_text(json.dumps(cb.times))


def summarise(per_rank: list[dict[str, list[float]]]) -> dict[str, float]:
    """Medians over the evaluations after the first: the hook, draw and log on rank 0, the
    slowest rank's explain+score and own drawing, and rank 0's gather (its sharded evaluation
    less its own share)."""

    def median(values: list[float]) -> float:
        return statistics.median(values[1:] or values)

    rank0 = per_rank[0]
    gather = [s - e for s, e in zip(rank0["sharded"], rank0["explain+score"])]
    return {
        "hook": median(rank0["hook"]),
        "explain+score": max(median(r["explain+score"]) for r in per_rank),
        "gather": median(gather),
        "draw": median(rank0["draw"]) if rank0["draw"] else 0.0,
        "own draw": max(median(r["own draw"]) if r["own draw"] else 0.0 for r in per_rank),
        "log": median(rank0["log"]),
        "render+log": median([d + g for d, g in zip(rank0["draw"], rank0["log"])])
        if rank0["draw"]
        else median(rank0["log"]),
        "evaluations": float(len(rank0["hook"])),
        "pairs": rank0["pairs"][0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", choices=("tiny", "resnet18"), default="tiny")
    parser.add_argument(
        "--accelerator", choices=("cpu", "gpu"), default="cpu", help="gpu: one GPU per process"
    )
    parser.add_argument(
        "--size", type=int, default=None, help="image size; 16 (tiny), 32 (resnet18)"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="method names, or 'all' for every registered method (default: the callback's)",
    )
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size is None:
        args.size = 16 if args.model == "tiny" else 32
    if args.child is not None:
        child(args)
        return 0
    if args.smoke:
        args.pairs, args.steps, args.epochs, args.devices = 2, 4, 2, [1, 2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("LOCAL_RANK", None)
    results: dict[int, dict[str, float]] = {}
    print(
        f"{args.accelerator}, model: {args.model} at {args.size} px, probe pairs: {args.pairs}, "
        f"n_steps: {args.steps}, "
        f"methods: {' '.join(args.methods) if args.methods else 'default'}, default metrics, "
        f"{args.epochs} epochs; OMP_NUM_THREADS=1 per process; "
        f"medians over epochs 2..{args.epochs}; load average {os.getloadavg()[0]:.2f}"
    )
    for devices in args.devices:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "times.json"
            cmd = [sys.executable, __file__, "--child", str(devices), "--out", str(out),
                   "--out-dir", tmp, "--pairs", str(args.pairs), "--steps", str(args.steps),
                   "--epochs", str(args.epochs), "--model", args.model,
                   "--size", str(args.size), "--accelerator", args.accelerator]  # fmt: skip
            if args.methods:
                cmd += ["--methods", *args.methods]
            proc = subprocess.run(
                cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600
            )
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
                raise SystemExit(
                    f"the fit with {devices} process(es) failed (rc {proc.returncode})"
                )
            per_rank = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(devices)]
        results[devices] = parts = summarise(per_rank)
        print(
            f"{devices} process(es): one evaluation of {int(parts['pairs'])} pairs "
            f"{parts['hook']:.3f} s ({max(1, int(parts['evaluations']) - 1)} timed): "
            + ", ".join(f"{name} {parts[name]:.3f} s" for name in PARTS[1:])
            + f" (slowest rank's own drawing {parts['own draw']:.3f} s)"
        )
    if 1 in results and len(results) > 1:
        for devices, parts in results.items():
            if devices != 1:
                print(
                    f"speed-up with {devices} processes: {results[1]['hook'] / parts['hook']:.2f}x "
                    f"(explain+score {results[1]['explain+score'] / parts['explain+score']:.2f}x)"
                )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
