"""The HTML dashboard: data model checks, encodings, best-value marking, escaping, the embedded
data, the live dashboard's atomic rewrites, file sizes, and the page ``compare`` writes.

``synthetic_data`` makes dashboards of any size without training (also used by the browser tests
and by ``benchmarks/bench_dashboard.py``, which prints the sizes stated in ``docs/dashboard.md``).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import os
import re
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_explain.dashboard import (
    CheckpointInfo,
    DashboardData,
    MethodRecord,
    MetricColumn,
    best_rows,
    encode_image,
    encode_map,
    image_png,
    render_html,
    write_dashboard,
)
from lightning_explain.live_dashboard import LiveDashboard
from tests.cli.conftest import COMPARE_METHODS, COMPARE_METRICS, Comparison, Run


class _Cells(HTMLParser):
    """Collects the metric-table cells, every src/href attribute, the tags and the JSON data."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.rows: list[dict[str, str]] = []
        self.links: list[str] = []
        self.tags: list[str] = []
        self.tabs: list[str] = []
        self.scripts: list[str] = []
        self._in_metrics = False
        self._script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "table":
            self._in_metrics = a.get("id") == "metric-table"
        if self._in_metrics and tag == "tr" and "data-ckpt" in a:
            self.rows.append(a)
        if self._in_metrics and tag == "td" and "data-value" in a:
            self.cells.append({**a, "row": str(len(self.rows) - 1)})
        if tag == "button" and "data-tab" in a:
            self.tabs.append(a["data-tab"])
        if tag == "script":
            self._script = True
            self.scripts.append("")
        for key in ("src", "href"):
            if key in a:
                self.links.append(a[key])

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_metrics = False
        if tag == "script":
            self._script = False

    def handle_data(self, data: str) -> None:
        if self._script:
            self.scripts[-1] += data


def _parse(html: str) -> _Cells:
    parser = _Cells()
    parser.feed(html)
    return parser


def page_data(html: str) -> Any:
    """The JSON the page's script draws from."""
    match = re.search(
        r'<script type="application/json" id="dashboard-data">(.*?)</script>', html, re.S
    )
    assert match is not None
    return json.loads(match.group(1))


def unpack_curves(block: dict[str, Any]) -> np.ndarray[Any, Any]:
    """Decode one packed block of per-pair curves as the page does."""
    levels = np.frombuffer(base64.b64decode(block["q"]), dtype="<u2").reshape(-1, block["n"])
    values = block["lo"] + levels * (block["hi"] - block["lo"]) / 65534
    return np.where(levels == 65535, np.nan, values)


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
# Synthetic dashboards of any size (no training)

SYNTHETIC_METHODS = (
    "gradcam",
    "interaction_cam",
    "input_x_gradient",
    "conditional_occlusion",
    "rise",
    "occlusion",
    "integrated_gradients",
    "smoothgrad",
)
SYNTHETIC_METRICS = (
    MetricColumn("insertion_simultaneous", True),
    MetricColumn("deletion_simultaneous", False),
    MetricColumn("average_drop_simultaneous", False),
)


def synthetic_data(
    n_ckpt: int = 8,
    n_methods: int = 4,
    n_pairs: int = 6,
    size: int = 32,
    *,
    n_steps: int = 32,
    seed: int = 0,
    title: str = "synthetic run",
) -> DashboardData:
    """A one-run dashboard with everything filled in: smooth random images and maps (bilinear
    from 5x5 noise, like class-activation maps), per-pair scores and ``n_steps + 1``-point
    curves that improve over the checkpoints, a kNN accuracy that rises, and one degenerate
    (all-zero) map: ``h1`` of pair 0 of the first method in the first checkpoint."""
    g = torch.Generator().manual_seed(seed)
    methods = list(SYNTHETIC_METHODS[:n_methods])

    def smooth(channels: int) -> torch.Tensor:
        low = torch.rand(1, channels, 5, 5, generator=g)
        return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[0]

    def image() -> torch.Tensor:
        return (0.8 * smooth(3) + 0.2 * torch.rand(3, size, size, generator=g)).clamp(0, 1)

    pairs = [(encode_image(image()), encode_image(image())) for _ in range(n_pairs)]
    start = {m: torch.stack([smooth(2) for _ in range(n_pairs)]) for m in methods}
    xs = torch.linspace(0, 1, n_steps + 1)
    records: dict[tuple[int, str], MethodRecord] = {}
    for i in range(n_ckpt):
        t = i / max(1, n_ckpt - 1)
        for j, m in enumerate(methods):
            maps = start[m] * (1 - t) + t * torch.stack([smooth(2) for _ in range(n_pairs)])
            maps = maps / maps.flatten(2).amax(2)[..., None, None]
            if i == 0 and j == 0:
                maps[0, 0] = 0.0
            rates = 2 + 3 * t + torch.rand(n_pairs, 1, generator=g)
            insertion = 1 - torch.exp(-xs * rates)
            deletion = torch.exp(-xs * rates)
            scores = {
                "insertion_simultaneous": insertion.mean(1),
                "deletion_simultaneous": deletion.mean(1),
                "average_drop_simultaneous": torch.rand(n_pairs, generator=g) * (1 - t / 2),
            }
            records[(i, m)] = MethodRecord.from_tensors(
                maps[:, 0],
                maps[:, 1],
                scores=scores,
                curves={"insertion_simultaneous": insertion, "deletion_simultaneous": deletion},
            )
    sims = {
        i: [0.5 + 0.4 * i / max(1, n_ckpt - 1) + 0.05 * float(v) for v in torch.rand(n_pairs)]
        for i in range(n_ckpt)
    }
    return DashboardData(
        checkpoints=[
            CheckpointInfo(
                f"epoch={e}-step={10 * (e + 1)}.ckpt", f"/runs/r/e{e}.ckpt", e, 10 * e + 10
            )
            for e in range(n_ckpt)
        ],
        methods=methods,
        metrics=list(SYNTHETIC_METRICS),
        scores={key: r.mean_scores() for key, r in records.items()},
        pairs=pairs,
        similarity=sims,
        one_run=True,
        title=title,
        info=[("probe", f"synthetic: {n_pairs} pairs of 3x{size}x{size} images")],
        knn_accuracy={i: 0.3 + 0.5 * i / max(1, n_ckpt - 1) for i in range(n_ckpt)},
        knn_info="synthetic kNN accuracy",
        maps={key: r.maps for key, r in records.items()},
        pair_scores={key: dict(r.scores) for key, r in records.items()},
        pair_curves={key: {k: list(v) for k, v in r.curves.items()} for key, r in records.items()},
        degenerate={key: r.degenerate for key, r in records.items()},
    )


# --------------------------------------------------------------------------------------------------
# Pure pieces


def test_best_rows_directions_ties_nan_and_exclusions() -> None:
    assert best_rows([0.1, 0.5, 0.5, math.nan], True) == [1, 2]
    assert best_rows([0.1, 0.5, math.nan, 0.1], False) == [0, 3]
    assert best_rows([math.nan, math.nan], True) == []
    assert best_rows([0.3, 0.1], None) == []
    assert best_rows([0.1, 0.9, 0.5], True, exclude=[1]) == [2]
    assert best_rows([0.1, 0.9], True, exclude=[0, 1]) == []


def test_image_encoders_accept_chw_float_hwc_uint8_and_grey() -> None:
    from PIL import Image

    for encode, fmt in ((image_png, "PNG"), (encode_image, "WEBP")):
        for image, size in (
            (torch.rand(3, 5, 7), (7, 5)),
            (torch.randint(0, 255, (5, 7, 3), dtype=torch.uint8).numpy(), (7, 5)),
            (torch.rand(1, 4, 6), (6, 4)),
        ):
            with Image.open(io.BytesIO(encode(image))) as img:
                assert img.size == size
                assert img.format == fmt
        with pytest.raises(ValueError, match="expected an image of shape"):
            encode(torch.rand(2, 3, 4, 4))
    # WebP is much smaller than PNG for a photograph-like image.
    smooth = F.interpolate(torch.rand(1, 3, 6, 6), size=(64, 64), mode="bilinear")[0]
    photo = (smooth * 0.8 + 0.2 * torch.rand(3, 64, 64)).clamp(0, 1)
    assert len(encode_image(photo)) < len(image_png(photo)) / 3


def test_encode_map_is_lossless_8_bit_grey() -> None:
    from PIL import Image

    h = torch.rand(12, 9, dtype=torch.float64)
    with Image.open(io.BytesIO(encode_map(h))) as img:
        assert img.format == "WEBP"
        levels = np.asarray(img.convert("L"))
    assert levels.shape == (12, 9)
    np.testing.assert_array_equal(levels, np.round(h.numpy() * 255).astype(np.uint8))
    assert encode_map(torch.rand(1, 4, 4, dtype=torch.bfloat16))[8:12] == b"WEBP"
    with pytest.raises(ValueError, match=r"shape \(H, W\)"):
        encode_map(torch.rand(2, 4, 4))


def test_method_record_flags_degenerate_maps_and_keeps_no_tensor() -> None:
    h1 = torch.rand(3, 8, 8)
    h2 = torch.rand(3, 8, 8)
    h1[1] = 0.0  # all zero
    h2[2] = 0.4  # constant
    record = MethodRecord.from_tensors(
        h1,
        h2,
        scores={"insertion": torch.tensor([0.1, 0.2, math.nan])},
        curves={"insertion": torch.rand(3, 5)},
    )
    assert record.degenerate == ((False, False), (True, False), (False, True))
    assert record.mean_scores() == {"insertion": pytest.approx(0.15)}
    assert len(record.mean_curves()["insertion"]) == 5
    assert all(isinstance(b, bytes) for pair in record.maps for b in pair)
    assert all(isinstance(v, float) for v in record.scores["insertion"])
    assert all(isinstance(v, float) for row in record.curves["insertion"] for v in row)
    # Encoded maps are accepted as they are, and their flags worked out from the grey levels.
    again = MethodRecord.from_tensors([a for a, _ in record.maps], [b for _, b in record.maps])
    assert again.degenerate == record.degenerate
    with pytest.raises(ValueError, match="as many maps"):
        MethodRecord.from_tensors(h1, h2[:2])


def test_method_record_from_an_engine_evaluation() -> None:
    from lightning_explain.evaluation import MethodEvaluation, MethodSpec
    from lightning_explain.explanation import PairExplanation

    h = torch.rand(2, 6, 6)
    h[0] = 0.0
    m = MethodEvaluation(
        MethodSpec("gradcam", "gradcam"),
        {},
        PairExplanation(h, torch.rand(2, 6, 6), torch.tensor([0.5, 0.7])),
        scores={"insertion_simultaneous": torch.tensor([0.3, 0.6])},
        curves={"insertion_simultaneous": torch.rand(2, 9)},
    )
    record = MethodRecord.from_evaluation(m)
    assert record.degenerate == tuple(
        tuple(bool(v) for v in row) for row in m.degenerate().tolist()
    )
    assert record.scores["insertion_simultaneous"] == pytest.approx((0.3, 0.6))
    assert np.asarray(record.curves["insertion_simultaneous"]) == pytest.approx(
        m.curves["insertion_simultaneous"].numpy(), abs=1e-6
    )


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
        ({"maps": {(0, "gradcam"): [(PNG, PNG), (PNG, PNG)]}}, "expected 1 map pairs"),
        ({"pair_scores": {(0, "rise"): {"insertion": [0.1, 0.2]}}}, "expected 1 scores"),
        ({"pair_curves": {(1, "rise"): {"insertion": []}}}, "expected 1 curves"),
        ({"degenerate": {(0, "rise"): []}}, r"expected 1 \(h1, h2\) flags"),
        ({"pairs": [(PNG, b"GIF89a...")]}, "not PNG, JPEG or WebP"),
        ({"maps": {(0, "gradcam"): [("x", PNG)]}}, "bytes of a PNG"),
    ],
)
def test_inconsistent_data_is_refused(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _data(**changes)


def test_ragged_pair_curves_are_refused() -> None:
    pairs = [(PNG, PNG), (PNG, PNG)]
    with pytest.raises(ValueError, match="one length"):
        _data(
            pairs=pairs,
            overlays={},
            similarity={},
            pair_curves={(0, "rise"): {"insertion": [[0.1, 0.2], [0.3]]}},
        )


def test_table_marks_best_per_column_with_direction() -> None:
    page = _parse(render_html(_data()))
    best = {(c["data-col"], int(c["row"])) for c in page.cells if c["data-best"] == "true"}
    # rows: gradcam/a, gradcam/b, rise/a, rise/b (grouped by method)
    assert best == {("insertion", 1), ("insertion", 2), ("deletion", 0), ("deletion", 1)}
    html = render_html(_data())
    assert "insertion ↑" in html
    assert "deletion ↓" in html
    assert ">n/a<" in html  # the NaN and the missing score


def test_no_star_on_rows_with_degenerate_maps() -> None:
    flat, fine = encode_map(torch.zeros(4, 4)), encode_map(torch.rand(4, 4))
    # gradcam on b.ckpt made a degenerate map: its insertion 0.7 may not win; rise/a's 0.7 does.
    data = _data(
        maps={(1, "gradcam"): [(flat, fine)], (0, "gradcam"): [(fine, fine)]},
        degenerate={(0, "rise"): [(False, False)]},
    )
    page = _parse(render_html(data))
    best = {(c["data-col"], int(c["row"])) for c in page.cells if c["data-best"] == "true"}
    assert best == {("insertion", 2), ("deletion", 0)}
    assert [r["data-degenerate"] for r in page.rows] == ["0", "1", "0", ""]
    assert "⚠ 1/2" in render_html(data)
    assert data.degenerate_count(1, "gradcam") == 1
    assert data.degenerate_count(1, "rise") is None  # no maps, no flags: unknown


def test_knn_column_ignores_degenerate_maps() -> None:
    flat = encode_map(torch.zeros(4, 4))
    data = _data(maps={(1, "gradcam"): [(flat, flat)]}, knn_accuracy={0: 0.5, 1: 0.8})
    page = _parse(render_html(data))
    knn = [c for c in page.cells if c["data-col"] == "knn_accuracy"]
    assert [c["data-best"] for c in knn] == ["false", "true", "false", "true"]


def test_user_strings_are_escaped_and_cannot_leave_the_json(tmp_path: Path) -> None:
    evil = "</script><script>alert(1)</script><!--"
    data = _data(
        checkpoints=[CheckpointInfo('x"><script>alert(1)</script>.ckpt', "/p/<img src=x>")],
        methods=[evil, "rise"],
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
    page = _parse(html)
    assert page.tags.count("script") == 2  # the data and the dashboard's own code
    assert html.count("</script>") == 2
    payload = page_data(html)
    assert payload["methods"][0] == evil  # the JSON carries the string, escaped
    assert payload["ckpts"][0]["n"] == 'x"><script>alert(1)</script>.ckpt'
    assert "\\u003c/script\\u003e" in html


def test_tabs_summary_first_and_training_only_for_one_run() -> None:
    page = _parse(render_html(_data()))
    assert page.tabs[0] == "summary"
    assert page.tabs == ["summary", "pair", "diff", "heatmaps", "curves", "metrics", "run"]
    assert 'data-tab="training"' not in render_html(_data())
    assert 'data-tab="training"' in render_html(_data(one_run=True))


def test_embedded_data_round_trips(tmp_path: Path) -> None:
    data = synthetic_data(3, 2, 2, 8, n_steps=4)
    payload = page_data(render_html(data))
    assert payload["order"] == [0, 1, 2]
    assert payload["x"] == {"label": "epoch", "v": [0.0, 1.0, 2.0]}
    assert payload["curveKeys"] == ["insertion_simultaneous", "deletion_simultaneous"]
    for i in range(3):
        for j, m in enumerate(data.methods):
            scores = data.pair_scores[(i, m)]
            for k, column in enumerate(data.metrics):
                assert payload["pairScores"][i][j][k] == pytest.approx(scores[column.key], abs=1e-6)
            for c, key in enumerate(payload["curveKeys"]):
                rows = unpack_curves(payload["pairCurves"][i][j][c])
                assert rows == pytest.approx(np.asarray(data.pair_curves[(i, m)][key]), abs=1e-4)
            # The page takes the mean of the per-pair curves itself.
            assert payload["curves"][i][j] == [None, None]
            flags = "".join(f"{int(a)}{int(b)}" for a, b in data.degenerate[(i, m)])
            assert payload["deg"][i][j] == flags
            assert payload["maps"][i][j][0][0] == base64.b64encode(data.maps[(i, m)][0][0]).decode()
    assert payload["deg"][0][0].startswith("10")  # the synthetic degenerate map
    assert len(base64.b64decode(payload["lut"]["seq"])) == 768


def test_checkpoints_of_one_run_are_ordered_by_epoch() -> None:
    data = _data(
        checkpoints=[CheckpointInfo("late", epoch=5), CheckpointInfo("early", epoch=1)],
        one_run=True,
    )
    assert data.axis() == ("epoch", [5.0, 1.0])
    assert data.order() == [1, 0]
    assert page_data(render_html(data))["order"] == [1, 0]
    # Not one run: positions, in the order given.
    assert _data().axis() == ("checkpoint", [0.0, 1.0])


def test_downstream_tab_keeps_its_tables_and_static_picture() -> None:
    data = synthetic_data(4, 2, 2, 8, n_steps=4)
    html = render_html(data)
    page = _parse(html)
    assert "downstream" in page.tabs
    assert 'id="correlation-table"' in html
    assert 'id="knn-table"' in html
    assert re.search(
        r'<figure id="correlation-scatter">.*?<img [^>]*src="data:image/png;base64,', html, re.S
    )
    assert 'id="scatter-view"' in html
    knn = [c for c in page.cells if c["data-col"] == "knn_accuracy"]
    assert len(knn) == 4 * 2
    lean = render_html(data, static_scatter=False)
    assert "data:image/png" not in lean
    assert 'id="correlation-table"' in lean


# --------------------------------------------------------------------------------------------------
# Live dashboard


def _probe(n: int = 3, size: int = 8) -> Any:
    from lightning_explain.data.probe import ProbeSet

    return ProbeSet(
        x1=torch.rand(n, 3, size, size),
        x2=torch.rand(n, 3, size, size),
        indices=tuple(range(n)),
        seed=0,
        pairing="two_views",
        source="synthetic",
    )


def _evaluation(n: int, size: int, step: int, knn: float | None = None) -> Any:
    from lightning_explain.evaluation import MethodEvaluation, MethodSpec, ProbeEvaluation
    from lightning_explain.explanation import PairExplanation

    g = torch.Generator().manual_seed(step)
    methods = tuple(
        MethodEvaluation(
            MethodSpec(name, name),
            {},
            PairExplanation(
                torch.rand(n, size, size, generator=g),
                torch.rand(n, size, size, generator=g),
                torch.rand(n, generator=g),
            ),
            scores={
                "insertion_simultaneous": torch.rand(n, generator=g),
                "deletion_simultaneous": torch.rand(n, generator=g),
            },
            curves={"insertion_simultaneous": torch.rand(n, 5, generator=g)},
        )
        for name in ("gradcam", "interaction_cam")
    )
    return ProbeEvaluation(torch.rand(n, generator=g), methods, knn_accuracy=knn)


def test_live_dashboard_feeds_from_probe_evaluation(tmp_path: Path) -> None:
    path = tmp_path / "live" / "explain.html"
    live = LiveDashboard(path, _probe(3), title="run <7>", max_evaluations=4)
    assert live.write() == path
    assert not path.exists()  # nothing to show yet
    for epoch in range(6):
        live.add_evaluation(
            _evaluation(3, 8, 100 * epoch, knn=0.1 * epoch), epoch=epoch, global_step=100 * epoch
        )
        html = path.read_text(encoding="utf-8")
        assert html.rstrip().endswith("</html>")
    assert len(live) == 4
    payload = page_data(html)
    steps = [c["s"] for c in payload["ckpts"]]
    assert (steps[0], steps[-1]) == (0, 500)  # the first and the latest are kept
    assert steps == sorted(steps)
    assert payload["ckpts"][-1]["n"] == "epoch 5 · step 500"
    assert payload["methods"] == ["gradcam", "interaction_cam"]
    assert [m["k"] for m in payload["metrics"]] == [
        "insertion_simultaneous",
        "deletion_simultaneous",
    ]
    assert [m["h"] for m in payload["metrics"]] == [True, False]  # from the metric registry
    assert payload["knn"][-1] == pytest.approx(0.5)
    assert payload["live"]["refresh"] == 30.0
    assert "run &lt;7&gt;" in html
    assert 'id="auto-reload"' in html
    assert "data:image/png" not in html  # no matplotlib picture in a page rewritten per epoch
    # Bounded memory: the kept evaluations hold bytes and floats, no tensor.
    for evaluation in live._evaluations:
        for record in evaluation.methods.values():
            assert all(isinstance(b, bytes) for pair in record.maps for b in pair)
        assert all(isinstance(v, float) for v in evaluation.sim)
    # Another probe set: the evaluations of the old pairs are dropped.
    live.set_probe(_probe(2))
    assert len(live) == 0
    with pytest.raises(ValueError, match="probe set has 2 pairs"):
        live.add_evaluation(_evaluation(3, 8, 1), epoch=9, global_step=900)


def test_live_dashboard_resumes_from_its_page(tmp_path: Path) -> None:
    """A new LiveDashboard on the page of an earlier one (a resumed run) takes back the
    evaluations before the resume step, as the page showed them; another probe set's page is
    left to be replaced."""
    path = tmp_path / "index.html"
    probe = _probe(3)
    first = LiveDashboard(path, probe)
    for epoch in range(4):
        first.add_evaluation(
            _evaluation(3, 8, 10 * epoch, knn=0.1 * epoch), epoch=epoch, global_step=10 * epoch
        )
    before = page_data(path.read_text(encoding="utf-8"))

    again = LiveDashboard(path, probe)
    assert again.resume(before_step=30) == 3  # steps 0, 10, 20; step 30 is computed again
    assert [e.info.global_step for e in again._evaluations] == [0, 10, 20]
    for old, new in zip(first._evaluations, again._evaluations):
        assert new.info == CheckpointInfo(old.info.name, "", old.info.epoch, old.info.global_step)
        assert new.knn_accuracy == pytest.approx(old.knn_accuracy, rel=1e-5)
        assert new.sim == pytest.approx(old.sim, rel=1e-5)
        assert list(new.methods) == list(old.methods)
        for label, record in old.methods.items():
            back = new.methods[label]
            assert back.maps == record.maps  # the very bytes
            assert back.degenerate == record.degenerate
            for key, values in record.scores.items():
                assert back.scores[key] == pytest.approx(values, rel=1e-5)
            for key, rows in record.curves.items():
                assert np.allclose(back.curves[key], rows, atol=1e-4)
    again.add_evaluation(_evaluation(3, 8, 30, knn=0.3), epoch=3, global_step=30)
    after = page_data(path.read_text(encoding="utf-8"))
    assert [c["s"] for c in after["ckpts"]] == [0, 10, 20, 30]
    assert after["maps"] == before["maps"]
    assert after["pairScores"] == before["pairScores"]
    assert after["metrics"] == before["metrics"]

    # Another probe set (other images), a page that is not a live one, no page: nothing back.
    assert LiveDashboard(path, _probe(3)).resume() == 0  # random images: other pairs
    assert LiveDashboard(tmp_path / "none.html", probe).resume() == 0
    compare_page = tmp_path / "compare.html"
    write_dashboard(dataclasses.replace(first.data(), refresh_seconds=None), compare_page)
    assert LiveDashboard(compare_page, probe).resume() == 0
    torn = tmp_path / "torn.html"
    torn.write_text(path.read_text(encoding="utf-8")[:5000], encoding="utf-8")
    assert LiveDashboard(torn, probe).resume() == 0


def test_live_dashboard_checks_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of them"):
        LiveDashboard(tmp_path / "x.html")
    with pytest.raises(ValueError, match="max_evaluations"):
        LiveDashboard(tmp_path / "x.html", _probe(), max_evaluations=1)
    live = LiveDashboard(tmp_path / "x.html", pairs=[(PNG, PNG)])
    with pytest.raises(ValueError, match="no evaluation"):
        live.data()
    with pytest.raises(ValueError, match="expected 1 similarities"):
        live.add(epoch=0, global_step=0, methods={}, sim=[0.1, 0.2])


def test_live_rewrites_are_atomic_for_a_concurrent_reader(tmp_path: Path) -> None:
    """A reader thread reads the page while it is rewritten in a loop: every read is a complete
    page whose embedded JSON parses."""
    path = tmp_path / "live.html"
    live = LiveDashboard(path, _probe(4, 16), max_evaluations=50)
    live.add_evaluation(_evaluation(4, 16, 0), epoch=0, global_step=0)
    stop = threading.Event()
    reads: list[int] = []
    broken: list[str] = []

    def reader() -> None:
        done = False
        while not done:
            done = stop.is_set()  # the read after `stop` starts after the last rewrite
            html = path.read_text(encoding="utf-8")
            try:
                assert html.startswith("<!DOCTYPE html>")
                assert html.endswith("</html>\n")
                reads.append(len(page_data(html)["ckpts"]))
            except (AssertionError, ValueError) as err:
                broken.append(f"{type(err).__name__}: {err} ({len(html)} characters)")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for epoch in range(1, 16):
            live.add_evaluation(_evaluation(4, 16, epoch), epoch=epoch, global_step=epoch)
            time.sleep(0.005)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert broken == []
    assert len(reads) > 15
    assert reads == sorted(reads)  # a reader sees the evaluations grow, never a torn state
    assert reads[-1] == 16
    assert not list(tmp_path.glob(".live.html.*"))  # no temporary file left behind
    # The usual permissions (umask applied), not mkstemp's owner-only 0o600.
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# --------------------------------------------------------------------------------------------------
# Sizes


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def test_dashboard_sizes() -> None:
    """The demo's shape (8 checkpoints x 4 methods x 6 pairs, 32 px) stays small; the large
    shape is checked by the browser test, the figures of docs/dashboard.md come from
    ``benchmarks/bench_dashboard.py``."""
    demo = render_html(synthetic_data(8, 4, 6, 32))
    print(f"\ndashboard size: 8 checkpoints x 4 methods x 6 pairs: {_mb(len(demo.encode()))}")
    assert len(demo.encode()) < 600_000
    # Maps are the bulk: about 400 bytes per 32 x 32 map (8 x 4 x 6 x 2 of them), base64 included.
    maps = sum(len(a) + len(b) for row in page_data(demo)["maps"] for cell in row for a, b in cell)
    assert maps < 8 * 4 * 6 * 2 * 600


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

    # Nothing is fetched: the only src/href are data URIs (none without kNN), no http(s), no link.
    assert all(link.startswith("data:image/") for link in page.links), page.links
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?:""", html)
    assert "<link" not in html
    assert not re.search(r"https?://", "".join(page.scripts))

    # The data for the interactive views: maps, per-pair scores and curves of every cell.
    payload = page_data(html)
    assert payload["nPairs"] == 4
    assert [c["n"] for c in payload["ckpts"]] == [
        run.epochs[0].name,
        run.epochs[1].name,
        "model<b>bold.ckpt",
    ]
    for i in range(3):
        for j in range(len(COMPARE_METHODS)):
            assert len(payload["maps"][i][j]) == 4
            assert all(mime.startswith("UklGR") for pair in payload["maps"][i][j] for mime in pair)
            assert len(payload["pairScores"][i][j][0]) == 4
            for block in payload["pairCurves"][i][j]:
                assert unpack_curves(block).shape == (4, 9)  # --n-steps 8
            assert len(payload["deg"][i][j]) == 8
    assert all(b64.startswith("UklGR") for pair in payload["img"] for b64 in pair)  # WebP

    # Best per column agrees with the numbers in metrics.json, skipping degenerate rows.
    metrics = json.loads((mixed.out / "metrics.json").read_text(encoding="utf-8"))
    rows = [(m, ckpt) for m in metrics["methods"] for ckpt in metrics["checkpoints"]]
    assert len(page.rows) == len(rows) == len(COMPARE_METHODS) * 3
    flat = [r["data-degenerate"] not in ("", "0") for r in page.rows]
    for key in COMPARE_METRICS:
        values = [ckpt["scores"][m][key] for m, ckpt in rows]
        higher = metrics["metrics"][key]["higher_is_better"]
        eligible = [v for v, f in zip(values, flat) if not f and math.isfinite(v)]
        target = (max(eligible) if higher else min(eligible)) if eligible else None
        expected = {i for i, v in enumerate(values) if v == target and not flat[i]}
        cells = [c for c in page.cells if c["data-col"] == key]
        assert [float(c["data-value"]) for c in cells] == pytest.approx(values)
        marked = {int(c["row"]) for c in cells if c["data-best"] == "true"}
        assert marked == expected, key
    assert metrics["one_run"] is False  # the copy lives in another folder
    assert 'data-tab="training"' not in html
