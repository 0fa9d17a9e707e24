"""A self-contained HTML dashboard comparing pairwise explanations across checkpoints.

This module is pure: it takes plain numbers and PNG bytes (see :class:`DashboardData`) and writes
one HTML file. It loads no model and computes no explanation; ``lightning-explain compare`` (see
:mod:`lightning_explain.cli`) does that and fills the data model.

The page opens from disk without a network: CSS and JavaScript are inline, every picture (probe
images, heatmap overlays, curve and metric-vs-epoch plots drawn with matplotlib's Agg renderer) is
an inline ``data:image/png;base64`` URI, and no font, script or style is fetched. Every string that
comes from the user (checkpoint names and paths, run information, the title) is HTML-escaped with
:func:`html.escape`.

The page has up to six tabs:

* **Metrics**: one row per (method, checkpoint), one column per metric with its direction (``↑``
  higher is better, ``↓`` lower is better); the best value of each column is marked ``★``. With
  kNN accuracies, a ``knn_accuracy ↑`` column gives each row's checkpoint accuracy.
* **Heatmaps**: for every probe pair, the two images and a grid of checkpoints x methods, each cell
  holding the overlays of ``h1`` and ``h2``; the row header gives the pair's similarity.
* **Curves**: per checkpoint, the insertion/deletion curves (mean over pairs) of every method.
* **Over training**: metric-vs-epoch plots, present when the checkpoints come from one run.
* **Downstream**: present with kNN accuracies: the accuracy per checkpoint, the Spearman and
  Pearson correlation of every method x metric score with it across the checkpoints (see
  :mod:`lightning_explain.downstream`), and a scatter plot of accuracy against each score.
* **Run**: the checkpoints (path, epoch, global step) and how the comparison was computed.

Method and checkpoint check boxes hide rows, columns and figures of the unchecked ones.

Reference: Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive Learning",
IEEE TIP (arXiv 2206.09753); the metrics are its pairwise insertion/deletion/average-drop scores.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_explain.downstream import Correlation, DownstreamPoint, correlation_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CheckpointInfo",
    "DashboardData",
    "MetricColumn",
    "best_rows",
    "image_png",
    "render_html",
    "write_dashboard",
]

_OWNER = "dashboard"

# Colours of the methods, shared by the plots and the check-box swatches (matplotlib's tab10).
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


# --------------------------------------------------------------------------------------------------
# Data model


@dataclass(frozen=True)
class CheckpointInfo:
    """One compared checkpoint.

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
    """Everything the dashboard shows, as plain numbers and PNG bytes.

    Checkpoints are referred to by their index in ``checkpoints``, methods by name.

    Attributes:
        checkpoints: the compared checkpoints, in display order.
        methods: explanation method names, in display order.
        metrics: metric columns, in display order.
        scores: ``(checkpoint index, method) -> {metric key: mean score over the pairs}``. Missing
            entries and NaN are shown as ``n/a``.
        pairs: per probe pair, the PNG bytes of image 1 and image 2. Default: none.
        overlays: ``(checkpoint index, method) ->`` per pair, the PNG bytes of the heatmap overlays
            on image 1 and image 2. Default: none.
        similarity: ``checkpoint index ->`` per pair, the similarity of the pair's embeddings.
            Default: none.
        curves: ``(checkpoint index, method) -> {metric key: mean curve over pairs}``, each curve a
            sequence of ``T + 1`` similarities at ``0, 1/T, ..., 1`` of the pixels. Default: none.
        one_run: whether the checkpoints come from one training run, which adds metric-vs-epoch
            plots. Default ``False``.
        title: page title. Default ``"lightning-explain comparison"``.
        info: ``(label, value)`` lines shown in the Run tab (probe file, device, options, ...).
            Default: none.
        knn_accuracy: ``checkpoint index -> kNN accuracy`` of the online kNN probe (see
            :mod:`lightning_explain.downstream`); adds a ``knn_accuracy`` column and the
            Downstream tab. Default: none.
        knn_info: one line describing the kNN probe (k, temperature, image counts), shown in the
            Downstream tab. Default ``""``.

    Raises:
        ValueError: from :meth:`validate` for inconsistent contents.
    """

    checkpoints: Sequence[CheckpointInfo]
    methods: Sequence[str]
    metrics: Sequence[MetricColumn]
    scores: Mapping[tuple[int, str], Mapping[str, float]]
    pairs: Sequence[tuple[bytes, bytes]] = field(default_factory=list)
    overlays: Mapping[tuple[int, str], Sequence[tuple[bytes, bytes]]] = field(default_factory=dict)
    similarity: Mapping[int, Sequence[float]] = field(default_factory=dict)
    curves: Mapping[tuple[int, str], Mapping[str, Sequence[float]]] = field(default_factory=dict)
    one_run: bool = False
    title: str = "lightning-explain comparison"
    info: Sequence[tuple[str, str]] = field(default_factory=list)
    knn_accuracy: Mapping[int, float] = field(default_factory=dict)
    knn_info: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check that every index, method, metric and pair count is consistent.

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

        def check_key(key: tuple[int, str], where: str) -> None:
            index, method = key
            if not 0 <= index < n_ckpt:
                raise ValueError(
                    f"`{_OWNER}`: `{where}` refers to checkpoint index {index}, but there are "
                    f"{n_ckpt} checkpoints."
                )
            if method not in methods:
                raise ValueError(
                    f"`{_OWNER}`: `{where}` refers to method {method!r}, which is not in "
                    f"`methods` {list(self.methods)}."
                )

        for key in self.scores:
            check_key(key, "scores")
        for key in self.curves:
            check_key(key, "curves")
        for key, tiles in self.overlays.items():
            check_key(key, "overlays")
            if len(tiles) != n_pairs:
                raise ValueError(
                    f"`{_OWNER}`: expected {n_pairs} overlay pairs (one per probe pair) for "
                    f"{key}, but got {len(tiles)}."
                )
        for index in self.knn_accuracy:
            if not 0 <= index < n_ckpt:
                raise ValueError(
                    f"`{_OWNER}`: `knn_accuracy` refers to checkpoint index {index}, but there are "
                    f"{n_ckpt} checkpoints."
                )
        for index, sims in self.similarity.items():
            if not 0 <= index < n_ckpt:
                raise ValueError(
                    f"`{_OWNER}`: `similarity` refers to checkpoint index {index}, but there are "
                    f"{n_ckpt} checkpoints."
                )
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
# Helpers


def best_rows(values: Sequence[float], higher_is_better: bool | None) -> list[int]:
    """Indices of the best values of a column (all of them when tied); NaN never wins.

    Args:
        values: the column's numbers.
        higher_is_better: the metric's direction; ``None`` marks nothing.

    Returns:
        Sorted indices into ``values``; empty when there is no direction or no finite value.
    """
    if higher_is_better is None:
        return []
    finite = [(i, float(v)) for i, v in enumerate(values) if math.isfinite(float(v))]
    if not finite:
        return []
    pick = max if higher_is_better else min
    best = pick(v for _, v in finite)
    return [i for i, v in finite if v == best]


def image_png(image: Any) -> bytes:
    """Encode one image as PNG bytes.

    Args:
        image: a ``(3, H, W)`` or ``(1, H, W)`` tensor or array (float in [0, 1], or uint8), or an
            ``(H, W, 3)`` / ``(H, W)`` uint8 array.

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: for another shape.
    """
    from PIL import Image

    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise ValueError(
            f"`{_OWNER}.image_png`: expected an image of shape (3, H, W), (H, W, 3) or (H, W), but "
            f"got shape {arr.shape}."
        )
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(np.nan_to_num(arr.astype(np.float64)), 0.0, 1.0) * 255.0)
        arr = arr.astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


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
    return _PALETTE[method_index % len(_PALETTE)]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _curve_keys(data: DashboardData, index: int) -> list[str]:
    keys: list[str] = []
    for method in data.methods:
        for key in data.curves.get((index, method), {}):
            if key not in keys:
                keys.append(key)
    return keys


def _curves_png(data: DashboardData, index: int) -> bytes | None:
    """One checkpoint's curves: a panel per curve metric, a line per method."""
    keys = _curve_keys(data, index)
    if not keys:
        return None
    fig = _figure(3.6 * len(keys), 3.0)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    directions = {m.key: m.higher_is_better for m in data.metrics}
    for ax, key in zip(axes, keys):
        for j, method in enumerate(data.methods):
            curve = data.curves.get((index, method), {}).get(key)
            if curve is None or len(curve) < 2:
                continue
            y = np.asarray(curve, dtype=np.float64)
            x = np.linspace(0.0, 1.0, len(y))
            auc = float(((y[1:] + y[:-1]) * 0.5 * np.diff(x)).sum())
            ax.plot(x, y, color=_color(j), label=f"{method} ({auc:.3f})")
        ax.set_title(key + _arrow(directions.get(key)), fontsize="medium")
        ax.set_xlabel("fraction of pixels")
        ax.set_ylabel("similarity")
        ax.set_xlim(0.0, 1.0)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small", title="method (AUC)", title_fontsize="x-small")
    return _figure_png(fig)


def _training_x(data: DashboardData) -> tuple[str, list[float]] | None:
    ckpts = data.checkpoints
    if all(c.epoch is not None for c in ckpts):
        return "epoch", [float(c.epoch) for c in ckpts if c.epoch is not None]
    if all(c.global_step is not None for c in ckpts):
        return "global step", [float(c.global_step) for c in ckpts if c.global_step is not None]
    return None


def _training_png(data: DashboardData, metric: MetricColumn) -> bytes | None:
    """One metric against the epoch (or global step), a line per method."""
    axis = _training_x(data)
    if axis is None:
        return None
    label, xs = axis
    order = sorted(range(len(xs)), key=lambda i: (xs[i], data.checkpoints[i].global_step or 0))
    fig = _figure(4.2, 3.0)
    ax = fig.add_subplot()
    drawn = False
    for j, method in enumerate(data.methods):
        ys = [data.score(i, method, metric.key) for i in order]
        if not any(math.isfinite(y) for y in ys):
            continue
        drawn = True
        ax.plot([xs[i] for i in order], ys, marker="o", color=_color(j), label=method)
    if not drawn:
        return None
    from matplotlib.ticker import MaxNLocator

    ax.set_title(metric.key + _arrow(metric.higher_is_better), fontsize="medium")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel(label)
    ax.set_ylabel("score (mean over pairs)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
    return _figure_png(fig)


# --------------------------------------------------------------------------------------------------
# HTML

_CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --bg: #ffffff; --panel: #f5f7fa;
  --accent: #2b59c3; --best: #fff2b3; --tile: 112px; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
header { padding: 16px 24px 8px; border-bottom: 1px solid var(--line); }
header h1 { margin: 0 0 4px; font-size: 20px; }
header p { margin: 0; color: var(--muted); }
nav.tabs { display: flex; gap: 4px; padding: 8px 24px 0; border-bottom: 1px solid var(--line); }
nav.tabs button { border: 1px solid var(--line); border-bottom: none; background: var(--panel);
  padding: 6px 14px; border-radius: 6px 6px 0 0; cursor: pointer; font: inherit; color: var(--fg); }
nav.tabs button[aria-selected="true"] { background: var(--bg); color: var(--accent);
  font-weight: 600; position: relative; top: 1px; }
.filters { display: flex; flex-wrap: wrap; gap: 6px 18px; padding: 10px 24px;
  background: var(--panel); border-bottom: 1px solid var(--line); }
.filters fieldset { border: none; margin: 0; padding: 0; display: flex; flex-wrap: wrap;
  gap: 4px 12px; align-items: center; }
.filters legend { float: left; font-weight: 600; margin-right: 8px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 4px; vertical-align: middle; }
main { padding: 16px 24px 40px; }
section[hidden], [data-filtered="true"] { display: none !important; }
h2 { font-size: 17px; margin: 8px 0 12px; }
h3 { font-size: 15px; margin: 20px 0 8px; }
table { border-collapse: collapse; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { background: var(--best); font-weight: 700; }
.legend { color: var(--muted); margin: 8px 0; }
.pair { display: flex; gap: 16px; align-items: flex-start; }
.pair-originals { display: flex; flex-direction: column; gap: 6px; }
figure { margin: 0; }
figcaption { color: var(--muted); font-size: 12px; }
img.tile { width: var(--tile); height: auto; image-rendering: pixelated; display: block;
  border: 1px solid var(--line); }
.duo { display: flex; gap: 4px; }
img.plot { max-width: 100%; height: auto; border: 1px solid var(--line); display: block; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
code, .path { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px;
  word-break: break-all; }
.size { margin-left: auto; display: flex; align-items: center; gap: 6px; }
"""

_JS = """
'use strict';
(function () {
  var doc = document;
  function panels() { return doc.querySelectorAll('main > section[data-panel]'); }
  function show(name) {
    var found = false;
    doc.querySelectorAll('nav.tabs button').forEach(function (b) {
      var on = b.dataset.tab === name;
      b.setAttribute('aria-selected', on ? 'true' : 'false');
      found = found || on;
    });
    if (!found) { throw new Error('dashboard: no tab named ' + name); }
    panels().forEach(function (p) { p.hidden = p.dataset.panel !== name; });
    doc.documentElement.dataset.tab = name;
  }
  function applyFilters() {
    var hidden = { m: {}, ckpt: {} };
    doc.querySelectorAll('.filters input[type=checkbox]').forEach(function (box) {
      if (!box.checked) { hidden[box.dataset.kind][box.value] = true; }
    });
    doc.querySelectorAll('main [data-m], main [data-ckpt]').forEach(function (el) {
      var off = (el.dataset.m !== undefined && hidden.m[el.dataset.m]) ||
                (el.dataset.ckpt !== undefined && hidden.ckpt[el.dataset.ckpt]);
      el.dataset.filtered = off ? 'true' : 'false';
    });
  }
  doc.querySelectorAll('nav.tabs button').forEach(function (b) {
    b.addEventListener('click', function () { show(b.dataset.tab); });
  });
  doc.querySelectorAll('.filters input[type=checkbox]').forEach(function (box) {
    box.addEventListener('change', applyFilters);
  });
  var size = doc.getElementById('tile-size');
  if (size) {
    size.addEventListener('input', function () {
      doc.documentElement.style.setProperty('--tile', size.value + 'px');
    });
  }
  window.dashboard = { show: show, applyFilters: applyFilters };
  show(doc.querySelector('nav.tabs button').dataset.tab);
  applyFilters();
  doc.documentElement.dataset.ready = 'true';
})();
"""


_KNN_COLUMN = MetricColumn("knn_accuracy", True)


def _metric_table(data: DashboardData) -> str:
    rows = data.rows()
    columns = [*data.metrics, _KNN_COLUMN] if data.knn_accuracy else list(data.metrics)

    def value_of(i: int, method: str, column: MetricColumn) -> float:
        if column is _KNN_COLUMN:
            return data.knn(i)
        return data.score(i, method, column.key)

    best: dict[str, set[int]] = {}
    for metric in columns:
        column = [value_of(i, m, metric) for i, m in rows]
        best[metric.key] = set(best_rows(column, metric.higher_is_better))
    head = "".join(
        f'<th scope="col" data-col="{_e(m.key)}" title="{_direction(m.higher_is_better)}">'
        f"{_e(m.key)}{_arrow(m.higher_is_better)}</th>"
        for m in columns
    )
    out = [
        '<table class="metrics" id="metric-table"><thead><tr><th scope="col">method</th>'
        f'<th scope="col">checkpoint</th><th scope="col">epoch</th><th scope="col">step</th>'
        f"{head}</tr></thead><tbody>"
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
        out.append(
            f'<tr data-m="{method_index[method]}" data-ckpt="{i}" data-method="{_e(method)}">'
            f"<td>{_e(method)}</td><td>{_e(ckpt.name)}</td>"
            f'<td class="num">{"" if ckpt.epoch is None else ckpt.epoch}</td>'
            f'<td class="num">{"" if ckpt.global_step is None else ckpt.global_step}</td>'
            + "".join(cells)
            + "</tr>"
        )
    out.append("</tbody></table>")
    out.append(
        '<p class="legend">↑ higher is better, ↓ lower is better; ★ marks the best value of each '
        "column over all rows. Scores are means over the probe pairs."
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


def _downstream(data: DashboardData) -> str:
    """kNN accuracy per checkpoint, the correlation table and the scatter plot."""
    from lightning_explain.downstream import correlation_figure

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
        '<h3>kNN accuracy</h3><table id="knn-table"><thead><tr><th>checkpoint</th><th>epoch</th>'
        f"<th>knn_accuracy ↑</th></tr></thead><tbody>{rows}</tbody></table>"
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
        '<table id="correlation-table"><thead><tr><th>method</th><th>metric</th><th>n</th>'
        "<th>Spearman</th><th>Pearson</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
        f'<p class="legend">Over {n} checkpoint(s) with a kNN accuracy. n/a: undefined (fewer '
        "than 3 checkpoints, or a constant series). For a ↑ metric a positive correlation means "
        "that more faithful explanations went with a better model; for a ↓ metric a negative "
        "one does. Checkpoints of one run are confounded by training progress: both the scores "
        "and the accuracy change with the epoch, so a correlation is no evidence that either "
        "causes the other.</p>"
    )
    fig = correlation_figure(
        data.downstream_points(),
        correlations,
        methods=list(data.methods),
        metrics=[c.key for c in data.metrics],
    )
    png = _figure_png(fig)
    out.append(
        '<h3>Scores against kNN accuracy</h3><figure id="correlation-scatter">'
        f'<img class="plot" alt="kNN accuracy against each metric" src="{_data_uri(png)}">'
        "<figcaption>One panel per metric, one colour per method; points are checkpoints "
        "(e&lt;epoch&gt;), joined in checkpoint order. The legend gives rho (Spearman) and r "
        "(Pearson).</figcaption></figure>"
    )
    return "".join(out)


def _heatmaps(data: DashboardData) -> str:
    if not data.pairs:
        return "<p>No probe images were given.</p>"
    out = []
    for p, (png1, png2) in enumerate(data.pairs):
        out.append(f'<h3 id="pair-{p}">Pair {p}</h3><div class="pair"><div class="pair-originals">')
        out.append(
            f'<figure><img class="tile" alt="pair {p}, image 1" src="{_data_uri(png1)}">'
            "<figcaption>image 1</figcaption></figure>"
            f'<figure><img class="tile" alt="pair {p}, image 2" src="{_data_uri(png2)}">'
            "<figcaption>image 2</figcaption></figure></div>"
        )
        head = "".join(
            f'<th scope="col" data-m="{j}">{_e(m)}<br><small>h1 | h2</small></th>'
            for j, m in enumerate(data.methods)
        )
        out.append(f'<table class="heatmaps"><thead><tr><th>checkpoint</th>{head}</tr></thead>')
        out.append("<tbody>")
        for i, ckpt in enumerate(data.checkpoints):
            sims = data.similarity.get(i)
            sim = "" if sims is None else f"<br><small>sim {_fmt(float(sims[p]))}</small>"
            cells = []
            for j, method in enumerate(data.methods):
                tiles = data.overlays.get((i, method))
                if tiles is None:
                    cells.append(f'<td data-m="{j}">n/a</td>')
                    continue
                t1, t2 = tiles[p]
                alt = _e(f"{method} on {ckpt.name}, pair {p}")
                cells.append(
                    f'<td data-m="{j}"><div class="duo">'
                    f'<img class="tile" alt="{alt}, h1" src="{_data_uri(t1)}">'
                    f'<img class="tile" alt="{alt}, h2" src="{_data_uri(t2)}"></div></td>'
                )
            out.append(
                f'<tr data-ckpt="{i}"><th scope="row">{_e(ckpt.name)}{sim}</th>'
                + "".join(cells)
                + "</tr>"
            )
        out.append("</tbody></table></div>")
    return "".join(out)


def _curves(data: DashboardData) -> str:
    out = []
    for i, ckpt in enumerate(data.checkpoints):
        png = _curves_png(data, i)
        if png is None:
            continue
        out.append(
            f'<figure data-ckpt="{i}"><h3>{_e(ckpt.name)}</h3>'
            f'<img class="plot" alt="{_e("curves of " + ckpt.name)}" src="{_data_uri(png)}">'
            "</figure>"
        )
    if not out:
        return "<p>No curves were computed (choose insertion or deletion metrics).</p>"
    return (
        '<p class="legend">Similarity of the pair while the most salient pixels are inserted '
        "into a blurred image (insertion) or deleted (deletion), mean over the probe pairs; the "
        "legend gives each method's area under the curve.</p>" + "".join(out)
    )


def _training(data: DashboardData) -> str:
    axis = _training_x(data)
    label = axis[0] if axis else "epoch"
    out = []
    for metric in data.metrics:
        png = _training_png(data, metric)
        if png is None:
            continue
        out.append(
            f'<figure><img class="plot" alt="{_e(metric.key + " against " + label)}" '
            f'src="{_data_uri(png)}"></figure>'
        )
    if not out:
        return "<p>No metric has a value to plot.</p>"
    return (
        f'<p class="legend">Each metric (mean over the probe pairs) against the checkpoint\'s '
        f'{_e(label)}.</p><div class="plots">' + "".join(out) + "</div>"
    )


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
        '<h2>Checkpoints</h2><table id="checkpoint-table"><thead><tr><th>name</th><th>path</th>'
        "<th>epoch</th><th>global step</th><th>mean pair similarity</th></tr></thead><tbody>",
        *rows,
        "</tbody></table>",
    ]
    if data.info:
        out.append("<h2>Settings</h2><table><tbody>")
        out.extend(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in data.info)
        out.append("</tbody></table>")
    return "".join(out)


def render_html(data: DashboardData) -> str:
    """Render the dashboard as one self-contained HTML document.

    Args:
        data: the contents (validated again here).

    Returns:
        The HTML text: inline CSS and JavaScript, images as ``data:`` URIs, no external reference.

    Raises:
        ValueError: for inconsistent ``data`` (see :meth:`DashboardData.validate`).
    """
    from lightning_explain._version import __version__

    data.validate()
    tabs: list[tuple[str, str, str]] = [
        ("metrics", "Metrics", _metric_table(data)),
        ("heatmaps", "Heatmaps", _heatmaps(data)),
        ("curves", "Curves", _curves(data)),
    ]
    if data.one_run:
        tabs.append(("training", "Over training", _training(data)))
    if data.knn_accuracy:
        tabs.append(("downstream", "Downstream", _downstream(data)))
    tabs.append(("run", "Run", _run_info(data)))

    nav = "".join(
        f'<button type="button" role="tab" data-tab="{key}" aria-selected="false">{label}</button>'
        for key, label, _ in tabs
    )
    sections = "".join(
        f'<section data-panel="{key}" role="tabpanel" hidden><h2>{label}</h2>{body}</section>'
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
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(data.title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(data.title)}</h1><p>{subtitle}</p></header>"
        f'<nav class="tabs" role="tablist">{nav}</nav>'
        '<div class="filters"><fieldset><legend>Methods</legend>'
        f"{method_boxes}</fieldset><fieldset><legend>Checkpoints</legend>{ckpt_boxes}</fieldset>"
        '<label class="size">tile size <input type="range" id="tile-size" min="48" max="320" '
        'value="112"></label></div>'
        f"<main>{sections}</main><script>{_JS}</script></body></html>\n"
    )


def write_dashboard(data: DashboardData, path: str | Path) -> Path:
    """Write the dashboard to ``path`` (parent folders are created).

    Args:
        data: the contents.
        path: the HTML file to write (UTF-8).

    Returns:
        The path written.

    Raises:
        ValueError: for inconsistent ``data``.
    """
    target = Path(path)
    text = render_html(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target
