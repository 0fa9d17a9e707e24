"""The callback must leave the training run bitwise identical (weights, optimizer, BN, RNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lightning_explain.callback import PairExplanationCallback
from tests.callback.helpers import make_module_class, namespace, trainer
from tests.helpers import hook_count


def _fit(tmp_path: Path, callbacks: list[Any]) -> dict[str, Any]:
    L = namespace("lightning.pytorch")
    L.seed_everything(7, workers=True)
    model = make_module_class()(n=16, batch_size=4)
    tr = trainer(
        callbacks=callbacks,
        max_epochs=3,
        deterministic=True,
        default_root_dir=tmp_path,
        num_sanity_val_steps=2,
    )
    tr.fit(model)
    opt = tr.optimizers[0]
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "momentum": [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()],
        "training": {n: m.training for n, m in model.named_modules()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state()[1].copy(),
        "metrics": {k: float(v) for k, v in tr.callback_metrics.items()},
        "hooks": hook_count(model),
        "modules": [n for n, _ in model.named_modules()],
    }


@pytest.fixture
def deterministic() -> Any:
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def test_training_is_bitwise_identical_with_the_callback(
    tmp_path: Path, deterministic: Any
) -> None:
    plain = _fit(tmp_path / "plain", [])
    callback = PairExplanationCallback()  # default methods, metrics, n_pairs; every epoch
    explained = _fit(tmp_path / "explained", [callback])

    # The callback really ran, every epoch, without failures.
    assert explained["metrics"]["explain/errors"] == 0.0
    assert "explain/gradcam/insertion_simultaneous" in explained["metrics"]
    assert "explain/interaction_cam/deletion_conditional" in explained["metrics"]
    assert callback.state_dict()["evaluations"] == 3
    assert len(callback.probe) == 8

    for name, p in plain["params"].items():
        assert torch.equal(p, explained["params"][name]), f"parameter {name} differs"
    for name, b in plain["buffers"].items():
        assert torch.equal(b, explained["buffers"][name]), f"buffer {name} differs"
    for a, b in zip(plain["momentum"], explained["momentum"]):
        assert torch.equal(a, b), "optimizer momentum differs"
    for name, g in plain["grads"].items():
        h = explained["grads"][name]
        assert (g is None) == (h is None)
        if g is not None:
            assert torch.equal(g, h), f"gradient of {name} differs"
    assert plain["training"] == explained["training"]
    assert explained["hooks"] == plain["hooks"] == 0  # no hook left behind
    assert explained["modules"] == plain["modules"]  # nothing registered on the module
    assert torch.equal(plain["torch_rng"], explained["torch_rng"])
    assert np.array_equal(plain["numpy_rng"], explained["numpy_rng"])
    assert plain["metrics"]["train_loss"] == explained["metrics"]["train_loss"]
