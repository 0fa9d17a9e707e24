"""All four trackers at once, read back offline: W&B media files, TensorBoard events, MLflow on
sqlite, CSV metrics and PNG files. Keys are stable and steps are ``trainer.global_step``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from lightning_explain.callback import PairExplanationCallback
from tests.callback.helpers import FAST, make_module_class, namespace, trainer

STEPS = [4, 8]  # 16 items, batch 4: 4 optimizer steps per epoch, 2 epochs


def make_loggers(ns: str, root: Path) -> dict[str, Any]:
    loggers = namespace(f"{ns}.loggers")
    return {
        "wandb": loggers.WandbLogger(save_dir=str(root), offline=True, project="le"),
        "tensorboard": loggers.TensorBoardLogger(str(root), name="tb"),
        "mlflow": loggers.MLFlowLogger(
            experiment_name="le",
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            artifact_location=(root / "mlartifacts").as_uri(),
        ),
        "csv": loggers.CSVLogger(str(root), name="csv"),
    }


def check_wandb(root: Path, *, n_images: int, label: str = "gradcam", n_pairs: int = 2) -> None:
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    pairs = sorted((media / "images").rglob("pairs_*.png"))
    pairs = [p for p in pairs if f"explain/{label}/" in p.as_posix()]
    assert len(pairs) == n_images, pairs
    tables = sorted((media / "table").rglob("scores_*.table.json"))
    tables = [t for t in tables if f"explain/{label}/" in t.as_posix()]
    assert len(tables) == n_images
    table = json.loads(tables[-1].read_text())
    assert table["columns"][:3] == ["pair", "item", "sim"]
    assert "insertion_simultaneous" in table["columns"]
    assert len(table["data"]) == n_pairs
    # The curves are logged as data (a native line chart), not as a picture.
    charts = [t for t in (media / "table").rglob("curves_table_*.table.json")]
    charts = [t for t in charts if f"explain/{label}/" in t.as_posix()]
    assert len(charts) == n_images, charts
    chart = json.loads(charts[-1].read_text())
    assert {row[1] for row in chart["data"]} >= {"insertion_simultaneous"}
    assert not [p for p in (media / "images").rglob("curves_*.png") if label in p.as_posix()]


def check_tensorboard(
    logger: Any, *, steps: list[int], label: str = "gradcam", size: int = 16, n_pairs: int = 2
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import (
        IMAGES,
        SCALARS,
        EventAccumulator,
    )

    acc = EventAccumulator(logger.log_dir, size_guidance={IMAGES: 0, SCALARS: 0})
    acc.Reload()
    tags = acc.Tags()
    assert f"explain/{label}/pairs" in tags["images"]
    assert f"explain/{label}/curves" in tags["images"]
    assert [e.step for e in acc.Images(f"explain/{label}/pairs")] == steps
    assert [e.step for e in acc.Scalars(f"explain/{label}/insertion_simultaneous")] == steps
    assert [e.step for e in acc.Scalars("explain/sim")] == steps
    assert [e.value for e in acc.Scalars("explain/errors")] == [0.0] * len(steps)
    image = acc.Images(f"explain/{label}/pairs")[0]
    tile = size * -(-96 // size)  # probes are enlarged to the 96 px minimum tile
    assert (image.width, image.height) == (4 * tile + 5 * 2, n_pairs * tile + (n_pairs + 1) * 2)


def check_mlflow(logger: Any, root: Path, *, steps: list[int], label: str = "gradcam") -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    history = client.get_metric_history(logger.run_id, f"explain/{label}/insertion_simultaneous")
    assert [m.step for m in history] == steps
    assert all(0.0 <= m.value <= 1.0 + 1e-6 for m in history)

    def walk(path: str) -> list[str]:
        out: list[str] = []
        for info in client.list_artifacts(logger.run_id, path):
            out += walk(info.path) if info.is_dir else [info.path]
        return out

    files = walk("")
    pair_images = [f for f in files if f"{label}~pairs" in f and f.endswith(".png")]
    assert len(pair_images) >= len(steps), files
    assert any(label in f and "curves" in f for f in files), files


def check_csv(logger: Any, *, steps: list[int], label: str = "gradcam") -> None:
    rows = list(csv.DictReader((Path(logger.log_dir) / "metrics.csv").read_text().splitlines()))
    key = f"explain/{label}/insertion_simultaneous"
    logged = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
    assert [s for s, _ in logged] == steps
    for epoch in range(len(steps)):
        folder = Path(logger.log_dir) / "explanations" / f"epoch={epoch:03d}"
        assert (folder / f"{label}.png").is_file()
        assert (folder / f"{label}_curves.png").is_file()
        assert (folder / f"{label}_scores.csv").is_file()


def test_all_four_trackers_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("wandb", "tensorboard", "mlflow"):
        pytest.importorskip(module)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    loggers = make_loggers("lightning.pytorch", tmp_path)
    cb = PairExplanationCallback(["gradcam"], **FAST)
    tr = trainer(
        callbacks=[cb], logger=list(loggers.values()), default_root_dir=tmp_path, max_epochs=2
    )
    tr.fit(make_module_class()())
    loggers["wandb"].experiment.finish()
    assert tr.global_step == STEPS[-1]

    check_tensorboard(loggers["tensorboard"], steps=STEPS)
    check_mlflow(loggers["mlflow"], tmp_path, steps=STEPS)
    check_csv(loggers["csv"], steps=STEPS)
    check_wandb(tmp_path, n_images=len(STEPS))


def test_key_layout_puts_the_scores_first_in_each_tracker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With correlations asked for, they sit under their own prefix, after the scores: in MLflow's
    metric list and in TensorBoard's tag groups; W&B keeps each score's best value by direction."""
    for module in ("wandb", "tensorboard", "mlflow"):
        pytest.importorskip(module)
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    loggers = make_loggers("lightning.pytorch", tmp_path)
    knn = {"k": 3, "samples": 10, "queries": 6, "correlations": True}
    cb = PairExplanationCallback(["gradcam"], knn=knn, **FAST)
    tr = trainer(
        callbacks=[cb], logger=list(loggers.values()), default_root_dir=tmp_path, max_epochs=3
    )
    tr.fit(make_module_class()())
    run = loggers["wandb"].experiment
    summary = {
        k: {s: run.summary[k][s] for s in run.summary[k].keys()}  # noqa: SIM118 (a W&B SubDict)
        for k in ("explain/gradcam/insertion_simultaneous", "explain/gradcam/deletion_simultaneous")
    }
    run.finish()

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    keys = sorted(client.get_run(loggers["mlflow"].run_id).data.metrics)
    explain = [k for k in keys if k.startswith("explain")]
    first_corr = next(i for i, k in enumerate(explain) if k.startswith("explain_corr/"))
    assert all(k.startswith("explain/") for k in explain[:first_corr])
    assert all(k.startswith("explain_corr/") for k in explain[first_corr:])
    assert "explain/gradcam/insertion_simultaneous" in explain[:first_corr]

    acc = EventAccumulator(loggers["tensorboard"].log_dir)
    acc.Reload()
    groups = {tag.split("/")[0] for tag in acc.Tags()["scalars"] if tag.startswith("explain")}
    assert groups == {"explain", "explain_corr"}

    best = summary["explain/gradcam/insertion_simultaneous"]
    worst = summary["explain/gradcam/deletion_simultaneous"]
    assert set(best) == {"max"}  # higher is better: the run summary keeps the best, the max
    assert set(worst) == {"min"}
    assert 0.0 <= best["max"] <= 1.0 + 1e-6
