"""PairExplanationCallback: failure handling (on_error, dry run, strategies), where the probe set
comes from, and its persistence (probe files, checkpoints, resume)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_explain.evaluation as evaluation_module
from lightning_explain.callback import PairExplanationCallback
from lightning_explain.data import ProbeSet
from tests.callback.helpers import (
    FAST,
    PairDataset,
    TwoViewDataset,
    make_module_class,
    namespace,
    trainer,
)

SSL = make_module_class("lightning.pytorch")


def _fit(cb: PairExplanationCallback, tmp_path: Path, *, model: Any = None, **kwargs: Any) -> Any:
    tr = trainer(callbacks=[cb], default_root_dir=tmp_path, **kwargs)
    tr.fit(model if model is not None else SSL())
    return tr


# --------------------------------------------------------------------------------------------------
# Errors


def _flaky_explain(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """Make `method` fail on more than one pair: the dry run (one pair) passes, epochs fail."""
    real = evaluation_module.explain

    def flaky(
        model: Any, x1: torch.Tensor, x2: torch.Tensor, method: str = "gradcam", **kw: Any
    ) -> Any:
        if method == target and x1.shape[0] > 1:
            raise RuntimeError("boom in the method")
        return real(model, x1, x2, method=method, **kw)

    target = method
    monkeypatch.setattr(evaluation_module, "explain", flaky)


def test_on_error_warn_keeps_the_run_and_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flaky_explain(monkeypatch, "input_x_gradient")
    cb = PairExplanationCallback(["gradcam", "input_x_gradient"], log_images=False, **FAST)
    with pytest.warns(
        UserWarning, match="'input_x_gradient' failed: RuntimeError: boom in the method"
    ):
        tr = _fit(cb, tmp_path, max_epochs=2)
    assert tr.current_epoch == 2  # the run finished
    assert float(tr.callback_metrics["explain/errors"]) == 2
    assert cb.error_count == 2
    assert "explain/gradcam/insertion_simultaneous" in tr.callback_metrics
    assert not any(k.startswith("explain/input_x_gradient/") for k in tr.callback_metrics)


def test_on_error_raise_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _flaky_explain(monkeypatch, "input_x_gradient")
    cb = PairExplanationCallback(
        ["gradcam", "input_x_gradient"], on_error="raise", log_images=False, **FAST
    )
    with pytest.raises(RuntimeError, match=r"on_error='raise'.*input_x_gradient.*boom") as info:
        _fit(cb, tmp_path, max_epochs=2)
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"embedding": "no_such_attribute"},
            "embedding='no_such_attribute'.*submodules: backbone\\)",
        ),
        (
            {"embedding": "tests.callback.helpers:spatial_embedding"},
            "Check `embedding=.*\\(B, D\\)",
        ),
        ({"layer": "backbone.nope"}, "unknown layer 'backbone.nope'.*`layer='backbone.nope'`"),
    ],
)
def test_dry_run_fails_fast_naming_the_argument(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    cb = PairExplanationCallback(["gradcam"], log_images=False, **FAST, **kwargs)
    model = SSL()
    with pytest.raises((ValueError, TypeError), match=match):
        _fit(cb, tmp_path, model=model, max_epochs=1)
    assert cb.state_dict()["evaluations"] == 0


def test_sharded_strategies_are_refused_at_setup() -> None:
    class FSDPStrategy:  # the name is what the callback checks (both namespaces, subclasses)
        pass

    fake = types.SimpleNamespace(strategy=FSDPStrategy())
    cb = PairExplanationCallback(["gradcam"], **FAST)
    with pytest.raises(ValueError, match=r"does not support the FSDP strategy.*'ddp'"):
        cb.setup(fake, SSL(), "fit")


# --------------------------------------------------------------------------------------------------
# Probe source, state and resume


def test_val_without_two_views_falls_back_to_train(tmp_path: Path) -> None:
    class SingleViewVal(SSL):  # type: ignore[misc, valid-type]
        def val_dataloader(self) -> Any:
            ds = TwoViewDataset(8)
            ds.transform = None
            return DataLoader(ds, batch_size=4)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            return None

    cb = PairExplanationCallback(["gradcam"], log_images=False, **FAST)
    _fit(cb, tmp_path, model=SingleViewVal(), max_epochs=1)
    assert cb.probe is not None
    assert cb.probe.source == "train"

    cb = PairExplanationCallback(["gradcam"], log_images=False, **FAST)
    _fit(cb, tmp_path, model=SSL(val=False), max_epochs=1, limit_val_batches=0)
    assert cb.probe is not None
    assert cb.probe.source == "train"

    cb = PairExplanationCallback(["gradcam"], log_images=False, **FAST)
    _fit(cb, tmp_path, model=SSL(), max_epochs=1)
    assert cb.probe is not None
    assert cb.probe.source == "val"


def test_dataloaders_passed_to_fit(tmp_path: Path) -> None:
    cb = PairExplanationCallback(
        ["gradcam"],
        log_images=False,
        **{**FAST, "probe": {"n_pairs": 2, "pairing": "dataset", "source": "val"}},
    )

    class NoHooks(SSL):  # type: ignore[misc, valid-type]
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            return None

    NoHooks.train_dataloader = None  # type: ignore[assignment]
    NoHooks.val_dataloader = None  # type: ignore[assignment]
    tr = trainer(callbacks=[cb], default_root_dir=tmp_path, max_epochs=1)
    tr.fit(
        NoHooks(),
        train_dataloaders=DataLoader(TwoViewDataset(8), batch_size=4),
        val_dataloaders=DataLoader(PairDataset(4), batch_size=4),
    )
    assert cb.probe is not None
    assert cb.probe.source == "val"
    pairs = PairDataset(4)
    assert torch.equal(cb.probe.x1[0], pairs.a[cb.probe.indices[0]])


def test_probe_file_round_trip_through_the_callback(tmp_path: Path) -> None:
    cb = PairExplanationCallback(["gradcam"], log_images=False, **FAST)
    _fit(cb, tmp_path / "a", max_epochs=1)
    path = cb.save_probe(tmp_path / "probe.pt")
    saved = ProbeSet.load(path)

    other = PairExplanationCallback(
        ["gradcam"], log_images=False, **{**FAST, "probe": {"n_pairs": 2, "source": str(path)}}
    )
    _fit(other, tmp_path / "b", model=SSL(n=12), max_epochs=1)
    assert torch.equal(other.probe.x1, saved.x1)
    assert torch.equal(other.probe.x2, saved.x2)

    third = PairExplanationCallback(["gradcam"], **FAST)
    third.load_probe(path)
    assert torch.equal(third.probe.x1, saved.x1)
    with pytest.raises(RuntimeError, match="no probe set yet"):
        PairExplanationCallback(["gradcam"]).save_probe(tmp_path / "x.pt")


def test_resume_explains_the_same_pairs(tmp_path: Path) -> None:
    L = namespace("lightning.pytorch")
    ckpt = L.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = PairExplanationCallback(["gradcam"], log_images=False, **FAST)
    tr = trainer(
        callbacks=[first, ckpt], default_root_dir=tmp_path, max_epochs=1, enable_checkpointing=True
    )
    tr.fit(SSL())
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]
    assert first.state_key in state
    assert torch.equal(state[first.state_key]["probe"]["x1"], first.probe.x1)

    # Same settings, but a model whose datasets differ: a fresh draw would give other pairs.
    second = PairExplanationCallback(["gradcam"], log_images=False, **FAST)
    tr = trainer(callbacks=[second], default_root_dir=tmp_path, max_epochs=2)
    tr.fit(SSL(n=20), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert torch.equal(second.probe.x1, first.probe.x1)
    assert second.state_dict()["evaluations"] == 2  # restored 1, then one more

    # Changed probe settings: the restored probe set is dropped, with a warning.
    third = PairExplanationCallback(["gradcam"], log_images=False, **{**FAST, "probe": {"n_pairs": 3}})
    tr = trainer(callbacks=[third], default_root_dir=tmp_path, max_epochs=2)
    with pytest.warns(UserWarning, match="drawn with other settings"):
        tr.fit(SSL(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert len(third.probe) == 3


def test_clean_vs_augmented_pairing(tmp_path: Path) -> None:
    cb = PairExplanationCallback(
        ["gradcam"],
        log_images=False,
        **{**FAST, "probe": {"n_pairs": 2, "pairing": "clean_vs_augmented"}},
    )
    _fit(cb, tmp_path, max_epochs=1)
    from lightning_explain.data import default_clean_transform

    val = TwoViewDataset(8, seed=5)
    clean = default_clean_transform((16, 16))
    assert torch.allclose(cb.probe.x1[0], clean(val.images[cb.probe.indices[0]]), atol=1e-6)
