"""Explanations vs downstream quality, end to end: a small SimCLR trained on scikit-learn's digits
with the online kNN probe; the logged accuracy and correlations against lightly and scipy; then
``compare`` over its checkpoints (kNN column, correlation table and scatter in the dashboard) and
``report`` on its last checkpoint (the three table files, best per column marked)."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_explain.metrics import metric_info
from tests.cli.conftest import run_cli

METHODS = ("gradcam", "input_x_gradient")
METRICS = ("insertion_simultaneous", "deletion_simultaneous", "average_drop_simultaneous")
EPOCHS = 4
KNN_K = 10


# --------------------------------------------------------------------------------------------------
# A tiny SimCLR on digits (the demo's data, at 16 px)


def digits(size: int = 16) -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 digits as ``(N, 3, size, size)`` images in [0, 1] and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy(data.images).float().unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0, 1).repeat(1, 3, 1, 1), torch.from_numpy(data.target).long()


class TwoViewDigits(Dataset[Any]):
    """Items ``([v1, v2], label)``: two random shifts with noise, drawn from the global RNG."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _view(self, x: Tensor) -> Tensor:
        dy, dx = (int(v) for v in torch.randint(-2, 3, (2,)))
        x = torch.roll(x, shifts=(dy, dx), dims=(1, 2))
        return (x * (0.7 + 0.6 * torch.rand(())) + 0.1 * torch.randn_like(x)).clamp(0, 1)

    def __getitem__(self, i: int) -> Any:
        x = self.images[i]
        return [self._view(x), self._view(x)], int(self.labels[i])


class DigitsSimCLR(pl.LightningModule):
    """conv-BN-ReLU backbone + projection head, NT-Xent loss; explained: the projection."""

    def __init__(self, lr: float = 0.1, temperature: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 16))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        (v1, v2), _ = batch
        z = F.normalize(self(torch.cat([v1, v2])), dim=1)
        n = v1.shape[0]
        logits = (z @ z.T / self.hparams["temperature"]).masked_fill(
            torch.eye(2 * n, dtype=torch.bool), float("-inf")
        )
        targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
        loss = F.cross_entropy(logits, targets)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        return None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=0.9)


@dataclass(frozen=True)
class DigitsRun:
    root: Path
    checkpoints: list[Path]
    rows: list[dict[str, str]]  # metrics.csv rows with explain/knn_accuracy
    callback: Any
    probe: Path


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> DigitsRun:
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from lightning_explain.pl import PairExplanationCallback

    root = tmp_path_factory.mktemp("digits")
    images, labels = digits()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train = TwoViewDigits(images[order[:600]], labels[order[:600]])
    val = TwoViewDigits(images[order[600:760]], labels[order[600:760]])
    pl.seed_everything(0)
    callback = PairExplanationCallback(
        list(METHODS),
        list(METRICS),
        probe={"n_pairs": 2},
        n_steps=4,
        knn={
            "k": KNN_K,
            "samples": 300,
            "queries": 120,
            "embedding": "backbone",
            "correlations": True,
        },
    )
    logger = CSVLogger(root, name="csv", version="")
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[callback, ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1)],
        limit_train_batches=8,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(
        DigitsSimCLR(),
        DataLoader(train, batch_size=64, shuffle=True, drop_last=True),
        DataLoader(val, batch_size=64),
    )
    text = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()
    rows = [r for r in csv.DictReader(text) if r.get("explain/knn_accuracy")]
    checkpoints = sorted((root / "ckpt").glob("*.ckpt"))  # epoch=0-step=8.ckpt, ...
    probe = callback.save_probe(root / "probe.pt")
    return DigitsRun(root, checkpoints, rows, callback, probe)


# --------------------------------------------------------------------------------------------------
# The training run


def test_logged_knn_accuracy_moves_and_matches_lightly(digits_run: DigitsRun) -> None:
    lightly_benchmarking = pytest.importorskip("lightly.utils.benchmarking")
    from lightning_explain.checkpoints import build_module, load_checkpoint

    rows = digits_run.rows
    assert [int(r["step"]) for r in rows] == [8 * (e + 1) for e in range(EPOCHS)]  # epoch ends
    accuracy = [float(r["explain/knn_accuracy"]) for r in rows]
    assert all(0.0 <= a <= 1.0 for a in accuracy)
    assert len(set(accuracy)) > 1, accuracy  # it changes over the epochs

    knn = digits_run.callback.probe.knn
    assert (len(knn.bank), len(knn.queries), knn.num_classes) == (300, 120, 10)
    assert (knn.bank_source, knn.query_source) == ("train", "val")
    for epoch, path in enumerate(digits_run.checkpoints):
        module = build_module(path, load_checkpoint(path), trust=True)  # our own checkpoints
        with torch.no_grad():
            bank = F.normalize(module.backbone(knn.bank), dim=1)
            queries = F.normalize(module.backbone(knn.queries), dim=1)
        pred = lightly_benchmarking.knn_predict(
            queries, bank.t(), knn.bank_labels, 10, knn_k=KNN_K, knn_t=0.1
        )[:, 0]
        expected = float((pred == knn.query_labels).double().mean())
        assert accuracy[epoch] == pytest.approx(expected, abs=1e-6), epoch


def test_logged_correlations_match_scipy(digits_run: DigitsRun) -> None:
    stats = pytest.importorskip("scipy.stats")
    rows = digits_run.rows
    accuracy = [float(r["explain/knn_accuracy"]) for r in rows]
    checked = 0
    for n in range(1, EPOCHS + 1):
        row = rows[n - 1]
        for method in METHODS:
            for metric in METRICS:
                key = f"explain_corr/{method}/{metric}"
                if n < 3:  # fewer than 3 points: not logged
                    assert not row.get(f"{key}/spearman")
                    continue
                scores = [float(r[f"explain/{method}/{metric}"]) for r in rows[:n]]
                spearman = float(row[f"{key}/spearman"])
                pearson = float(row[f"{key}/pearson"])
                if len(set(accuracy[:n])) == 1 or len(set(scores)) == 1:
                    assert math.isnan(spearman)
                    assert math.isnan(pearson)
                    continue
                assert spearman == pytest.approx(
                    stats.spearmanr(scores, accuracy[:n]).statistic, abs=1e-5
                )
                assert pearson == pytest.approx(
                    stats.pearsonr(scores, accuracy[:n]).statistic, abs=1e-5
                )
                checked += 1
    assert checked >= len(METHODS) * len(METRICS)
    # The correlation table and scatter went to the CSV logger's file sink.
    folder = digits_run.root / "csv" / "explanations" / f"epoch={EPOCHS - 1:03d}"
    assert (folder / "explain_corr_scatter.png").is_file()
    table = list(csv.DictReader((folder / "explain_corr_table.csv").read_text().splitlines()))
    assert len(table) == len(METHODS) * len(METRICS)


# --------------------------------------------------------------------------------------------------
# compare and report


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.table: str | None = None
        self.cells: list[tuple[str, dict[str, str]]] = []
        self.tabs: list[str] = []
        self.images: list[str] = []
        self.rows: list[dict[str, str]] = []
        self._figure: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self.table = a.get("id")
        if tag == "button" and "data-tab" in a:
            self.tabs.append(a["data-tab"])
        if tag == "td" and "data-col" in a:
            self.cells.append((self.table or "", a))
        if tag == "tr" and self.table == "correlation-table" and "data-method" in a:
            self.rows.append(a)
        if tag == "figure":
            self._figure = a.get("id")
        if tag == "img" and self._figure == "correlation-scatter":
            self.images.append(a.get("src", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.table = None
        if tag == "figure":
            self._figure = None


@pytest.fixture(scope="module")
def comparison(digits_run: DigitsRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare")
    code, _, err = run_cli(
        [
            "compare",
            *map(str, digits_run.checkpoints),
            "--trust-checkpoint",  # our own files: their recorded class path may be imported
            "--methods",
            *METHODS,
            "--metrics",
            *METRICS,
            "--n-steps",
            "4",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert code == 0, err
    return out


def test_compare_shows_knn_accuracy_and_correlations(
    digits_run: DigitsRun, comparison: Path
) -> None:
    payload = json.loads((comparison / "metrics.json").read_text(encoding="utf-8"))
    logged = [float(r["explain/knn_accuracy"]) for r in digits_run.rows]
    # The stored kNN set, k and embedding: the accuracies the callback logged at each epoch.
    assert [c["knn_accuracy"] for c in payload["checkpoints"]] == pytest.approx(logged, abs=1e-6)

    page = _Page()
    page.feed((comparison / "index.html").read_text(encoding="utf-8"))
    assert "downstream" in page.tabs
    knn_cells = [
        a for t, a in page.cells if t == "metric-table" and a["data-col"] == "knn_accuracy"
    ]
    assert len(knn_cells) == len(METHODS) * EPOCHS
    assert [float(a["data-value"]) for a in knn_cells] == pytest.approx(logged * len(METHODS))
    best = max(logged)
    assert {a["data-best"] for a in knn_cells if float(a["data-value"]) == best} == {"true"}
    assert len(page.rows) == len(METHODS) * len(METRICS)
    assert page.images
    assert page.images[0].startswith("data:image/png;base64,")

    # The table equals the callback's last correlations (same pairs, images, n_steps, weights).
    last = digits_run.rows[-1]
    with open(comparison / "correlations.csv", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(METHODS) * len(METRICS)
    for row in table:
        key = f"explain_corr/{row['method']}/{row['metric']}"
        assert int(row["n"]) == EPOCHS
        for name in ("spearman", "pearson"):
            ours, theirs = float(row[name]), float(last[f"{key}/{name}"])
            assert (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(
                theirs, abs=1e-3
            ), (key, name)
    # The dashboard's correlation table shows the same numbers.
    spearman_cells = [
        a for t, a in page.cells if t == "correlation-table" and a["data-col"] == "spearman"
    ]
    shown = {
        (r["data-method"], r["data-metric"]): float(a["data-value"])
        for r, a in zip(page.rows, spearman_cells)
    }
    for row in table:
        value, expected = shown[(row["method"], row["metric"])], float(row["spearman"])
        assert (math.isnan(value) and math.isnan(expected)) or value == pytest.approx(expected)


def test_two_checkpoints_give_a_knn_column_and_undefined_correlations(
    digits_run: DigitsRun, tmp_path: Path
) -> None:
    code, out, err = run_cli(
        [
            "compare",
            *map(str, digits_run.checkpoints[:2]),
            "--trust-checkpoint",
            "--methods",
            "gradcam",
            "--metrics",
            "insertion_simultaneous",
            "--n-steps",
            "4",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0, err
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert 'data-col="knn_accuracy"' in html
    assert 'id="correlation-table"' in html
    row = next(csv.DictReader((tmp_path / "correlations.csv").read_text().splitlines()))
    assert row["n"] == "2"
    assert math.isnan(float(row["spearman"]))
    assert "knn_accuracy" in out  # the printed summary


def test_report_writes_markdown_csv_html_with_best_per_column(
    digits_run: DigitsRun, tmp_path: Path
) -> None:
    code, out, err = run_cli(
        [
            "report",
            str(digits_run.checkpoints[-1]),
            "--trust-checkpoint",
            "--probe",
            str(digits_run.probe),
            "--methods",
            *METHODS,
            "--metrics",
            *METRICS,
            "--n-steps",
            "4",
            "--title",
            "Digits <b>report</b> & co",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0, err
    with open(tmp_path / "report.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == list(METHODS)
    expected: dict[str, set[str]] = {}
    for metric in METRICS:
        values = {r["method"]: float(r[metric]) for r in rows}
        pick = max if metric_info(metric).higher_is_better else min
        target = pick(values.values())
        expected[metric] = {m for m, v in values.items() if v == target}
    for r in rows:
        assert set(filter(None, r["best_in"].split(";"))) == {
            k for k in METRICS if r["method"] in expected[k]
        }

    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert out.startswith(markdown.rstrip("\n")[:40])  # printed too
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for metric, cell in zip(METRICS, header[1:]):
        arrow = "↑" if metric_info(metric).higher_is_better else "↓"
        assert cell == f"{metric} {arrow}"
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        method = cells[0]
        for metric, cell in zip(METRICS, cells[1:]):
            assert cell.startswith("**") == (method in expected[metric]), (method, metric, cell)
    assert "kNN accuracy" in markdown
    assert "Digits \\<b\\>report\\</b\\> & co" in markdown

    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<b>report</b>" not in page
    assert "Digits &lt;b&gt;report&lt;/b&gt; &amp; co" in page
    assert not re.search(r"""(src|href)\s*=""", page)  # self-contained: nothing is fetched
    marked = re.findall(r'data-col="(\w+)" data-value="[^"]*" data-best="true"', page)
    assert sorted(marked) == sorted(k for k in METRICS for _ in expected[k])
    assert page.count("<strong>") == sum(len(v) for v in expected.values())
