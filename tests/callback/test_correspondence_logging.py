"""Correspondence explanations in the product: the engine's ``interactions``, their scalars,
sharding, rendering, and the callback logging them during a fit."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_explain import evaluate_probe
from lightning_explain.callback import PairExplanationCallback
from lightning_explain.correspondence import explain_interactions, random_views
from lightning_explain.data.probe import ProbeSet
from lightning_explain.evaluation import ProbeEvaluation, parse_interactions
from tests.callback.helpers import FAST, base_images, make_module_class, namespace, trainer

SSL = make_module_class("lightning.pytorch")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 4, stride=4),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).eval()


def _probe(n: int = 4, size: int = 32) -> ProbeSet:
    return random_views(base_images(n, size, seed=3), seed=0).to_probe_set()


def test_engine_interactions_equal_the_direct_call_and_are_scored_with_geometry() -> None:
    net, probe = _net(), _probe()
    assert probe.geometry is not None
    result = evaluate_probe(net, probe, ["gradcam"], [], interactions=["point_to_point"])
    (r,) = result.interactions
    direct = explain_interactions(net, probe.x1, probe.x2, method="point_to_point")
    torch.testing.assert_close(r.interaction.interaction, direct.interaction)
    assert set(r.scores) == {"accuracy", "error_px"}
    scalars = result.scalars()
    accuracy = scalars["explain/correspondence/point_to_point/accuracy"]
    assert 0.0 <= accuracy <= 1.0
    assert accuracy == pytest.approx(float(r.scores["accuracy"].double().nanmean()))
    # Without geometry the interactions are still there, unscored.
    bare = evaluate_probe(net, (probe.x1, probe.x2), ["gradcam"], [], interactions=["bilrp"])
    assert bare.interactions[0].scores == {}
    assert not any("correspondence" in k for k in bare.scalars())


def test_sharded_interactions_concatenate_to_the_whole_set() -> None:
    net, probe = _net(), _probe(5)
    entries = ["point_to_point", {"name": "bilrp", "k": 4}]
    whole = evaluate_probe(net, probe, ["gradcam"], [], interactions=entries)
    parts = [
        evaluate_probe(net, probe.shard(r, 2), ["gradcam"], [], interactions=entries)
        for r in range(2)
    ]
    joined = ProbeEvaluation.concat(parts)
    assert [r.label for r in joined.interactions] == ["point_to_point", "bilrp"]
    for a, b in zip(joined.interactions, whole.interactions):
        torch.testing.assert_close(a.interaction.interaction, b.interaction.interaction)
    for key, value in whole.scalars().items():
        assert joined.scalars()[key] == pytest.approx(value, abs=1e-6), key


def test_interaction_entries_are_checked_early() -> None:
    with pytest.raises(ValueError, match="point_to_point"):
        parse_interactions(["point2point"])  # unknown: the valid names are listed
    with pytest.raises(TypeError, match="n_masks"):
        parse_interactions([{"name": "bilrp", "n_masks": 3}])
    with pytest.raises(ValueError, match="same name"):
        parse_interactions(["bilrp", {"name": "bilrp", "k": 4}])
    with pytest.raises(TypeError, match="interactions"):
        PairExplanationCallback(["gradcam"], interactions=3)  # type: ignore[arg-type]


def test_a_failing_interaction_is_collected_not_fatal() -> None:
    net, probe = _net(), _probe(2)
    result = evaluate_probe(
        net,
        probe,
        ["gradcam"],
        [],
        interactions=[{"name": "point_to_point", "layer": "no_such_layer"}, "bilrp"],
        errors="collect",
    )
    assert [r.label for r in result.interactions] == ["bilrp"]
    assert [(f.stage, f.label) for f in result.failures] == [("method", "point_to_point")]
    assert "no_such_layer" in result.failures[0].message()
    assert result.methods  # the heatmap methods are unaffected


def test_callback_logs_matches_and_the_geometry_score_during_a_fit(tmp_path: Path) -> None:
    probe = random_views(base_images(4, 32, seed=3), seed=0, size=16).to_probe_set()
    path = tmp_path / "probe.pt"
    probe.save(path)
    L = namespace("lightning.pytorch")
    logger = L.loggers.CSVLogger(tmp_path, name="csv")
    options = {k: v for k, v in FAST.items() if k != "probe"}
    cb = PairExplanationCallback(
        ["gradcam"], probe={"source": str(path)}, interactions=["point_to_point"], **options
    )
    tr = trainer(callbacks=[cb], default_root_dir=tmp_path, logger=logger, max_epochs=2)
    tr.fit(SSL())
    rows = list(csv.DictReader((Path(logger.log_dir) / "metrics.csv").read_text().splitlines()))
    key = "explain/correspondence/point_to_point/accuracy"
    logged = [float(r[key]) for r in rows if r.get(key)]
    assert len(logged) == 2
    assert all(0.0 <= v <= 1.0 for v in logged)
    assert key in tr.callback_metrics
    for epoch in (0, 1):
        folder = Path(logger.log_dir) / "explanations" / f"epoch={epoch:03d}"
        pngs = list(folder.glob("*point_to_point*matches*.png"))
        assert len(pngs) == 1, sorted(p.name for p in folder.iterdir())
