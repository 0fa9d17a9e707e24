"""The dashboard's Correspondence tab: the data model, the HTML, the live dashboard of a fit with
``interactions=`` (also resumed), and the page in headless Chromium (slider, filters, no
horizontal overflow at 390 and 1400 px)."""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lightning_explain import evaluate_probe
from lightning_explain.callback import PairExplanationCallback
from lightning_explain.correspondence import random_views
from lightning_explain.dashboard import (
    CheckpointInfo,
    CorrespondenceRecord,
    DashboardData,
    MetricColumn,
    encode_image,
    render_html,
    write_dashboard,
)
from lightning_explain.dashboard_correspondence import restore_correspondence
from lightning_explain.data.probe import ProbeSet
from lightning_explain.live_dashboard import LiveDashboard
from tests.callback.helpers import FAST, base_images, make_module_class, trainer
from tests.cli._browser import chromium_path, open_page

SSL = make_module_class("lightning.pytorch")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 4, stride=4),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).eval()


def _decoded(blob: bytes) -> tuple[int, int, int]:
    """Width, height and number of grey levels of an encoded picture."""
    with Image.open(io.BytesIO(blob)) as img:
        img.load()
        return img.width, img.height, len(np.unique(np.asarray(img.convert("L"))))


def _data(n_ckpt: int = 3, n_pairs: int = 2) -> DashboardData:
    """A dashboard whose correspondence records are real renderings of a real evaluation."""
    probe = random_views(base_images(n_pairs, 32, seed=3), seed=0).to_probe_set()
    result = evaluate_probe(_net(), probe, ["gradcam"], [], interactions=["point_to_point"])
    (r,) = result.interactions
    record = CorrespondenceRecord.from_evaluation(0, r, probe.x1, probe.x2)
    records = [
        CorrespondenceRecord(
            i,
            "point_to_point",
            record.matches,
            {"accuracy": (0.2 * i, 0.1), "error_px": (4.0 - i, 2.0)},
        )
        for i in range(n_ckpt)
    ]
    pair = (encode_image(np.zeros((8, 8, 3))),) * 2
    return DashboardData(
        checkpoints=[CheckpointInfo(f"e{i}<b>.ckpt", epoch=i) for i in range(n_ckpt)],
        methods=["gradcam"],
        metrics=[MetricColumn("insertion_simultaneous", True)],
        scores={(i, "gradcam"): {"insertion_simultaneous": 0.5} for i in range(n_ckpt)},
        pairs=[pair] * n_pairs,
        one_run=True,
        correspondence=records,
    )


def test_records_render_into_a_tab_with_scores_and_decodable_images() -> None:
    data = _data()
    page = render_html(data, static_scatter=False)
    assert 'data-tab="correspondence"' in page
    assert "e0&lt;b&gt;.ckpt" in page
    assert "e0<b>.ckpt" not in page
    # Mean accuracy per checkpoint: (0 + 0.1) / 2, (0.2 + 0.1) / 2, (0.4 + 0.1) / 2; best marked.
    cells = re.findall(r'data-col="accuracy" data-value="([^"]+)">(★ )?([^<]+)</td>', page)
    assert [float(v) for v, _, _ in cells] == pytest.approx([0.05, 0.15, 0.25])
    assert [bool(star) for _, star, _ in cells] == [False, False, True]
    assert [text for _, _, text in cells] == ["5.0%", "15.0%", "25.0%"]
    trend = re.search(r'<figure class="corr-trend">(.*?)</figure>', page, re.S)
    assert trend is not None
    assert trend.group(1).count("<circle") == 3
    restored = restore_correspondence(page)
    assert sorted(restored) == [0, 1, 2]
    for i, (record,) in restored.items():
        assert record == data.correspondence[i]
        for blob in record.matches:
            width, height, levels = _decoded(blob)
            assert width > 2 * height - 20
            assert height >= 96
            assert levels > 8
    payload = re.search(r'id="correspondence-data">(.*?)</script>', page, re.S)
    assert payload is not None
    assert json.loads(payload.group(1))["methods"] == ["point_to_point"]
    # A page without interactions has no tab and no extra script.
    data.correspondence = ()
    plain = render_html(data, static_scatter=False)
    assert 'data-tab="correspondence"' not in plain
    assert plain.count("<script") == 2


def test_records_are_validated() -> None:
    data = _data(2)
    record = data.correspondence[0]
    with pytest.raises(ValueError, match="checkpoint index 5"):
        replace(data, correspondence=[CorrespondenceRecord(5, "p", record.matches)])
    with pytest.raises(ValueError, match="expected 2 renderings"):
        replace(data, correspondence=[CorrespondenceRecord(0, "p", record.matches[:1])])
    with pytest.raises(ValueError, match="two entries"):
        replace(data, correspondence=[record, record])
    with pytest.raises(ValueError, match="not PNG, JPEG or WebP"):
        replace(data, correspondence=[CorrespondenceRecord(0, "p", (b"nope", b"nope"))])


def test_without_geometry_the_tab_says_so() -> None:
    data = _data(2)
    data.correspondence = [
        CorrespondenceRecord(r.checkpoint, r.method, r.matches) for r in data.correspondence
    ]
    page = render_html(data, static_scatter=False)
    assert "No view geometry was recorded" in page
    assert "corr-table" not in page
    assert len(restore_correspondence(page)[1][0].matches) == 2


def test_live_dashboard_of_a_fit_shows_correspondences_and_resumes_them(tmp_path: Path) -> None:
    probe = random_views(base_images(3, 32, seed=3), seed=0, size=16).to_probe_set()
    probe.save(tmp_path / "probe.pt")
    options = {k: v for k, v in FAST.items() if k != "probe"}
    folder = tmp_path / "live"
    cb = PairExplanationCallback(
        ["gradcam"],
        probe={"source": str(tmp_path / "probe.pt")},
        interactions=["point_to_point"],
        dashboard_dir=folder,
        **options,
    )
    trainer(callbacks=[cb], default_root_dir=tmp_path, max_epochs=2).fit(SSL())
    assert cb.error_count == 0
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert 'data-tab="correspondence"' in page
    records = restore_correspondence(page)
    assert sorted(records) == [0, 1]  # one per evaluation (epoch)
    for (record,) in records.values():
        assert record.method == "point_to_point"
        assert len(record.matches) == 3
        assert all(_decoded(b)[2] > 8 for b in record.matches)
        acc = [v for v in record.scores["accuracy"] if math.isfinite(v)]
        assert acc
        assert all(0.0 <= v <= 1.0 for v in acc)
    # A new dashboard of the same probe takes the page's evaluations back, correspondences too.
    live = LiveDashboard(folder / "index.html", ProbeSet.load(tmp_path / "probe.pt"))
    assert live.resume() == 2
    again = live.data().correspondence
    assert [(c.checkpoint, c.method) for c in again] == [
        (0, "point_to_point"),
        (1, "point_to_point"),
    ]
    assert [c.matches for c in again] == [records[0][0].matches, records[1][0].matches]
    assert again[1].scores["accuracy"] == pytest.approx(
        records[1][0].scores["accuracy"], nan_ok=True
    )


def test_live_add_checks_the_pair_count() -> None:
    live = LiveDashboard("unused.html", pairs=[(encode_image(np.zeros((4, 4))),) * 2] * 2)
    record = CorrespondenceRecord(0, "bilrp", (), {"accuracy": (0.5,)})
    with pytest.raises(ValueError, match="correspondence 'bilrp' has results for \\[1\\] pairs"):
        live.add(epoch=0, global_step=1, methods={}, correspondence=[record], write=False)


@pytest.mark.browser
@pytest.mark.skipif(chromium_path() is None, reason="headless Chromium is not installed")
def test_the_tab_in_a_browser_slider_filters_and_no_overflow(tmp_path: Path) -> None:
    path = write_dashboard(_data(3, 2), tmp_path / "index.html", static_scatter=False)
    url = path.resolve().as_uri()
    with open_page(url, width=1400, height=1000) as page:
        assert page.evaluate("document.documentElement.dataset.ready") == "true"
        page.evaluate("dashboard.show('correspondence')")
        visible = (
            "Array.from(document.querySelectorAll('.corr-ckpt'))"
            ".filter(e => e.getClientRects().length > 0).map(e => e.dataset.ckpt)"
        )
        # One checkpoint at a time, the latest first; its images decoded.
        assert page.evaluate(visible) == ["2"]
        loaded = page.evaluate(
            "Array.from(document.querySelectorAll('.corr-ckpt.corr-on img'))"
            ".map(i => i.complete && i.naturalWidth > 0)"
        )
        assert loaded == [True, True]
        page.evaluate(
            "(() => { const r = document.querySelector('input.corr-step'); r.value = '0';"
            " r.dispatchEvent(new Event('input')); })()"
        )
        assert page.evaluate(visible) == ["0"]
        assert page.evaluate("document.querySelector('.corr-method output').textContent") == (
            "e0<b>.ckpt"
        )
        # The checkpoint filter hides the row and the slider's step.
        page.evaluate(
            "(() => { const b = document.querySelector('.filters input[data-kind=ckpt][value=\"0\"]');"
            " b.checked = false; b.dispatchEvent(new Event('change')); })()"
        )
        page.evaluate("new Promise(r => setTimeout(r, 50))", await_promise=True)
        rows = page.evaluate(
            "Array.from(document.querySelectorAll('.corr-table tbody tr'))"
            ".filter(e => e.getClientRects().length > 0).map(e => e.dataset.ckpt)"
        )
        assert rows == ["1", "2"]
        assert page.evaluate(visible) == ["1"]
        assert page.evaluate("document.querySelector('input.corr-step').max") == "1"
        for width in (1400, 390):
            page.set_viewport(width, 900)
            page.evaluate(
                "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))",
                await_promise=True,
            )
            scroll, inner = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
            assert scroll <= inner, (width, scroll, inner)
        page.evaluate("1")
        assert page.errors() == []
        assert [u for u in page.requests if not (u == url or u.startswith("data:"))] == []
