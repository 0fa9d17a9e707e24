"""The online kNN probe and the score/accuracy correlations: the kNN vote against lightly's, the
correlations against scipy, the seeded kNN set, and the callback's logging, state and guest rules."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lightning_explain.callback import PairExplanationCallback
from lightning_explain.data import KNNSet, ProbeSet, draw_knn_set
from lightning_explain.downstream import correlate, knn_accuracy, knn_predict
from tests.callback.helpers import (
    FAST,
    PairDataset,
    TwoViewDataset,
    make_module_class,
    namespace,
    trainer,
)

SSL = make_module_class("lightning.pytorch")
KNN: dict[str, Any] = dict(knn={"k": 3, "samples": 10, "queries": 6, "correlations": True})


def _fit(cb: PairExplanationCallback, tmp_path: Path, *, model: Any = None, **kwargs: Any) -> Any:
    tr = trainer(callbacks=[cb], default_root_dir=tmp_path, **kwargs)
    tr.fit(model if model is not None else SSL())
    return tr


# --------------------------------------------------------------------------------------------------
# The kNN vote and the correlations


@pytest.mark.parametrize(("k", "t", "classes"), [(1, 0.1, 3), (5, 0.1, 4), (40, 0.5, 10)])
def test_knn_predict_equals_lightly(k: int, t: float, classes: int) -> None:
    lightly_benchmarking = pytest.importorskip("lightly.utils.benchmarking")
    g = torch.Generator().manual_seed(k)
    bank = F.normalize(torch.randn(60, 8, generator=g), dim=1)
    labels = torch.randint(0, classes, (60,), generator=g)
    queries = F.normalize(torch.randn(25, 8, generator=g), dim=1)
    ours = knn_predict(queries, bank.t(), labels, classes, knn_k=k, knn_t=t)
    theirs = lightly_benchmarking.knn_predict(queries, bank.t(), labels, classes, knn_k=k, knn_t=t)
    assert ours.shape == theirs.shape == (25, classes)
    assert torch.equal(ours, theirs)  # the whole class ranking, not only the prediction


def test_knn_accuracy_separates_clusters_and_caps_k() -> None:
    g = torch.Generator().manual_seed(0)
    centers = torch.eye(4, 6) * 5
    labels = torch.arange(4).repeat_interleave(10)
    bank = centers[labels] + 0.3 * torch.randn(40, 6, generator=g)
    queries = centers[labels[::2]] + 0.3 * torch.randn(20, 6, generator=g)
    acc = knn_accuracy(queries, labels[::2], bank, labels, num_classes=4, k=500)  # k capped to 40
    assert acc == 1.0
    shuffled = labels[torch.randperm(40, generator=g)]
    assert knn_accuracy(queries, labels[::2], bank, shuffled, num_classes=4, k=5) < 0.75
    with pytest.raises(ValueError, match=r"knn_k=61. exceeds the bank size 40"):
        knn_predict(queries, bank.t(), labels, 4, knn_k=61)
    with pytest.raises(ValueError, match="knn_t"):
        knn_predict(queries, bank.t(), labels, 4, knn_t=0.0)


def test_correlate_matches_scipy_and_is_nan_when_undefined() -> None:
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(3)
    x = torch.rand(9, generator=g).tolist()
    y = (torch.tensor(x) * 0.5 + 0.3 * torch.rand(9, generator=g)).tolist()
    y[2] = y[5]  # a tie: Spearman uses average ranks, as scipy does
    n, spearman, pearson = correlate(x, y)
    assert n == 9
    assert spearman == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-6)
    assert pearson == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-9)
    # Non-finite pairs are dropped.
    n, spearman, _ = correlate([*x, math.nan], [*y, 0.5])
    assert n == 9
    assert spearman == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-6)
    # Undefined: fewer than 3 points, or a constant series (torchmetrics alone would say 0).
    assert all(math.isnan(v) for v in correlate([0.1, 0.2], [0.3, 0.4])[1:])
    assert all(math.isnan(v) for v in correlate([0.5, 0.5, 0.5, 0.5], [0.1, 0.2, 0.3, 0.4])[1:])
    assert all(math.isnan(v) for v in correlate([0.1, 0.2, 0.3], [0.7, 0.7, 0.7])[1:])
    with pytest.raises(ValueError, match="one length"):
        correlate([1.0], [1.0, 2.0])


# --------------------------------------------------------------------------------------------------
# The kNN set


def test_knn_set_is_seeded_labelled_and_leaves_the_global_rngs_alone() -> None:
    train, val = TwoViewDataset(20, seed=1), TwoViewDataset(8, seed=2)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    a = draw_knn_set(train, val, n_bank=12, n_queries=5, seed=4)
    b = draw_knn_set(train, val, n_bank=12, n_queries=5, seed=4)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert random.getstate() == before[2]
    assert torch.equal(a.bank, b.bank)
    assert torch.equal(a.queries, b.queries)
    assert a.bank.shape == (12, 3, 16, 16)
    assert a.queries.shape == (5, 3, 16, 16)
    assert a.bank_labels.tolist() == [i % 2 for i in a.bank_indices]
    assert a.query_labels.tolist() == [i % 2 for i in a.query_indices]
    assert a.num_classes == 2
    assert (a.bank_source, a.query_source) == ("train", "val")
    # The first (augmented) view of each item, under the seed; stored exactly at float16.
    assert torch.equal(a.bank.half().float(), a.bank)
    c = draw_knn_set(train, val, n_bank=12, n_queries=5, seed=5)
    assert not torch.equal(a.bank, c.bank)

    # Without a query set: a disjoint split of the bank's dataset (at most half are queries).
    split = draw_knn_set(train, None, n_bank=100, n_queries=100, seed=0)
    assert len(split.queries) == 10
    assert len(split.bank) == 10
    assert not set(split.bank_indices) & set(split.query_indices)
    assert split.query_source == "train"

    # clean_transform: the raw image (transform off), deterministically transformed.
    clean = draw_knn_set(train, val, n_bank=4, n_queries=2, clean_transform=lambda x: x * 2)
    expected = (train.images[list(clean.bank_indices)] * 2).half().float()
    assert torch.equal(clean.bank, expected)
    assert train.transform is not None  # restored


def test_knn_set_needs_labels_and_round_trips() -> None:
    with pytest.raises(ValueError, match=r"labelled items \(x, label, ...\).*knn=None"):
        draw_knn_set(PairDataset(6), None, n_bank=2, n_queries=2)
    knn = draw_knn_set(TwoViewDataset(8), TwoViewDataset(4, seed=3), n_bank=5, n_queries=3)
    data = knn.to_dict()
    assert data["bank"].dtype == torch.float16  # half the bytes in checkpoints
    back = KNNSet.from_dict(data)
    assert torch.equal(back.bank, knn.bank)
    assert torch.equal(back.query_labels, knn.query_labels)
    assert back.bank_indices == knn.bank_indices


# --------------------------------------------------------------------------------------------------
# The callback


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"knn": {"k": 0}}, ValueError, "`KNNSettings`: expected `k` >= 1"),
        ({"knn": {"k": 2.5}}, TypeError, "`k` to be an int"),
        ({"knn": {"temperature": 0}}, ValueError, "`temperature` > 0"),
        ({"knn": {"samples": 0}}, ValueError, "`samples`"),
        ({"knn": {"queries": -1}}, ValueError, "`queries`"),
        ({"knn": {"embedding": "nomodule_xyz:fn"}}, ValueError, "could not import `embedding="),
        ({"knn": {"embedding": 3}}, TypeError, "`embedding`"),
        ({"knn": {"neighbours": 3}}, TypeError, "Valid keys: \\['k', 'temperature'"),
    ],
)
def test_constructor_rejects_bad_knn_arguments(
    kwargs: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        PairExplanationCallback(**kwargs)


def test_knn_accuracy_and_correlations_are_logged(tmp_path: Path) -> None:
    stats = pytest.importorskip("scipy.stats")
    lightly_benchmarking = pytest.importorskip("lightly.utils.benchmarking")
    cb = PairExplanationCallback(
        ["gradcam"],
        knn={"k": 3, "samples": 10, "queries": 6, "embedding": "backbone", "correlations": True},
        **FAST,
    )
    namespace("lightning.pytorch").seed_everything(0)
    model = SSL()
    tr = _fit(cb, tmp_path, model=model, max_epochs=4)
    metrics = tr.callback_metrics
    knn = cb.probe.knn
    assert knn is not None
    assert (len(knn.bank), len(knn.queries)) == (10, 6)  # 16 train items, 8 val items
    assert (knn.bank_source, knn.query_source) == ("train", "val")
    assert (knn.k, knn.embedding) == (3, "backbone")  # recorded for `compare`

    # The last accuracy, recomputed independently with lightly on the final weights.
    model.eval()
    with torch.no_grad():
        bank = F.normalize(model.backbone(knn.bank), dim=1)
        queries = F.normalize(model.backbone(knn.queries), dim=1)
    pred = lightly_benchmarking.knn_predict(queries, bank.t(), knn.bank_labels, 2, 3, 0.1)[:, 0]
    expected = float((pred == knn.query_labels).float().mean())
    assert float(metrics["explain/knn_accuracy"]) == pytest.approx(expected, abs=1e-6)

    # One history entry per evaluation; correlations from the third on, equal to scipy's.
    history = cb.history
    assert [e["epoch"] for e in history] == [0, 1, 2, 3]
    assert [e["step"] for e in history] == [4, 8, 12, 16]
    key = "gradcam/insertion_simultaneous"
    xs = [e["scores"][key] for e in history]
    ys = [e["knn_accuracy"] for e in history]
    spearman = float(metrics[f"explain_corr/{key}/spearman"])
    pearson = float(metrics[f"explain_corr/{key}/pearson"])
    assert len(set(ys)) > 1, ys  # the accuracy moves over these epochs (seeded)
    assert spearman == pytest.approx(stats.spearmanr(xs, ys).statistic, abs=1e-5)
    assert pearson == pytest.approx(stats.pearsonr(xs, ys).statistic, abs=1e-5)
    assert "explain_corr/gradcam/deletion_simultaneous/pearson" in metrics
    # Table and scatter through the sinks (the file sink here), from the third evaluation on.
    folder = tmp_path / "explanations"
    assert not (folder / "epoch=001" / "explain_corr_table.csv").exists()
    for epoch in (2, 3):
        assert (folder / f"epoch={epoch:03d}" / "explain_corr_table.csv").is_file()
        assert (folder / f"epoch={epoch:03d}" / "explain_corr_scatter.png").is_file()
    table = (folder / "epoch=003" / "explain_corr_table.csv").read_text().splitlines()
    assert table[0] == "method,metric,direction,n,spearman,pearson"
    assert table[1].startswith("gradcam,insertion_simultaneous,higher is better,4,")

    # compute_scores reproduces the logged accuracy from the weights and the stored kNN set.
    assert cb.compute_scores(model)["explain/knn_accuracy"] == pytest.approx(expected, abs=1e-6)


def test_knn_set_and_history_persist_across_resume(tmp_path: Path) -> None:
    L = namespace("lightning.pytorch")
    ckpt = L.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = PairExplanationCallback(["gradcam"], log_images=False, **KNN, **FAST)
    tr = trainer(
        callbacks=[first, ckpt], default_root_dir=tmp_path, max_epochs=2, enable_checkpointing=True
    )
    tr.fit(SSL())
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]
    stored = state[first.state_key]
    assert stored["probe"]["knn"]["bank"].shape == (10, 3, 16, 16)
    assert len(stored["history"]) == 2

    # Resumed with a model whose datasets differ: the stored images are kept, the history goes on.
    second = PairExplanationCallback(["gradcam"], log_images=False, **KNN, **FAST)
    tr = trainer(callbacks=[second], default_root_dir=tmp_path, max_epochs=3)
    tr.fit(SSL(n=20), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert torch.equal(second.probe.knn.bank, first.probe.knn.bank)
    assert [e["epoch"] for e in second.history] == [0, 1, 2]
    assert "explain_corr/gradcam/insertion_simultaneous/spearman" in tr.callback_metrics

    # Other kNN settings: a new kNN set, a fresh history, and a warning.
    third = PairExplanationCallback(
        ["gradcam"], log_images=False, knn={"k": 3, "samples": 4, "queries": 6}, **FAST
    )
    tr = trainer(callbacks=[third], default_root_dir=tmp_path, max_epochs=3)
    with pytest.warns(UserWarning, match="kNN set was drawn with other settings"):
        tr.fit(SSL(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert len(third.probe.knn.bank) == 4
    assert [e["epoch"] for e in third.history] == [2]
    assert torch.equal(third.probe.x1, first.probe.x1)  # the pairs themselves are kept


def test_probe_file_carries_the_knn_set(tmp_path: Path) -> None:
    cb = PairExplanationCallback(["gradcam"], log_images=False, **KNN, **FAST)
    _fit(cb, tmp_path / "a", max_epochs=1)
    path = cb.save_probe(tmp_path / "probe.pt")
    assert path.stat().st_size < 100_000
    loaded = ProbeSet.load(path)
    assert loaded.knn is not None
    assert torch.equal(loaded.knn.queries, cb.probe.knn.queries)

    other = PairExplanationCallback(
        ["gradcam"],
        log_images=False,
        knn={"k": 2},
        **{**FAST, "probe": {"n_pairs": 2, "source": str(path)}},
    )
    tr = _fit(other, tmp_path / "b", model=SSL(n=12), max_epochs=1)
    assert torch.equal(other.probe.knn.bank, cb.probe.knn.bank)  # the file's images, not new ones
    assert other.probe.knn.k == 2
    assert 0.0 <= float(tr.callback_metrics["explain/knn_accuracy"]) <= 1.0


def test_unlabelled_validation_falls_back_to_a_train_split(tmp_path: Path) -> None:
    class PairVal(SSL):  # type: ignore[misc, valid-type]
        def val_dataloader(self) -> Any:
            return DataLoader(PairDataset(4), batch_size=4)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            return None

    cb = PairExplanationCallback(
        ["gradcam"], log_images=False, **KNN, **{**FAST, "probe": {"n_pairs": 2, "source": "train"}}
    )
    _fit(cb, tmp_path, model=PairVal(), max_epochs=1)
    knn = cb.probe.knn
    assert (knn.bank_source, knn.query_source) == ("train", "train")
    assert len(knn.queries) == 6
    assert len(knn.bank) == 10
    assert not set(knn.bank_indices) & set(knn.query_indices)


def test_trainer_validate_draws_bank_and_queries_from_the_validation_set(tmp_path: Path) -> None:
    class ValidationOnly(SSL):  # type: ignore[misc, valid-type]
        train_dataloader = None  # no training data anywhere

    cb = PairExplanationCallback(["gradcam"], hook="validation_epoch_end", **KNN, **FAST)
    tr = trainer(callbacks=[cb], default_root_dir=tmp_path, inference_mode=True)
    tr.validate(ValidationOnly(), verbose=False)
    knn = cb.probe.knn
    assert (knn.bank_source, knn.query_source) == ("val", "val")
    assert len(knn.bank) + len(knn.queries) == 8  # the validation set's 8 items, split
    assert not set(knn.bank_indices) & set(knn.query_indices)
    assert 0.0 <= float(tr.callback_metrics["explain/knn_accuracy"]) <= 1.0


def test_unlabelled_data_and_a_bad_knn_embedding_fail_fast(tmp_path: Path) -> None:
    class Unlabelled(SSL):  # type: ignore[misc, valid-type]
        def train_dataloader(self) -> Any:
            return DataLoader(PairDataset(8), batch_size=4)

        def val_dataloader(self) -> Any:
            return []

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            v1, v2 = batch
            return (self(v1) - self(v2)).pow(2).mean()

    cb = PairExplanationCallback(
        ["gradcam"],
        log_images=False,
        **KNN,
        **{**FAST, "probe": {"n_pairs": 2, "pairing": "dataset"}},
    )
    with pytest.raises(ValueError, match=r"`knn`.*labelled items"):
        _fit(cb, tmp_path / "a", model=Unlabelled(), max_epochs=1, limit_val_batches=0)

    cb = PairExplanationCallback(
        ["gradcam"],
        knn={"k": 3, "samples": 10, "queries": 6, "embedding": "tests.callback.helpers:spatial_embedding"},
        log_images=False,
        **FAST,
    )
    with pytest.raises(ValueError, match=r"kNN accuracy.*Check `knn.embedding`"):
        _fit(cb, tmp_path / "b", max_epochs=1)


def test_training_is_bitwise_identical_with_the_knn_probe(tmp_path: Path) -> None:
    def fit(callbacks: list[Any], root: Path) -> dict[str, Any]:
        L = namespace("lightning.pytorch")
        L.seed_everything(7, workers=True)
        model = SSL(n=16, batch_size=4)
        tr = trainer(callbacks=callbacks, max_epochs=3, default_root_dir=root)
        tr.fit(model)
        return {
            "params": [p.detach().clone() for p in model.parameters()],
            "buffers": [b.clone() for b in model.buffers()],
            "training": [m.training for m in model.modules()],
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state()[1].copy(),
            "loss": float(tr.callback_metrics["train_loss"]),
        }

    plain = fit([], tmp_path / "plain")
    cb = PairExplanationCallback(["gradcam"], **KNN, **FAST)
    probed = fit([cb], tmp_path / "probed")
    assert len(cb.history) == 3
    assert all(torch.equal(a, b) for a, b in zip(plain["params"], probed["params"]))
    assert all(torch.equal(a, b) for a, b in zip(plain["buffers"], probed["buffers"]))
    assert plain["training"] == probed["training"]
    assert torch.equal(plain["torch_rng"], probed["torch_rng"])
    assert np.array_equal(plain["numpy_rng"], probed["numpy_rng"])
    assert plain["loss"] == probed["loss"]
