"""Paper-style score tables: rows are explanation methods, columns are metrics.

The layout of the tables of Sammani et al. [0]: one row per method, one column per faithfulness
metric headed with its direction (``↑`` higher is better, ``↓`` lower is better), and the best
value of each column marked. :func:`write_report` writes the same table as Markdown (best values in
bold), CSV (plain numbers plus a ``best_in`` column) and a self-contained HTML page (best values in
bold and highlighted; every string HTML-escaped). ``lightning-explain report`` (see
:mod:`lightning_explain.cli`) fills the table from one checkpoint.

This module is pure: it formats numbers and loads no model.

References:
    [0] Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive Learning",
    IEEE TIP, arXiv 2206.09753.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lightning_explain._io import csv_writer
from lightning_explain.dashboard import MetricColumn, best_rows

__all__ = [
    "CorrespondenceRow",
    "CorrespondenceTable",
    "ReportTable",
    "correspondence_csv",
    "correspondence_html",
    "correspondence_markdown",
    "to_csv",
    "to_html",
    "to_markdown",
    "write_correspondence_report",
    "write_report",
]

_OWNER = "ReportTable"


@dataclass(frozen=True)
class ReportTable:
    """A method x metric table of mean scores.

    Attributes:
        methods: the row labels, in order.
        metrics: the columns, in order, with their directions.
        scores: ``method -> {metric key: mean score}``; missing entries and NaN show as ``n/a``.
        title: the heading. Default ``"lightning-explain report"``.
        notes: lines shown under the heading (checkpoint, probe set, settings, kNN accuracy).
            Default: none.

    Raises:
        ValueError: without methods or metrics, or for repeated names.
    """

    methods: Sequence[str]
    metrics: Sequence[MetricColumn]
    scores: Mapping[str, Mapping[str, float]]
    title: str = "lightning-explain report"
    notes: Sequence[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        keys = [m.key for m in self.metrics]
        for seq, what in ((list(self.methods), "methods"), (keys, "metrics")):
            if not seq:
                raise ValueError(f"`{_OWNER}`: expected at least one entry in `{what}`, got none.")
            dupes = sorted({s for s in seq if seq.count(s) > 1})
            if dupes:
                raise ValueError(f"`{_OWNER}`: repeated names in `{what}`: {dupes}.")

    def value(self, method: str, metric: str) -> float:
        """One cell, NaN when missing."""
        value = self.scores.get(method, {}).get(metric)
        return math.nan if value is None else float(value)

    def best(self, metric: MetricColumn) -> set[str]:
        """The methods with the best value of a column (all of them when tied; NaN never wins)."""
        column = [self.value(m, metric.key) for m in self.methods]
        return {self.methods[i] for i in best_rows(column, metric.higher_is_better)}


def _arrow(higher_is_better: bool | None) -> str:
    return {True: " ↑", False: " ↓"}.get(higher_is_better, "")  # type: ignore[arg-type]


def _fmt(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4f}"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")
_NAME = re.compile(r"[A-Za-z0-9_.=+-]+")


def _md(text: object) -> str:
    """Escape the Markdown punctuation that could format free text (CommonMark backslash escapes:
    emphasis, code, links, HTML, table pipes, strikethrough) and fold newlines."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _md_name(text: str) -> str:
    """A method or metric name: kept as is when it is an identifier (an underscore inside a word
    never starts emphasis), escaped otherwise."""
    return text if _NAME.fullmatch(text) and not text.startswith("_") else _md(text)


_LEGEND = (
    "↑ higher is better, ↓ lower is better; the best value of each column is {mark} "
    "(ties: all of them). Scores are means over the probe pairs."
)


def to_markdown(table: ReportTable) -> str:
    """The table as GitHub-flavoured Markdown; best values in bold."""
    best = {m.key: table.best(m) for m in table.metrics}
    lines = [f"# {_md(table.title)}", ""]
    if table.notes:
        lines += [f"- {_md(note)}" for note in table.notes] + [""]
    lines.append(
        "| method | "
        + " | ".join(_md_name(m.key) + _arrow(m.higher_is_better) for m in table.metrics)
        + " |"
    )
    lines.append("| :-- | " + " | ".join("--:" for _ in table.metrics) + " |")
    for method in table.methods:
        cells = []
        for m in table.metrics:
            text = _fmt(table.value(method, m.key))
            cells.append(f"**{text}**" if method in best[m.key] else text)
        lines.append(f"| {_md_name(method)} | " + " | ".join(cells) + " |")
    lines += ["", _LEGEND.format(mark="in bold"), ""]
    return "\n".join(lines)


def to_csv(table: ReportTable) -> str:
    """The table as CSV: ``method``, one column per metric key (full-precision numbers, ``nan``
    when missing), and ``best_in``: the metric keys (``;``-separated) where the method is best."""
    best = {m.key: table.best(m) for m in table.metrics}
    buffer = io.StringIO()
    writer = csv_writer(buffer, lineterminator="\n")
    writer.writerow(["method", *(m.key for m in table.metrics), "best_in"])
    for method in table.methods:
        writer.writerow(
            [method]
            + [table.value(method, m.key) for m in table.metrics]
            + [";".join(m.key for m in table.metrics if method in best[m.key])]
        )
    return buffer.getvalue()


_CSS = """
body { margin: 24px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1d2330; }
h1 { font-size: 20px; margin: 0 0 8px; }
ul.notes { color: #5b6475; padding-left: 18px; }
table { border-collapse: collapse; margin: 12px 0; }
th, td { border: 1px solid #d9dde5; padding: 4px 12px; }
th { background: #f5f7fa; text-align: center; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { background: #fff2b3; }
p.legend { color: #5b6475; }
"""


def to_html(table: ReportTable) -> str:
    """The table as a self-contained HTML page (inline CSS, no script, nothing fetched); best
    values bold and highlighted (``class="best"``, ``data-best="true"``); every string escaped."""
    e = html.escape
    best = {m.key: table.best(m) for m in table.metrics}
    head = "".join(
        f'<th scope="col" data-col="{e(m.key)}" title="'
        + {True: "higher is better", False: "lower is better"}.get(
            m.higher_is_better,  # type: ignore[arg-type]
            "no direction",
        )
        + f'">{e(m.key)}{_arrow(m.higher_is_better)}</th>'
        for m in table.metrics
    )
    rows = []
    for method in table.methods:
        cells = []
        for m in table.metrics:
            value = table.value(method, m.key)
            is_best = method in best[m.key]
            text = e(_fmt(value))
            cells.append(
                f'<td class="num{" best" if is_best else ""}" data-col="{e(m.key)}" '
                f'data-value="{value!r}" data-best="{"true" if is_best else "false"}">'
                + (f"<strong>{text}</strong>" if is_best else text)
                + "</td>"
            )
        rows.append(
            f'<tr data-method="{e(method)}"><th scope="row">{e(method)}</th>{"".join(cells)}</tr>'
        )
    notes = "".join(f"<li>{e(n)}</li>" for n in table.notes)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(table.title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{e(table.title)}</h1>"
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + '<table id="report-table"><thead><tr><th scope="col">method</th>'
        + head
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        + f'<p class="legend">{e(_LEGEND.format(mark="in bold and highlighted"))}</p>'
        + "</body></html>\n"
    )


def write_report(table: ReportTable, out: str | Path, stem: str = "report") -> dict[str, Path]:
    """Write ``<out>/<stem>.md``, ``.csv`` and ``.html`` (UTF-8; the folder is created).

    Returns:
        ``{"markdown": path, "csv": path, "html": path}``.
    """
    return _write_formats(out, stem, to_markdown(table), to_csv(table), to_html(table))


def _write_formats(
    out: str | Path, stem: str, markdown: str, csv: str, html: str
) -> dict[str, Path]:
    """Write the three renderings of one table as ``<out>/<stem>.md``, ``.csv`` and ``.html``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": folder / f"{stem}.md",
        "csv": folder / f"{stem}.csv",
        "html": folder / f"{stem}.html",
    }
    paths["markdown"].write_text(markdown, encoding="utf-8")
    paths["csv"].write_text(csv, encoding="utf-8", newline="")
    paths["html"].write_text(html, encoding="utf-8")
    return paths


# --------------------------------------------------------------------------------------------------
# Correspondence


@dataclass(frozen=True)
class CorrespondenceRow:
    """One checkpoint x interaction method of a :class:`CorrespondenceTable`.

    Attributes:
        checkpoint: the checkpoint's name.
        method: the interaction entry's label.
        pairs: how many probe pairs were explained.
        accuracy: mean share of view-2 positions matched within one cell of their true location
            (see :func:`lightning_explain.correspondence.correspondence_scores`); ``None`` when
            the probe set records no view geometry.
        error_px: mean distance of the matches to their true location, in pixels; ``None``
            without geometry.
    """

    checkpoint: str
    method: str
    pairs: int
    accuracy: float | None = None
    error_px: float | None = None

    @property
    def geometry(self) -> bool:
        """Whether the row was scored against the view geometry."""
        return self.accuracy is not None


@dataclass(frozen=True)
class CorrespondenceTable:
    """The correspondence (interaction) methods' scores against the true geometry of the views.

    Attributes:
        rows: one per checkpoint x interaction method.
        title: the heading. Default ``"lightning-explain correspondence"``.
        notes: lines shown under the heading. Default: none.

    Raises:
        ValueError: without rows.
    """

    rows: Sequence[CorrespondenceRow]
    title: str = "lightning-explain correspondence"
    notes: Sequence[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError(
                "`CorrespondenceTable`: expected at least one row in `rows`, got none."
            )

    @property
    def geometry(self) -> bool:
        """Whether any row was scored."""
        return any(r.geometry for r in self.rows)

    def best(self) -> dict[str, set[int]]:
        """Row indices of the best ``accuracy`` (highest) and ``error_px`` (lowest)."""
        acc = [math.nan if r.accuracy is None else r.accuracy for r in self.rows]
        err = [math.nan if r.error_px is None else r.error_px for r in self.rows]
        return {"accuracy": set(best_rows(acc, True)), "error_px": set(best_rows(err, False))}


_NO_GEOMETRY = (
    "no view geometry recorded: the probe set does not say where each position of view 2 lies "
    "in view 1, so the matches are not scored (a probe set made with "
    "lightning_explain.correspondence.random_views(...).to_probe_set() records it)"
)
_CORR_LEGEND = (
    "accuracy ↑: share of view-2 positions matched within one cell of their true location in "
    "view 1; error_px ↓: mean distance of the matches to it, in pixels; means over the pairs whose "
    "views overlap; the best value of each column is {mark}."
)


def _corr_cell(row: CorrespondenceRow, key: str) -> tuple[str, float]:
    value = getattr(row, key)
    if value is None:
        return "no geometry", math.nan
    return ("n/a" if not math.isfinite(value) else f"{value:.4f}"), float(value)


def correspondence_markdown(table: CorrespondenceTable) -> str:
    """The correspondence table as GitHub-flavoured Markdown; best values in bold."""
    best = table.best()
    lines = [f"# {_md(table.title)}", ""]
    if table.notes:
        lines += [f"- {_md(note)}" for note in table.notes] + [""]
    lines.append("| checkpoint | method | pairs | accuracy ↑ | error_px ↓ |")
    lines.append("| :-- | :-- | --: | --: | --: |")
    for n, row in enumerate(table.rows):
        cells = []
        for key in ("accuracy", "error_px"):
            text, _ = _corr_cell(row, key)
            cells.append(f"**{text}**" if n in best[key] else text)
        lines.append(
            f"| {_md(row.checkpoint)} | {_md_name(row.method)} | {row.pairs} | "
            + " | ".join(cells)
            + " |"
        )
    lines.append("")
    lines.append(_CORR_LEGEND.format(mark="in bold") if table.geometry else _NO_GEOMETRY + ".")
    lines.append("")
    return "\n".join(lines)


def correspondence_csv(table: CorrespondenceTable) -> str:
    """The correspondence table as CSV: ``checkpoint``, ``method``, ``pairs``, ``geometry``
    (``true``/``false``), ``accuracy`` and ``error_px`` (empty without geometry)."""
    buffer = io.StringIO()
    writer = csv_writer(buffer, lineterminator="\n")
    writer.writerow(["checkpoint", "method", "pairs", "geometry", "accuracy", "error_px"])
    for row in table.rows:
        writer.writerow(
            [
                row.checkpoint,
                row.method,
                row.pairs,
                "true" if row.geometry else "false",
                "" if row.accuracy is None else row.accuracy,
                "" if row.error_px is None else row.error_px,
            ]
        )
    return buffer.getvalue()


def correspondence_html(table: CorrespondenceTable) -> str:
    """The correspondence table as a self-contained HTML page (no script); every string
    escaped; best values bold and highlighted."""
    e = html.escape
    best = table.best()
    rows = []
    for n, row in enumerate(table.rows):
        cells = []
        for key in ("accuracy", "error_px"):
            text, value = _corr_cell(row, key)
            is_best = n in best[key]
            cells.append(
                f'<td class="num{" best" if is_best else ""}" data-col="{key}" '
                f'data-value="{value!r}">'
                + (f"<strong>{e(text)}</strong>" if is_best else e(text))
                + "</td>"
            )
        rows.append(
            f'<tr data-method="{e(row.method)}"><td>{e(row.checkpoint)}</td>'
            f'<th scope="row">{e(row.method)}</th><td class="num">{row.pairs}</td>'
            + "".join(cells)
            + "</tr>"
        )
    notes = "".join(f"<li>{e(n)}</li>" for n in table.notes)
    legend = _CORR_LEGEND.format(mark="in bold") if table.geometry else _NO_GEOMETRY + "."
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(table.title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{e(table.title)}</h1>"
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + '<table id="correspondence-table"><thead><tr><th scope="col">checkpoint</th>'
        '<th scope="col">method</th><th scope="col">pairs</th>'
        '<th scope="col" title="higher is better">accuracy ↑</th>'
        '<th scope="col" title="lower is better">error_px ↓</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
        + f'<p class="legend">{e(legend)}</p></body></html>\n'
    )


def write_correspondence_report(
    table: CorrespondenceTable, out: str | Path, stem: str = "correspondence"
) -> dict[str, Path]:
    """Write ``<out>/<stem>.md``, ``.csv`` and ``.html`` (UTF-8; the folder is created).

    Returns:
        ``{"markdown": path, "csv": path, "html": path}``.
    """
    return _write_formats(
        out,
        stem,
        correspondence_markdown(table),
        correspondence_csv(table),
        correspondence_html(table),
    )
