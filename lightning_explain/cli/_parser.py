"""The argument parser of every ``lightning-explain`` command."""

from __future__ import annotations

import argparse

from lightning_explain.cli._common import PROG, positive_float, positive_int
from lightning_explain.correspondence import list_interaction_methods
from lightning_explain.evaluation import DEFAULT_METHODS

__all__ = ["build_parser"]


def add_explain_options(cmd: argparse.ArgumentParser) -> None:
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
        "the checkpoint, used only with --trust-checkpoint (importing a module runs its code)",
    )
    cmd.add_argument(
        "--model-factory",
        metavar="PKG.MOD:FUNCTION",
        help="a function that builds the module (called with the checkpoint's hyper-parameters "
        "it accepts), for models defined in a training script such as lightly's examples; the "
        "checkpoint's state_dict is then loaded into it",
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
        type=positive_int,
        default=224,
        metavar="N",
        help="insertion/deletion steps (default: 224)",
    )
    cmd.add_argument(
        "--batch-size",
        type=positive_int,
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
        "--pairs", type=positive_int, metavar="N", help="use only the first N probe pairs"
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
        "--interactions",
        nargs="+",
        metavar="NAME",
        help="correspondence methods (space- or comma-separated; "
        f"{', '.join(list_interaction_methods())}; see lightning_explain.correspondence): which "
        "position of view 1 is matched with which position of view 2, drawn as lines and scored "
        "(accuracy, error_px) when the probe set records its view geometry; default: none",
    )
    cmd.add_argument(
        "--interaction-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option (a Python literal, else a string) passed to every selected "
        "--interactions method that accepts it, e.g. --interaction-option k=16; repeatable",
    )
    cmd.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow torch.load(weights_only=False) for files that the safe load refuses (this can "
        "run code stored in the file: only for files you trust)",
    )
    cmd.add_argument(
        "--knn-k",
        type=positive_int,
        metavar="K",
        help="neighbours of the kNN accuracy, computed when the probe set holds a kNN set "
        "(PairExplanationCallback(knn=...)); default: the k recorded with it",
    )
    cmd.add_argument(
        "--knn-temperature",
        type=positive_float,
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
        "DIR/metrics.csv and DIR/metrics.json. With --interactions, the dashboard gets a "
        "Correspondence tab and the scores go to DIR/correspondence.{md,csv,html}.",
    )
    cmp.add_argument("checkpoints", nargs="+", metavar="CKPT", help="Lightning checkpoint files")
    cmp.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    add_explain_options(cmp)
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
        "(self-contained). The Markdown table is also printed. With --interactions, the "
        "correspondence scores go to DIR/correspondence.{md,csv,html}.",
    )
    rep.add_argument("checkpoints", nargs=1, metavar="CKPT", help="Lightning checkpoint file")
    rep.add_argument(
        "--out", default="report", metavar="DIR", help="output folder (created); default: report"
    )
    add_explain_options(rep)
    rep.add_argument("--title", help="table title; default: 'lightning-explain report: CKPT name'")
    stream = rep.add_argument_group(
        "large evaluations",
        "score many pairs streamed from disk through a Lightning Trainer instead of the probe set "
        "in memory (lightning_explain.streaming)",
    )
    stream.add_argument(
        "--pairs-from",
        metavar="PATH",
        help="an image folder (root/<class>/<image>: clean vs augmented views, made per item) or "
        "a probe file; every pair is scored, batch by batch (heatmap methods only: not with "
        "--interactions)",
    )
    stream.add_argument(
        "--size",
        type=positive_int,
        default=224,
        help="view size for --pairs-from DIR (default 224)",
    )
    stream.add_argument(
        "--batch-pairs", type=positive_int, default=16, help="pairs per engine call (default 16)"
    )
    stream.add_argument(
        "--workers", type=int, default=0, help="DataLoader worker processes (default 0)"
    )
    stream.add_argument(
        "--accelerator", default="auto", help="Lightning accelerator (default auto)"
    )
    stream.add_argument("--devices", default="1", help="Lightning devices, e.g. 2 (default 1)")
    stream.add_argument(
        "--strategy", default="auto", help="Lightning strategy, e.g. ddp (default auto)"
    )
    stream.add_argument("--no-progress", action="store_true", help="hide the progress bar")

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
