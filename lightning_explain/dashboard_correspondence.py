"""The Correspondence tab of the dashboard: which position of view 1 each checkpoint matches with
which position of view 2, and how well the matches agree with the true geometry of the views.

:class:`CorrespondenceRecord` holds what the page shows of one interaction method
(:mod:`lightning_explain.correspondence`) for one checkpoint (or one evaluation of a live run):
per probe pair a rendering of the two views side by side with the top matches drawn as lines
(:func:`lightning_explain.correspondence.match_grid`, encoded as WebP), and, when the probe set
records its view geometry, the per-pair ``accuracy`` (share of view-2 positions matched within
one cell of their true location) and ``error_px`` (mean distance to it, in pixels).

:func:`correspondence_tab` writes the tab's HTML: per interaction method a table of the mean
scores across the checkpoints (in training order, the best value marked ``★``), a small trend
chart of the accuracy, and the renderings of one checkpoint at a time, chosen with a slider (the
checkpoint check boxes of the page's filters act on the table rows and the slider's steps). The
renderings are ``<img>`` elements with data URIs, readable without the page's script; the
scores are also kept in a ``<script type="application/json" id="correspondence-data">`` element,
from which :func:`restore_correspondence` takes a live page's records back (a resumed run).
Like :mod:`lightning_explain.dashboard`, this module computes nothing from a model.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from lightning_explain.dashboard_media import base64_text, best_rows, encode_image, mime_type

if TYPE_CHECKING:
    from torch import Tensor

    from lightning_explain.evaluation import InteractionEvaluation

__all__ = [
    "CORRESPONDENCE_SCORES",
    "CheckpointLike",
    "CorrespondenceRecord",
    "correspondence_methods",
    "correspondence_tab",
    "restore_correspondence",
    "validate_correspondence",
]

_OWNER = "dashboard"

CORRESPONDENCE_SCORES: tuple[tuple[str, bool], ...] = (("accuracy", True), ("error_px", False))
"""The geometry scores of a correspondence, with their direction (``True``: higher is better)."""


class CheckpointLike(Protocol):
    """What the tab reads of a checkpoint (:class:`lightning_explain.dashboard.CheckpointInfo`)."""

    @property
    def name(self) -> str:
        """The label shown."""

    @property
    def epoch(self) -> int | None:
        """The epoch, if recorded."""

    @property
    def global_step(self) -> int | None:
        """The global step, if recorded."""


@dataclass(frozen=True)
class CorrespondenceRecord:
    """What the dashboard shows of one interaction method for one checkpoint.

    Attributes:
        checkpoint: index into :attr:`lightning_explain.dashboard.DashboardData.checkpoints`.
        method: the interaction entry's label (e.g. ``"point_to_point"``).
        matches: per probe pair, the encoded rendering (PNG, JPEG or WebP bytes) of the two views
            with the top matches drawn as lines (see :meth:`from_evaluation`). Default: none.
        scores: ``"accuracy"`` and ``"error_px"`` per pair, when the probe set records its view
            geometry; empty otherwise (the page then says that no geometry was recorded).

    Example:
        >>> import numpy as np
        >>> record = CorrespondenceRecord(0, "bilrp", (encode_image(np.zeros((4, 8, 3))),),
        ...                               {"accuracy": (0.5,), "error_px": (2.0,)})
        >>> record.geometry, record.mean_score("accuracy")
        (True, 0.5)
    """

    checkpoint: int
    method: str
    matches: tuple[bytes, ...] = ()
    scores: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    @property
    def geometry(self) -> bool:
        """Whether the record has geometry scores."""
        return bool(self.scores)

    def mean_score(self, key: str) -> float:
        """The mean of one score over the pairs with a finite value (NaN when none)."""
        values = [v for v in self.scores.get(key, ()) if math.isfinite(v)]
        return sum(values) / len(values) if values else math.nan

    @classmethod
    def from_evaluation(
        cls,
        checkpoint: int,
        interaction: InteractionEvaluation,
        x1: Tensor,
        x2: Tensor,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        k: int = 12,
        min_tile: int = 96,
    ) -> CorrespondenceRecord:
        """Render and encode one interaction method's result on the probe pairs.

        Args:
            checkpoint: the checkpoint's index in the dashboard.
            interaction: what :func:`lightning_explain.evaluation.evaluate_probe` returned for
                the entry (:attr:`~lightning_explain.evaluation.ProbeEvaluation.interactions`).
            x1: ``(B, C, H, W)`` first images of the pairs (``C`` = 1 or 3), as explained.
            x2: ``(B, C, H, W)`` second images.
            mean: normalisation means to undo when showing the images.
            std: normalisation standard deviations to undo.
            k: lines per pair (see :func:`lightning_explain.correspondence.match_grid`).
                Default 12.
            min_tile: smallest side of a view in the rendering, in pixels. Default 96.

        Returns:
            The record: one WebP rendering per pair, the per-pair scores when there are any.
        """
        from lightning_explain.correspondence import PairInteraction, match_grid

        r = interaction.interaction
        pictures = []
        for p in range(len(r)):
            one = PairInteraction(
                r.interaction[p : p + 1], r.grid1, r.grid2, r.sim[p : p + 1], r.size
            )
            image = match_grid(
                x1[p : p + 1].cpu(),
                x2[p : p + 1].cpu(),
                one,
                k=k,
                mean=mean,
                std=std,
                min_tile=min_tile,
            )
            pictures.append(encode_image(image, quality=90))
        scores = {
            key: tuple(float(v) for v in values.detach().double().cpu().tolist())
            for key, values in interaction.scores.items()
        }
        return cls(checkpoint, interaction.label, tuple(pictures), scores)


def correspondence_methods(records: Sequence[CorrespondenceRecord]) -> list[str]:
    """The interaction methods of ``records``, in order of first appearance."""
    return list(dict.fromkeys(r.method for r in records))


def validate_correspondence(
    records: Sequence[CorrespondenceRecord], n_checkpoints: int, n_pairs: int
) -> None:
    """Check the records of a dashboard.

    Args:
        records: the records.
        n_checkpoints: how many checkpoints the dashboard has.
        n_pairs: how many probe pairs it shows (0: not checked).

    Raises:
        ValueError: for a record of another type, a checkpoint index out of range, a repeated
            ``(checkpoint, method)``, a rendering or score count other than the pair count, or
            a rendering that is not a PNG, JPEG or WebP picture.
    """
    seen: set[tuple[int, str]] = set()
    for n, record in enumerate(records):
        if not isinstance(record, CorrespondenceRecord):
            raise ValueError(
                f"`{_OWNER}`: expected CorrespondenceRecord entries in `correspondence`, but "
                f"entry {n} is an object of type {type(record).__name__}."
            )
        key = (record.checkpoint, record.method)
        if not 0 <= record.checkpoint < n_checkpoints:
            raise ValueError(
                f"`{_OWNER}`: `correspondence` entry {n} refers to checkpoint index "
                f"{record.checkpoint}, but there are {n_checkpoints} checkpoints."
            )
        if key in seen:
            raise ValueError(
                f"`{_OWNER}`: `correspondence` has two entries for checkpoint {record.checkpoint} "
                f"and method {record.method!r}; give one per checkpoint and method."
            )
        seen.add(key)
        counts = {"renderings": len(record.matches)} if record.matches else {}
        counts.update({f"{k} scores": len(v) for k, v in record.scores.items()})
        for what, count in counts.items():
            if n_pairs and count != n_pairs:
                raise ValueError(
                    f"`{_OWNER}`: expected {n_pairs} {what} (one per probe pair) for "
                    f"{key} in `correspondence`, but got {count}."
                )
        for blob in record.matches:
            mime_type(blob, f"correspondence[{n}].matches")


# --------------------------------------------------------------------------------------------------
# HTML


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(key: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.1%}" if key == "accuracy" else f"{value:.2f}"


def _json_script(payload: object) -> str:
    """JSON safe inside ``<script>``: no ``<``, ``>`` or ``&`` survives (``\\u003c`` etc.)."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _num(value: float) -> float | None:
    return float(f"{value:.6g}") if math.isfinite(value) else None


def _trend(values: Sequence[float], names: Sequence[str], method: str) -> str:
    """A small SVG line chart of the accuracy (0 to 1) over the checkpoints in training order."""
    points = [(k, v) for k, v in enumerate(values) if math.isfinite(v)]
    if len(points) < 2:
        return ""
    w, h, pad = 320.0, 120.0, 24.0
    span = max(len(values) - 1, 1)

    def xy(k: int, v: float) -> tuple[float, float]:
        return pad + (w - 2 * pad) * k / span, h - pad - (h - 2 * pad) * v

    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(k, v) for k, v in points))
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"><title>{_e(names[k])}: {v:.1%}</title></circle>'
        for k, v in points
        for x, y in [xy(k, v)]
    )
    return (
        f'<figure class="corr-trend"><svg viewBox="0 0 {w:g} {h:g}" role="img" '
        f'aria-label="{_e(method)}: accuracy over the checkpoints">'
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#d9dde5"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{w - pad}" y2="{pad}" stroke="#d9dde5"/>'
        f'<text x="2" y="{pad + 4}" font-size="10">100%</text>'
        f'<text x="2" y="{h - pad + 4}" font-size="10">0%</text>'
        f'<polyline points="{line}" fill="none" stroke="#2b59c3" stroke-width="2"/>'
        f'<g fill="#2b59c3">{dots}</g></svg>'
        "<figcaption>accuracy over the checkpoints, in training order</figcaption></figure>"
    )


_STYLE = (
    ".corr-pairs{display:flex;flex-wrap:wrap;gap:8px;max-width:100%}"
    ".corr-pairs figure{max-width:100%;margin:0}"
    ".corr-pairs img{max-width:100%;height:auto;image-rendering:auto;display:block}"
    ".corr-pairs figcaption,.corr-step-label{font-size:12px;color:#5b6475}"
    ".corr-js .corr-ckpt:not(.corr-on){display:none}"
    ".corr-trend svg{width:320px;max-width:100%;height:auto}"
    ".corr-step-label{display:flex;flex-wrap:wrap;gap:4px 8px;align-items:center;margin:8px 0}"
    ".corr-step-label input{width:240px;max-width:60vw}"
)

# The slider of each method steps over the checkpoints left visible by the page's filters (whose
# script marks filtered elements data-filtered="true"; it runs on the same events, after this).
_SCRIPT = """(function () {
  var doc = document;
  doc.querySelectorAll('.corr-method').forEach(function (box) {
    var range = box.querySelector('input.corr-step');
    var out = box.querySelector('output');
    var steps = Array.prototype.slice.call(box.querySelectorAll('.corr-ckpt'));
    if (!range || !steps.length) return;
    function update() {
      var vis = steps.filter(function (s) { return s.dataset.filtered !== 'true'; });
      range.max = String(Math.max(0, vis.length - 1));
      var k = Math.min(+range.value, vis.length - 1);
      range.value = String(Math.max(0, k));
      steps.forEach(function (s) { s.classList.remove('corr-on'); });
      if (k >= 0) { vis[k].classList.add('corr-on'); out.textContent = vis[k].dataset.name; }
      else { out.textContent = 'no checkpoint shown (see the filters)'; }
    }
    range.addEventListener('input', update);
    doc.querySelectorAll('.filters input, .filters [data-all]').forEach(function (el) {
      el.addEventListener('change', function () { setTimeout(update, 0); });
      el.addEventListener('click', function () { setTimeout(update, 0); });
    });
    box.classList.add('corr-js');
    update();
  });
})();"""


def correspondence_tab(
    records: Sequence[CorrespondenceRecord],
    checkpoints: Sequence[CheckpointLike],
    order: Sequence[int],
) -> str:
    """The HTML of the Correspondence tab.

    Args:
        records: the records (see :func:`validate_correspondence`).
        checkpoints: the dashboard's checkpoints, by index.
        order: the checkpoint indices in training order.

    Returns:
        The tab's body: a legend, then per interaction method its score table, accuracy trend,
        slider and renderings, the JSON of the scores, and the tab's style and script.
    """
    names = [c.name for c in checkpoints]
    epochs = [c.epoch for c in checkpoints]
    steps = [c.global_step for c in checkpoints]
    methods = correspondence_methods(records)
    by_key = {(r.checkpoint, r.method): r for r in records}
    out = [
        f"<style>{_STYLE}</style>",
        '<p class="legend">Which position of view 1 the model matches with which position of '
        "view 2 (lightning_explain.correspondence): each rendering shows a probe pair, view 1 "
        "left and view 2 right, with the strongest matches drawn as lines (yellow: strongest, "
        "dark: weakest of the pair). With a probe set that records its view geometry, accuracy "
        "is the share of view-2 positions matched within one cell of their true location in "
        "view 1 and error_px the mean distance to it.</p>",
    ]
    for j, method in enumerate(methods):
        rows = [i for i in order if (i, method) in by_key]
        scored = any(by_key[(i, method)].geometry for i in rows)
        out.append(f'<div class="corr-method" data-r="{j}"><h3>{_e(method)}</h3>')
        if scored:
            columns = {
                key: [by_key[(i, method)].mean_score(key) for i in rows]
                for key, _ in CORRESPONDENCE_SCORES
            }
            best = {
                key: set(best_rows(columns[key], higher)) for key, higher in CORRESPONDENCE_SCORES
            }
            head = "".join(
                f'<th scope="col" data-col="{key}">{key}{" ↑" if higher else " ↓"}</th>'
                for key, higher in CORRESPONDENCE_SCORES
            )
            body = []
            for n, i in enumerate(rows):
                cells = "".join(
                    f'<td class="num{" best" if n in best[key] else ""}" data-col="{key}" '
                    f'data-value="{columns[key][n]!r}">{"★ " if n in best[key] else ""}'
                    f"{_fmt(key, columns[key][n])}</td>"
                    for key, _ in CORRESPONDENCE_SCORES
                )
                body.append(
                    f'<tr data-ckpt="{i}"><td>{_e(names[i])}</td>'
                    f'<td class="num">{"" if epochs[i] is None else epochs[i]}</td>'
                    f'<td class="num">{"" if steps[i] is None else steps[i]}</td>{cells}</tr>'
                )
            out.append(
                f'<div class="scroll"><table class="corr-table" data-method="{_e(method)}">'
                '<thead><tr><th scope="col">checkpoint</th><th scope="col">epoch</th>'
                f'<th scope="col">step</th>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
                "</table></div>"
                '<p class="legend">Means over the probe pairs whose views overlap; ★ marks the '
                "best checkpoint.</p>"
            )
            out.append(_trend(columns["accuracy"], [names[i] for i in rows], method))
        else:
            out.append(
                '<p class="legend corr-no-geometry">No view geometry was recorded with this '
                "probe set, so the matches are not scored. A probe set made with "
                "lightning_explain.correspondence.random_views(...).to_probe_set() records it.</p>"
            )
        shown = [i for i in rows if by_key[(i, method)].matches]
        if shown:
            last = names[shown[-1]]
            out.append(
                f'<label class="corr-step-label">checkpoint <input type="range" '
                f'class="corr-step" min="0" max="{len(shown) - 1}" value="{len(shown) - 1}" '
                f'aria-label="{_e(method)}: checkpoint"> <output>{_e(last)}</output></label>'
            )
        for i in shown:
            record = by_key[(i, method)]
            figures = []
            for p, blob in enumerate(record.matches):
                caption = f"pair {p + 1}"
                if record.geometry:
                    caption += " · " + ", ".join(
                        f"{key} {_fmt(key, record.scores[key][p])}"
                        for key, _ in CORRESPONDENCE_SCORES
                        if key in record.scores
                    )
                figures.append(
                    f'<figure><img class="corr-img" data-ckpt-index="{i}" data-r="{j}" '
                    f'data-p="{p}" alt="{_e(method)}, {_e(names[i])}, pair {p + 1}" '
                    f'src="data:{mime_type(blob, "correspondence")};base64,{base64_text(blob)}">'
                    f"<figcaption>{_e(caption)}</figcaption></figure>"
                )
            out.append(
                f'<div class="corr-ckpt" data-ckpt="{i}" data-name="{_e(names[i])}">'
                f'<p class="legend">{_e(names[i])}</p>'
                f'<div class="corr-pairs">{"".join(figures)}</div></div>'
            )
        out.append("</div>")
    payload = {
        "methods": methods,
        "records": [
            {
                "c": r.checkpoint,
                "m": methods.index(r.method),
                "s": {k: [_num(v) for v in vs] for k, vs in r.scores.items()},
            }
            for r in records
        ],
    }
    out.append(
        '<script type="application/json" id="correspondence-data">'
        f"{_json_script(payload)}</script><script>{_SCRIPT}</script>"
    )
    return "".join(out)


_IMG = re.compile(
    r'<img class="corr-img" data-ckpt-index="(\d+)" data-r="(\d+)" data-p="(\d+)" [^>]*?'
    r'src="data:image/[a-z]+;base64,([A-Za-z0-9+/=]+)"'
)


def restore_correspondence(page: str) -> dict[int, list[CorrespondenceRecord]]:
    """The correspondence records of a page written with :func:`correspondence_tab`.

    Args:
        page: the HTML text of a dashboard.

    Returns:
        Checkpoint index -> its records (renderings and scores); empty for a page without a
        Correspondence tab.

    Raises:
        ValueError: for a malformed ``correspondence-data`` element.
    """
    start = page.find('<script type="application/json" id="correspondence-data">')
    if start < 0:
        return {}
    start = page.index(">", start) + 1
    payload: Any = json.loads(page[start : page.index("</script>", start)])
    methods = [str(m) for m in payload["methods"]]
    pictures: dict[tuple[int, int], dict[int, bytes]] = {}
    for match in _IMG.finditer(page):
        c, j, p = (int(match.group(g)) for g in (1, 2, 3))
        pictures.setdefault((c, j), {})[p] = base64.b64decode(match.group(4))
    out: dict[int, list[CorrespondenceRecord]] = {}
    for entry in payload["records"]:
        c, j = int(entry["c"]), int(entry["m"])
        tiles = pictures.get((c, j), {})
        scores = {
            str(k): tuple(math.nan if v is None else float(v) for v in vs)
            for k, vs in entry["s"].items()
        }
        out.setdefault(c, []).append(
            CorrespondenceRecord(c, methods[j], tuple(tiles[p] for p in sorted(tiles)), scores)
        )
    return out
