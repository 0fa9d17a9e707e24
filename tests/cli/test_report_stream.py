"""``report --pairs-from``: every pair of a probe file or an image folder, streamed through a
Lightning Trainer (lightning_explain.streaming), gives the table the in-memory engine gives."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from lightning_explain.data.probe import ProbeSet
from tests.cli.conftest import Run, run_cli

METHODS = ["gradcam", "input_x_gradient"]
METRICS = ["insertion_simultaneous", "deletion_simultaneous"]


def _table(folder: Path) -> dict[str, dict[str, float]]:
    with open(folder / "report.csv", encoding="utf-8") as f:
        return {r["method"]: {m: float(r[m]) for m in METRICS} for r in csv.DictReader(f)}


def _report(run: Run, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(
        [
            "report",
            str(run.epochs[1]),
            "--trust-checkpoint",
            "--methods",
            *METHODS,
            "--metrics",
            *METRICS,
            "--n-steps",
            "4",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_streaming_a_probe_file_gives_the_in_memory_table(run: Run, tmp_path: Path) -> None:
    code, _, err = _report(run, tmp_path / "memory", "--probe", str(run.probe))
    assert code == 0, err
    code, out, err = _report(
        run,
        tmp_path / "stream",
        "--pairs-from",
        str(run.probe),
        "--batch-pairs",
        "3",
        "--no-progress",
    )
    assert code == 0, err
    assert "pairs/s" in out
    memory, stream = _table(tmp_path / "memory"), _table(tmp_path / "stream")
    for method in METHODS:
        for metric in METRICS:
            assert stream[method][metric] == pytest.approx(memory[method][metric], abs=1e-5)
    n = len(ProbeSet.load(run.probe))
    assert f"{n} scored" in (tmp_path / "stream" / "report.md").read_text()


def test_streaming_an_image_folder(run: Run, tmp_path: Path) -> None:
    from PIL import Image

    probe = ProbeSet.load(run.probe)
    size = int(probe.x1.shape[-1])
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 255, (size + 7, size + 3, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i}.png")
    code, _, err = _report(
        run,
        tmp_path / "out",
        "--pairs-from",
        str(tmp_path / "images"),
        "--size",
        str(size),
        "--batch-pairs",
        "4",
        "--no-progress",
    )
    assert code == 0, err
    table = _table(tmp_path / "out")
    assert set(table) == set(METHODS)
    assert all(0.0 <= v <= 1.0 + 1e-6 for row in table.values() for v in row.values())
    assert "10 scored" in (tmp_path / "out" / "report.md").read_text()


def test_pairs_from_nothing_fails_clearly(run: Run, tmp_path: Path) -> None:
    code, _, err = _report(run, tmp_path / "out", "--pairs-from", str(tmp_path / "missing"))
    assert code != 0
    text = " ".join(err.split())  # the message is wrapped to the terminal width
    assert "--pairs-from" in text
    assert "expected an image folder" in text
