"""The parts of ``benchmarks/paper_side_by_side.py`` that do not need the authors' code (which CI
does not have): the model layout their GradCAM expects, the pairs, our maps at the input size, the
step matching, the noise injection into a module's ``torch`` and the summary's verdicts."""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_explain import explain

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_side_by_side.py"


@pytest.fixture(scope="module")
def script() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("paper_side_by_side", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_model_has_the_authors_layout_and_our_maps_have_the_input_size(script):
    model = script.build_model(seed=0)
    assert not model.training
    assert isinstance(model.encoder.net, torch.nn.Module)
    assert isinstance(model.contrastive_head, torch.nn.Module)
    x1, x2, xt, _ = script.make_pairs(2, 64, seed=0, source="generated")
    assert x1.shape == x2.shape == xt.shape == (2, 3, 64, 64)
    with torch.no_grad():
        feats = model.encoder.net(x1)
        z = model(x1)
        expected = model.contrastive_head(feats.mean(dim=[2, 3]))
    assert feats.shape == (2, 512, 2, 2)
    torch.testing.assert_close(z, expected)
    e = explain(model, x1, x2, method="gradcam", layer=script.LAYER)
    assert e.h1.shape == e.h2.shape == (2, 64, 64)
    maps = script.our_map_pair(model, x1, xt, "averaged_transforms", design="paper", steps=3)
    assert maps.shape == (2, 2, 64, 64)
    assert float(maps.amax()) == pytest.approx(1.0)


def test_photometric_view_is_pixel_aligned(script):
    x1, x2, xt, _ = script.make_pairs(1, 32, seed=1, source="generated")
    # T only changes colours: a brighter pixel of x1 stays at the same place in T(x1).
    gray1, grayt = x1.mean(1).flatten(), xt.mean(1).flatten()
    assert float(torch.corrcoef(torch.stack([gray1, grayt]))[0, 1]) > 0.9
    assert not torch.equal(x1, x2)


def test_paper_steps_walk_the_authors_pixels(script):
    assert script.paper_steps(224) == (224, 224)
    for size in (32, 64, 100, 224):
        n_steps, step = script.paper_steps(size)
        assert math.ceil(size * size / step) == n_steps
        assert math.ceil(size * size / n_steps) == step


def test_torch_proxy_hands_out_prepared_noise_in_order(script):
    draws = [torch.full((1, 2), float(k)) for k in range(3)]
    feed = script.NoiseFeed(draws, sigma=0.5)
    fake = types.SimpleNamespace(torch=torch)

    def authors_style(img: torch.Tensor) -> list[torch.Tensor]:
        return [img + fake.torch.zeros_like(img).normal_(0, 0.5) for _ in range(3)]

    with script.patched(fake, "torch", script.TorchProxy(feed)):
        out = authors_style(torch.zeros(1, 2))
        assert fake.torch.cat is torch.cat  # everything else is torch's
    assert fake.torch is torch
    assert [float(o[0, 0]) for o in out] == [0.0, 1.0, 2.0]
    assert feed.used == 3
    with pytest.raises(RuntimeError, match="more than 3"):
        feed.take()
    with pytest.raises(RuntimeError, match="sigma"):
        script.NoiseFeed(draws, sigma=0.5).take(std=0.25)


def test_cached_condition_returns_the_stored_embedding(script):
    net = torch.nn.Linear(4, 3)
    cached = script.CachedCondition(net)
    x = torch.randn(2, 4)
    cached.remember(x)
    calls = []
    net.register_forward_hook(lambda *args: calls.append(1))
    torch.testing.assert_close(cached(x.clone()), net(x).detach())
    assert len(calls) == 1  # only the direct call above
    cached(x + 1)
    assert len(calls) == 2


def test_rows_summary_and_exit_code(script):
    rows = [
        script.Row("a", 1e-7, 1e-5),
        script.Row("b", 3e-4, None, "informative"),
        script.Row("c", float("nan"), 1e-5),
    ]
    assert [r.status for r in rows] == ["PASS", "INFO", "FAIL"]
    assert script.exit_code(rows[:2]) == 0
    assert script.exit_code(rows) == 1
    table = script.summary_table(rows)
    assert "| b (informative) | 3.000e-04 | - | INFO |" in table
    assert script.max_abs(np.zeros(2), torch.tensor([0.0, -2.0])) == 2.0


def test_main_reports_a_missing_checkout(script, tmp_path, capsys):
    assert script.main(["--explain-cl", str(tmp_path)]) == 2
    assert "methods.py not found" in capsys.readouterr().err
