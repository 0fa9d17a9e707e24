"""``lightning-explain compare`` and ``report``: explain the same probe pairs with checkpoints.

Both commands build each checkpoint's module, check the probe set and the layer against it (so a
mismatch is reported before any work, with the fix), then hand the pairs to the evaluation engine
(:func:`lightning_explain.evaluation.evaluate_probe`), the package's one explain-and-score loop.
``compare`` writes the dashboard, the tables and optionally tracker runs; ``report`` the
paper-style method x metric table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_explain._io import csv_writer
from lightning_explain.cli._common import (
    CLIError,
    comma_list,
    fmt_shape,
    log,
    mean_of,
    parse_device,
    parse_options,
    spread_options,
    text_table,
)
from lightning_explain.cli._correspondence import (
    correspondence_records,
    interaction_specs,
    write_correspondence,
)
from lightning_explain.dashboard import (
    CorrespondenceRecord,
    DashboardData,
    MethodRecord,
    MetricColumn,
)
from lightning_explain.data.knn import KNNSet
from lightning_explain.data.probe import ProbeSet
from lightning_explain.embedding import bind_embedding, resolve_embedding
from lightning_explain.evaluation import (
    DEFAULT_METHODS,
    MethodSpec,
    ProbeEvaluation,
    evaluate_probe,
    method_options,
    parse_methods,
)

__all__ = ["CheckpointResult", "cmd_compare", "cmd_report"]


def _embedding(
    module: nn.Module,
    spec: str | None,
    flag: str = "--embedding",
    *,
    recorded: bool = False,
    trust: bool = False,
) -> Callable[[Tensor], Tensor]:
    """The callable explained, with the callback's meaning of ``embedding`` (see
    :mod:`lightning_explain.embedding`), bound to ``module`` so that ``--layer`` names are relative
    to the LightningModule, as the callback's ``layer`` is.

    A ``recorded`` spec (text from the checkpoint or probe file) may only name the forward or an
    attribute of the module unless the file is trusted: resolving anything else imports a module.
    """
    if recorded and not trust and spec not in (None, "forward"):
        parts = str(spec).split(".")
        target: object = module
        for part in parts:
            target = getattr(target, part, None) if part.isidentifier() else None
        if ":" in str(spec) or not callable(target):
            raise CLIError(
                f"The file records the embedding {spec!r} for {flag[2:]}, which is not an "
                f"attribute of {type(module).__name__}; resolving it would import a module named "
                f"in the file, which is done only for files you trust. Pass {flag} (e.g. "
                f"'backbone'), or --trust-checkpoint if you trust the file's origin."
            )
    try:
        fn = resolve_embedding(spec, module, argument=flag, owner="lightning-explain")
    except (ValueError, TypeError) as err:
        raise CLIError(str(err).removeprefix("`lightning-explain`: ")) from err
    return bind_embedding(fn, module)


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
            f"The probe images are {fmt_shape(shape)} (CxHxW), but checkpoint {name} was "
            f"explained on {fmt_shape(recorded)} images (the probe set stored in it). Use a probe "
            f"file made for this model: export it with `lightning-explain probe export {name} "
            f"--out PROBE`, or leave --probe out to use the stored one."
        )
    try:
        with torch.inference_mode():
            z = embed(x[:1])
    except Exception as err:
        line = (str(err).strip().splitlines() or [""])[0]
        raise CLIError(
            f"Checkpoint {name} cannot embed the probe images of shape {fmt_shape(shape)} "
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


def _method_specs(methods: list[str], options: dict[str, Any]) -> list[MethodSpec]:
    """One entry per method, with the ``--option`` values the method takes."""
    from lightning_explain._checks import keyword_options
    from lightning_explain.methods import get_method, method_info

    for name in methods:
        try:
            method_info(name)
        except ValueError as err:
            raise CLIError(f"--methods: {err}") from err
    entries, unused = spread_options(
        methods, options, lambda n: list(keyword_options(get_method(n)))
    )
    if unused:
        raise CLIError(
            f"--option {', '.join(unused)}: no selected method ({', '.join(methods)}) takes "
            f"{'this option' if len(unused) == 1 else 'these options'}. See "
            f"`lightning-explain methods` for each method's options."
        )
    try:
        return parse_methods(entries, owner="--option")
    except (TypeError, ValueError) as err:
        raise CLIError(str(err)) from err


def _check_layer(embed: Callable[[Tensor], Tensor], setup: Setup, x: Tensor, name: str) -> None:
    """Resolve the class-activation layer once per checkpoint, listing candidates on failure."""
    from lightning_explain.methods import method_info
    from lightning_explain.methods.cam import resolve_layer

    layered = [s for s in setup.specs if method_info(s.name).needs_layer]
    if not layered:
        return
    layer = layered[0].options.get("layer", setup.layer)
    try:
        resolve_layer(embed, layer, x)
    except (ValueError, TypeError) as err:
        names = ", ".join(s.name for s in layered)
        given = f"--layer {layer!r}" if layer != "auto" else "the automatic choice (--layer auto)"
        raise CLIError(
            f"Checkpoint {name}: {names} explain{'s' if len(layered) == 1 else ''} the feature "
            f"map of one layer, and {given} does not work with this model. {err}"
        ) from err


@dataclass
class CheckpointResult:
    """Everything computed for one checkpoint, as the dashboard, tables and trackers take it.

    ``records`` holds, per method, what the dashboard shows of it (encoded maps, per-pair scores
    and curves, degenerate flags; see :class:`lightning_explain.dashboard.MethodRecord`);
    ``interactions`` the mean geometry scores of each correspondence method (empty without
    geometry) and ``correspondence`` their renderings for the dashboard.
    """

    scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    records: dict[str, MethodRecord] = field(default_factory=dict)
    grids: dict[str, Tensor] = field(default_factory=dict)
    curve_tensors: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    sim: list[float] = field(default_factory=list)
    knn_accuracy: float | None = None
    interactions: dict[str, dict[str, float]] = field(default_factory=dict)
    correspondence: list[CorrespondenceRecord] = field(default_factory=list)

    def means(self, method: str) -> dict[str, float]:
        """``method``'s mean score per metric (over the finite per-pair scores)."""
        return {k: mean_of(v) for k, v in self.scores[method].items()}


@dataclass(frozen=True)
class Setup:
    """What ``compare`` and ``report`` settle from the options before loading a checkpoint."""

    device: torch.device
    methods: list[str]
    metric_keys: list[str]
    specs: list[MethodSpec]
    layer: str
    interactions: list[MethodSpec] = field(default_factory=list)

    def metric_columns(self) -> list[MetricColumn]:
        from lightning_explain.metrics import metric_info

        return [MetricColumn(k, metric_info(k).higher_is_better) for k in self.metric_keys]

    def options(self, spec: MethodSpec, args: argparse.Namespace) -> dict[str, Any]:
        """The options ``spec`` runs with (as the engine injects them)."""
        return method_options(
            spec, similarity=args.similarity, layer=self.layer, batch_size=args.batch_size
        )


def _setup(args: argparse.Namespace, *, require_metrics: bool = False) -> Setup:
    """Check the options of ``compare``/``report``; fail before loading any checkpoint.

    ``require_metrics``: ``--metrics none`` is an error (``report`` has no other columns).
    """
    from lightning_explain.checkpoints import resolve_class

    if os.getcwd() not in sys.path:
        # As with `python -m`, modules of the current folder are importable by --model-class.
        sys.path.insert(0, os.getcwd())
    device = parse_device(args.device)
    methods = list(dict.fromkeys(comma_list(args.methods or DEFAULT_METHODS)))
    metric_keys = _metric_keys(args.metrics)
    if require_metrics and not metric_keys:
        raise CLIError("--metrics none leaves the report without columns; name some metrics.")
    specs = _method_specs(methods, parse_options(args.option))
    interactions = interaction_specs(
        getattr(args, "interactions", None),
        getattr(args, "interaction_option", []),
        streaming=bool(getattr(args, "pairs_from", None)),
    )
    if args.model_class is not None:
        resolve_class(args.model_class)
    if args.model_factory is not None and args.model_class is not None:
        raise CLIError("Pass either --model-class or --model-factory, not both.")
    _check_outputs(args)
    return Setup(device, methods, metric_keys, specs, args.layer or "auto", interactions)


def _check_outputs(args: argparse.Namespace) -> None:
    """Every requested output can be written and every requested tracker is installed, before
    any checkpoint is explained."""
    from lightning_explain.sinks.base import require

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(
            f"--out {str(out)!r} is an existing file; it must be a folder (created if missing). "
            f"Pass another path, e.g. --out {str(out.with_suffix(''))!r}_dir."
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".lightning-explain-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise CLIError(
            f"--out {str(out)!r} cannot be written: {err}. Pass a writable folder."
        ) from err
    for flag, module, extra in (
        ("--wandb", "wandb", "wandb"),
        ("--tensorboard", "tensorboard", "tensorboard"),
    ):
        if getattr(args, flag[2:], None) is not None:
            try:
                require(module, extra=extra, owner=f"lightning-explain compare {flag}")
            except ModuleNotFoundError as err:
                raise CLIError(str(err)) from err


@dataclass(frozen=True)
class _KNNPlan:
    """How the kNN accuracy is computed: the probe's kNN set with these settings."""

    knn: KNNSet
    k: int
    temperature: float
    embedding: str | None
    recorded: bool = False
    """Whether ``embedding`` is the spec recorded in the file (not an option the user gave)."""

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
                f"images). Train with PairExplanationCallback(knn=...), whose probe set stores "
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
        recorded=not args.knn_embedding and bool(knn.embedding),
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
    keys = comma_list(values)
    if keys == ["none"]:
        return []
    for key in keys:
        try:
            metric_info(key)
        except ValueError as err:
            raise CLIError(f"--metrics: {err}") from err
    return list(dict.fromkeys(keys))


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


def _engine_error(path: Path, evaluation: ProbeEvaluation, knn: _KNNPlan | None) -> None:
    """Turn the first collected failure into the command's error (user errors: exit code 2)."""
    if not evaluation.failures:
        return
    failure = evaluation.failures[0]
    err = failure.error
    if failure.stage == "knn" and knn is not None:
        line = (str(err).strip().splitlines() or [""])[0]
        raise CLIError(
            f"Checkpoint {path}: the kNN accuracy failed with the kNN embedding "
            f"{knn.embedding or 'forward'!r} on the stored kNN images of shape "
            f"{fmt_shape(knn.knn.bank.shape[1:])}: {type(err).__name__}: {line}. Pass "
            f"--knn-embedding (e.g. 'backbone'), or --no-knn to skip the kNN accuracy."
        ) from err
    if isinstance(err, (ValueError, TypeError)):
        where = (
            f"method {failure.label}" if failure.stage in ("method", "metrics") else failure.stage
        )
        raise CLIError(f"Checkpoint {path}, {where}: {err}") from err
    raise err


def _speak_up(
    embed: Callable[[Tensor], Tensor],
    setup: Setup,
    probe: ProbeSet,
    evaluation: ProbeEvaluation,
    args: argparse.Namespace,
) -> None:
    """Report the layer of each class-activation method and warn about numbers that mean
    nothing (saturated similarities, zero-norm embeddings, degenerate maps), on stderr."""
    from lightning_explain.diagnostics import diagnose, layer_report

    x1, x2 = probe.x1.to(setup.device), probe.x2.to(setup.device)
    info, warnings = layer_report(embed, setup.specs, setup.layer, x1, x2)
    for line in info:
        log(f"    {line}")
    for text in [*warnings, *diagnose(evaluation, embedding=args.embedding or "forward").values()]:
        log(f"    warning: {text}")


def _explain_checkpoint(
    args: argparse.Namespace,
    setup: Setup,
    path: Path,
    ckpt: dict[str, Any],
    recorded: tuple[int, int, int] | None,
    probe: ProbeSet,
    knn: _KNNPlan | None,
    *,
    grids: bool,
    overlays: bool = True,
    index: int = 0,
) -> CheckpointResult:
    """Build one checkpoint's module, check it against the probe set, and hand the pairs to the
    evaluation engine; ``recorded``: the probe image shape the checkpoint records, if any.
    ``overlays``: keep what the dashboard shows of every method (``records``) and of every
    correspondence method (``correspondence``, as checkpoint ``index``)."""
    from lightning_explain.checkpoints import build_module
    from lightning_explain.publish import MIN_TILE
    from lightning_explain.render import pair_grid

    device = setup.device
    module = build_module(
        path,
        ckpt,
        model_class=args.model_class,
        model_factory=args.model_factory,
        trust=args.trust_checkpoint,
    )
    module.to(device)
    embed = _embedding(module, args.embedding)
    x1 = probe.x1.to(device)
    _dry_forward(embed, x1, name=str(path), recorded=recorded, embedding=args.embedding)
    _check_layer(embed, setup, x1, str(path))
    knn_model = (
        None
        if knn is None
        else _embedding(
            module,
            knn.embedding,
            "--knn-embedding",
            recorded=knn.recorded,
            trust=args.trust_checkpoint,
        )
    )
    log(f"    {', '.join(setup.methods + [s.label for s in setup.interactions])}")
    evaluation = evaluate_probe(
        embed,
        probe,
        setup.specs,
        setup.metric_keys,
        similarity=args.similarity,
        layer=setup.layer,
        batch_size=args.batch_size,
        n_steps=args.n_steps,
        autocast=args.autocast,
        device=device,
        knn=None if knn is None else knn.knn,
        knn_model=knn_model,
        knn_k=None if knn is None else knn.k,
        knn_temperature=None if knn is None else knn.temperature,
        interactions=setup.interactions or None,
        errors="collect",
        owner="lightning-explain",
    )
    _engine_error(path, evaluation, knn)
    _speak_up(embed, setup, probe, evaluation, args)
    result = CheckpointResult(knn_accuracy=evaluation.knn_accuracy)
    if evaluation.sim is not None:
        result.sim = [float(v) for v in evaluation.sim]
    user_mean, user_std = getattr(args, "mean", None), getattr(args, "std", None)
    show1, mean, std = _display(probe.x1, user_mean or probe.mean, user_std or probe.std)
    show2, _, _ = _display(probe.x2, user_mean or probe.mean, user_std or probe.std)
    for m in evaluation.methods:
        result.scores[m.label] = {k: [float(v) for v in t] for k, t in m.scores.items()}
        result.curve_tensors[m.label] = dict(m.curves)
        result.curves[m.label] = {k: [float(v) for v in t.mean(0)] for k, t in m.curves.items()}
        e = m.explanation
        if e is None:
            continue
        if overlays:
            # Maps as 8-bit grey pictures, per-pair scores and curves: the page draws the rest.
            result.records[m.label] = MethodRecord.from_evaluation(m)
        if grids:
            result.grids[m.label] = pair_grid(
                show1, show2, e.h1, e.h2, mean=mean, std=std, min_tile=MIN_TILE
            )
    result.interactions = {r.label: r.mean_scores() for r in evaluation.interactions}
    if overlays:
        result.correspondence = correspondence_records(
            index, evaluation.interactions, show1, show2, mean=mean, std=std, min_tile=MIN_TILE
        )
    return result


def cmd_compare(args: argparse.Namespace) -> int:
    """``lightning-explain compare``."""
    from lightning_explain.checkpoints import checkpoint_meta, from_one_run, load_checkpoint
    from lightning_explain.cli._trackers import log_trackers
    from lightning_explain.dashboard import CheckpointInfo, encode_image, write_dashboard
    from lightning_explain.render import to_rgb

    setup = _setup(args)
    device, methods = setup.device, setup.methods
    paths = [Path(p) for p in args.checkpoints]
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        names = [str(p) for p in paths]
    trackers = args.wandb is not None or args.tensorboard is not None

    metas = []
    results: list[CheckpointResult] = []
    probe: ProbeSet | None = None
    knn_plan: _KNNPlan | None = None
    origin = ""
    for index, path in enumerate(paths):
        log(f"[{index + 1}/{len(paths)}] {path}")
        ckpt = load_checkpoint(path, trust=args.trust_checkpoint)
        if probe is None:
            probe, origin = _resolve_probe(args, ckpt)
            knn_plan = _knn_plan(args, probe)
        meta = checkpoint_meta(path, ckpt)
        metas.append(meta)
        results.append(
            _explain_checkpoint(
                args,
                setup,
                path,
                ckpt,
                meta.probe_shape,
                probe,
                knn_plan,
                grids=trackers,
                index=index,
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
    infos = [
        CheckpointInfo(name=n, path=str(p), epoch=m.epoch, global_step=m.global_step)
        for n, p, m in zip(names, paths, metas)
    ]
    data = DashboardData(
        checkpoints=infos,
        methods=methods,
        metrics=setup.metric_columns(),
        scores={(i, m): r.means(m) for i, r in enumerate(results) for m in methods},
        pairs=[(encode_image(a), encode_image(b)) for a, b in zip(rgb1, rgb2)],
        similarity={i: r.sim for i, r in enumerate(results)},
        curves={(i, m): r.curves[m] for i, r in enumerate(results) for m in methods},
        one_run=from_one_run(metas),
        title=args.title,
        info=_settings(args, origin, probe, setup, knn_plan),
        knn_accuracy={
            i: r.knn_accuracy for i, r in enumerate(results) if r.knn_accuracy is not None
        },
        knn_info="" if knn_plan is None else "kNN accuracy: " + knn_plan.describe(),
        maps={(i, m): r.records[m].maps for i, r in enumerate(results) for m in r.records},
        pair_scores={
            (i, m): dict(r.records[m].scores) for i, r in enumerate(results) for m in r.records
        },
        pair_curves={
            (i, m): {k: list(v) for k, v in r.records[m].curves.items()}
            for i, r in enumerate(results)
            for m in r.records
        },
        degenerate={
            (i, m): r.records[m].degenerate for i, r in enumerate(results) for m in r.records
        },
        correspondence=[c for r in results for c in r.correspondence],
    )
    out = Path(args.out)
    html_path = write_dashboard(data, out / "index.html")
    _write_tables(out, data, results, origin)
    if setup.interactions:
        scores = [r.interactions for r in results]
        write_correspondence(out, names, scores, len(probe), args.title)
    if trackers:
        log_trackers(args, data, results)
    print(f"wrote {html_path}")
    print(_summary(data))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``lightning-explain report``: one checkpoint's method x metric table."""
    from lightning_explain.checkpoints import checkpoint_meta, load_checkpoint
    from lightning_explain.report import ReportTable, to_markdown, write_report

    setup = _setup(args, require_metrics=True)
    methods = setup.methods
    path = Path(args.checkpoints[0])
    ckpt = load_checkpoint(path, trust=args.trust_checkpoint)
    if getattr(args, "pairs_from", None):
        return _stream_report(args, setup, path, ckpt)
    probe, origin = _resolve_probe(args, ckpt)
    knn_plan = _knn_plan(args, probe)
    meta = checkpoint_meta(path, ckpt)
    log(f"[1/1] {path}")
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
    if setup.interactions:
        title = f"lightning-explain correspondence: {path.name}"
        extra, text = write_correspondence(
            Path(args.out), [path.name], [result.interactions], len(probe), title, notes
        )
        paths.update({f"correspondence {k}": v for k, v in extra.items()})
        print(text)
    for written in paths.values():
        print(f"wrote {written}")
    return 0


def _stream_report(args: argparse.Namespace, setup: Setup, path: Path, ckpt: Any) -> int:
    """``report --pairs-from``: every pair of an image folder or probe file, streamed through a
    Lightning Trainer (:func:`lightning_explain.streaming.evaluate_stream`); rank 0 writes."""
    from lightning_explain.checkpoints import build_module, checkpoint_meta
    from lightning_explain.report import ReportTable, to_markdown, write_report
    from lightning_explain.streaming import ImageFolderPairs, ProbePairs, evaluate_stream

    source = Path(args.pairs_from)
    if source.is_dir():
        dataset: Any = ImageFolderPairs(source, size=args.size)
        origin = f"image folder {source} ({len(dataset)} images, {args.size} px views)"
    elif source.is_file():
        dataset = ProbePairs(source)
        origin = f"probe file {source} ({len(dataset)} pairs)"
    else:
        raise CLIError(
            f"--pairs-from {str(source)!r}: expected an image folder (root/<class>/<image>) or "
            f"a probe file, but nothing is there."
        )
    module = build_module(
        path,
        ckpt,
        model_class=args.model_class,
        model_factory=args.model_factory,
        trust=args.trust_checkpoint,
    )
    devices: Any = int(args.devices) if str(args.devices).isdigit() else args.devices
    result = evaluate_stream(
        module,
        dataset,
        setup.specs,
        setup.metric_keys,
        batch_pairs=args.batch_pairs,
        num_workers=args.workers,
        accelerator=args.accelerator,
        devices=devices,
        strategy=args.strategy,
        progress=not args.no_progress,
        embedding=args.embedding or "forward",
        similarity=args.similarity,
        layer=setup.layer,
        batch_size=args.batch_size,
        n_steps=args.n_steps,
        autocast=args.autocast,
    )
    if result is None:  # another rank: rank 0 writes the table
        return 0
    for message in result.failures[:5]:
        log(f"    failed: {message}")
    meta = checkpoint_meta(path, ckpt)
    rate = result.n_pairs / result.seconds if result.seconds > 0 else math.nan
    notes = [
        f"checkpoint: {path}" + (f" (epoch {meta.epoch})" if meta.epoch is not None else ""),
        f"pairs: {origin}; {result.n_pairs} scored in {result.seconds:.1f} s "
        f"({rate:.2f} pairs/s, devices {args.devices}, strategy {args.strategy})",
        f"similarity {args.similarity}, n_steps {args.n_steps}, embedding "
        f"{args.embedding or 'forward'}",
    ]
    if result.failures:
        notes.append(f"{len(result.failures)} failure(s) while scoring (see the log)")
    table = ReportTable(
        methods=setup.methods,
        metrics=setup.metric_columns(),
        scores={m: result.means(m) for m in setup.methods},
        title=args.title or f"lightning-explain report: {path.name}",
        notes=notes,
    )
    paths = write_report(table, Path(args.out))
    print(to_markdown(table))
    print(f"scored {result.n_pairs} pairs in {result.seconds:.2f} s: {rate:.2f} pairs/s")
    for written in paths.values():
        print(f"wrote {written}")
    return 0


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
    setup: Setup,
    knn: _KNNPlan | None = None,
) -> list[tuple[str, str]]:
    info = [
        ("probe", _describe_probe(origin, probe)),
        (
            "model class",
            args.model_class
            or (f"built by {args.model_factory}" if args.model_factory else "recorded in the file"),
        ),
        ("embedding", args.embedding or "the module's forward"),
        ("similarity", args.similarity),
        ("n_steps", str(args.n_steps)),
        ("batch size", "auto" if args.batch_size is None else str(args.batch_size)),
        ("autocast", args.autocast or "off"),
        ("device", str(setup.device)),
    ]
    for spec in setup.specs:
        options = setup.options(spec, args)
        opts = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "defaults"
        info.append((f"method {spec.label}", opts))
    for spec in setup.interactions:
        opts = ", ".join(f"{k}={v!r}" for k, v in spec.options.items()) or "defaults"
        info.append((f"correspondence {spec.label}", opts))
    info.append(("kNN accuracy", "not computed" if knn is None else knn.describe()))
    return info


def _write_tables(
    out: Path, data: DashboardData, results: list[CheckpointResult], origin: str
) -> None:
    """``metrics.csv`` (mean scores) and ``metrics.json`` (also per-pair scores, similarities)."""
    keys = [c.key for c in data.metrics]
    knn = bool(data.knn_accuracy)
    with open(out / "metrics.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv_writer(f)
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
            writer = csv_writer(f)
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
    text = text_table(rows, header)
    if knn:
        corr = [
            [c.method, c.metric, str(c.n), f"{c.spearman:+.3f}", f"{c.pearson:+.3f}"]
            for c in data.correlations()
        ]
        text += "\n\nCorrelation with the kNN accuracy across checkpoints (nan: undefined):\n"
        text += text_table(corr, ["method", "metric", "n", "spearman", "pearson"])
    return text
