"""Diagnostics that speak up: saturated similarities, zero-norm embeddings, degenerate maps and
coarse CAM layers are reported with numbers and the fix, before training and in the logs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lightning_explain import evaluate_probe
from lightning_explain.callback import PairExplanationCallback
from lightning_explain.diagnostics import diagnose, layer_report
from lightning_explain.evaluation import parse_methods
from lightning_explain.render import pair_grid
from tests.callback.helpers import FAST, make_module_class, trainer
from tests.helpers import CentredLeftHalfModel, TinyCNN

X1, X2 = torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16)


class Saturated(nn.Module):
    """Every image maps to nearly one direction: similarities of 0.9999 and more."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyCNN(dim=8)

    def forward(self, x: Tensor) -> Tensor:
        return 1e-3 * self.net(x) + torch.ones(8)


class Coarse(nn.Module):
    """Its only spatial layer is a 2x2 map at 16 px."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 8, stride=8)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv(x)).mean(dim=(2, 3))


def test_saturated_similarities_are_reported_with_numbers_and_the_fix() -> None:
    result = evaluate_probe(Saturated(), (X1, X2), ["input_x_gradient"], [])
    found = diagnose(result, embedding="forward")
    assert float(result.sim.min()) > 0.999
    text = found["saturated"]
    assert f"{float(result.sim.min()):.4f}" in text
    assert "`embedding=` the backbone" in text
    assert "DINO" in text


def test_a_zero_embedding_and_degenerate_maps_are_reported() -> None:
    dead = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        dead[0].bias.fill_(-100.0)  # every ReLU output is 0: the embedding is all zeros
    result = evaluate_probe(dead, (X1, X2), ["input_x_gradient"], [])
    assert result.zero_norm == 3
    found = diagnose(result)
    assert "3 probe pair(s) have an all-zero embedding" in found["zero_norm"]
    flags = result["input_x_gradient"].degenerate()
    assert flags.all()
    assert "6 of 6 maps" in found["degenerate:input_x_gradient"]
    assert result.scalars()["explain/input_x_gradient/degenerate_maps"] == 6.0


def test_a_healthy_evaluation_raises_no_warning() -> None:
    model = CentredLeftHalfModel(size=16)  # centred embeddings: similarities spread out
    result = evaluate_probe(model, (X1, X2), ["input_x_gradient"], [])
    assert float(result.sim.min()) < 0.99
    assert diagnose(result) == {}
    assert result.scalars()["explain/input_x_gradient/degenerate_maps"] == 0.0


def test_the_layer_and_its_grid_are_reported_and_a_coarse_grid_warned() -> None:
    specs = parse_methods(["gradcam", "input_x_gradient"])
    info, coarse = layer_report(Coarse(), specs, "auto", X1, X2)
    assert info == ["method 'gradcam' explains layer 'relu' (found by layer='auto'): a 2x2 grid."]
    (warning,) = coarse
    assert "only 2x2" in warning
    assert "`layer=`" in warning
    info, coarse = layer_report(TinyCNN(), specs, "auto", X1, X2)
    assert "a 8x8 grid" in info[0]
    assert coarse == []


def test_degenerate_maps_are_crossed_out_in_the_pair_grid() -> None:
    h = torch.rand(2, 16, 16)
    marks = torch.tensor([[False, True], [False, False]])
    plain = pair_grid(X1[:2], X2[:2], h, h, padding=0)
    marked = pair_grid(X1[:2], X2[:2], h, h, padding=0, marks=marks)
    changed = (plain != marked).any(dim=0)
    assert changed[:16, 48:].any()  # pair 0, overlay 2 (the fourth tile)
    assert not changed[:, :48].any()  # the other tiles of pair 0
    assert not changed[16:].any()  # pair 1
    red = marked[:, 0, 48]
    assert red.tolist() == [255, 0, 0]


def test_the_callback_warns_before_training(tmp_path: Path) -> None:
    def saturated(module: Any, x: Tensor) -> Tensor:
        return 1e-4 * module.backbone(x) + 1.0

    cb = PairExplanationCallback(["gradcam"], embedding=saturated, log_images=False, **FAST)
    steps: list[int] = []

    class Spy(make_module_class()):  # type: ignore[misc, valid-type]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            steps.append(batch_idx)
            return super().training_step(batch, batch_idx)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(callbacks=[cb], default_root_dir=tmp_path, max_epochs=1).fit(Spy())
    texts = [str(w.message) for w in caught if "similarity above 0.99" in str(w.message)]
    assert len(texts) == 1  # once, not at every evaluation
    assert steps  # the run went on


@pytest.mark.parametrize("method", ["gradcam", "interaction_cam"])
def test_the_callback_reports_the_resolved_layer(
    tmp_path: Path, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    cb = PairExplanationCallback([method], log_images=False, **FAST)
    with caplog.at_level("INFO"):
        trainer(callbacks=[cb], default_root_dir=tmp_path, max_epochs=1).fit(make_module_class()())
    assert any(f"method '{method}' explains layer" in r.getMessage() for r in caplog.records)
