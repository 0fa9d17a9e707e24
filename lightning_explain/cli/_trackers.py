"""``compare --wandb / --tensorboard``: the comparison logged through Lightning's loggers and
lightning_explain's sinks."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from typing import Any

from lightning_explain.cli._common import log
from lightning_explain.dashboard import DashboardData

__all__ = ["log_trackers", "wandb_mode"]


def wandb_mode() -> str:
    """``WANDB_MODE`` if set; else online when an API key is configured, offline otherwise."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        import netrc
        from urllib.parse import urlparse

        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
        if host and netrc.netrc().authenticators(host):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


def log_trackers(args: argparse.Namespace, data: DashboardData, results: Sequence[Any]) -> None:
    """Log the comparison through Lightning's loggers and lightning_explain's sinks.

    One step per checkpoint (its global step when the checkpoints come from one run, else its
    position): the mean scores as scalars ``compare/<method>/<metric>``, the pair grid as image
    ``compare/<method>/pairs`` (captioned with the checkpoint name) and the insertion/deletion
    curves as figure ``compare/<method>/curves``; finally the metric table ``compare/metrics``.
    With kNN accuracies: ``compare/knn_accuracy`` per checkpoint and, at the last step, the
    finite correlations ``compare_corr/<method>/<metric>/{spearman,pearson}``, the table
    ``compare_corr/table`` and the scatter figure ``compare_corr/scatter`` (under their own
    prefix, so that the scores come first in every tracker).
    """
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    from lightning_explain.render import curves_figure
    from lightning_explain.sinks import ExplanationSink, TensorBoardSink, WandbSink

    loggers: list[Any] = []
    sinks: list[ExplanationSink] = []
    if args.tensorboard is not None:
        tb = TensorBoardLogger(
            save_dir=args.tensorboard, name="lightning-explain-compare", default_hp_metric=False
        )
        loggers.append(tb)
        sinks.append(TensorBoardSink(tb))
    if args.wandb is not None:
        mode = wandb_mode()
        wb = WandbLogger(
            project=args.wandb,
            save_dir=str(args.out),
            offline=mode == "offline",
            mode=mode,
            job_type="compare",
        )
        loggers.append(wb)
        sinks.append(WandbSink(wb))
        log(f"W&B run ({mode}) under {args.out}")
    infos = data.checkpoints
    order = list(range(len(infos)))
    if data.one_run:
        order.sort(key=lambda i: (infos[i].global_step or 0, i))
    keys = [c.key for c in data.metrics]
    step = 0
    for rank, i in enumerate(order):
        recorded = infos[i].global_step
        step = int(recorded) if data.one_run and recorded is not None else rank
        scalars = {
            f"compare/{m}/{k}": data.score(i, m, k)
            for m in data.methods
            for k in keys
            if math.isfinite(data.score(i, m, k))
        }
        if infos[i].epoch is not None:
            scalars["compare/epoch"] = float(infos[i].epoch or 0)
        if math.isfinite(data.knn(i)):
            scalars["compare/knn_accuracy"] = data.knn(i)
        for logger in loggers:
            logger.log_metrics(scalars, step=step)
        for m in data.methods:
            grid = results[i].grids.get(m)
            curves = results[i].curve_tensors.get(m)
            for sink in sinks:
                if grid is not None:
                    sink.log_image(f"compare/{m}/pairs", grid, step, caption=infos[i].name)
                if curves:
                    figure = curves_figure(curves, title=f"{m}: {infos[i].name}")
                    sink.log_figure(f"compare/{m}/curves", figure, step)
    columns = ["checkpoint", "epoch", "global_step", "method", *keys]
    rows: list[list[object]] = [
        [infos[i].name, infos[i].epoch, infos[i].global_step, m]
        + [data.score(i, m, k) for k in keys]
        for i in order
        for m in data.methods
    ]
    correlations = data.correlations()
    if correlations:
        from lightning_explain.downstream import correlation_figure

        corr = {
            f"compare_corr/{c.method}/{c.metric}/{name}": value
            for c in correlations
            for name, value in (("spearman", c.spearman), ("pearson", c.pearson))
            if math.isfinite(value)
        }
        if corr:
            for logger in loggers:
                logger.log_metrics(corr, step=step)
        corr_rows: list[list[object]] = [
            [c.method, c.metric, c.n, c.spearman, c.pearson] for c in correlations
        ]
        figure = correlation_figure(
            data.downstream_points(), correlations, methods=list(data.methods)
        )
        for sink in sinks:
            sink.log_table(
                "compare_corr/table",
                ["method", "metric", "n", "spearman", "pearson"],
                corr_rows,
                step,
            )
            sink.log_figure("compare_corr/scatter", figure, step)
    for sink in sinks:
        sink.log_table("compare/metrics", columns, rows, step)
        sink.flush()
    for logger in loggers:
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()  # write the offline run / upload now, not at exit
