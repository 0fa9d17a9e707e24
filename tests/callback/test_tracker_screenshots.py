"""The trackers as users see them: a served TensorBoard and a served MLflow UI, opened in headless
Chromium on a training run with the callback, show the heatmaps and the curves.

The screenshots of ``docs/trackers.md`` come from here: ``LE_SCREENSHOTS=docs/_static pytest
tests/callback/test_tracker_screenshots.py`` writes them into that folder (by default they go to a
temporary folder and are only checked).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lightning_explain.callback import PairExplanationCallback
from tests.callback.helpers import make_module_class, namespace, trainer
from tests.cli._browser import chromium_path, open_page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="headless Chromium is not installed"),
]


_CLICK = (
    "(t => { const hits = [...document.querySelectorAll('*')].filter(x => "
    "x.textContent.trim().startsWith(t) && x.textContent.trim().length < t.length + 80); "
    "if (!hits.length) return null; const el = hits[hits.length - 1]; "
    "el.dispatchEvent(new MouseEvent('click', {bubbles: true})); return el.tagName; })"
)
"""Click the innermost element whose text starts with the argument (MLflow's artifact tree)."""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _server(argv: list[str], ready: str) -> Iterator[str]:
    port = _port()
    proc = subprocess.Popen(
        [a.replace("{port}", str(port)) for a in argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + ready, timeout=3).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{argv[:3]} did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("trackers")
    L = namespace("lightning.pytorch")
    mlflow = L.loggers.MLFlowLogger(
        experiment_name="lightning-explain",
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifact_location=(root / "mlartifacts").as_uri(),
    )
    loggers = [L.loggers.TensorBoardLogger(str(root), name="tb", version=0), mlflow]
    cb = PairExplanationCallback(["gradcam", "interaction_cam"], probe={"n_pairs": 3}, n_steps=8)
    tr = trainer(callbacks=[cb], logger=loggers, default_root_dir=root, max_epochs=3)
    tr.fit(make_module_class()())
    return {"root": root, "experiment": mlflow.experiment_id, "run_id": mlflow.run_id}


def _out() -> Path:
    target = os.environ.get("LE_SCREENSHOTS")
    folder = Path(target) if target else Path(os.environ.get("TMPDIR", "/tmp")) / "le-shots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _busy(path: Path) -> float:
    """Share of pixels that are not background white/grey: how much the page shows."""
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return float((np.abs(pixels - pixels[0, 0]).sum(axis=2) > 60).mean())


def test_tensorboard_shows_heatmaps_and_curves(run: dict[str, Any]) -> None:
    argv = [sys.executable, "-m", "tensorboard.main", "--logdir", str(run["root"] / "tb"),
            "--host", "127.0.0.1", "--port", "{port}", "--samples_per_plugin", "images=1000",
            "--load_fast", "false"]  # fmt: skip
    with (
        _server(argv, "/data/plugin/images/tags") as url,
        open_page(f"{url}/#images", width=1400, height=1000, timeout=60) as page,
    ):
        # TensorBoard renders into shadow DOM: wait for the image cards' <img> elements.
        script = (
            "(function f(n){const out=[];n.querySelectorAll('*').forEach(e=>{"
            "if(e.tagName==='IMG'&&e.naturalWidth>0)out.push(e.src);"
            "if(e.shadowRoot)out.push(...f(e.shadowRoot));});return out;})(document)"
        )
        for _ in range(120):
            images = page.evaluate(script) or []
            if len(images) >= 4:  # pairs and curves of both methods
                break
            time.sleep(0.5)
        time.sleep(1.0)
        shot = page.screenshot(_out() / "trackers_tensorboard.png")
    assert len(images) >= 4
    assert _busy(shot) > 0.1


def test_mlflow_shows_the_scores_and_the_heatmaps(run: dict[str, Any]) -> None:
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    db = f"sqlite:///{run['root'] / 'mlflow.db'}"
    argv = [mlflow, "server", "--backend-store-uri", db, "--host", "127.0.0.1", "--port",
            "{port}", "--workers", "1"]  # fmt: skip
    base = f"#/experiments/{run['experiment']}/runs/{run['run_id']}"
    with _server(argv, "/health") as url:
        with open_page(f"{url}/{base}/model-metrics", width=1400, height=1100, timeout=90) as page:
            for _ in range(120):
                text = page.evaluate("document.body.innerText") or ""
                charts = page.evaluate("document.querySelectorAll('canvas, svg.main-svg').length")
                if "explain/gradcam" in text and charts >= 4:
                    break
                time.sleep(0.5)
            time.sleep(2.0)
            metrics = page.screenshot(_out() / "trackers_mlflow_scores.png")
        assert "explain/gradcam" in text
        with open_page(f"{url}/{base}/artifacts", width=1400, height=1100, timeout=90) as page:
            # Open the images folder, then the last evaluation's gradcam pair grid.
            for name in ("images", "explain~gradcam~pairs+step+12"):
                for _ in range(120):
                    if page.evaluate(f"{_CLICK}({name!r})"):
                        break
                    time.sleep(0.5)
            for _ in range(120):
                shown = page.evaluate(
                    "[...document.querySelectorAll('img')]"
                    ".filter(i => i.src.startsWith('blob:') && i.naturalWidth > 100).length"
                )
                if shown:
                    break
                time.sleep(0.5)
            time.sleep(1.0)
            images = page.screenshot(_out() / "trackers_mlflow_images.png")
    assert shown
    assert _busy(metrics) > 0.02
    assert _busy(images) > 0.02


def test_the_csv_logger_png_carries_its_caption(tmp_path: Path) -> None:
    """The file a CSV-logger user opens: the pair grid with its caption written under it."""
    from PIL import Image

    L = namespace("lightning.pytorch")
    logger = L.loggers.CSVLogger(str(tmp_path), name="csv", version=0)
    cb = PairExplanationCallback(["gradcam"], probe={"n_pairs": 3}, n_steps=8)
    trainer(callbacks=[cb], logger=logger, default_root_dir=tmp_path, max_epochs=1).fit(
        make_module_class()()
    )
    png = Path(logger.log_dir) / "explanations" / "epoch=000" / "gradcam.png"
    shutil.copy(png, _out() / "trackers_files.png")
    with Image.open(png) as img:
        width, height = img.size
        caption = img.text["Description"]
    tile, pad = 96, 2
    assert height > 3 * tile + 4 * pad  # the caption band under the grid
    assert width == 4 * tile + 5 * pad
    assert "pair 2" in caption
