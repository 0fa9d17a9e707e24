"""The live dashboard (``dashboard_dir=``): rewritten after every evaluation of a running fit
with only the CSV logger, never seen half-written, opened and reloaded in headless Chromium
while the fit runs; a failure to write it does not lose the run."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_explain import PairExplanationCallback
from tests.callback.helpers import FAST, make_module_class, namespace, trainer
from tests.cli._browser import Page, chromium_path, open_page
from tests.cli.test_dashboard import page_data

L = namespace("lightning.pytorch")


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (3, TypeError, "folder path"),
        (b"live", TypeError, "folder path"),
        ("", ValueError, "non-empty"),
        ("  ", ValueError, "non-empty"),
    ],
)
def test_dashboard_dir_is_checked_at_construction(value: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        PairExplanationCallback(dashboard_dir=value)


def test_dashboard_dir_may_not_be_a_file(tmp_path: Path) -> None:
    existing = tmp_path / "index.html"
    existing.write_text("not a folder")
    with pytest.raises(ValueError, match="existing file"):
        PairExplanationCallback(dashboard_dir=existing)
    assert PairExplanationCallback(dashboard_dir=tmp_path / "new").dashboard_dir == tmp_path / "new"


class _Reader(threading.Thread):
    """Re-reads the page as fast as it can while the fit runs; keeps every evaluation count it
    saw, and every read that was not a whole page."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.counts: list[int] = []
        self.broken: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(0.005):
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            if not text.rstrip().endswith("</html>"):
                self.broken.append(text[-80:])
                continue
            try:
                self.counts.append(len(page_data(text)["ckpts"]))
            except Exception as err:  # a truncated JSON document
                self.broken.append(repr(err))


class _Watch(L.Callback):  # type: ignore[misc, name-defined]
    """At the start of each epoch (the previous epoch's evaluation is written by then): read the
    page; from epoch 1 on, look at it in Chromium, reloading the same tab each epoch."""

    def __init__(self, path: Path, browse: bool) -> None:
        self.path = path
        self.browse = browse
        self.counts: list[int] = []
        self.steps: list[list[int]] = []
        self.browser: list[dict[str, Any]] = []
        self._stack = ExitStack()
        self._page: Page | None = None

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch == 0:
            assert not self.path.exists()
            return
        data = page_data(self.path.read_text(encoding="utf-8"))
        self.counts.append(len(data["ckpts"]))
        self.steps.append([c["s"] for c in data["ckpts"]])
        if not self.browse:
            return
        if self._page is None:
            self._page = self._stack.enter_context(
                open_page(self.path.resolve().as_uri(), width=390, height=900)
            )
            page = self._page
            page.evaluate("document.querySelector('nav.tabs button[data-tab=pair]').click()")
        else:  # as the page's own timer does (the hash keeps the view)
            page = self._page
            page.send("Page.reload")
            page.wait_for("Page.loadEventFired")
        page.evaluate("dashboard.idle()", await_promise=True)
        self.browser.append(
            page.evaluate(
                "({ready: document.documentElement.dataset.ready, tab: dashboard.state.tab,"
                " n: dashboard.data.ckpts.length, live: !!document.querySelector('#auto-reload'),"
                " slider: document.querySelector('#pair-slider').value,"
                " max: document.querySelector('#pair-slider').max,"
                " label: document.querySelector('#pair-ck-label').textContent,"
                " drawn: document.querySelectorAll('#pair-view canvas[data-kind=overlay]"
                "[data-drawn=true]').length,"
                " overflow: document.documentElement.scrollWidth > innerWidth,"
                " errors: 0})"
            )
        )
        self.browser[-1]["errors"] = page.errors()

    def close(self) -> None:
        self._stack.close()


def test_live_dashboard_during_a_fit_with_the_csv_logger(tmp_path: Path) -> None:
    folder = tmp_path / "live"
    path = folder / "index.html"
    callback = PairExplanationCallback(
        methods=["gradcam", "input_x_gradient"], dashboard_dir=folder, **FAST
    )
    browse = chromium_path() is not None
    watch = _Watch(path, browse)
    reader = _Reader(path)
    module = make_module_class()(n=8)
    fit = trainer(
        max_epochs=3,
        logger=L.loggers.CSVLogger(tmp_path, name="csv"),
        callbacks=[callback, watch],
        log_every_n_steps=1,
    )
    reader.start()
    try:
        fit.fit(module)
    finally:
        reader.stop.set()
        reader.join(timeout=30)
        watch.close()

    assert callback.error_count == 0
    # Read during the fit, by the trainer's thread: one more evaluation each epoch.
    assert watch.counts == [1, 2]
    assert watch.steps == [[2], [2, 4]]
    # The concurrent reader never saw a half-written page, and saw the page grow.
    assert reader.broken == []
    assert reader.counts
    assert reader.counts == sorted(reader.counts)
    assert set(reader.counts) <= {1, 2, 3}
    assert not list(folder.glob(".index.html.*"))  # no temporary file left behind

    final = page_data(path.read_text(encoding="utf-8"))
    assert [c["n"] for c in final["ckpts"]] == [
        "epoch 0 · step 2",
        "epoch 1 · step 4",
        "epoch 2 · step 6",
    ]
    assert final["methods"] == ["gradcam", "input_x_gradient"]
    assert final["nPairs"] == 2
    assert final["oneRun"] is True
    assert final["live"]["refresh"] > 0
    # The page's scores are the logged ones: the CSV logger's last row of each metric.
    logged = {
        k: float(v) for k, v in fit.callback_metrics.items() if k.startswith("explain/gradcam/")
    }
    keys = [m["k"] for m in final["metrics"]]
    for j, key in enumerate(keys):
        assert final["scores"][2][0][j] == pytest.approx(logged[f"explain/gradcam/{key}"], rel=1e-5)
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").exists()

    if browse:  # opened at epoch 1, reloaded at epoch 2: the new evaluation, the same view
        first, second = watch.browser
        for seen in (first, second):
            assert seen["ready"] == "true"
            assert seen["tab"] == "pair"
            assert seen["live"]
            assert seen["errors"] == []
            assert not seen["overflow"]
            assert seen["drawn"] == 2 * 2  # both maps of both methods
        assert (first["n"], first["max"], first["slider"]) == (1, "0", "0")
        # The slider was at the latest evaluation: after the reload it follows the new one.
        assert (second["n"], second["max"], second["slider"]) == (2, "1", "1")
        assert "epoch 0" in first["label"]
        assert "epoch 1" in second["label"]


def test_a_failing_dashboard_write_is_counted_and_the_run_goes_on(tmp_path: Path) -> None:
    folder = tmp_path / "live"
    (folder / "index.html").mkdir(parents=True)  # os.replace cannot replace a folder
    callback = PairExplanationCallback(methods=["gradcam"], dashboard_dir=folder, **FAST)
    fit = trainer(
        max_epochs=2, logger=L.loggers.CSVLogger(tmp_path, name="csv"), callbacks=[callback]
    )
    with pytest.warns(UserWarning, match="writing the live dashboard"):
        fit.fit(make_module_class()(n=8))
    assert fit.current_epoch == 2
    assert callback.error_count == 2
    # The scores were still logged.
    assert torch.isfinite(fit.callback_metrics["explain/gradcam/insertion_simultaneous"])
    assert not list(folder.glob(".index.html.*"))


def test_a_resumed_fit_continues_the_page(tmp_path: Path) -> None:
    """Fit 2 epochs with checkpoints; resume from the first epoch's checkpoint with a new callback
    for 3 epochs: the page keeps the evaluation before the resume point, replaces the later one."""
    folder = tmp_path / "live"
    path = folder / "index.html"
    methods = ["gradcam"]
    checkpoints = L.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1)
    first = PairExplanationCallback(methods=methods, dashboard_dir=folder, **FAST)
    trainer(
        max_epochs=2,
        enable_checkpointing=True,
        callbacks=[first, checkpoints],
        default_root_dir=tmp_path,  # the callback's PNGs, without a logger
    ).fit(make_module_class()(n=8))
    before = page_data(path.read_text(encoding="utf-8"))
    assert [c["s"] for c in before["ckpts"]] == [2, 4]

    resumed = PairExplanationCallback(methods=methods, dashboard_dir=folder, **FAST)
    fit = trainer(max_epochs=3, callbacks=[resumed], default_root_dir=tmp_path)
    fit.fit(make_module_class()(n=8), ckpt_path=str(tmp_path / "ckpt" / "epoch=0-step=2.ckpt"))
    assert resumed.error_count == 0
    after = page_data(path.read_text(encoding="utf-8"))
    assert [c["s"] for c in after["ckpts"]] == [2, 4, 6]
    # The evaluation before the resume point is the first run's, bit for bit; step 4 is redone.
    assert after["maps"][0] == before["maps"][0]
    assert after["pairScores"][0] == before["pairScores"][0]
    assert after["img"] == before["img"]
