"""Attacks through outputs: CSV cells that would run as spreadsheet formulas, HTML markup in
names, and output paths that cannot be written (refused before any work)."""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import pytest

from lightning_explain._io import atomic_write_text, csv_cell
from lightning_explain.dashboard import MetricColumn
from lightning_explain.report import ReportTable, to_csv
from lightning_explain.sinks import FileSink
from tests.cli.conftest import MODEL_CLASS, Run, run_cli

FORMULAS = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]


@pytest.mark.parametrize("cell", FORMULAS)
def test_formula_cells_are_escaped_and_numbers_are_not(cell: str) -> None:
    assert csv_cell(cell) == "'" + cell
    assert csv_cell(-0.5) == -0.5
    assert csv_cell("gradcam") == "gradcam"


def test_compare_csv_escapes_a_hostile_checkpoint_name(run: Run, tmp_path: Path) -> None:
    hostile = tmp_path / "=HYPERLINK(evil).ckpt"
    shutil.copy(run.epochs[1], hostile)
    out = tmp_path / "out"
    code, _, err = run_cli(
        [
            "compare",
            str(hostile),
            "--model-class",
            MODEL_CLASS,
            "--methods",
            "input_x_gradient",
            "--metrics",
            "insertion_simultaneous",
            "--n-steps",
            "4",
            "--out",
            str(out),
        ]
    )
    assert code == 0, err
    rows = list(csv.reader((out / "metrics.csv").open(encoding="utf-8")))
    names = [r[0] for r in rows[1:]]
    assert names == ["'=HYPERLINK(evil).ckpt"]
    assert float(rows[1][5]) == pytest.approx(float(rows[1][5]))  # numbers stay numbers
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "=HYPERLINK(evil).ckpt" in html


def test_report_csv_and_file_sink_tables_escape_cells(tmp_path: Path) -> None:
    table = ReportTable(
        methods=["=cmd|' /C calc'!A0"],
        metrics=[MetricColumn("insertion_simultaneous", True)],
        scores={"=cmd|' /C calc'!A0": {"insertion_simultaneous": 0.5}},
    )
    assert "\n'=cmd" in to_csv(table)
    sink = FileSink(tmp_path)
    sink.log_table("explain/x/scores", ["name", "value"], [["@SUM(1)", -1.0]], step=0)
    text = next(tmp_path.rglob("*.csv")).read_text(encoding="utf-8")
    assert "'@SUM(1)" in text
    assert "-1.0" in text


def test_compare_refuses_an_existing_file_as_out_before_any_work(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "taken.txt"
    target.write_text("keep me")
    start = time.perf_counter()
    code, _, err = run_cli(
        ["compare", str(run.epochs[0]), "--model-class", MODEL_CLASS, "--out", str(target)]
    )
    assert code == 2
    assert "existing file" in " ".join(err.split())
    assert target.read_text() == "keep me"
    assert time.perf_counter() - start < 5.0  # refused up front, not after explaining


def test_atomic_write_never_shows_a_half_written_file(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new" * 1000)
    assert path.read_text() == "new" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]  # no temporary file left
