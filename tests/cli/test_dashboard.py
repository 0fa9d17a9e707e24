"""The HTML dashboard: data model checks, best-value marking, escaping, self-containment."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from lightning_explain.dashboard import (
    CheckpointInfo,
    DashboardData,
    MetricColumn,
    best_rows,
    image_png,
    render_html,
    write_dashboard,
)
from tests.cli.conftest import COMPARE_METHODS, COMPARE_METRICS, Comparison, Run


class _Cells(HTMLParser):
    """Collects the metric-table cells and every src/href attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.rows: list[dict[str, str]] = []
        self.links: list[str] = []
        self.tags: list[str] = []
        self._in_metrics = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "table":
            self._in_metrics = a.get("id") == "metric-table"
        if self._in_metrics and tag == "tr" and "data-ckpt" in a:
            self.rows.append(a)
        if self._in_metrics and tag == "td" and "data-value" in a:
            self.cells.append({**a, "row": str(len(self.rows) - 1)})
        for key in ("src", "href"):
            if key in a:
                self.links.append(a[key])

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_metrics = False


def _parse(html: str) -> _Cells:
    parser = _Cells()
    parser.feed(html)
    return parser


PNG = image_png(torch.rand(3, 8, 8))


def _data(**changes: object) -> DashboardData:
    fields: dict[str, object] = {
        "checkpoints": [CheckpointInfo("a.ckpt", "/r/a.ckpt", 0, 10), CheckpointInfo("b.ckpt")],
        "methods": ["gradcam", "rise"],
        "metrics": [MetricColumn("insertion", True), MetricColumn("deletion", False)],
        "scores": {
            (0, "gradcam"): {"insertion": 0.5, "deletion": 0.2},
            (1, "gradcam"): {"insertion": 0.7, "deletion": 0.2},
            (0, "rise"): {"insertion": 0.7, "deletion": math.nan},
            (1, "rise"): {"insertion": 0.1},
        },
        "pairs": [(PNG, PNG)],
        "overlays": {(i, m): [(PNG, PNG)] for i in range(2) for m in ("gradcam", "rise")},
        "similarity": {0: [0.9], 1: [0.8]},
    }
    fields.update(changes)
    return DashboardData(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Pure pieces


def test_best_rows_directions_ties_and_nan() -> None:
    assert best_rows([0.1, 0.5, 0.5, math.nan], True) == [1, 2]
    assert best_rows([0.1, 0.5, math.nan, 0.1], False) == [0, 3]
    assert best_rows([math.nan, math.nan], True) == []
    assert best_rows([0.3, 0.1], None) == []


def test_image_png_accepts_chw_float_hwc_uint8_and_grey() -> None:
    import io

    from PIL import Image

    for image, size in (
        (torch.rand(3, 5, 7), (7, 5)),
        (torch.randint(0, 255, (5, 7, 3), dtype=torch.uint8).numpy(), (7, 5)),
        (torch.rand(1, 4, 6), (6, 4)),
    ):
        with Image.open(io.BytesIO(image_png(image))) as img:
            assert img.size == size
    with pytest.raises(ValueError, match="expected an image of shape"):
        image_png(torch.rand(2, 3, 4, 4))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"checkpoints": []}, "at least one checkpoint"),
        ({"methods": []}, "at least one method"),
        ({"methods": ["gradcam", "gradcam"]}, "duplicate method"),
        ({"scores": {(5, "gradcam"): {}}}, "checkpoint index 5"),
        ({"scores": {(0, "occlusion"): {}}}, "method 'occlusion'"),
        ({"overlays": {(0, "gradcam"): []}}, "expected 1 overlay pairs"),
        ({"similarity": {0: [0.1, 0.2]}}, "expected 1 similarities"),
    ],
)
def test_inconsistent_data_is_refused(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _data(**changes)


def test_table_marks_best_per_column_with_direction() -> None:
    page = _parse(render_html(_data()))
    best = {(c["data-col"], int(c["row"])) for c in page.cells if c["data-best"] == "true"}
    # rows: gradcam/a, gradcam/b, rise/a, rise/b (grouped by method)
    assert best == {("insertion", 1), ("insertion", 2), ("deletion", 0), ("deletion", 1)}
    html = render_html(_data())
    assert "insertion ↑" in html
    assert "deletion ↓" in html
    assert ">n/a<" in html  # the NaN and the missing score


def test_user_strings_are_escaped(tmp_path: Path) -> None:
    data = _data(
        checkpoints=[CheckpointInfo('x"><script>alert(1)</script>.ckpt', "/p/<img src=x>")],
        scores={},
        overlays={},
        similarity={},
        title="<b>title</b>",
        info=[("probe <i>", "it's <here>")],
    )
    html = write_dashboard(data, tmp_path / "sub" / "d.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html
    assert "<img src=x>" not in html
    assert "<b>title</b>" not in html
    assert "&lt;b&gt;title&lt;/b&gt;" in html
    assert "it&#x27;s &lt;here&gt;" in html
    assert _parse(html).tags.count("script") == 1  # only the dashboard's own


def test_no_training_tab_without_one_run() -> None:
    assert 'data-tab="training"' not in render_html(_data())
    with_run = render_html(_data(one_run=True))
    assert 'data-tab="training"' in with_run


# --------------------------------------------------------------------------------------------------
# The dashboard written by `compare`


def test_compare_dashboard_escapes_marks_and_is_self_contained(mixed: Comparison, run: Run) -> None:
    assert mixed.code == 0, mixed.stderr
    html = (mixed.out / "index.html").read_text(encoding="utf-8")
    page = _parse(html)

    # Every checkpoint and method is there; the file name with markup is text, not markup.
    assert "model&lt;b&gt;bold.ckpt" in html
    assert "<b>" not in html
    assert "b" not in page.tags
    assert "Run &lt;i&gt;tiny&lt;/i&gt; &amp; co" in html
    for ckpt in run.epochs:
        assert ckpt.name in html
    for method in COMPARE_METHODS:
        assert f'data-method="{method}"' in html

    # Nothing is fetched: images are data URIs, no http(s) anywhere in src/href.
    assert page.links
    assert all(link.startswith("data:image/png;base64,") for link in page.links), page.links
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?:""", html)
    assert "<link" not in html

    # Best per column agrees with the numbers in metrics.json.
    payload = json.loads((mixed.out / "metrics.json").read_text(encoding="utf-8"))
    rows = [(m, ckpt) for m in payload["methods"] for ckpt in payload["checkpoints"]]
    assert len(page.rows) == len(rows) == len(COMPARE_METHODS) * 3
    for key in COMPARE_METRICS:
        values = [ckpt["scores"][m][key] for m, ckpt in rows]
        higher = payload["metrics"][key]["higher_is_better"]
        target = max(values) if higher else min(values)
        expected = {i for i, v in enumerate(values) if v == target}
        cells = [c for c in page.cells if c["data-col"] == key]
        assert [float(c["data-value"]) for c in cells] == pytest.approx(values)
        marked = {int(c["row"]) for c in cells if c["data-best"] == "true"}
        assert marked == expected, key
    assert payload["one_run"] is False  # the copy lives in another folder
    assert 'data-tab="training"' not in html
