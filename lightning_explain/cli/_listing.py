"""The listing commands: ``methods``, ``metrics`` and ``probe export``."""

from __future__ import annotations

import argparse
import inspect
import json
from typing import Any

from lightning_explain.cli._common import CLIError, plain, text_table

__all__ = ["cmd_methods", "cmd_metrics", "cmd_probe_export"]


def cmd_methods(args: argparse.Namespace) -> int:
    from lightning_explain.methods import list_methods, method_info

    entries: list[dict[str, Any]] = []
    rows: list[list[str]] = []
    for name in list_methods():
        info = method_info(name)
        defaults = {k: plain(v) for k, v in info.defaults().items()}
        entries.append(
            {
                "name": name,
                "family": info.family,
                "cost": info.cost,
                "needs_layer": info.needs_layer,
                "stochastic": info.stochastic,
                "symmetric": info.symmetric,
                "defaults": defaults,
                "summary": info.summary,
            }
        )
        rows.append(
            [
                name,
                info.family,
                "yes" if info.needs_layer else "no",
                info.cost,
                ", ".join(f"{k}={v!r}" for k, v in defaults.items()),
            ]
        )
    if args.json:
        print(json.dumps(entries, indent=2))
    else:
        print(text_table(rows, ["method", "family", "layer", "cost per pair", "defaults"]))
    return 0


def evaluate_defaults() -> dict[str, Any]:
    from lightning_explain.metrics import evaluate

    shown = ("similarity", "n_steps", "batch_size")
    params = inspect.signature(evaluate).parameters
    return {k: plain(params[k].default) for k in shown if k in params}


def cmd_metrics(args: argparse.Namespace) -> int:
    from lightning_explain.metrics import DEFAULT_METRICS, list_metrics, metric_info

    entries: list[dict[str, Any]] = []
    rows: list[list[str]] = []
    for key in list_metrics():
        info = metric_info(key)
        entries.append(
            {
                "name": key,
                "family": info.family,
                "mode": info.mode,
                "higher_is_better": info.higher_is_better,
                "default": key in DEFAULT_METRICS,
                "needs_method": info.needs_method,
                "cost": info.cost,
                "summary": info.summary,
            }
        )
        rows.append(
            [
                key,
                "↑ higher" if info.higher_is_better else "↓ lower",
                "yes" if key in DEFAULT_METRICS else "no",
                info.cost,
            ]
        )
    defaults = evaluate_defaults()
    if args.json:
        print(json.dumps({"metrics": entries, "defaults": defaults}, indent=2))
    else:
        print(text_table(rows, ["metric", "better", "default set", "cost per pair"]))
        options = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
        print(
            f"\nOptions shared by all metrics: {options} "
            "(compare: --similarity, --n-steps, --batch-size; batch_size=None chooses per device)."
        )
    return 0


# --------------------------------------------------------------------------------------------------
# probe export


def cmd_probe_export(args: argparse.Namespace) -> int:
    from lightning_explain.checkpoints import checkpoint_probe, load_checkpoint

    ckpt = load_checkpoint(args.checkpoint, trust=args.trust_checkpoint)
    probe = checkpoint_probe(ckpt, origin=str(args.checkpoint))
    if probe is None:
        states = ckpt.get("callbacks") or {}
        keys = ", ".join(map(str, states)) or "none"
        raise CLIError(
            f"The checkpoint {args.checkpoint!r} stores no probe set. Probe sets are stored by "
            f"PairExplanationCallback (its state is saved with every checkpoint); this "
            f"checkpoint's callback states: {keys}. Train with the callback, or build a ProbeSet "
            f"from tensors and save it with ProbeSet.save(path)."
        )
    out = probe.save(args.out)
    c, h, w = (int(s) for s in probe.x1.shape[1:])
    print(f"wrote {out}: {len(probe)} pairs of {c}x{h}x{w} images (pairing {probe.pairing!r})")
    return 0
