"""Run by tests/callback/test_ddp.py: a 2-process DDP fit (gloo, CPU) with the callback.

Usage: python _ddp_script.py OUTPUT_DIR [MODE]. Lightning's DDP launcher starts the second process
by running this script again. Each rank records the sink calls it makes, the pairs it explains,
the pictures it draws and its callback metrics.
MODE ``sink_fails``: rank 0's image sink raises and the callback has ``on_error="raise"``; each
rank writes the outcome of its fit to ``outcome_rank<r>.txt``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning.pytorch as L
from lightning_utilities.core.rank_zero import rank_zero_only

from lightning_explain import sinks
from lightning_explain.callback import PairExplanationCallback
from lightning_explain.sinks.base import PngEncoder
from tests.callback.helpers import FAST, make_module_class


def main(root: Path, mode: str = "normal") -> None:
    torch.set_num_threads(1)
    original = sinks.FileSink.log_png

    def recording(self: Any, key: str, png: bytes, step: int, caption: Any = None) -> None:
        rank = getattr(rank_zero_only, "rank", 0)
        with open(root / f"images_rank{rank}.txt", "a") as f:
            f.write(f"{key} {step}\n")
        if mode == "sink_fails":
            raise OSError("rank 0 lost its disk")
        original(self, key, png, step, caption)

    sinks.FileSink.log_png = recording  # type: ignore[method-assign]
    encode = PngEncoder.encode

    def encoding(self: Any, key: str, *args: Any, **kwargs: Any) -> bytes:
        rank = getattr(rank_zero_only, "rank", 0)
        with open(root / f"encoded_rank{rank}.txt", "a") as f:
            f.write(f"{key}\n")
        return encode(self, key, *args, **kwargs)

    PngEncoder.encode = encoding  # type: ignore[method-assign]

    import lightning_explain.callback as callback_module

    evaluate = callback_module.evaluate_module

    def spying(module: Any, pairs: Any, *args: Any, **kwargs: Any) -> Any:
        rank = getattr(rank_zero_only, "rank", 0)
        with open(root / f"pairs_rank{rank}.txt", "a") as f:
            f.write(" ".join(map(str, pairs.indices)) + "\n")
        return evaluate(module, pairs, *args, **kwargs)

    callback_module.evaluate_module = spying  # type: ignore[assignment]

    draw_share = callback_module.render_jobs

    def drawing(probe: Any, evaluation: Any, jobs: Any, **kwargs: Any) -> Any:
        rank = getattr(rank_zero_only, "rank", 0)
        with open(root / f"drawn_rank{rank}.txt", "a") as f:
            f.write(" ".join(f"{job.kind}:{job.label}" for job in jobs) + "\n")
        return draw_share(probe, evaluation, jobs, **kwargs)

    callback_module.render_jobs = drawing  # type: ignore[assignment]

    L.seed_everything(0)
    model = make_module_class()(n=16, batch_size=4)
    on_error = "raise" if mode == "sink_fails" else "warn"
    cb = PairExplanationCallback(["gradcam"], on_error=on_error, **FAST)
    ckpt = L.callbacks.ModelCheckpoint(dirpath=root / "ckpt", save_last=True)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        logger=L.loggers.CSVLogger(str(root), name="csv", version=0),
        callbacks=[cb, ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(root),
    )
    if mode == "sink_fails":
        try:
            trainer.fit(model)
            outcome = "finished"
        except RuntimeError as err:
            outcome = f"raised: {err}"
        (root / f"outcome_rank{trainer.global_rank}.txt").write_text(outcome)
        return
    trainer.fit(model)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("explain/")}
    (root / f"metrics_rank{trainer.global_rank}.json").write_text(json.dumps(metrics))
    if trainer.is_global_zero:
        cb.save_probe(root / "probe.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3])
