"""Wall time of one callback evaluation under DDP (gloo, CPU) with 1 and 2 processes.

Every rank explains and scores its share of the probe pairs (``ProbeSet.shard``), rank 0 gathers,
renders and logs. The script fits a small CNN for ``--epochs`` epochs with the callback at its
default methods and metrics on ``--pairs`` probe pairs, once per process count, and prints the
median wall time of the callback's epoch-end hook on rank 0 (the first evaluation, which pays
for imports, is left out), measured inside the fit. ``OMP_NUM_THREADS=1`` is set for every
process, so that ``N`` processes use ``N`` cores.

Example::

    python benchmarks/bench_ddp.py --devices 1 2

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


def child(args: argparse.Namespace) -> None:
    """One fit with ``args.child`` processes; rank 0 writes the hook timings to ``args.out``."""
    sys.path.insert(0, str(ROOT))
    import lightning.pytorch as L
    import torch

    from lightning_explain import PairExplanationCallback
    from tests.callback.helpers import make_module_class

    class Timed(PairExplanationCallback):
        times: list[float]

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            start = time.perf_counter()
            super().on_train_epoch_end(trainer, pl_module)
            self.times.append(time.perf_counter() - start)

    torch.set_num_threads(1)
    L.seed_everything(0)
    cb = Timed(probe={"n_pairs": args.pairs}, n_steps=args.steps)
    cb.times = []
    model = make_module_class()(n=max(32, args.pairs), batch_size=8)
    trainer = L.Trainer(
        accelerator="cpu",
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
    trainer.fit(model)
    if trainer.is_global_zero:
        Path(args.out).write_text(json.dumps({"times": cb.times}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args)
        return 0
    if args.smoke:
        args.pairs, args.steps, args.epochs, args.devices = 2, 4, 2, [1, 2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("LOCAL_RANK", None)
    results: dict[int, float] = {}
    print(
        f"probe pairs: {args.pairs}, n_steps: {args.steps}, default methods and metrics, "
        f"{args.epochs} epochs; OMP_NUM_THREADS=1 per process; median over epochs 2..{args.epochs}"
    )
    for devices in args.devices:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "times.json"
            cmd = [sys.executable, __file__, "--child", str(devices), "--out", str(out),
                   "--out-dir", tmp, "--pairs", str(args.pairs), "--steps", str(args.steps),
                   "--epochs", str(args.epochs)]  # fmt: skip
            subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, timeout=1800)
            times = json.loads(out.read_text())["times"]
        kept = times[1:] or times
        results[devices] = statistics.median(kept)
        print(f"{devices} process(es): one evaluation {results[devices]:.3f} s ({len(kept)} timed)")
    if 1 in results and len(results) > 1:
        for devices, seconds in results.items():
            if devices != 1:
                print(f"speed-up with {devices} processes: {results[1] / seconds:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
