"""Train a self-supervised model with lightly while lightning-explain watches its explanations.

The main job of the project (``make demo``): a small ResNet is trained with SimCLR (or BYOL,
SimSiam, Barlow Twins, MoCo) on scikit-learn's handwritten digits, which ship inside scikit-learn
(or on CIFAR-10 / STL-10 / an ImageFolder you have on disk). ``PairExplanationCallback`` explains a
fixed probe set of augmented pairs at the end of every epoch and logs heatmaps, faithfulness
metrics and curves, and the correspondences of ``--interactions`` (default ``point_to_point``: the
top matches between the two views of each pair, drawn as lines; ``none`` switches them off;
scored against the true geometry of the views with ``--probe-views``).
Since digits are labelled, it also measures the backbone's kNN accuracy (``--knn-k``, off with
``--no-knn``) and, from the third epoch on, the correlation of every score with it. A checkpoint
is written per epoch. At the end the checkpoints are compared in a self-contained HTML dashboard
(every checkpoint with the kNN probe, so that the dashboard can correlate scores and accuracy
across them; else the first and the last), and the last one is tabulated with
``lightning-explain report``.

Run::

    python examples/train_ssl.py --out outputs/demo
    python examples/train_ssl.py --out outputs/demo_views --epochs 3 --probe-views
    python examples/train_ssl.py --model byol --logger wandb --epochs 20
    python examples/train_ssl.py --data ~/data/cifar10 --input-size 32 --epochs 50

Nothing is downloaded: W&B runs offline unless you are logged in, MLflow writes to a local sqlite
file, and the data either ships with scikit-learn or comes from ``--data``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ssl_models import MODELS, SSLDataModule

from lightning_explain.data import KNNSettings, ProbeSettings
from lightning_explain.pl import PairExplanationCallback

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # lightly's SimCLRTransform normalises with these
IMAGENET_STD = (0.229, 0.224, 0.225)
LOGGERS = ("tensorboard", "csv", "wandb", "mlflow")
DEFAULT_METHODS = ["gradcam", "interaction_cam", "input_x_gradient", "conditional_occlusion"]


def make_loggers(names: list[str], out: Path) -> list[Any]:
    """Lightning loggers writing under ``out``; W&B offline unless the user is logged in."""
    from pytorch_lightning import loggers

    made: list[Any] = []
    for name in names:
        if name == "tensorboard":
            made.append(loggers.TensorBoardLogger(str(out), name="tensorboard", version=""))
        elif name == "csv":
            made.append(loggers.CSVLogger(str(out), name="csv", version=""))
        elif name == "wandb":
            logged_in = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").exists()
            made.append(
                loggers.WandbLogger(
                    project="lightning-explain-demo", save_dir=str(out), offline=not logged_in
                )
            )
        elif name == "mlflow":
            made.append(
                loggers.MLFlowLogger(
                    experiment_name="lightning-explain-demo",
                    tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}",
                    artifact_location=str((out / "mlflow-artifacts").resolve()),
                )
            )
        else:
            raise ValueError(f"--logger {name!r}: expected one of {', '.join(LOGGERS)}.")
    return made


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="simclr")
    p.add_argument("--data", default=None, help="CIFAR-10 / STL-10 folder or an ImageFolder")
    p.add_argument("--logger", nargs="+", choices=LOGGERS, default=["tensorboard", "csv"])
    p.add_argument("--out", type=Path, default=Path("outputs/demo"))
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="use only this many images")
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    p.add_argument("--n-pairs", type=int, default=6)
    p.add_argument("--n-steps", type=int, default=32, help="insertion/deletion steps")
    p.add_argument(
        "--probe-views",
        action="store_true",
        help="make the probe pairs two random crops (and flips) of validation images whose "
        "geometry is recorded (lightning_explain.correspondence.random_views), so that the "
        "correspondences are scored (accuracy, error_px); default: lightly's augmentations",
    )
    p.add_argument(
        "--interactions",
        nargs="+",
        default=["point_to_point"],
        help="correspondence methods (point_to_point, bilrp), or 'none': the top matches between "
        "the two views of each probe pair, logged every epoch and shown in the dashboards",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-dashboard", action="store_true")
    p.add_argument(
        "--no-live-dashboard",
        action="store_true",
        help="do not rewrite OUT/live/index.html after every epoch's evaluation",
    )
    p.add_argument("--knn-k", type=int, default=200, help="neighbours of the online kNN probe")
    p.add_argument("--knn-temperature", type=float, default=0.1)
    p.add_argument("--knn-samples", type=int, default=512, help="kNN bank images (training set)")
    p.add_argument("--knn-queries", type=int, default=256, help="kNN queries (validation set)")
    p.add_argument("--knn-embedding", default="backbone", help="what the kNN probe embeds")
    p.add_argument("--no-knn", action="store_true", help="switch the online kNN probe off")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(args.seed, workers=True)

    model = MODELS[args.model](max_epochs=args.epochs)
    data = SSLDataModule(
        data=args.data, input_size=args.input_size, batch_size=args.batch_size, limit=args.limit
    )
    interactions = [] if args.interactions == ["none"] else list(args.interactions)
    explainer = PairExplanationCallback(
        methods=[
            # Occlusion windows for 32 px images (the paper's 64/8 targets 224 px).
            {"name": m, "window": 8, "stride": 4} if m.endswith("occlusion") else m
            for m in args.methods
        ],
        probe=ProbeSettings(
            n_pairs=args.n_pairs,
            source=str(views_probe(data, args, out / "probe_views.pt"))
            if args.probe_views
            else "val",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        ),
        knn=None
        if args.no_knn
        else KNNSettings(
            k=args.knn_k,
            temperature=args.knn_temperature,
            samples=args.knn_samples,
            queries=args.knn_queries,
            embedding=args.knn_embedding,
        ),
        n_steps=args.n_steps,
        interactions=interactions,
        embedding="embed",
        seed=args.seed,
        # The live dashboard: open OUT/live/index.html while the run trains; it reloads itself.
        dashboard_dir=None if args.no_live_dashboard else out / "live",
    )
    if explainer.dashboard_dir is not None:
        print(
            f"Live dashboard (after the first epoch): {explainer.dashboard_dir.resolve()}/index.html"
        )
    checkpoints = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="epoch={epoch:02d}",
        auto_insert_metric_name=False,
        save_top_k=-1,
        every_n_epochs=1,
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="auto",
        devices=1,
        logger=make_loggers(args.logger, out),
        callbacks=[explainer, checkpoints, TQDMProgressBar(refresh_rate=1)],
        log_every_n_steps=5,
        default_root_dir=str(out),
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    took = time.perf_counter() - start

    probe = out / "probe.pt"
    explainer.save_probe(probe)
    ckpts = sorted((out / "checkpoints").glob("epoch=*.ckpt"))
    print(f"\nTrained {args.model} for {args.epochs} epochs in {took:.0f} s.")
    _downstream_summary(explainer)
    dashboard = report = None
    if not args.no_dashboard and len(ckpts) >= 2:
        from lightning_explain.cli import main as cli_main

        shared = [
            "--probe",
            str(probe),
            "--model-class",
            f"ssl_models:{MODELS[args.model].__name__}",
            "--embedding",
            "embed",
            "--methods",
            *args.methods,
            "--n-steps",
            str(args.n_steps),
        ]
        if any(m.endswith("occlusion") for m in args.methods):
            shared += ["--option", "window=8", "--option", "stride=4"]
        if interactions:
            shared += ["--interactions", *interactions]
        # With the kNN probe every checkpoint, so that scores and accuracy can be correlated.
        compared = [ckpts[0], ckpts[-1]] if args.no_knn else ckpts
        dashboard = out / "dashboard"
        code = cli_main(["compare", *map(str, compared), *shared, "--out", str(dashboard)])
        if code != 0:
            return code
        report = out / "report"
        code = cli_main(["report", str(ckpts[-1]), *shared, "--out", str(report)])
        if code != 0:
            return code
    _summary(out, args.logger, ckpts, probe, dashboard, report, explainer.dashboard_dir)
    return 0


def views_probe(data: SSLDataModule, args: argparse.Namespace, path: Path) -> Path:
    """Write a probe file of two random resized crops (and flips) of the first validation
    images, normalised as the training views, with their geometry recorded."""
    import numpy as np

    from lightning_explain.correspondence import random_views

    data.setup()
    size = args.input_size
    n = min(args.n_pairs, len(data.val_plain))
    pictures = [data.val_plain[i][0].convert("RGB").resize((size, size)) for i in range(n)]
    x = torch.stack([torch.from_numpy(np.asarray(p).copy()).permute(2, 0, 1) for p in pictures])
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    views = random_views((x.float() / 255 - mean) / std, seed=args.seed)
    views.to_probe_set(seed=args.seed, mean=IMAGENET_MEAN, std=IMAGENET_STD).save(path)
    return path


def _downstream_summary(explainer: PairExplanationCallback) -> None:
    """Print the kNN accuracy per epoch and the correlations the callback logged last."""
    from lightning_explain.downstream import correlation_table

    history = explainer.history
    if not history:
        return
    accuracy = ", ".join(f"{e['epoch']}: {e['knn_accuracy']:.3f}" for e in history)
    print(f"\nkNN accuracy per epoch: {accuracy}")
    table = correlation_table(explainer.history_points(), methods=explainer.methods)
    print(f"Correlation with the kNN accuracy over {len(history)} epochs (Spearman / Pearson):")
    for c in table:
        print(f"  {c.method:24s} {c.metric:36s} {c.spearman:+.2f} / {c.pearson:+.2f}")


def _summary(
    out: Path,
    loggers: list[str],
    ckpts: list[Path],
    probe: Path,
    dashboard: Path | None,
    report: Path | None = None,
    live: Path | None = None,
) -> None:
    root = out.resolve()
    lines = ["", "Where everything is:"]
    if "tensorboard" in loggers:
        lines.append(f"  TensorBoard logs   {root / 'tensorboard'}")
        lines.append(
            f"                     view: tensorboard --logdir {root / 'tensorboard'} "
            "--samples_per_plugin images=0"
        )
    if "csv" in loggers:
        lines.append(f"  CSV metrics        {root / 'csv' / 'metrics.csv'}")
        lines.append(f"  heatmap PNGs       {root / 'csv' / 'explanations'}/epoch=NNN/")
        lines.append("                     (with --interactions also *correspondence*matches*.png)")
    if "wandb" in loggers:
        lines.append(
            f"  W&B run            {root / 'wandb'}  (sync: wandb sync {root / 'wandb'}/offline-run-*)"
        )
    if "mlflow" in loggers:
        lines.append(
            f"  MLflow             mlflow ui --backend-store-uri sqlite:///{root / 'mlflow.db'}"
        )
    lines.append(f"  checkpoints        {root / 'checkpoints'} ({len(ckpts)} files)")
    lines.append(f"  probe set          {probe.resolve()}")
    if dashboard is not None:
        lines.append(f"  dashboard          {dashboard.resolve() / 'index.html'}")
        lines.append("                     open it in a browser from disk (no server, no network)")
    if live is not None:
        lines.append(f"  live dashboard     {live.resolve() / 'index.html'} (one step per epoch)")
    if report is not None:
        lines.append(f"  report tables      {report.resolve()}/report.{{md,csv,html}}")
    print("\n".join(lines))


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    raise SystemExit(main())
