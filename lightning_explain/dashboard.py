"""A self-contained, interactive HTML dashboard comparing pairwise explanations across checkpoints.

This module is pure: it takes plain numbers and encoded pictures (see :class:`DashboardData`) and
writes one HTML file. It loads no model and computes no explanation; ``lightning-explain compare``
(see :mod:`lightning_explain.cli`) fills the data model from saved checkpoints, and
:class:`lightning_explain.live_dashboard.LiveDashboard` from the evaluations of a running
training. Encoding lives in :mod:`lightning_explain.dashboard_media`.

The page opens from disk without a network. Its CSS and JavaScript (package data under
``lightning_explain/_static``, hand-written, no third-party library) are inline; the data are one
JSON document in a ``<script type="application/json">`` element (every ``<``, ``>`` and ``&`` in
it written as ``\\u003c``, ``\\u003e``, ``\\u0026``, so that no string, say a checkpoint named
``</script><script>``, can end the element); the charts are SVG drawn in the page from those
numbers; probe images are WebP and heatmaps 8-bit grey lossless WebP, both base64 in the JSON,
coloured and blended over their images in the page with matplotlib's ``jet`` table (the colours of
:func:`lightning_explain.render.overlay`). Nothing is fetched. Every string from the user
(checkpoint names and paths, run information, the title, method labels) is HTML-escaped with
:func:`html.escape` in the HTML and by the page's own escaping where the script writes markup.

The tabs (described in the dashboard page of the docs): **Summary** first (per method the trend
of every score, its correlation with the kNN accuracy, the degenerate maps), **Pair** (a slider
scrubs one pair through the checkpoints), **Difference** (maps and scores of checkpoint B minus
A), **Heatmaps**, **Curves**, **Over training**, **Correspondence** (with interaction methods:
:mod:`lightning_explain.dashboard_correspondence`), **Metrics** (best value per column marked
``★``, never on degenerate maps), **Downstream** and **Run**.

The method and checkpoint check boxes act on every tab: rows, columns, chart series, slider steps.
Charts show values on hover and zoom on a horizontal drag (double-click resets).

Example:
    >>> data = DashboardData(
    ...     checkpoints=[CheckpointInfo("a.ckpt", epoch=0), CheckpointInfo("b.ckpt", epoch=1)],
    ...     methods=["gradcam"],
    ...     metrics=[MetricColumn("insertion_simultaneous", True)],
    ...     scores={(0, "gradcam"): {"insertion_simultaneous": 0.4},
    ...             (1, "gradcam"): {"insertion_simultaneous": 0.6}},
    ...     one_run=True,
    ... )
    >>> page = render_html(data)
    >>> page.startswith("<!DOCTYPE html>"), 'data-tab="summary"' in page
    (True, True)

Reference: Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive Learning",
IEEE TIP (arXiv 2206.09753); the metrics are its pairwise insertion/deletion/average-drop scores.
"""

from __future__ import annotations

import functools
import html
import io
import json
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

import numpy as np

from lightning_explain.dashboard_correspondence import (
    CorrespondenceRecord,
    correspondence_tab,
    validate_correspondence,
)
from lightning_explain.dashboard_media import (
    PALETTE,
    MethodRecord,
    as_floats,
    base64_text,
    best_rows,
    data_uri,
    encode_image,
    encode_map,
    image_png,
    is_flat_image,
    lut_text,
    mime_type,
)
from lightning_explain.downstream import Correlation, DownstreamPoint, correlation_table

__all__ = [
    "CheckpointInfo",
    "CorrespondenceRecord",
    "DashboardData",
    "MethodRecord",
    "MetricColumn",
    "as_floats",
    "base64_text",
    "best_rows",
    "encode_image",
    "encode_map",
    "image_png",
    "render_html",
    "write_dashboard",
]

_OWNER = "dashboard"

Pictures = Sequence[tuple[bytes, bytes]]
"""Per probe pair, the encoded pictures (PNG, JPEG or WebP bytes) of image 1 and image 2."""

Stats = Union[Sequence[float], None]


# --------------------------------------------------------------------------------------------------
# Data model


@dataclass(frozen=True)
class CheckpointInfo:
    """One compared checkpoint (or one evaluation of a live run).

    Attributes:
        name: label shown in the dashboard (usually the file name).
        path: where it was loaded from. Default ``""``.
        epoch: the checkpoint's ``epoch`` entry, if recorded. Default ``None``.
        global_step: the checkpoint's ``global_step`` entry, if recorded. Default ``None``.
    """

    name: str
    path: str = ""
    epoch: int | None = None
    global_step: int | None = None


@dataclass(frozen=True)
class MetricColumn:
    """One metric column of the table.

    Attributes:
        key: the metric key (a name from :func:`lightning_explain.metrics.list_metrics`).
        higher_is_better: ``True`` (shown ``↑``), ``False`` (``↓``) or ``None`` (no direction: no
            best value is marked). Default ``None``.
    """

    key: str
    higher_is_better: bool | None = None


@dataclass
class DashboardData:
    """Everything the dashboard shows, as plain numbers and encoded pictures.

    Checkpoints are referred to by their index in ``checkpoints``, methods by name. Pictures are
    PNG, JPEG or WebP bytes (see :func:`encode_image` and :func:`encode_map`).

    Attributes:
        checkpoints: the compared checkpoints, in display order.
        methods: explanation method names, in display order.
        metrics: metric columns, in display order.
        scores: ``(checkpoint index, method) -> {metric key: mean score over the pairs}``. Missing
            entries and NaN are shown as ``n/a``.
        pairs: per probe pair, the pictures of image 1 and image 2. Default: none.
        overlays: ``(checkpoint index, method) ->`` per pair, ready-made pictures of the heatmap
            overlays on image 1 and image 2; shown where ``maps`` has no entry. Default: none.
        similarity: ``checkpoint index ->`` per pair, the similarity of the pair's embeddings.
            Default: none.
        curves: ``(checkpoint index, method) -> {metric key: mean curve over pairs}``, each curve a
            sequence of ``T + 1`` similarities at ``0, 1/T, ..., 1`` of the pixels. Default: the
            mean of ``pair_curves`` where given.
        one_run: whether the checkpoints come from one training run, which adds the Over training
            tab and orders the trends by epoch (else by position). Default ``False``.
        title: page title. Default ``"lightning-explain comparison"``.
        info: ``(label, value)`` lines shown in the Run tab (probe file, device, options, ...).
            Default: none.
        knn_accuracy: ``checkpoint index -> kNN accuracy`` of the online kNN probe (see
            :mod:`lightning_explain.downstream`); adds a ``knn_accuracy`` column and the
            Downstream tab. Default: none.
        knn_info: one line describing the kNN probe (k, temperature, image counts), shown in the
            Downstream tab. Default ``""``.
        maps: ``(checkpoint index, method) ->`` per pair, the heatmaps ``h1`` and ``h2`` as 8-bit
            grey pictures (value / 255 is the map's value in [0, 1]; see :func:`encode_map`). The
            page colours them and blends them over ``pairs``; the Difference tab needs them.
            Default: none.
        pair_scores: ``(checkpoint index, method) -> {metric key: per-pair scores}``, one number per
            probe pair. Default: none.
        pair_curves: ``(checkpoint index, method) -> {metric key: per-pair curves}``, per pair a
            sequence of ``T + 1`` similarities (the rows of
            :attr:`lightning_explain.evaluation.MethodEvaluation.curves`). Default: none.
        degenerate: ``(checkpoint index, method) ->`` per pair, whether ``h1`` and ``h2`` are
            degenerate (all zero or constant, see
            :meth:`lightning_explain.evaluation.MethodEvaluation.degenerate`). Default: worked
            out from ``maps`` (a map of one grey level), unknown without them.
        refresh_seconds: for a page rewritten during training (:class:`LiveDashboard`): the page
            offers to reload itself this often, keeping its view. Default ``None``: a static page.
        updated: when the data were last changed, shown in the header. Default ``""``.
        correspondence: per checkpoint and interaction method, its match renderings and geometry
            scores (:class:`CorrespondenceRecord`); adds the Correspondence tab. Default: none.

    Raises:
        ValueError: from :meth:`validate` for inconsistent contents.
    """

    checkpoints: Sequence[CheckpointInfo]
    methods: Sequence[str]
    metrics: Sequence[MetricColumn]
    scores: Mapping[tuple[int, str], Mapping[str, float]]
    pairs: Pictures = field(default_factory=list)
    overlays: Mapping[tuple[int, str], Pictures] = field(default_factory=dict)
    similarity: Mapping[int, Sequence[float]] = field(default_factory=dict)
    curves: Mapping[tuple[int, str], Mapping[str, Sequence[float]]] = field(default_factory=dict)
    one_run: bool = False
    title: str = "lightning-explain comparison"
    info: Sequence[tuple[str, str]] = field(default_factory=list)
    knn_accuracy: Mapping[int, float] = field(default_factory=dict)
    knn_info: str = ""
    maps: Mapping[tuple[int, str], Pictures] = field(default_factory=dict)
    pair_scores: Mapping[tuple[int, str], Mapping[str, Sequence[float]]] = field(
        default_factory=dict
    )
    pair_curves: Mapping[tuple[int, str], Mapping[str, Sequence[Sequence[float]]]] = field(
        default_factory=dict
    )
    degenerate: Mapping[tuple[int, str], Sequence[tuple[bool, bool]]] = field(default_factory=dict)
    refresh_seconds: float | None = None
    updated: str = ""
    correspondence: Sequence[CorrespondenceRecord] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check that every index, method, metric, pair count and picture is consistent.

        Raises:
            ValueError: naming the first inconsistent entry.
        """
        n_ckpt = len(self.checkpoints)
        if n_ckpt == 0:
            raise ValueError(f"`{_OWNER}`: expected at least one checkpoint, but got none.")
        if len(self.methods) == 0:
            raise ValueError(f"`{_OWNER}`: expected at least one method, but got none.")
        for seq, what in ((self.methods, "method"), ([m.key for m in self.metrics], "metric")):
            dupes = sorted({s for s in seq if list(seq).count(s) > 1})
            if dupes:
                raise ValueError(f"`{_OWNER}`: duplicate {what} names {dupes}.")
        methods = set(self.methods)
        n_pairs = len(self.pairs)

        def check_index(index: int, where: str) -> None:
            if not 0 <= index < n_ckpt:
                raise ValueError(
                    f"`{_OWNER}`: `{where}` refers to checkpoint index {index}, but there are "
                    f"{n_ckpt} checkpoints."
                )

        def check_key(key: tuple[int, str], where: str) -> None:
            index, method = key
            check_index(index, where)
            if method not in methods:
                raise ValueError(
                    f"`{_OWNER}`: `{where}` refers to method {method!r}, which is not in "
                    f"`methods` {list(self.methods)}."
                )

        def check_count(got: int, key: object, where: str, what: str) -> None:
            if got != n_pairs:
                raise ValueError(
                    f"`{_OWNER}`: expected {n_pairs} {what} (one per probe pair, as in `pairs`) "
                    f"for {key} in `{where}`, but got {got}."
                )

        for p, pair in enumerate(self.pairs):
            for blob in pair:
                mime_type(blob, f"pairs[{p}]")
        for key in self.scores:
            check_key(key, "scores")
        for key in self.curves:
            check_key(key, "curves")
        for where, pictures in (("overlays", self.overlays), ("maps", self.maps)):
            for key, tiles in pictures.items():
                check_key(key, where)
                check_count(len(tiles), key, where, f"{where[:-1]} pairs")
                for tile in tiles:
                    for blob in tile:
                        mime_type(blob, f"{where}[{key}]")
        for key, per_pair in self.pair_scores.items():
            check_key(key, "pair_scores")
            for metric, values in per_pair.items():
                check_count(len(values), (key, metric), "pair_scores", "scores")
        for key, curves in self.pair_curves.items():
            check_key(key, "pair_curves")
            for metric, rows in curves.items():
                check_count(len(rows), (key, metric), "pair_curves", "curves")
                if len({len(row) for row in rows}) > 1:
                    raise ValueError(
                        f"`{_OWNER}`: expected the curves of every pair to have one length for "
                        f"{(key, metric)} in `pair_curves`, but got lengths "
                        f"{sorted({len(row) for row in rows})}."
                    )
        for key, flags in self.degenerate.items():
            check_key(key, "degenerate")
            check_count(len(flags), key, "degenerate", "(h1, h2) flags")
        validate_correspondence(self.correspondence, n_ckpt, n_pairs)
        for index in self.knn_accuracy:
            check_index(index, "knn_accuracy")
        for index, sims in self.similarity.items():
            check_index(index, "similarity")
            if n_pairs and len(sims) != n_pairs:
                raise ValueError(
                    f"`{_OWNER}`: expected {n_pairs} similarities for checkpoint {index}, but got "
                    f"{len(sims)}."
                )

    def rows(self) -> list[tuple[int, str]]:
        """Rows of the metric table: ``(checkpoint index, method)``, grouped by method."""
        return [(i, m) for m in self.methods for i in range(len(self.checkpoints))]

    def score(self, index: int, method: str, metric: str) -> float:
        """The score of one cell, NaN when missing."""
        value = self.scores.get((index, method), {}).get(metric)
        return math.nan if value is None else float(value)

    def knn(self, index: int) -> float:
        """The kNN accuracy of one checkpoint, NaN when missing."""
        value = self.knn_accuracy.get(index)
        return math.nan if value is None else float(value)

    def degenerate_flags(self, index: int, method: str) -> list[tuple[bool, bool]] | None:
        """Per pair, whether ``h1`` and ``h2`` of one cell are degenerate; ``None`` when unknown.

        Taken from ``degenerate`` when given, else from ``maps`` (a map of one grey level).
        """
        key = (index, method)
        flags = self.degenerate.get(key)
        if flags is not None:
            return [(bool(a), bool(b)) for a, b in flags]
        tiles = self.maps.get(key)
        if tiles is None:
            return None
        return [(is_flat_image(a), is_flat_image(b)) for a, b in tiles]

    def degenerate_count(self, index: int, method: str) -> int | None:
        """How many of one cell's ``2 x pairs`` maps are degenerate; ``None`` when unknown."""
        flags = self.degenerate_flags(index, method)
        return None if flags is None else sum(int(a) + int(b) for a, b in flags)

    def axis(self) -> tuple[str, list[float]]:
        """The x axis of the trends: ``("epoch", epochs)`` for checkpoints of one run with
        distinct epochs, else ``("global step", steps)`` when they are distinct, else
        ``("checkpoint", positions)``."""
        ckpts = self.checkpoints
        if self.one_run:
            for label, values in (
                ("epoch", [c.epoch for c in ckpts]),
                ("global step", [c.global_step for c in ckpts]),
            ):
                known = [v for v in values if v is not None]
                if len(known) == len(ckpts) and len(set(known)) == len(known):
                    return label, [float(v) for v in known]
        return "checkpoint", [float(i) for i in range(len(ckpts))]

    def order(self) -> list[int]:
        """Checkpoint indices in training order (by :meth:`axis`), ties in display order."""
        _, xs = self.axis()
        return sorted(range(len(self.checkpoints)), key=lambda i: (xs[i], i))

    def downstream_points(self) -> list[DownstreamPoint]:
        """One point per checkpoint: its mean scores and kNN accuracy, labelled ``e<epoch>``
        (or ``#<index>`` without a recorded epoch)."""
        return [
            DownstreamPoint(
                {m: {c.key: self.score(i, m, c.key) for c in self.metrics} for m in self.methods},
                self.knn(i),
                f"e{ckpt.epoch}" if ckpt.epoch is not None else f"#{i}",
            )
            for i, ckpt in enumerate(self.checkpoints)
        ]

    def correlations(self) -> list[Correlation]:
        """Spearman and Pearson correlation of every method x metric score with the kNN accuracy
        across the checkpoints (NaN with fewer than 3 checkpoints or a constant series); empty
        without kNN accuracies."""
        if not self.knn_accuracy:
            return []
        return correlation_table(
            self.downstream_points(), list(self.methods), [c.key for c in self.metrics]
        )


# --------------------------------------------------------------------------------------------------
# HTML


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4f}"


def _arrow(higher_is_better: bool | None) -> str:
    if higher_is_better is None:
        return ""
    return " ↑" if higher_is_better else " ↓"


def _direction(higher_is_better: bool | None) -> str:
    if higher_is_better is None:
        return "no direction"
    return "higher is better" if higher_is_better else "lower is better"


def _color(method_index: int) -> str:
    return PALETTE[method_index % len(PALETTE)]


@functools.lru_cache(maxsize=4)
def _asset(name: str) -> str:
    text = (resources.files("lightning_explain") / "_static" / name).read_text("utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise RuntimeError(f"`{_OWNER}`: package data {name} would end its element early.")
    return text


def _json_script(payload: object) -> str:
    """JSON safe inside ``<script>``: no ``<``, ``>`` or ``&`` survives (``\\u003c`` etc.)."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _num(value: object, digits: int = 6) -> float | None:
    """A finite number rounded to ``digits`` significant digits, or ``None`` (JSON ``null``)."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


def _curve_keys(data: DashboardData) -> list[str]:
    metric_order = {c.key: n for n, c in enumerate(data.metrics)}
    keys: list[str] = []
    for source in (data.curves, data.pair_curves):
        for per_metric in source.values():
            for key in per_metric:
                if key not in keys:
                    keys.append(key)
    return sorted(keys, key=lambda k: (metric_order.get(k, len(metric_order)), keys.index(k)))


def _pack_curves(rows: Sequence[Sequence[float]]) -> dict[str, Any] | None:
    """Per-pair curves as uint16 levels between their minimum and maximum (65535: not finite),
    base64 little-endian: a third of the size of the numbers as JSON text, 3e-5 resolution on
    a similarity range of 2."""
    if not rows:
        return None
    arr = np.asarray(rows, dtype=np.float64)
    finite = np.isfinite(arr)
    lo = float(arr[finite].min()) if finite.any() else 0.0
    hi = float(arr[finite].max()) if finite.any() else 0.0
    span = hi - lo
    scaled = np.round((np.where(finite, arr, lo) - lo) / span * 65534) if span > 0 else arr * 0
    levels = np.where(finite, scaled, 65535).astype("<u2")
    return {"lo": lo, "hi": hi, "n": int(arr.shape[1]), "q": base64_text(levels.tobytes())}


def _payload(data: DashboardData, flags: Mapping[tuple[int, str], list[tuple[bool, bool]]]) -> Any:
    """The data the page's script draws from."""
    n = len(data.checkpoints)
    methods = list(data.methods)
    keys = [c.key for c in data.metrics]
    curve_keys = _curve_keys(data)
    label, xs = data.axis()

    def cell_scores(i: int, m: str) -> list[float | None] | None:
        if (i, m) not in data.scores:
            return None
        return [_num(data.score(i, m, k)) for k in keys]

    def cell_pair_scores(i: int, m: str) -> list[list[float | None] | None] | None:
        ps = data.pair_scores.get((i, m))
        if ps is None:
            return None
        return [[_num(v) for v in ps[k]] if k in ps else None for k in keys]

    def cell_pair_curves(i: int, m: str) -> list[dict[str, Any] | None] | None:
        pc = data.pair_curves.get((i, m))
        if pc is None:
            return None
        return [_pack_curves(pc[k]) if k in pc else None for k in curve_keys]

    def cell_curves(i: int, m: str) -> list[list[float | None] | None] | None:
        mean = data.curves.get((i, m))
        pc = data.pair_curves.get((i, m), {})
        if mean is None and not pc:
            return None
        out: list[list[float | None] | None] = []
        for k in curve_keys:
            # With per-pair curves the page takes their mean itself: each number is stored once.
            curve = None if pc.get(k) else (mean or {}).get(k)
            out.append(None if curve is None else [_num(v, 4) for v in curve])
        return out

    def cell_flags(i: int, m: str) -> str | None:
        f = flags.get((i, m))
        return None if f is None else "".join(f"{int(a)}{int(b)}" for a, b in f)

    def pictures(source: Mapping[tuple[int, str], Pictures], i: int, m: str) -> Any:
        tiles = source.get((i, m))
        return None if tiles is None else [[base64_text(a), base64_text(b)] for a, b in tiles]

    def grid(fn: Any) -> list[list[Any]]:
        return [[fn(i, m) for m in methods] for i in range(n)]

    correlations = data.correlations()
    return {
        "v": 1,
        "ckpts": [{"n": c.name, "e": c.epoch, "s": c.global_step} for c in data.checkpoints],
        "order": data.order(),
        "x": {"label": label, "v": xs},
        "oneRun": bool(data.one_run),
        "methods": methods,
        "colors": [_color(j) for j in range(len(methods))],
        "metrics": [{"k": c.key, "h": c.higher_is_better} for c in data.metrics],
        "curveKeys": curve_keys,
        "nPairs": len(data.pairs),
        "scores": grid(cell_scores),
        "pairScores": grid(cell_pair_scores),
        "curves": grid(cell_curves),
        "pairCurves": grid(cell_pair_curves),
        "deg": grid(cell_flags),
        "sim": [
            None if i not in data.similarity else [_num(v) for v in data.similarity[i]]
            for i in range(n)
        ],
        "knn": [_num(data.knn(i)) for i in range(n)],
        "corr": [
            {
                "m": methods.index(c.method),
                "k": keys.index(c.metric),
                "n": c.n,
                "s": _num(c.spearman),
                "p": _num(c.pearson),
            }
            for c in correlations
            if c.method in methods and c.metric in keys
        ],
        "img": [[base64_text(a), base64_text(b)] for a, b in data.pairs],
        "maps": grid(lambda i, m: pictures(data.maps, i, m)),
        "ov": grid(lambda i, m: pictures(data.overlays, i, m)),
        "lut": {"seq": lut_text("jet"), "div": lut_text("RdBu_r")},
        "live": None
        if data.refresh_seconds is None
        else {"refresh": float(data.refresh_seconds), "updated": data.updated},
    }


_KNN_COLUMN = MetricColumn("knn_accuracy", True)


def _metric_table(
    data: DashboardData, counts: Mapping[tuple[int, str], int | None], n_maps: int
) -> str:
    rows = data.rows()
    columns = [*data.metrics, _KNN_COLUMN] if data.knn_accuracy else list(data.metrics)
    excluded = [r for r, (i, m) in enumerate(rows) if (counts.get((i, m)) or 0) > 0]

    def value_of(i: int, method: str, column: MetricColumn) -> float:
        if column is _KNN_COLUMN:
            return data.knn(i)
        return data.score(i, method, column.key)

    best: dict[str, set[int]] = {}
    for metric in columns:
        column = [value_of(i, m, metric) for i, m in rows]
        # The kNN accuracy is the checkpoint's, not the maps': degenerate maps do not matter.
        skip = () if metric is _KNN_COLUMN else excluded
        best[metric.key] = set(best_rows(column, metric.higher_is_better, exclude=skip))
    head = "".join(
        f'<th scope="col" data-col="{_e(m.key)}" title="{_direction(m.higher_is_better)}; '
        f'click to sort">{_e(m.key)}{_arrow(m.higher_is_better)}</th>'
        for m in columns
    )
    has_counts = any(v is not None for v in counts.values())
    deg_head = (
        '<th scope="col" title="degenerate (all-zero or constant) maps of the row">degenerate</th>'
        if has_counts
        else ""
    )
    out = [
        '<div class="scroll"><table class="metrics sortable" id="metric-table"><thead><tr>'
        '<th scope="col">method</th><th scope="col">checkpoint</th><th scope="col">epoch</th>'
        f'<th scope="col">step</th>{deg_head}{head}</tr></thead><tbody>'
    ]
    method_index = {m: j for j, m in enumerate(data.methods)}
    for r, (i, method) in enumerate(rows):
        ckpt = data.checkpoints[i]
        cells = []
        for metric in columns:
            value = value_of(i, method, metric)
            is_best = r in best[metric.key]
            cls = "num best" if is_best else "num"
            mark = "★ " if is_best else ""
            cells.append(
                f'<td class="{cls}" data-col="{_e(metric.key)}" data-value="{value!r}" '
                f'title="{value!r}" '
                f'data-best="{"true" if is_best else "false"}">{mark}{_fmt(value)}</td>'
            )
        count = counts.get((i, method))
        deg_cell = ""
        if has_counts:
            text = "" if count is None else f"{count}/{n_maps}"
            warn = ' class="num warn"' if count else ' class="num"'
            deg_cell = f"<td{warn}>{'⚠ ' if count else ''}{text}</td>"
        out.append(
            f'<tr data-m="{method_index[method]}" data-ckpt="{i}" data-method="{_e(method)}" '
            f'data-degenerate="{"" if count is None else count}">'
            f"<td>{_e(method)}</td><td>{_e(ckpt.name)}</td>"
            f'<td class="num">{"" if ckpt.epoch is None else ckpt.epoch}</td>'
            f'<td class="num">{"" if ckpt.global_step is None else ckpt.global_step}</td>'
            + deg_cell
            + "".join(cells)
            + "</tr>"
        )
    out.append("</tbody></table></div>")
    out.append(
        '<p class="legend">↑ higher is better, ↓ lower is better; ★ marks the best value of each '
        "column over all rows, except rows whose maps include degenerate ones (all zero or "
        "constant: they rank no pixel above another, so their scores measure nothing). Scores "
        "are means over the probe pairs. Click a column head to sort."
        + (
            " knn_accuracy is the checkpoint's kNN top-1 accuracy (the same for every method)."
            if data.knn_accuracy
            else ""
        )
        + "</p>"
    )
    return "".join(out)


def _corr_cell(value: float, column: str) -> str:
    return (
        f'<td class="num" data-col="{column}" data-value="{value!r}" title="{value!r}">'
        f"{'n/a' if not math.isfinite(value) else f'{value:+.3f}'}</td>"
    )


def _downstream(data: DashboardData, static_scatter: bool) -> str:
    """kNN accuracy per checkpoint, the correlation table and the scatter plots."""
    out = []
    if data.knn_info:
        out.append(f'<p class="legend">{_e(data.knn_info)}</p>')
    rows = "".join(
        f'<tr data-ckpt="{i}"><td>{_e(ckpt.name)}</td>'
        f'<td class="num">{"" if ckpt.epoch is None else ckpt.epoch}</td>'
        f'<td class="num" data-col="knn_accuracy" data-value="{data.knn(i)!r}">'
        f"{_fmt(data.knn(i))}</td></tr>"
        for i, ckpt in enumerate(data.checkpoints)
    )
    out.append(
        '<h3>kNN accuracy</h3><div class="scroll"><table id="knn-table"><thead><tr>'
        "<th>checkpoint</th><th>epoch</th><th>knn_accuracy ↑</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )
    correlations = data.correlations()
    method_index = {m: j for j, m in enumerate(data.methods)}
    body = "".join(
        f'<tr data-m="{method_index[c.method]}" data-method="{_e(c.method)}" '
        f'data-metric="{_e(c.metric)}"><td>{_e(c.method)}</td>'
        f"<td>{_e(c.metric)}{_arrow(c.higher_is_better)}</td>"
        f'<td class="num">{c.n}</td>'
        + _corr_cell(c.spearman, "spearman")
        + _corr_cell(c.pearson, "pearson")
        + "</tr>"
        for c in correlations
    )
    n = sum(1 for i in range(len(data.checkpoints)) if math.isfinite(data.knn(i)))
    out.append(
        "<h3>Correlation with the kNN accuracy across checkpoints</h3>"
        '<div class="scroll"><table id="correlation-table"><thead><tr><th>method</th>'
        "<th>metric</th><th>n</th><th>Spearman</th><th>Pearson</th></tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
        f'<p class="legend">Over {n} checkpoint(s) with a kNN accuracy (all checkpoints, whatever '
        "the filter). n/a: undefined (fewer than 3 checkpoints, or a constant series). For a ↑ "
        "metric a positive correlation means that more faithful explanations went with a better "
        "model; for a ↓ metric a negative one does. Checkpoints of one run are confounded by "
        "training progress: both the scores and the accuracy change with the epoch, so a "
        "correlation is no evidence that either causes the other.</p>"
    )
    picture = ""
    if static_scatter:
        from lightning_explain.downstream import correlation_figure

        fig = correlation_figure(
            data.downstream_points(),
            correlations,
            methods=list(data.methods),
            metrics=[c.key for c in data.metrics],
        )
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=60, metadata={"Software": None})
        picture = (
            "<details><summary>Static picture (PNG, for slides)</summary>"
            f'<img class="plot" alt="kNN accuracy against each metric" '
            f'src="{data_uri(buffer.getvalue())}"></details>'
        )
    out.append(
        '<h3>Scores against kNN accuracy</h3><figure id="correlation-scatter">'
        '<div id="scatter-view" class="charts" data-view="scatter"></div>'
        "<figcaption>One chart per metric, one colour per method; points are checkpoints, joined "
        "in training order; the legend gives rho (Spearman) and r (Pearson) over the shown "
        f"checkpoints.</figcaption>{picture}</figure>"
    )
    return "".join(out)


def _run_info(data: DashboardData) -> str:
    rows = []
    for i, ckpt in enumerate(data.checkpoints):
        sims = data.similarity.get(i)
        mean_sim = _fmt(float(np.mean(np.asarray(sims, dtype=np.float64)))) if sims else ""
        rows.append(
            f'<tr data-ckpt="{i}"><td>{_e(ckpt.name)}</td><td class="path">{_e(ckpt.path)}</td>'
            f'<td class="num">{"" if ckpt.epoch is None else ckpt.epoch}</td>'
            f'<td class="num">{"" if ckpt.global_step is None else ckpt.global_step}</td>'
            f'<td class="num">{mean_sim}</td></tr>'
        )
    out = [
        '<h3>Checkpoints</h3><div class="scroll"><table id="checkpoint-table"><thead><tr>'
        "<th>name</th><th>path</th><th>epoch</th><th>global step</th>"
        "<th>mean pair similarity</th></tr></thead><tbody>",
        *rows,
        "</tbody></table></div>",
    ]
    if data.info:
        out.append('<h3>Settings</h3><div class="scroll"><table class="settings"><tbody>')
        out.extend(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in data.info)
        out.append("</tbody></table></div>")
    return "".join(out)


def _view(name: str) -> str:
    return f'<div id="{name}-view" class="view" data-view="{name}"></div>'


def render_html(data: DashboardData, *, static_scatter: bool = True) -> str:
    """Render the dashboard as one self-contained HTML document.

    Args:
        data: the contents (validated again here).
        static_scatter: add a static PNG of the kNN scatter plots (matplotlib, about a second)
            under the interactive ones in the Downstream tab. Default ``True``.

    Returns:
        The HTML text: inline CSS, JavaScript and JSON data, no external reference.

    Raises:
        ValueError: for inconsistent ``data`` (see :meth:`DashboardData.validate`).
    """
    from lightning_explain._version import __version__

    data.validate()
    flags: dict[tuple[int, str], list[tuple[bool, bool]]] = {}
    for i in range(len(data.checkpoints)):
        for m in data.methods:
            f = data.degenerate_flags(i, m)
            if f is not None:
                flags[(i, m)] = f
    counts = {
        (i, m): (sum(int(a) + int(b) for a, b in flags[(i, m)]) if (i, m) in flags else None)
        for i in range(len(data.checkpoints))
        for m in data.methods
    }
    tabs: list[tuple[str, str, str]] = [
        ("summary", "Summary", _view("summary")),
        ("pair", "Pair", _view("pair")),
        ("diff", "Difference", _view("diff")),
        ("heatmaps", "Heatmaps", _view("heatmaps")),
        ("curves", "Curves", _view("curves")),
    ]
    if data.one_run:
        tabs.append(("training", "Over training", _view("training")))
    if data.correspondence:
        body = correspondence_tab(data.correspondence, data.checkpoints, data.order())
        tabs.append(("correspondence", "Correspondence", body))
    tabs.append(("metrics", "Metrics", _metric_table(data, counts, 2 * len(data.pairs))))
    if data.knn_accuracy:
        tabs.append(("downstream", "Downstream", _downstream(data, static_scatter)))
    tabs.append(("run", "Run", _run_info(data)))

    nav = "".join(
        f'<button type="button" role="tab" data-tab="{key}" aria-selected="false" '
        f'aria-controls="panel-{key}">{label}</button>'
        for key, label, _ in tabs
    )
    sections = "".join(
        f'<section id="panel-{key}" data-panel="{key}" role="tabpanel" hidden>'
        f"<h2>{label}</h2>{body}</section>"
        for key, label, body in tabs
    )
    method_boxes = "".join(
        f'<label><input type="checkbox" checked data-kind="m" value="{j}">'
        f'<span class="swatch" style="background:{_color(j)}"></span>{_e(m)}</label>'
        for j, m in enumerate(data.methods)
    )
    ckpt_boxes = "".join(
        f'<label><input type="checkbox" checked data-kind="ckpt" value="{i}">{_e(c.name)}</label>'
        for i, c in enumerate(data.checkpoints)
    )
    subtitle = (
        f"{len(data.checkpoints)} checkpoint(s) &times; {len(data.methods)} method(s) &times; "
        f"{len(data.pairs)} probe pair(s); made by lightning-explain {_e(__version__)}"
    )
    live = ""
    if data.refresh_seconds is not None:
        live = (
            '<p class="live">Live: rewritten during training'
            + (f", last at {_e(data.updated)}" if data.updated else "")
            + '. <label><input type="checkbox" id="auto-reload" checked> reload every '
            f"{data.refresh_seconds:g} s</label></p>"
        )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(data.title)}</title><style>{_asset('dashboard.css')}</style></head><body>"
        f"<header><h1>{_e(data.title)}</h1><p>{subtitle}</p>{live}</header>"
        '<noscript><p class="warn">This page draws its charts and maps with JavaScript; without '
        "it only the Metrics, Downstream and Run tables are readable.</p></noscript>"
        f'<nav class="tabs" role="tablist">{nav}</nav>'
        '<details class="filters" open><summary>Filters <span id="filter-state"></span></summary>'
        '<fieldset data-kind="m"><legend>Methods</legend>'
        f"{method_boxes}</fieldset>"
        f'<fieldset data-kind="ckpt"><legend>Checkpoints</legend>{ckpt_boxes}</fieldset>'
        '<p class="filter-actions"><button type="button" data-all="1">show all</button> '
        '<label class="size">tile size <input type="range" id="tile-size" min="48" max="320" '
        'value="112"></label></p></details>'
        f"<main>{sections}</main>"
        '<dialog id="lightbox" aria-label="heatmap, large"><form method="dialog">'
        '<button class="close" aria-label="close">&times;</button></form>'
        '<div class="lightbox-body"></div></dialog>'
        '<script type="application/json" id="dashboard-data">'
        f"{_json_script(_payload(data, flags))}</script>"
        f"<script>{_asset('dashboard.js')}</script></body></html>\n"
    )


def write_dashboard(data: DashboardData, path: str | Path, *, static_scatter: bool = True) -> Path:
    """Write the dashboard to ``path`` atomically (parent folders are created).

    The page is written to a temporary file in the same folder, then moved onto ``path`` with
    :func:`os.replace`, so a browser (or a reader thread) never sees a half-written page.

    Args:
        data: the contents.
        path: the HTML file to write (UTF-8).
        static_scatter: as in :func:`render_html`. Default ``True``.

    Returns:
        The path written.

    Raises:
        ValueError: for inconsistent ``data``.
    """
    return _write_atomically(Path(path), render_html(data, static_scatter=static_scatter))


def _write_atomically(target: Path, text: str) -> Path:
    """Write ``text`` to a temporary file next to ``target``, then :func:`os.replace` it onto
    ``target``. The file gets the usual permissions (``0o666`` less the umask), not the
    owner-only ones of :func:`tempfile.mkstemp`: a page in a shared folder stays readable."""
    target.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue
        break
    else:  # pragma: no cover
        raise FileExistsError(f"`{_OWNER}`: no free temporary file name next to {target}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
