"""``compare`` and ``report`` with ``--interactions``: the correspondence table, the dashboard's
Correspondence tab (real renderings, real scores), and the early errors."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_explain.correspondence import random_views
from lightning_explain.dashboard_correspondence import restore_correspondence
from tests.cli.conftest import MODEL_CLASS, Comparison, Run, run_cli
from tests.helpers import images

FAST = [
    "--model-class",
    MODEL_CLASS,
    "--methods",
    "input_x_gradient",
    "--metrics",
    "insertion_simultaneous",
    "--n-steps",
    "4",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A probe file of 3 pairs of random crops of 32 px images, recording their geometry."""
    path = tmp_path_factory.mktemp("views") / "views.pt"
    probe = random_views(images(3, 3, 32, 32, seed=1), seed=0).to_probe_set()
    assert probe.geometry is not None
    probe.save(path)
    return path


@pytest.fixture(scope="module")
def compared(run: Run, views: Path, tmp_path_factory: pytest.TempPathFactory) -> Comparison:
    out = tmp_path_factory.mktemp("corr_compare")
    code, stdout, stderr = run_cli(
        [
            "compare",
            str(run.epochs[0]),
            str(run.epochs[1]),
            "--probe",
            str(views),
            *FAST,
            "--interactions",
            "point_to_point,bilrp",
            "--interaction-option",
            "k=4",
            "--out",
            str(out),
        ]
    )
    return Comparison(out, code, stdout, stderr)


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


def test_compare_shows_renderings_and_scores_per_checkpoint_and_method(
    compared: Comparison, run: Run
) -> None:
    assert compared.code == 0, compared.stderr
    page = (compared.out / "index.html").read_text(encoding="utf-8")
    assert 'data-tab="correspondence"' in page
    assert '<table class="corr-table" data-method="point_to_point">' in page
    records = restore_correspondence(page)
    assert sorted(records) == [0, 1]
    for found in records.values():
        assert [r.method for r in found] == ["point_to_point", "bilrp"]
        for record in found:
            assert len(record.matches) == 3
            for blob in record.matches:
                with Image.open(io.BytesIO(blob)) as img:
                    img.load()
                    # Two 96 px views side by side (min_tile 96) with a gap: wider than tall.
                    assert img.width > 2 * 96, img.size
                    assert img.height >= 96, img.size
                    assert len(np.unique(np.asarray(img.convert("L")))) > 8  # not blank
            assert set(record.scores) == {"accuracy", "error_px"}
            acc = [v for v in record.scores["accuracy"] if math.isfinite(v)]
            assert acc
            assert all(0.0 <= v <= 1.0 for v in acc)
    # The table of the scores across the checkpoints, as the CSV has them.
    rows = _rows(compared.out / "correspondence.csv")
    assert [(r["checkpoint"], r["method"]) for r in rows] == [
        (run.epochs[0].name, "point_to_point"),
        (run.epochs[1].name, "point_to_point"),
        (run.epochs[0].name, "bilrp"),
        (run.epochs[1].name, "bilrp"),
    ]
    for row in rows:
        assert row["geometry"] == "true"
        assert row["pairs"] == "3"
        index = 0 if row["checkpoint"] == run.epochs[0].name else 1
        record = next(r for r in records[index] if r.method == row["method"])
        assert float(row["accuracy"]) == pytest.approx(record.mean_score("accuracy"), abs=1e-5)
        assert float(row["error_px"]) == pytest.approx(record.mean_score("error_px"), rel=1e-5)
        assert f"{record.mean_score('accuracy'):.1%}" in page
    assert (compared.out / "correspondence.md").is_file()
    assert "point_to_point" in (compared.out / "correspondence.html").read_text(encoding="utf-8")
    # The options reach the methods: bilrp ran with k=4, as the Run tab records.
    assert "k=4" in page


def test_report_writes_the_correspondence_table_with_and_without_geometry(
    run: Run, views: Path, tmp_path: Path
) -> None:
    out = tmp_path / "with"
    code, stdout, stderr = run_cli(
        [
            "report",
            str(run.epochs[1]),
            "--probe",
            str(views),
            *FAST,
            "--interactions",
            "point_to_point",
            "--out",
            str(out),
        ]
    )
    assert code == 0, stderr
    assert (out / "report.md").is_file()  # the method x metric table is still written
    (row,) = _rows(out / "correspondence.csv")
    assert row["method"] == "point_to_point"
    assert row["geometry"] == "true"
    assert 0.0 <= float(row["accuracy"]) <= 1.0
    assert float(row["error_px"]) >= 0.0
    markdown = (out / "correspondence.md").read_text(encoding="utf-8")
    assert "| accuracy ↑ | error_px ↓ |" in markdown
    assert "point_to_point" in markdown
    assert "correspondence.md" in stdout
    assert "accuracy ↑" in stdout
    html = (out / "correspondence.html").read_text(encoding="utf-8")
    assert f'data-value="{float(row["accuracy"])!r}"' in html

    # The probe set stored in the checkpoint records no geometry: said, not invented.
    bare = tmp_path / "bare"
    code, _, stderr = run_cli(
        ["report", str(run.epochs[1]), *FAST, "--interactions", "bilrp", "--out", str(bare)]
    )
    assert code == 0, stderr
    (row,) = _rows(bare / "correspondence.csv")
    assert row["geometry"] == "false"
    assert row["accuracy"] == ""
    assert row["error_px"] == ""
    assert "no view geometry recorded" in (bare / "correspondence.md").read_text(encoding="utf-8")


def test_compare_without_geometry_says_so_in_the_tab(run: Run, tmp_path: Path) -> None:
    code, _, stderr = run_cli(
        [
            "compare",
            str(run.epochs[1]),
            *FAST,
            "--interactions",
            "point_to_point",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0, stderr
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "corr-no-geometry" in page
    assert "No view geometry was recorded" in page
    (record,) = restore_correspondence(page)[0]
    assert record.scores == {}
    assert len(record.matches) == 4


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--interactions", "point2point"], "bilrp, point_to_point"),
        (["--interactions", "bilrp", "--interaction-option", "n_masks=3"], "n_masks"),
        (["--interaction-option", "k=4"], "no --interactions method"),
    ],
)
def test_bad_interactions_fail_before_any_checkpoint_is_loaded(
    tmp_path: Path, extra: list[str], expected: str
) -> None:
    missing = tmp_path / "missing.ckpt"  # never opened: the options are checked first
    for command in ("compare", "report"):
        code, _, stderr = run_cli([command, str(missing), *extra, "--out", str(tmp_path / "o")])
        assert code == 2, stderr
        assert "--interaction" in stderr, stderr
        assert expected in stderr, stderr
        assert "missing.ckpt" not in stderr


def test_streamed_report_refuses_interactions(tmp_path: Path) -> None:
    code, _, stderr = run_cli(
        [
            "report",
            str(tmp_path / "missing.ckpt"),
            "--pairs-from",
            str(tmp_path),
            "--interactions",
            "bilrp",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "--pairs-from" in stderr
    assert "--interactions" in stderr


def test_interaction_views_match_the_probe_geometry(views: Path) -> None:
    """The probe file of the tests really records what the scores are computed against."""
    from lightning_explain.data.probe import ProbeSet

    probe = ProbeSet.load(views)
    assert probe.geometry is not None
    assert tuple(probe.geometry.shape) == (3, 2, 3)
    assert torch.isfinite(probe.geometry).all()
