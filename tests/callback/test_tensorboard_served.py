"""What a user sees in a served TensorBoard: the heatmaps of every evaluation with the flag the
docs recommend (and at most 10 without it), and the custom-scalars layout of the callback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lightning_explain.callback import PairExplanationCallback
from tests.callback.helpers import FAST, make_module_class, namespace, trainer

pytest.importorskip("tensorboard")

EPOCHS = 12  # more than TensorBoard's default of 10 images per tag


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(logdir: Path, *flags: str) -> Iterator[str]:
    """``tensorboard --logdir logdir *flags`` on a free local port; yields its base URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast",
            "false",
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if _get(url, "/data/plugin/images/tags"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(
                    "TensorBoard did not start: " + proc.stderr.read().decode()[-2000:]
                )  # type: ignore[union-attr]
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _get(url: str, path: str, **query: str) -> Any:
    full = url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(full, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tb")
    L = namespace("lightning.pytorch")
    logger = L.loggers.TensorBoardLogger(str(root), name="run", version=0)
    cb = PairExplanationCallback(["gradcam"], **FAST)
    tr = trainer(callbacks=[cb], default_root_dir=root, max_epochs=EPOCHS, logger=logger)
    tr.fit(make_module_class("lightning.pytorch")())
    return root


def _image_steps(url: str) -> list[int]:
    tags = _get(url, "/data/plugin/images/tags")
    (run,) = [r for r in tags if "explain/gradcam/pairs" in tags[r]]
    entries = _get(
        url, "/data/plugin/images/images", run=run, tag="explain/gradcam/pairs", sample="0"
    )
    return [int(e["step"]) for e in entries]


@pytest.mark.slow
def test_the_recommended_flag_shows_every_evaluation(logdir: Path) -> None:
    with served(logdir, "--samples_per_plugin", "images=1000") as url:
        steps = _image_steps(url)
    assert steps == [4 * (e + 1) for e in range(EPOCHS)]  # every epoch's global step


@pytest.mark.slow
def test_without_the_flag_tensorboard_keeps_ten(logdir: Path) -> None:
    with served(logdir) as url:
        steps = _image_steps(url)
        layout = _get(url, "/data/plugin/custom_scalars/layout")
    assert len(steps) == 10
    assert steps[-1] == 4 * EPOCHS  # the newest is always kept
    (category,) = layout["category"]
    assert category["title"] == "lightning-explain"
    titles = [chart["title"] for chart in category["chart"]]
    assert titles[:3] == ["gradcam: insertion", "gradcam: deletion", "probe set"]
    tags = category["chart"][0]["multiline"]["tag"]
    assert tags == ["explain/gradcam/insertion_simultaneous"]
