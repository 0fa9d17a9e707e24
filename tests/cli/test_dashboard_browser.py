"""Open the dashboard of a real tiny comparison in headless Chromium (Debian's ``chromium``).

Checks: no console error, uncaught exception or error log entry; no request other than the file
itself and ``data:`` URIs; every checkpoint and method is shown; the tabs and filters work (the
dashboard's JavaScript ran); a screenshot is not blank.

Set ``LIGHTNING_EXPLAIN_DASHBOARD_SCREENSHOT=<png>`` to keep the screenshot of the one-run
dashboard (this is how ``docs/_static/dashboard.png`` is made).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from tests.cli._browser import chromium_path, open_page
from tests.cli.conftest import COMPARE_METHODS, Comparison, Run

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="headless Chromium is not installed (apt-get install -y chromium)",
    ),
]

_VISIBLE_TEXT = "document.querySelector('main').innerText"


def _check_page(comparison: Comparison, names: list[str], shot: Path) -> None:
    assert comparison.code == 0, comparison.stderr
    index = comparison.out / "index.html"
    with open_page(index.resolve().as_uri(), width=1400, height=2000) as page:
        assert page.evaluate("document.documentElement.dataset.ready") == "true"

        # Metrics tab (the default): every (method, checkpoint) row.
        text = page.evaluate(_VISIBLE_TEXT)
        for name in names:
            assert name in text
        for method in COMPARE_METHODS:
            assert method in text
        assert page.evaluate("document.querySelectorAll('#metric-table td.best').length") >= 1
        # User strings are text, never markup.
        assert page.evaluate("document.querySelectorAll('main b').length") == 0

        # Tabs: clicking "Heatmaps" shows it and hides the metric table.
        page.evaluate("document.querySelector('nav.tabs button[data-tab=heatmaps]').click()")
        assert (
            page.evaluate("document.querySelector('section[data-panel=heatmaps]').hidden") is False
        )
        assert page.evaluate("document.querySelector('section[data-panel=metrics]').hidden") is True
        images = page.evaluate(
            "Array.from(document.querySelectorAll('section[data-panel=heatmaps] img'))"
            ".map(i => i.complete && i.naturalWidth > 0)"
        )
        assert images
        assert all(images)
        heat_text = page.evaluate(_VISIBLE_TEXT)
        for name in names:
            assert name in heat_text

        # Filter: unchecking the first method hides its column, checking it shows it again.
        visible = (
            "Array.from(document.querySelectorAll('section[data-panel=heatmaps] td[data-m=\"0\"]'))"
            ".filter(e => e.offsetParent !== null).length"
        )
        shown = page.evaluate(visible)
        assert shown > 0
        page.evaluate("document.querySelector('.filters input[data-kind=m][value=\"0\"]').click()")
        assert page.evaluate(visible) == 0
        page.evaluate("document.querySelector('.filters input[data-kind=m][value=\"0\"]').click()")
        assert page.evaluate(visible) == shown

        page.screenshot(shot)
        page.evaluate("1")  # drain events raised by the interactions
        assert page.errors() == []
        outside = [u for u in page.requests if not u.startswith(("file://", "data:"))]
        assert outside == []
        assert index.resolve().as_uri() in page.requests

    from PIL import Image, ImageStat

    with Image.open(io.BytesIO(shot.read_bytes())) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (1400, 2000)
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 200  # text, plots and heatmaps, not a flat page
        assert max(ImageStat.Stat(rgb).stddev) > 20


def test_mixed_dashboard_in_chromium(mixed: Comparison, run: Run, tmp_path: Path) -> None:
    names = [run.epochs[0].name, run.epochs[1].name, run.odd.name]
    _check_page(mixed, names, tmp_path / "mixed.png")


def test_one_run_dashboard_in_chromium(one_run: Comparison, run: Run, tmp_path: Path) -> None:
    shot = tmp_path / "one_run.png"
    _check_page(one_run, [p.name for p in run.epochs], shot)
    keep = os.environ.get("LIGHTNING_EXPLAIN_DASHBOARD_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
