"""The ``lightning-explain`` command line: compare checkpoints, tabulate one, export probe sets.

Commands::

    lightning-explain compare CKPT [CKPT ...] --out DIR [--probe PROBE] [--methods ...]
                                              [--metrics ...] [--model-class pkg.mod:Class] ...
    lightning-explain report CKPT [--probe PROBE] [--out DIR] [same options as compare]
    lightning-explain probe export CKPT --out PROBE
    lightning-explain methods [--json]
    lightning-explain metrics [--json]

``compare`` loads each checkpoint, explains the same probe pairs with every method, scores every
explanation with the faithfulness metrics of Sammani et al. (IEEE TIP, arXiv 2206.09753), and
writes a self-contained HTML dashboard (see :mod:`lightning_explain.dashboard`) plus
``metrics.csv`` and ``metrics.json`` to ``--out``; ``--wandb`` / ``--tensorboard DIR`` also log the
comparison to those trackers. When the probe set holds a kNN set (``PairExplanationCallback(knn_k=
...)``), each checkpoint's kNN accuracy is computed too, and the correlation of every score with it
across the checkpoints goes to the dashboard, ``correlations.csv`` and the trackers (see
:mod:`lightning_explain.downstream`). ``report`` runs the same machinery on one checkpoint and
writes the paper-style method x metric table (see :mod:`lightning_explain.report`).

Errors a user can fix (a missing or corrupt checkpoint, a probe set of another image size, a class
path that does not import, a layer the model lacks, an unknown method) end the command with exit
code 2 and a one-paragraph message; ``--debug`` adds the traceback. ``main(argv)`` returns the exit
code instead of exiting, so the commands can be run in-process.
"""

from __future__ import annotations

import argparse
import ast
import csv
import functools
import importlib
import inspect
import json
import math
import os
import sys
import textwrap
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from lightning_explain._core import attribute_embedding as _attribute_embedding
from lightning_explain._core import forward_embedding as _forward_embedding
from lightning_explain._core import has_attribute_path as _has_attribute_path
from lightning_explain.dashboard import DashboardData, MetricColumn
from lightning_explain.downstream import KNNSet
from lightning_explain.probe import ProbeSet

__all__ = ["CLIError", "build_parser", "main"]

PROG = "lightning-explain"
DEFAULT_METHODS = ("gradcam", "interaction_cam")  # the callback's defaults
EXIT_USAGE = 2


class CLIError(Exception):
    """An error the user can fix; ``main`` prints its message and returns exit code 2."""


# --------------------------------------------------------------------------------------------------
# Parser


def _comma_list(values: Sequence[str]) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (both spellings are accepted on the command line)."""
    out: list[str] = []
    for value in values:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


_Number = TypeVar("_Number", int, float)


def _positive(text: str, parse: Callable[[str], _Number], noun: str, valid: str) -> _Number:
    """``parse(text)`` if it is finite and > 0; else an argparse error (``noun``: what a parse
    failure expected; ``valid``: what an out-of-range value should have been)."""
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive {noun}, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected {valid}, got {value}")
    return value


def _positive_float(text: str) -> float:
    return _positive(text, float, "number", "a finite number > 0")


def _positive_int(text: str) -> int:
    return _positive(text, int, "integer", "a positive integer")


def _add_explain_options(cmd: argparse.ArgumentParser) -> None:
    """Options shared by ``compare`` and ``report``: what is explained, how, and the kNN probe."""
    cmd.add_argument(
        "--probe",
        metavar="PROBE",
        help="probe file (from `probe export`, PairExplanationCallback.save_probe or "
        "ProbeSet.save; a checkpoint also works); default: the probe set stored in the first "
        "checkpoint",
    )
    cmd.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help=f"explanation methods (space- or comma-separated); default: {' '.join(DEFAULT_METHODS)}",
    )
    cmd.add_argument(
        "--metrics",
        nargs="+",
        metavar="METRIC",
        help="metric keys (space- or comma-separated), or 'none'; default: the default set of "
        "lightning_explain.metrics.evaluate",
    )
    cmd.add_argument(
        "--model-class",
        metavar="PKG.MOD:CLASS",
        help="the LightningModule class of the checkpoints; default: the class path recorded in "
        "the checkpoint (required when none is recorded)",
    )
    cmd.add_argument(
        "--embedding",
        metavar="SPEC",
        help="what is explained, as the callback's `embedding`: 'forward' (default), an "
        "attribute path such as 'backbone' (module.backbone(x).flatten(1)), or 'pkg.mod:fn' "
        "with fn(module, x) -> (N, D)",
    )
    cmd.add_argument(
        "--layer",
        metavar="NAME",
        help="layer of the class-activation methods (gradcam, interaction_cam): a dotted "
        "submodule name of the LightningModule such as 'backbone.layer4'; default: 'auto'",
    )
    cmd.add_argument(
        "--similarity",
        default="cosine",
        choices=("cosine", "dot", "neg_l2"),
        help="similarity of the two embeddings (default: cosine, the paper's)",
    )
    cmd.add_argument(
        "--n-steps",
        type=_positive_int,
        default=224,
        metavar="N",
        help="insertion/deletion steps (default: 224)",
    )
    cmd.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        help="images per forward pass in methods and metrics (default: chosen from the device)",
    )
    cmd.add_argument(
        "--autocast",
        choices=["bf16", "fp16"],
        default=None,
        help="run the gradient-free perturbation forwards under torch.autocast with this dtype "
        "(scores in float32; default: off)",
    )
    cmd.add_argument(
        "--device",
        metavar="DEVICE",
        help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available, else cpu)",
    )
    cmd.add_argument(
        "--pairs", type=_positive_int, metavar="N", help="use only the first N probe pairs"
    )
    cmd.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a method option (a Python literal, else a string) passed to every selected method "
        "that accepts it, e.g. --option n_masks=500; repeatable",
    )
    cmd.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow torch.load(weights_only=False) for files that the safe load refuses (this can "
        "run code stored in the file: only for files you trust)",
    )
    cmd.add_argument(
        "--knn-k",
        type=_positive_int,
        metavar="K",
        help="neighbours of the kNN accuracy, computed when the probe set holds a kNN set "
        "(PairExplanationCallback(knn_k=...)); default: the k recorded with it",
    )
    cmd.add_argument(
        "--knn-temperature",
        type=_positive_float,
        metavar="T",
        help="temperature of the kNN vote; default: the one recorded with the kNN set",
    )
    cmd.add_argument(
        "--knn-embedding",
        metavar="SPEC",
        help="embedding of the kNN probe, in the forms of --embedding; default: the one "
        "recorded with the kNN set, else --embedding",
    )
    cmd.add_argument(
        "--no-knn", action="store_true", help="skip the kNN accuracy even if a kNN set is stored"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (used by :func:`main` and the docs)."""
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of an error",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[debug],
        description="Pairwise explanations of contrastive models: compare checkpoints in a "
        "self-contained HTML dashboard, export probe sets, list methods and metrics.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    cmp = sub.add_parser(
        "compare",
        parents=[debug],
        help="explain and score the same probe pairs with several checkpoints; write a dashboard",
        description="Load each checkpoint, explain the probe pairs with every method, score the "
        "explanations with the faithfulness metrics, and write DIR/index.html (self-contained), "
        "DIR/metrics.csv and DIR/metrics.json.",
    )
    cmp.add_argument("checkpoints", nargs="+", metavar="CKPT", help="Lightning checkpoint files")
    cmp.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    _add_explain_options(cmp)
    cmp.add_argument(
        "--mean",
        type=float,
        nargs="+",
        metavar="M",
        help="per-channel mean to undo when showing images (default: the probe set's)",
    )
    cmp.add_argument(
        "--std",
        type=float,
        nargs="+",
        metavar="S",
        help="per-channel std to undo when showing images (default: the probe set's)",
    )
    cmp.add_argument("--title", default="lightning-explain comparison", help="dashboard title")
    cmp.add_argument(
        "--wandb",
        nargs="?",
        const="lightning-explain",
        metavar="PROJECT",
        help="also log to Weights & Biases (project, default 'lightning-explain'); offline unless "
        "logged in or WANDB_MODE says otherwise",
    )
    cmp.add_argument(
        "--tensorboard", metavar="DIR", help="also log to TensorBoard event files under DIR"
    )

    rep = sub.add_parser(
        "report",
        parents=[debug],
        help="a paper-style method x metric table of one checkpoint (Markdown, CSV, HTML)",
        description="Explain the probe pairs with one checkpoint, score every method with every "
        "metric, and write the table (rows: methods; columns: metrics with their direction, the "
        "best value of each column marked) as DIR/report.md, DIR/report.csv and DIR/report.html "
        "(self-contained). The Markdown table is also printed.",
    )
    rep.add_argument("checkpoints", nargs=1, metavar="CKPT", help="Lightning checkpoint file")
    rep.add_argument(
        "--out", default="report", metavar="DIR", help="output folder (created); default: report"
    )
    _add_explain_options(rep)
    rep.add_argument("--title", help="table title; default: 'lightning-explain report: CKPT name'")

    probe = sub.add_parser("probe", parents=[debug], help="probe-set utilities")
    probe_sub = probe.add_subparsers(dest="probe_command", metavar="ACTION")
    probe_sub.required = True
    export = probe_sub.add_parser(
        "export",
        parents=[debug],
        help="write the probe set stored in a checkpoint to a probe file",
        description="Write the probe set that PairExplanationCallback stored in a checkpoint to a "
        "probe file (torch.save'd tensors and metadata, loadable with weights_only=True).",
    )
    export.add_argument("checkpoint", metavar="CKPT", help="Lightning checkpoint file")
    export.add_argument("--out", required=True, metavar="PROBE", help="probe file to write")
    export.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow torch.load(weights_only=False) for a checkpoint the safe load refuses",
    )

    methods = sub.add_parser(
        "methods", parents=[debug], help="list explanation methods (family, cost, defaults)"
    )
    methods.add_argument("--json", action="store_true", help="print JSON instead of a table")
    metrics = sub.add_parser(
        "metrics", parents=[debug], help="list faithfulness metrics (direction, cost)"
    )
    metrics.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


# --------------------------------------------------------------------------------------------------
# methods / metrics


def _plain(value: Any) -> Any:
    """A JSON-friendly rendering of a default value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _cmd_methods(args: argparse.Namespace) -> int:
    from lightning_explain.methods import list_methods, method_info

    entries: list[dict[str, Any]] = []
    rows: list[list[str]] = []
    for name in list_methods():
        info = method_info(name)
        defaults = {k: _plain(v) for k, v in info.defaults().items()}
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
        print(_table(rows, ["method", "family", "layer", "cost per pair", "defaults"]))
    return 0


def _evaluate_defaults() -> dict[str, Any]:
    from lightning_explain.metrics import evaluate

    shown = ("similarity", "n_steps", "batch_size")
    params = inspect.signature(evaluate).parameters
    return {k: _plain(params[k].default) for k in shown if k in params}


def _cmd_metrics(args: argparse.Namespace) -> int:
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
    defaults = _evaluate_defaults()
    if args.json:
        print(json.dumps({"metrics": entries, "defaults": defaults}, indent=2))
    else:
        print(_table(rows, ["metric", "better", "default set", "cost per pair"]))
        options = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
        print(
            f"\nOptions shared by all metrics: {options} "
            "(compare: --similarity, --n-steps, --batch-size; batch_size=None chooses per device)."
        )
    return 0


# --------------------------------------------------------------------------------------------------
# probe export


def _cmd_probe_export(args: argparse.Namespace) -> int:
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


# --------------------------------------------------------------------------------------------------
# compare: model preparation


def _device(spec: str | None) -> torch.device:
    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError) as err:
        raise CLIError(
            f"--device {spec!r} is not a torch device (expected e.g. cpu, cuda, cuda:1): {err}"
        ) from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(
                f"--device {spec!r} asks for CUDA, but torch sees no CUDA device on this machine "
                f"(torch {torch.__version__}). Use --device cpu."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CLIError(
                f"--device {spec!r}: there are only {torch.cuda.device_count()} CUDA devices."
            )
    return device


def _import_function(path: str, flag: str = "--embedding") -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise CLIError(f"{flag} {path!r} is malformed: expected 'package.module:function'.")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise CLIError(
            f"{flag} {path!r}: cannot import module {module_name!r} ({err}). Check the "
            f"spelling and that the module is importable from the current directory."
        ) from err
    except Exception as err:
        raise CLIError(
            f"{flag} {path!r}: importing module {module_name!r} raised {type(err).__name__}: {err}"
        ) from err
    for name in attr.split("."):
        if not hasattr(obj, name):
            raise CLIError(
                f"{flag} {path!r}: module {module_name!r} imported, but it has no attribute "
                f"{name!r}."
            )
        obj = getattr(obj, name)
    if not callable(obj):
        raise CLIError(f"{flag} {path!r} names a {type(obj).__name__}, not a function.")
    fn: Callable[..., Any] = obj
    return fn


def _embedding(
    module: nn.Module, spec: str | None, flag: str = "--embedding"
) -> Callable[[Tensor], Tensor]:
    """The callable explained, with the callback's meaning of ``embedding``.

    ``None``/``"forward"``: ``module(x)``; an attribute path such as ``"backbone"``:
    ``module.backbone(x).flatten(1)``; ``"pkg.mod:fn"``: ``fn(module, x)``. The result is a
    ``functools.partial`` over ``module``, so ``--layer`` names are relative to the
    LightningModule, as the callback's ``layer`` is.
    """
    fn: Callable[..., Tensor]
    if spec is None or spec == "forward":
        fn = _forward_embedding
    elif ":" in spec:
        fn = _import_function(spec, flag)
    elif _has_attribute_path(module, spec):
        fn = functools.partial(_attribute_embedding, spec)
    else:
        children = ", ".join(n for n, _ in module.named_children()) or "none"
        raise CLIError(
            f"{flag} {spec!r} is not an attribute path of {type(module).__name__} (its "
            f"submodules: {children}). Pass 'forward', an attribute path such as 'backbone' "
            f"(meaning module.backbone(x).flatten(1)), or a function 'pkg.mod:fn' taking "
            f"(module, x) and returning (N, D) embeddings."
        )
    return functools.partial(fn, module)


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _dry_forward(
    embed: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    name: str,
    recorded: tuple[int, int, int] | None,
    embedding: str | None,
) -> None:
    """Run one probe image through the model; turn a failure into a message about the probe."""
    shape = tuple(int(s) for s in x.shape[1:])
    if recorded is not None and tuple(recorded) != shape:
        raise CLIError(
            f"The probe images are {_fmt_shape(shape)} (CxHxW), but checkpoint {name} was "
            f"explained on {_fmt_shape(recorded)} images (the probe set stored in it). Use a probe "
            f"file made for this model: export it with `lightning-explain probe export {name} "
            f"--out PROBE`, or leave --probe out to use the stored one."
        )
    try:
        with torch.inference_mode():
            z = embed(x[:1])
    except Exception as err:
        line = (str(err).strip().splitlines() or [""])[0]
        raise CLIError(
            f"Checkpoint {name} cannot embed the probe images of shape {_fmt_shape(shape)} "
            f"(CxHxW): the forward pass raised {type(err).__name__}: {line}. The probe file was "
            f"probably made for a model with another image size or channel count; use the probe "
            f"set of this run (`lightning-explain probe export {name} --out PROBE`)."
        ) from err
    if not isinstance(z, Tensor) or z.ndim != 2:
        got = f"shape {tuple(z.shape)}" if isinstance(z, Tensor) else type(z).__name__
        which = f"--embedding {embedding!r}" if embedding else "the module's forward"
        raise CLIError(
            f"Checkpoint {name}: {which} returns {got} for one image, but an embedding of shape "
            f"(N, D) is needed. Pass --embedding with an attribute (e.g. 'backbone') or a "
            f"function 'pkg.mod:fn' returning (N, D) embeddings."
        )


def _parse_options(items: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise CLIError(
                f"--option {item!r} is malformed: expected NAME=VALUE, e.g. n_masks=500."
            )
        try:
            options[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[name] = text
    return options


@dataclass
class _MethodPlan:
    name: str
    options: dict[str, Any]
    needs_layer: bool


def _plan_methods(
    methods: list[str],
    *,
    layer: str | None,
    similarity: str,
    batch_size: int | None,
    options: dict[str, Any],
) -> list[_MethodPlan]:
    from lightning_explain.methods import get_method, method_info

    plans = []
    used: set[str] = set()
    for name in methods:
        try:
            info = method_info(name)
        except ValueError as err:
            raise CLIError(f"--methods: {err}") from err
        params = {
            p.name
            for p in inspect.signature(get_method(name)).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        opts: dict[str, Any] = {}
        if "similarity" in params:
            opts["similarity"] = similarity
        if layer is not None and "layer" in params:
            opts["layer"] = layer
        if batch_size is not None and "batch_size" in params:
            opts["batch_size"] = batch_size
        for key, value in options.items():
            if key in params:
                opts[key] = value
                used.add(key)
        plans.append(_MethodPlan(name, opts, info.needs_layer))
    unused = sorted(set(options) - used)
    if unused:
        raise CLIError(
            f"--option {', '.join(unused)}: no selected method ({', '.join(methods)}) takes "
            f"{'this option' if len(unused) == 1 else 'these options'}. See "
            f"`lightning-explain methods` for each method's options."
        )
    return plans


def _check_layer(
    embed: Callable[[Tensor], Tensor], plans: list[_MethodPlan], x: Tensor, name: str
) -> None:
    """Resolve the class-activation layer once per checkpoint, listing candidates on failure."""
    layered = [p for p in plans if p.needs_layer]
    if not layered:
        return
    from lightning_explain.methods.cam import resolve_layer

    layer = layered[0].options.get("layer", "auto")
    try:
        resolve_layer(embed, layer, x)
    except (ValueError, TypeError) as err:
        names = ", ".join(p.name for p in layered)
        given = f"--layer {layer!r}" if layer != "auto" else "the automatic choice (--layer auto)"
        raise CLIError(
            f"Checkpoint {name}: {names} explain{'s' if len(layered) == 1 else ''} the feature "
            f"map of one layer, and {given} does not work with this model. {err}"
        ) from err


# --------------------------------------------------------------------------------------------------
# compare: the run


@dataclass
class _Result:
    """Everything computed for one checkpoint."""

    scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    overlays: dict[str, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    grids: dict[str, Tensor] = field(default_factory=dict)
    curve_tensors: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    sim: list[float] = field(default_factory=list)
    knn_accuracy: float | None = None

    def means(self, method: str) -> dict[str, float]:
        """``method``'s mean score per metric (over the finite per-pair scores)."""
        return {k: _mean(v) for k, v in self.scores[method].items()}


@dataclass(frozen=True)
class _Setup:
    """What ``compare`` and ``report`` settle from the options before loading a checkpoint."""

    device: torch.device
    methods: list[str]
    metric_keys: list[str]
    plans: list[_MethodPlan]

    def metric_columns(self) -> list[MetricColumn]:
        from lightning_explain.metrics import metric_info

        return [MetricColumn(k, metric_info(k).higher_is_better) for k in self.metric_keys]


def _setup(args: argparse.Namespace, *, require_metrics: bool = False) -> _Setup:
    """Check the options of ``compare``/``report``; fail before loading any checkpoint.

    ``require_metrics``: ``--metrics none`` is an error (``report`` has no other columns).
    """
    from lightning_explain.checkpoints import resolve_class

    if os.getcwd() not in sys.path:
        # As with `python -m`, modules of the current folder are importable by --model-class.
        sys.path.insert(0, os.getcwd())
    device = _device(args.device)
    methods = list(dict.fromkeys(_comma_list(args.methods or DEFAULT_METHODS)))
    metric_keys = _metric_keys(args.metrics)
    if require_metrics and not metric_keys:
        raise CLIError("--metrics none leaves the report without columns; name some metrics.")
    plans = _plan_methods(
        methods,
        layer=args.layer,
        similarity=args.similarity,
        batch_size=args.batch_size,
        options=_parse_options(args.option),
    )
    if args.model_class is not None:
        resolve_class(args.model_class)
    return _Setup(device=device, methods=methods, metric_keys=metric_keys, plans=plans)


@dataclass(frozen=True)
class _KNNPlan:
    """How the kNN accuracy is computed: the probe's kNN set with these settings."""

    knn: KNNSet
    k: int
    temperature: float
    embedding: str | None

    def describe(self) -> str:
        knn = self.knn
        return (
            f"weighted cosine kNN, k={self.k} (capped at the bank size), t={self.temperature:g}; "
            f"{len(knn.bank)} bank images from the {knn.bank_source} set, {len(knn.queries)} "
            f"queries from the {knn.query_source} set, {knn.num_classes} classes; embedding "
            f"{self.embedding or 'forward'}"
        )


def _knn_plan(args: argparse.Namespace, probe: ProbeSet) -> _KNNPlan | None:
    """The kNN settings: the options given, else those recorded with the probe's kNN set."""
    if args.no_knn:
        return None
    if probe.knn is None:
        given = [
            flag
            for flag, value in (
                ("--knn-k", args.knn_k),
                ("--knn-temperature", args.knn_temperature),
                ("--knn-embedding", args.knn_embedding),
            )
            if value is not None
        ]
        if given:
            raise CLIError(
                f"{', '.join(given)}: the probe set holds no kNN set (labelled bank and query "
                f"images). Train with PairExplanationCallback(knn_k=...), whose probe set stores "
                f"one in every checkpoint, or drop these options."
            )
        return None
    knn = probe.knn
    embedding = args.knn_embedding or knn.embedding or args.embedding
    return _KNNPlan(
        knn=knn,
        k=int(args.knn_k or knn.k),
        temperature=float(args.knn_temperature or knn.temperature),
        embedding=embedding or None,
    )


def _display(
    x: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[Tensor, Sequence[float] | None, Sequence[float] | None]:
    """Images the renderer can show: 1 or 3 channels (else the first channel, in grey)."""
    if x.shape[1] in (1, 3):
        return x, mean, std
    return x[:, :1], None if mean is None else mean[:1], None if std is None else std[:1]


def _metric_keys(values: list[str] | None) -> list[str]:
    from lightning_explain.metrics import DEFAULT_METRICS, metric_info

    if values is None:
        return list(DEFAULT_METRICS)
    keys = _comma_list(values)
    if keys == ["none"]:
        return []
    for key in keys:
        try:
            metric_info(key)
        except ValueError as err:
            raise CLIError(f"--metrics: {err}") from err
    return list(dict.fromkeys(keys))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _resolve_probe(args: argparse.Namespace, first: dict[str, Any]) -> tuple[ProbeSet, str]:
    """The probe set of the comparison and a description of where it came from."""
    from lightning_explain.checkpoints import checkpoint_probe, load_probe_file

    if args.probe is not None:
        probe = load_probe_file(args.probe, trust=args.trust_checkpoint)
        origin = str(args.probe)
    else:
        stored = checkpoint_probe(first, origin=args.checkpoints[0])
        if stored is None:
            raise CLIError(
                f"No probe set: --probe was not given and the first checkpoint "
                f"{args.checkpoints[0]} stores none (PairExplanationCallback stores its probe set "
                f"in every checkpoint). Pass --probe PROBE with a file from `lightning-explain "
                f"probe export` or ProbeSet.save."
            )
        probe, origin = stored, f"stored in {args.checkpoints[0]}"
    if args.pairs is not None:
        probe = probe.subset(args.pairs)
    return probe, origin


def _explain_checkpoint(
    args: argparse.Namespace,
    setup: _Setup,
    path: Path,
    ckpt: dict[str, Any],
    recorded: tuple[int, int, int] | None,
    probe: ProbeSet,
    knn: _KNNPlan | None,
    *,
    grids: bool,
    overlays: bool = True,
) -> _Result:
    """Build one checkpoint's module and explain and score the probe pairs with every method;
    with a kNN plan, also compute the checkpoint's kNN accuracy. ``recorded``: the probe image
    shape the checkpoint records, if any."""
    from lightning_explain import explain, perturbation_autocast
    from lightning_explain.checkpoints import build_module
    from lightning_explain.dashboard import image_png
    from lightning_explain.metrics import evaluate
    from lightning_explain.render import overlay, pair_grid

    device, plans, metric_keys = setup.device, setup.plans, setup.metric_keys
    module = build_module(path, ckpt, model_class=args.model_class, trust=args.trust_checkpoint)
    module.to(device)
    embed = _embedding(module, args.embedding)
    x1, x2 = probe.x1.to(device), probe.x2.to(device)
    _dry_forward(embed, x1, name=str(path), recorded=recorded, embedding=args.embedding)
    _check_layer(embed, plans, x1, str(path))
    result = _Result()
    if knn is not None:
        result.knn_accuracy = _knn_accuracy(module, knn, path=path, device=device, args=args)
    user_mean, user_std = getattr(args, "mean", None), getattr(args, "std", None)
    show1, mean, std = _display(x1, user_mean or probe.mean, user_std or probe.std)
    show2, _, _ = _display(x2, user_mean or probe.mean, user_std or probe.std)
    for plan in plans:
        _log(f"    {plan.name}")
        try:
            scores: dict[str, Tensor] = {}
            curves: dict[str, Tensor] = {}
            with perturbation_autocast(args.autocast):
                expl = explain(embed, x1, x2, method=plan.name, **plan.options)
                if metric_keys:
                    scores, curves = evaluate(
                        embed,
                        x1,
                        x2,
                        expl,
                        metric_keys,
                        similarity=args.similarity,
                        n_steps=args.n_steps,
                        batch_size=args.batch_size,
                        method=plan.name,
                        method_options=plan.options,
                        return_curves=True,
                    )
        except (ValueError, TypeError) as err:
            raise CLIError(f"Checkpoint {path}, method {plan.name}: {err}") from err
        if not result.sim:
            result.sim = [float(v) for v in expl.sim.detach().float().cpu()]
        result.scores[plan.name] = {
            k: [float(v) for v in t.detach().float().cpu()] for k, t in scores.items()
        }
        result.curve_tensors[plan.name] = {k: t.detach().float().cpu() for k, t in curves.items()}
        result.curves[plan.name] = {
            k: [float(v) for v in t.mean(0)] for k, t in result.curve_tensors[plan.name].items()
        }
        if overlays:
            o1 = overlay(show1, expl.h1, mean=mean, std=std).cpu()
            o2 = overlay(show2, expl.h2, mean=mean, std=std).cpu()
            result.overlays[plan.name] = [(image_png(a), image_png(b)) for a, b in zip(o1, o2)]
        if grids:
            result.grids[plan.name] = pair_grid(
                show1, show2, expl.h1, expl.h2, mean=mean, std=std, min_tile=96
            )
    return result


def _knn_accuracy(
    module: nn.Module,
    plan: _KNNPlan,
    *,
    path: Path,
    device: torch.device,
    args: argparse.Namespace,
) -> float:
    """The checkpoint's kNN accuracy on the probe's kNN set (eval mode, inference mode)."""
    from lightning_explain.downstream import evaluate_knn

    fn = _embedding(module, plan.embedding, "--knn-embedding")
    try:
        return evaluate_knn(
            fn,
            plan.knn,
            k=plan.k,
            temperature=plan.temperature,
            device=device,
            batch_size=args.batch_size,
        )
    except (ValueError, RuntimeError) as err:
        line = (str(err).strip().splitlines() or [""])[0]
        raise CLIError(
            f"Checkpoint {path}: the kNN accuracy failed with the kNN embedding "
            f"{plan.embedding or 'forward'!r} on the stored kNN images of shape "
            f"{_fmt_shape(plan.knn.bank.shape[1:])}: {type(err).__name__}: {line}. Pass "
            f"--knn-embedding (e.g. 'backbone'), or --no-knn to skip the kNN accuracy."
        ) from err


def _cmd_compare(args: argparse.Namespace) -> int:
    from lightning_explain.checkpoints import checkpoint_meta, from_one_run, load_checkpoint
    from lightning_explain.dashboard import CheckpointInfo, image_png, write_dashboard
    from lightning_explain.render import to_rgb

    setup = _setup(args)
    device, methods = setup.device, setup.methods
    paths = [Path(p) for p in args.checkpoints]
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        names = [str(p) for p in paths]
    trackers = args.wandb is not None or args.tensorboard is not None

    metas = []
    results: list[_Result] = []
    probe: ProbeSet | None = None
    knn_plan: _KNNPlan | None = None
    origin = ""
    for index, path in enumerate(paths):
        _log(f"[{index + 1}/{len(paths)}] {path}")
        ckpt = load_checkpoint(path, trust=args.trust_checkpoint)
        if probe is None:
            probe, origin = _resolve_probe(args, ckpt)
            knn_plan = _knn_plan(args, probe)
        meta = checkpoint_meta(path, ckpt)
        metas.append(meta)
        results.append(
            _explain_checkpoint(
                args, setup, path, ckpt, meta.probe_shape, probe, knn_plan, grids=trackers
            )
        )
        del ckpt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if probe is None:
        raise CLIError("No checkpoint was given.")

    show1, mean, std = _display(probe.x1, args.mean or probe.mean, args.std or probe.std)
    show2, _, _ = _display(probe.x2, args.mean or probe.mean, args.std or probe.std)
    rgb1, rgb2 = to_rgb(show1, mean, std), to_rgb(show2, mean, std)
    one_run = from_one_run(metas)
    infos = [
        CheckpointInfo(name=n, path=str(p), epoch=m.epoch, global_step=m.global_step)
        for n, p, m in zip(names, paths, metas)
    ]
    data = DashboardData(
        checkpoints=infos,
        methods=methods,
        metrics=setup.metric_columns(),
        scores={(i, m): r.means(m) for i, r in enumerate(results) for m in methods},
        pairs=[(image_png(a), image_png(b)) for a, b in zip(rgb1, rgb2)],
        overlays={(i, m): r.overlays[m] for i, r in enumerate(results) for m in methods},
        similarity={i: r.sim for i, r in enumerate(results)},
        curves={(i, m): r.curves[m] for i, r in enumerate(results) for m in methods},
        one_run=one_run,
        title=args.title,
        info=_settings(args, origin, probe, device, setup.plans, knn_plan),
        knn_accuracy={
            i: r.knn_accuracy for i, r in enumerate(results) if r.knn_accuracy is not None
        },
        knn_info="" if knn_plan is None else "kNN accuracy: " + knn_plan.describe(),
    )
    out = Path(args.out)
    html_path = write_dashboard(data, out / "index.html")
    _write_tables(out, data, results, origin)
    if trackers:
        _log_trackers(args, data, results)
    print(f"wrote {html_path}")
    print(_summary(data))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """One checkpoint's method x metric table, through the machinery of ``compare``."""
    from lightning_explain.checkpoints import checkpoint_meta, load_checkpoint
    from lightning_explain.report import ReportTable, to_markdown, write_report

    setup = _setup(args, require_metrics=True)
    methods = setup.methods
    path = Path(args.checkpoints[0])
    ckpt = load_checkpoint(path, trust=args.trust_checkpoint)
    probe, origin = _resolve_probe(args, ckpt)
    knn_plan = _knn_plan(args, probe)
    meta = checkpoint_meta(path, ckpt)
    _log(f"[1/1] {path}")
    result = _explain_checkpoint(
        args, setup, path, ckpt, meta.probe_shape, probe, knn_plan, grids=False, overlays=False
    )
    when = ", ".join(
        part
        for part in (
            None if meta.epoch is None else f"epoch {meta.epoch}",
            None if meta.global_step is None else f"global step {meta.global_step}",
        )
        if part
    )
    notes = [
        f"checkpoint: {path}" + (f" ({when})" if when else ""),
        f"probe: {_describe_probe(origin, probe)}",
        f"similarity {args.similarity}, n_steps {args.n_steps}, embedding "
        f"{args.embedding or 'forward'}",
    ]
    if knn_plan is not None and result.knn_accuracy is not None:
        notes.append(f"kNN accuracy {result.knn_accuracy:.4f} ({knn_plan.describe()})")
    table = ReportTable(
        methods=methods,
        metrics=setup.metric_columns(),
        scores={m: result.means(m) for m in methods},
        title=args.title or f"lightning-explain report: {path.name}",
        notes=notes,
    )
    paths = write_report(table, Path(args.out))
    print(to_markdown(table))
    for written in paths.values():
        print(f"wrote {written}")
    return 0


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _describe_probe(origin: str, probe: ProbeSet) -> str:
    c, h, w = (int(s) for s in probe.x1.shape[1:])
    return (
        f"{origin}: {len(probe)} pairs of {c}x{h}x{w} images, pairing {probe.pairing!r}, "
        f"seed {probe.seed}"
    )


def _settings(
    args: argparse.Namespace,
    origin: str,
    probe: ProbeSet,
    device: torch.device,
    plans: list[_MethodPlan],
    knn: _KNNPlan | None = None,
) -> list[tuple[str, str]]:
    info = [
        ("probe", _describe_probe(origin, probe)),
        ("model class", args.model_class or "recorded in the checkpoint"),
        ("embedding", args.embedding or "the module's forward"),
        ("similarity", args.similarity),
        ("n_steps", str(args.n_steps)),
        ("batch size", "auto" if args.batch_size is None else str(args.batch_size)),
        ("autocast", args.autocast or "off"),
        ("device", str(device)),
    ]
    for plan in plans:
        opts = ", ".join(f"{k}={v!r}" for k, v in plan.options.items()) or "defaults"
        info.append((f"method {plan.name}", opts))
    info.append(("kNN accuracy", "not computed" if knn is None else knn.describe()))
    return info


def _write_tables(out: Path, data: DashboardData, results: list[_Result], origin: str) -> None:
    """``metrics.csv`` (mean scores) and ``metrics.json`` (also per-pair scores, similarities)."""
    keys = [c.key for c in data.metrics]
    knn = bool(data.knn_accuracy)
    with open(out / "metrics.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["checkpoint", "path", "epoch", "global_step", "method", *keys]
            + (["knn_accuracy"] if knn else [])
        )
        for i, m in data.rows():
            info = data.checkpoints[i]
            writer.writerow(
                [info.name, info.path, info.epoch, info.global_step, m]
                + [data.score(i, m, k) for k in keys]
                + ([data.knn(i)] if knn else [])
            )
    correlations = data.correlations()
    if knn:
        with open(out / "correlations.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["method", "metric", "higher_is_better", "n", "spearman", "pearson"])
            for c in correlations:
                writer.writerow(
                    [c.method, c.metric, c.higher_is_better, c.n, c.spearman, c.pearson]
                )
    payload = {
        "probe": origin,
        "one_run": data.one_run,
        "metrics": {c.key: {"higher_is_better": c.higher_is_better} for c in data.metrics},
        "methods": list(data.methods),
        "checkpoints": [
            {
                "name": info.name,
                "path": info.path,
                "epoch": info.epoch,
                "global_step": info.global_step,
                "similarity": result.sim,
                "scores": {m: {k: data.score(i, m, k) for k in keys} for m in data.methods},
                "per_pair": result.scores,
                "knn_accuracy": result.knn_accuracy,
            }
            for i, (info, result) in enumerate(zip(data.checkpoints, results))
        ],
        "knn": data.knn_info or None,
        "correlations": [
            {
                "method": c.method,
                "metric": c.metric,
                "higher_is_better": c.higher_is_better,
                "n": c.n,
                "spearman": None if math.isnan(c.spearman) else c.spearman,
                "pearson": None if math.isnan(c.pearson) else c.pearson,
            }
            for c in correlations
        ],
    }
    (out / "metrics.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")


def _summary(data: DashboardData) -> str:
    knn = bool(data.knn_accuracy)
    rows = [
        [m, data.checkpoints[i].name]
        + [f"{data.score(i, m, c.key):.4f}" for c in data.metrics]
        + ([f"{data.knn(i):.4f}"] if knn else [])
        for i, m in data.rows()
    ]
    header = (
        ["method", "checkpoint"]
        + [c.key + (" ↑" if c.higher_is_better else " ↓") for c in data.metrics]
        + (["knn_accuracy ↑"] if knn else [])
    )
    text = _table(rows, header)
    if knn:
        corr = [
            [c.method, c.metric, str(c.n), f"{c.spearman:+.3f}", f"{c.pearson:+.3f}"]
            for c in data.correlations()
        ]
        text += "\n\nCorrelation with the kNN accuracy across checkpoints (nan: undefined):\n"
        text += _table(corr, ["method", "metric", "n", "spearman", "pearson"])
    return text


def _wandb_mode() -> str:
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


def _log_trackers(args: argparse.Namespace, data: DashboardData, results: list[_Result]) -> None:
    """Log the comparison through Lightning's loggers and lightning_explain's sinks.

    One step per checkpoint (its global step when the checkpoints come from one run, else its
    position): the mean scores as scalars ``compare/<method>/<metric>``, the pair grid as image
    ``compare/<method>/pairs`` (captioned with the checkpoint name) and the insertion/deletion
    curves as figure ``compare/<method>/curves``; finally the metric table ``compare/metrics``.
    With kNN accuracies: ``compare/knn_accuracy`` per checkpoint and, at the last step, the
    finite correlations ``compare/corr/<method>/<metric>/{spearman,pearson}``, the table
    ``compare/correlations`` and the scatter figure ``compare/corr/scatter``.
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
        mode = _wandb_mode()
        wb = WandbLogger(
            project=args.wandb,
            save_dir=str(args.out),
            offline=mode == "offline",
            mode=mode,
            job_type="compare",
        )
        loggers.append(wb)
        sinks.append(WandbSink(wb))
        _log(f"W&B run ({mode}) under {args.out}")
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
            f"compare/corr/{c.method}/{c.metric}/{name}": value
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
                "compare/correlations",
                ["method", "metric", "n", "spearman", "pearson"],
                corr_rows,
                step,
            )
            sink.log_figure("compare/corr/scatter", figure, step)
    for sink in sinks:
        sink.log_table("compare/metrics", columns, rows, step)
        sink.flush()
    for logger in loggers:
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()  # write the offline run / upload now, not at exit


# --------------------------------------------------------------------------------------------------
# Entry point


def _paragraph(message: str) -> str:
    text = " ".join(str(message).split())
    return textwrap.fill(
        f"{PROG}: error: {text}", width=100, break_on_hyphens=False, break_long_words=False
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 success, 2 usage or input error, 1 bug).

    Args:
        argv: the arguments without the program name; default ``sys.argv[1:]``.
    """
    from lightning_explain.checkpoints import CheckpointError

    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "compare": _cmd_compare,
        "report": _cmd_report,
        "methods": _cmd_methods,
        "metrics": _cmd_metrics,
        "probe": _cmd_probe_export,
    }
    try:
        return handlers[args.command](args)
    except (CLIError, CheckpointError, FileNotFoundError, ModuleNotFoundError) as err:
        if debug:
            traceback.print_exc()
        print(_paragraph(str(err)), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            traceback.print_exc()
        print(
            _paragraph(
                f"unexpected {type(err).__name__}: {err}. This is probably a bug in "
                f"lightning-explain; rerun with --debug for the traceback and report it."
            ),
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
