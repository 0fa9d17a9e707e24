"""Open dashboards in headless Chromium (Debian's ``chromium``) and drive every interaction over
the DevTools protocol with real mouse and key events.

Checked on every page: no console error, uncaught exception or error log entry; no request other
than the file itself and ``data:`` URIs; no horizontal page scroll at 390 and 1400 px on any tab
(``document.documentElement.scrollWidth <= innerWidth``). On a synthetic dashboard (known data):
the summary, filters acting on every tab and on chart series, hover values, drag-zoom, the
single-pair slider (mouse-free: arrow keys) changing the images, the difference view's pixels,
the lightbox, sorting. On the pages ``compare`` writes from a real tiny run: the same basics.

Set ``LIGHTNING_EXPLAIN_DASHBOARD_SCREENSHOT=<png>`` to keep the screenshot of the one-run
dashboard's Pair tab (this is how ``docs/_static/dashboard.png`` is made). The load and tab
timings stated in ``docs/dashboard.md`` come from ``benchmarks/bench_dashboard.py --browser``;
``-k large`` prints the same for a 20 x 8 x 16 page.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lightning_explain.dashboard import DashboardData, write_dashboard
from tests.cli._browser import Page, chromium_path, open_page
from tests.cli.conftest import COMPARE_METHODS, Comparison, Run
from tests.cli.test_dashboard import synthetic_data

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="headless Chromium is not installed (apt-get install -y chromium)",
    ),
]

WIDTHS = (1400, 390)


def _js(value: object) -> str:
    return json.dumps(value)


def _idle(page: Page) -> None:
    page.evaluate("dashboard.idle()", await_promise=True)


def _show(page: Page, tab: str) -> None:
    page.evaluate(f"document.querySelector('nav.tabs button[data-tab={tab}]').click()")
    _idle(page)


def _count(page: Page, selector: str, visible: bool = False) -> int:
    test = ".filter(e => e.getClientRects().length > 0)" if visible else ""
    return int(
        page.evaluate(f"Array.from(document.querySelectorAll({_js(selector)})){test}.length")
    )


def _tabs(page: Page) -> list[str]:
    tabs: list[str] = page.evaluate(
        "Array.from(document.querySelectorAll('nav.tabs button')).map(b => b.dataset.tab)"
    )
    return tabs


def _overflow(page: Page, shots: Path | None = None) -> dict[str, Any]:
    """Every tab at every width: the tabs where the page scrolls sideways."""
    bad: dict[str, Any] = {}
    for width in WIDTHS:
        page.set_viewport(width, 900)
        page.evaluate(
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))",
            await_promise=True,
        )
        for tab in _tabs(page):
            _show(page, tab)
            scroll, inner = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
            if scroll > inner:
                bad[f"{tab}@{width}"] = (scroll, inner)
            if shots is not None:
                page.screenshot(shots / f"{tab}_{width}.png")
    page.set_viewport(1400, 1000)
    return bad


def _clean(page: Page, url: str) -> None:
    page.evaluate("1")  # drain the events raised by the interactions
    assert page.errors() == []
    outside = [u for u in page.requests if not (u == url or u.startswith("data:"))]
    assert outside == []
    assert url in page.requests


def _shown(value: float) -> str:
    """A number as the page prints it: 6 significant digits in the data, then 4 decimals."""
    return f"{float(f'{value:.6g}'):.4f}"


def _center(page: Page, selector: str) -> tuple[float, float, float, float]:
    """Scroll the element into view; its viewport box (left, top, width, height)."""
    box: list[float] = page.evaluate(
        f"(() => {{ const e = document.querySelector({_js(selector)}); e.scrollIntoView({{block: 'center'}});"
        " const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()"
    )
    return box[0], box[1], box[2], box[3]


# --------------------------------------------------------------------------------------------------
# A synthetic dashboard: every interaction, against known data


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[DashboardData, Path]:
    data = synthetic_data(5, 3, 4, 24, n_steps=8, title="synthetic <b>run</b>")
    path = write_dashboard(data, tmp_path_factory.mktemp("synthetic") / "index.html")
    return data, path


@pytest.fixture(scope="module")
def synthetic_page(
    synthetic: tuple[DashboardData, Path],
) -> Iterator[tuple[Page, DashboardData, str]]:
    data, path = synthetic
    url = path.resolve().as_uri()
    with open_page(url, width=1400, height=1000) as page:
        assert page.evaluate("document.documentElement.dataset.ready") == "true"
        _idle(page)
        yield page, data, url


def test_summary_answers_the_first_questions(
    synthetic_page: tuple[Page, DashboardData, str],
) -> None:
    page, data, _ = synthetic_page
    assert page.evaluate("document.documentElement.dataset.tab") == "summary"
    text = page.evaluate("document.querySelector('#summary-view').innerText")
    assert "Is the model looking at the right thing, and is it getting better?" in text
    assert _count(page, "#summary-view .method-card") == 3
    assert _count(page, "#summary-knn") == 1
    # A trend per method and metric, drawn as a chart with hover values.
    assert _count(page, "#summary-view .trend svg") == 3 * 3 + 1
    # The synthetic data improve: every card says so; the first also counts its degenerate map.
    verdicts = page.evaluate(
        "Array.from(document.querySelectorAll('#summary-view .method-card .verdict')).map(v => v.textContent)"
    )
    assert verdicts == ["improving"] * 3
    assert (
        page.evaluate(
            "document.querySelector('.method-card[data-m=\"0\"] .deg-line').dataset.degenerate"
        )
        == "1"
    )
    assert (
        page.evaluate(
            "document.querySelector('.method-card[data-m=\"1\"] .deg-line').dataset.degenerate"
        )
        == "0"
    )
    assert "\u03c1 kNN" in text
    first = float(f"{data.score(0, 'gradcam', 'insertion_simultaneous'):.6g}")
    last = float(f"{data.score(4, 'gradcam', 'insertion_simultaneous'):.6g}")
    assert f"{first:.4f} → {last:.4f}" in text
    assert f"+{last - first:.4f} better" in text
    # The latest maps of the first pairs are drawn.
    assert _count(page, "#summary-view .latest canvas[data-drawn=true]") == 3 * 4 * 2
    # Hover a trend: a tooltip with the checkpoint and the value.
    left, top, width, height = _center(page, '#summary-view .trend[data-j="1"][data-k="0"] svg')
    page.mouse("mouseMoved", left + width - 3, top + height / 2)
    tip = page.evaluate(
        'document.querySelector(\'#summary-view .trend[data-j="1"][data-k="0"] .tip\').innerText'
    )
    assert "epoch 4" in tip
    assert _shown(data.score(4, "interaction_cam", "insertion_simultaneous")) in tip


def test_charts_hover_zoom_and_follow_the_filters(
    synthetic_page: tuple[Page, DashboardData, str],
) -> None:
    page, data, _ = synthetic_page
    _show(page, "training")
    chart = "#training-charts .chart"
    assert _count(page, "#training-charts .card") == 3 + 3  # metrics, kNN, similarity, degenerate
    assert _count(page, f"{chart} path.series[data-m='0']") == 3 + 1  # 3 metrics + degenerate maps

    # Hover: a guide line and the value of every method at the nearest epoch.
    left, top, width, height = _center(page, f"{chart} svg")
    page.mouse("mouseMoved", left + width - 20, top + height / 2)
    tip = page.evaluate(f"document.querySelector('{chart} .tip').innerText")
    assert "epoch 4" in tip
    for j, method in enumerate(data.methods):
        assert f"{method}: {_shown(data.score(4, method, 'insertion_simultaneous'))}" in tip, j
    assert page.evaluate(f"document.querySelector('{chart} .tip').hidden") is False

    # Drag to zoom on the epochs 1..3, double-click to reset.
    page.mouse("mousePressed", left + 52 + (width - 70) * 0.2, top + height / 2)
    page.mouse("mouseMoved", left + 52 + (width - 70) * 0.5, top + height / 2)
    page.mouse("mouseReleased", left + 52 + (width - 70) * 0.8, top + height / 2)
    zoom = page.evaluate(f"document.querySelector('{chart}').dataset.zoom")
    lo, hi = (float(v) for v in zoom.split(","))
    assert 0.5 < lo < 1.5
    assert 2.5 < hi < 3.5
    assert (
        page.evaluate(
            f"document.querySelector('{chart}').querySelectorAll('circle.dot[data-m=\"0\"]').length"
        )
        == 3
    )
    page.mouse("mousePressed", left + width / 2, top + height / 2, clicks=1)
    page.mouse("mouseReleased", left + width / 2, top + height / 2, clicks=1)
    page.mouse("mousePressed", left + width / 2, top + height / 2, clicks=2)
    page.mouse("mouseReleased", left + width / 2, top + height / 2, clicks=2)
    assert page.evaluate(f"document.querySelector('{chart}').dataset.zoom") == ""

    # Method filter: its series leave every chart, its rows every table, its card the summary.
    box = "document.querySelector('.filters input[data-kind=m][value=\"0\"]')"
    page.evaluate(f"{box}.click()")
    _idle(page)
    assert _count(page, f"{chart} path.series[data-m='0']") == 0
    assert _count(page, f"{chart} path.series[data-m='1']") == 3 + 1
    assert "gradcam" not in page.evaluate("document.querySelector('#training-view').innerText")
    assert _count(page, "#metric-table tr[data-m='0']", visible=True) == 0
    _show(page, "summary")
    assert _count(page, "#summary-view .method-card") == 2
    _show(page, "pair")
    assert _count(page, "#pair-view .method-row") == 2
    _show(page, "heatmaps")
    assert _count(page, "#heatmap-table th[data-m]") == 2
    assert page.evaluate("location.hash").find("xm=0") > 0  # kept in the URL
    page.evaluate(f"{box}.click()")
    _idle(page)
    assert _count(page, "#heatmap-table th[data-m]") == 3

    # Checkpoint filter: its points leave the charts, its step the slider, its row the grid.
    ckpt = "document.querySelector('.filters input[data-kind=ckpt][value=\"2\"]')"
    page.evaluate(f"{ckpt}.click()")
    _idle(page)
    assert _count(page, "#heatmap-table tbody tr") == 4
    _show(page, "training")
    assert (
        page.evaluate(
            f"document.querySelector('{chart}').querySelectorAll('circle.dot[data-m=\"0\"]').length"
        )
        == 4
    )
    _show(page, "pair")
    assert page.evaluate("document.querySelector('#pair-slider').max") == "3"
    assert _count(page, "#checkpoint-table tr[data-ckpt='2']", visible=False) == 1
    page.evaluate("document.querySelector('.filters [data-all]').click()")
    _idle(page)
    assert page.evaluate("document.querySelector('#pair-slider').max") == "4"


def _pictures(page: Page, selector: str) -> list[str]:
    pictures: list[str] = page.evaluate(
        f"Array.from(document.querySelectorAll({_js(selector)})).map(c => c.toDataURL())"
    )
    return pictures


def test_one_pair_through_the_checkpoints(synthetic_page: tuple[Page, DashboardData, str]) -> None:
    page, data, _ = synthetic_page
    _show(page, "pair")
    overlays = "#pair-view canvas[data-kind=overlay]"
    assert page.evaluate("document.querySelector('#pair-slider').value") == "4"
    assert set(
        page.evaluate(f"Array.from(document.querySelectorAll('{overlays}')).map(c => c.dataset.ck)")
    ) == {"4"}
    assert _count(page, f"{overlays}[data-drawn=true]") == 3 * 2
    before = _pictures(page, overlays)
    label = page.evaluate("document.querySelector('#pair-ck-label').textContent")
    assert "epoch 4" in label

    # The arrow keys scrub the pair through the checkpoints: other maps, another label.
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.key("ArrowLeft")
    _idle(page)
    assert page.evaluate("document.querySelector('#pair-slider').value") == "3"
    assert set(
        page.evaluate(f"Array.from(document.querySelectorAll('{overlays}')).map(c => c.dataset.ck)")
    ) == {"3"}
    after = _pictures(page, overlays)
    assert all(a != b for a, b in zip(before, after))
    assert "epoch 3" in page.evaluate("document.querySelector('#pair-ck-label').textContent")

    # Moving the slider itself does the same; the first checkpoint shows the degenerate map.
    page.evaluate(
        "(() => { const s = document.querySelector('#pair-slider'); s.value = 0;"
        " s.dispatchEvent(new Event('input', {bubbles: true})); })()"
    )
    _idle(page)
    assert page.evaluate(f"document.querySelector('{overlays}').dataset.ck") == "0"
    assert _count(page, "#pair-view .method-row[data-m='0'] .badge") == 1
    # Focus on the slider: the browser's own arrow-key handling moves it.
    page.evaluate("document.querySelector('#pair-slider').focus()")
    page.key("ArrowRight")
    _idle(page)
    assert page.evaluate("document.querySelector('#pair-slider').value") == "1"

    # The pair's scores, curves (a line per method) and its scores over the checkpoints.
    cells = page.evaluate(
        "Array.from(document.querySelectorAll('#pair-view .method-row[data-m=\"2\"] td[data-col]'))"
        ".map(td => [td.dataset.col, parseFloat(td.dataset.value)])"
    )
    method = data.methods[2]
    for key, value in cells:
        assert value == pytest.approx(data.pair_scores[(1, method)][key][0], abs=1e-5)
    assert _count(page, "#pair-curves .card") == 2
    assert _count(page, "#pair-curves path.series") == 2 * 3
    assert _count(page, "#pair-trends .card") == 3 + 1
    assert _count(page, "#pair-trends line.vline") == 3 + 1

    # Another pair: other images.
    images = _pictures(page, "#pair-view canvas[data-kind=image]")
    page.evaluate("document.querySelector('#pair-view .picker button[data-step=\"1\"]').click()")
    _idle(page)
    assert (
        page.evaluate("document.querySelector('#pair-view canvas[data-kind=image]').dataset.pair")
        == "1"
    )
    assert _pictures(page, "#pair-view canvas[data-kind=image]") != images


def _levels(blob: bytes) -> np.ndarray[Any, Any]:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        return np.asarray(img.convert("L"), dtype=np.float64)


def test_difference_view_shows_b_minus_a(synthetic_page: tuple[Page, DashboardData, str]) -> None:
    from lightning_explain.render import colormap_lut

    page, data, _ = synthetic_page
    _show(page, "diff")
    page.evaluate(
        "(() => { const a = document.querySelector('#diff-a'); a.value = '1';"
        " a.dispatchEvent(new Event('change')); const b = document.querySelector('#diff-b');"
        " b.value = '3'; b.dispatchEvent(new Event('change')); })()"
    )
    _idle(page)
    assert _count(page, "#diff-view canvas[data-kind=diff][data-drawn=true]") == 3 * 2
    assert _count(page, "#diff-view canvas[data-kind=overlay][data-drawn=true]") == 3 * 2 * 2
    pair = int(page.evaluate("document.querySelector('#diff-pick').value"))
    selector = "#diff-view canvas[data-kind=diff][data-m='1'][data-side='0']"
    assert page.evaluate(f"document.querySelector({_js(selector)}).dataset.a") == "1"
    shown = np.asarray(
        page.evaluate(
            f"(() => {{ const c = document.querySelector({_js(selector)});"
            " return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); })()"
        ),
        dtype=np.uint8,
    ).reshape(24, 24, 4)
    method = data.methods[1]
    a = _levels(data.maps[(1, method)][pair][0])
    b = _levels(data.maps[(3, method)][pair][0])
    index = np.minimum(255, np.floor(((b - a) / 255 + 1) / 2 * 256)).astype(int)
    lut = np.round(colormap_lut("RdBu_r").numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(shown[..., :3], lut[index])

    # Score deltas: B - A of the pair and of the means, coloured by the metric's direction.
    row = "#diff-table tr[data-m='1'][data-k='1']"
    deltas = page.evaluate(
        f"Array.from(document.querySelectorAll({_js(row + ' td[data-delta]')})).map(t => [parseFloat(t.dataset.delta), t.className])"
    )
    key = "deletion_simultaneous"
    expected_pair = (
        data.pair_scores[(3, method)][key][pair] - data.pair_scores[(1, method)][key][pair]
    )
    expected_mean = data.score(3, method, key) - data.score(1, method, key)
    assert deltas[0][0] == pytest.approx(expected_pair, abs=1e-5)
    assert deltas[1][0] == pytest.approx(expected_mean, abs=1e-5)
    assert ("good" in deltas[1][1]) == (expected_mean < -1e-3)  # deletion: lower is better

    # Swap: A and B trade places, the delta changes sign.
    page.evaluate("document.querySelector('#diff-swap').click()")
    _idle(page)
    swapped = page.evaluate(
        f"parseFloat(document.querySelectorAll({_js(row + ' td[data-delta]')})[1].dataset.delta)"
    )
    assert swapped == pytest.approx(-expected_mean, abs=1e-5)


def test_heatmap_grid_lightbox_curves_scatter_and_sorting(
    synthetic_page: tuple[Page, DashboardData, str],
) -> None:
    page, _, _ = synthetic_page
    _show(page, "heatmaps")
    assert _count(page, "#heatmap-table tbody tr") == 5
    assert _count(page, "#heatmap-table canvas[data-kind=overlay][data-drawn=true]") == 5 * 3 * 2
    # Click a map: the lightbox opens with both maps large; arrow keys step the checkpoint.
    left, top, width, height = _center(page, "#heatmap-table canvas[data-kind=overlay]")
    page.mouse("mousePressed", left + width / 2, top + height / 2, clicks=1)
    page.mouse("mouseReleased", left + width / 2, top + height / 2, clicks=1)
    _idle(page)
    assert page.evaluate("document.querySelector('#lightbox').open") is True
    assert _count(page, "#lightbox canvas[data-drawn=true]") == 2
    assert (
        page.evaluate("document.querySelector('#lightbox canvas').getBoundingClientRect().width")
        > 200
    )
    first = page.evaluate("document.querySelector('.lightbox-body p').textContent")
    page.key("ArrowRight")
    _idle(page)
    assert page.evaluate("document.querySelector('.lightbox-body p').textContent") != first
    page.key("Escape")
    assert page.evaluate("document.querySelector('#lightbox').open") is False
    # Every pair in one checkpoint.
    page.evaluate(
        "(() => { const s = document.querySelector('#heat-mode'); s.value = 'ckpt';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    _idle(page)
    assert _count(page, "#heatmap-table tbody tr") == 4

    _show(page, "curves")
    assert _count(page, "#curve-charts .card") == 5 * 2
    mean_lines = page.evaluate(
        "document.querySelector('#curve-charts path.series').getAttribute('d')"
    )
    page.evaluate(
        "(() => { const s = document.querySelector('#curve-pair'); s.value = '2';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    _idle(page)
    assert (
        page.evaluate("document.querySelector('#curve-charts path.series').getAttribute('d')")
        != mean_lines
    )

    _show(page, "downstream")
    assert _count(page, "#scatter-view .chart") == 3
    assert _count(page, "#scatter-view .card:first-child circle.dot[data-m='0']") == 5
    legend = page.evaluate("document.querySelector('#scatter-view .chart-legend').innerText")
    assert "\u03c1" in legend

    _show(page, "metrics")
    page.evaluate(
        "document.querySelector('#metric-table th[data-col=insertion_simultaneous]').click()"
    )
    values = page.evaluate(
        "Array.from(document.querySelectorAll('#metric-table td[data-col=insertion_simultaneous]'))"
        ".map(td => parseFloat(td.dataset.value))"
    )
    assert values == sorted(values, reverse=True)
    star = page.evaluate(
        "document.querySelector('#metric-table td[data-col=insertion_simultaneous].best')"
    )
    assert star is not None


def test_synthetic_page_fits_390_and_1400_and_stays_offline(
    synthetic_page: tuple[Page, DashboardData, str], tmp_path: Path
) -> None:
    page, _, url = synthetic_page
    assert _overflow(page, tmp_path) == {}
    # The title's markup is text: no <b> element anywhere (the page's own emphasis is <strong>).
    assert page.evaluate("document.querySelectorAll('b').length") == 0
    assert (
        page.evaluate("document.querySelector('header h1').textContent") == "synthetic <b>run</b>"
    )
    _clean(page, url)
    from PIL import Image, ImageStat

    with Image.open(tmp_path / "summary_390.png") as img:
        assert img.size == (390, 900)
        assert max(ImageStat.Stat(img.convert("RGB")).stddev) > 20


def test_large_dashboard_stays_responsive(tmp_path: Path) -> None:
    """20 checkpoints x 8 methods x 16 pairs at 32 px: load-to-interactive and every tab."""
    data = synthetic_data(20, 8, 16, 32)
    path = write_dashboard(data, tmp_path / "large.html")
    url = path.resolve().as_uri()
    start = time.perf_counter()
    with open_page(url, width=1400, height=1000, timeout=120) as page:
        loaded = time.perf_counter() - start
        assert page.evaluate("document.documentElement.dataset.ready") == "true"
        ready = page.evaluate("dashboard.timings.ready")
        _idle(page)
        first_screen = page.evaluate("performance.now()")
        tabs: dict[str, float] = {}
        for tab in _tabs(page):
            t0 = page.evaluate("performance.now()")
            _show(page, tab)
            tabs[tab] = page.evaluate("performance.now()") - t0
        _show(page, "pair")
        t0 = page.evaluate("performance.now()")
        page.evaluate("dashboard.stepSlider(-1)")
        _idle(page)
        step = page.evaluate("performance.now()") - t0
        _clean(page, url)
    size = path.stat().st_size
    print(
        f"\nlarge dashboard ({size / 1e6:.2f} MB): script ready {ready:.0f} ms after navigation, "
        f"first screen drawn at {first_screen:.0f} ms, page loaded in {loaded:.1f} s (with "
        f"Chromium's start); tab switch (drawn): "
        + ", ".join(f"{k} {v:.0f} ms" for k, v in tabs.items())
        + f"; slider step {step:.0f} ms"
    )
    assert size < 4_500_000
    assert ready < 5000
    assert max(tabs.values()) < 5000
    assert step < 2000


# --------------------------------------------------------------------------------------------------
# The pages `compare` writes from a real tiny run


def _check_compare_page(comparison: Comparison, names: list[str], shots: Path) -> None:
    assert comparison.code == 0, comparison.stderr
    index = comparison.out / "index.html"
    url = index.resolve().as_uri()
    with open_page(url, width=1400, height=1000) as page:
        assert page.evaluate("document.documentElement.dataset.ready") == "true"
        _idle(page)
        summary = page.evaluate("document.querySelector('main').innerText")
        for method in COMPARE_METHODS:
            assert method in summary
        assert _count(page, "#summary-view .method-card") == len(COMPARE_METHODS)

        _show(page, "metrics")
        text = page.evaluate("document.querySelector('main').innerText")
        for name in names:
            assert name in text
        rows = page.evaluate(
            "Array.from(document.querySelectorAll('#metric-table tbody tr')).map(r => r.dataset.degenerate)"
        )
        if "0" in rows:
            assert _count(page, "#metric-table td.best") >= 1
        assert page.evaluate("document.querySelectorAll('main b').length") == 0

        # Tabs: clicking "Heatmaps" shows it, hides the rest; every map is drawn.
        _show(page, "heatmaps")
        assert (
            page.evaluate("document.querySelector('section[data-panel=heatmaps]').hidden") is False
        )
        assert page.evaluate("document.querySelector('section[data-panel=metrics]').hidden") is True
        assert (
            _count(page, "#heatmap-table canvas[data-drawn=true]")
            == len(names) * len(COMPARE_METHODS) * 2
        )
        heat = page.evaluate("document.querySelector('#heatmaps-view').innerText")
        for name in names:
            assert name in heat

        # The slider moves the pair through the checkpoints.
        _show(page, "pair")
        ck = page.evaluate(
            "document.querySelector('#pair-view canvas[data-kind=overlay]').dataset.ck"
        )
        page.evaluate("dashboard.stepSlider(-1)")
        _idle(page)
        assert (
            page.evaluate(
                "document.querySelector('#pair-view canvas[data-kind=overlay]').dataset.ck"
            )
            != ck
        )
        assert _count(page, "#pair-curves path.series") == len(COMPARE_METHODS) * 2

        # Method filter on the heatmap grid.
        _show(page, "heatmaps")
        page.evaluate("document.querySelector('.filters input[data-kind=m][value=\"0\"]').click()")
        _idle(page)
        assert _count(page, "#heatmap-table td[data-m='0']") == 0
        page.evaluate("document.querySelector('.filters input[data-kind=m][value=\"0\"]').click()")
        _idle(page)
        assert _count(page, "#heatmap-table td[data-m='0']") == len(names)

        assert _overflow(page, shots) == {}
        _show(page, "pair")
        page.screenshot(shots / "pair.png")
        _clean(page, url)

    from PIL import Image, ImageStat

    with Image.open(shots / "pair.png") as img:
        rgb = img.convert("RGB")
        assert rgb.size == (1400, 1000)
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 200  # text, charts and heatmaps, not a flat page
        assert max(ImageStat.Stat(rgb).stddev) > 20


def test_mixed_dashboard_in_chromium(mixed: Comparison, run: Run, tmp_path: Path) -> None:
    names = [run.epochs[0].name, run.epochs[1].name, run.odd.name]
    _check_compare_page(mixed, names, tmp_path)


def test_one_run_dashboard_in_chromium(one_run: Comparison, run: Run, tmp_path: Path) -> None:
    _check_compare_page(one_run, [p.name for p in run.epochs], tmp_path)
    keep = os.environ.get("LIGHTNING_EXPLAIN_DASHBOARD_SCREENSHOT")
    if keep:
        shutil.copy(tmp_path / "pair.png", keep)


def test_a_broken_script_would_be_caught(tmp_path: Path) -> None:
    """The harness itself: a page whose script throws is reported as an error."""
    page_path = tmp_path / "bad.html"
    page_path.write_text("<!DOCTYPE html><html><body><script>null.x</script></body></html>")
    url = page_path.resolve().as_uri()
    with open_page(url, width=400, height=300) as page:
        page.evaluate("1")
        assert page.errors()
