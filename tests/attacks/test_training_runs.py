"""Attacks on a training run: resumes with changed settings, configurations that used to fail
late, and trackers that fail. The run must keep its state, fail early, or go on."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_explain.callback import PairExplanationCallback
from lightning_explain.sinks import FileSink
from tests.callback.helpers import FAST, make_module_class, namespace, trainer

SSL = make_module_class("lightning.pytorch")
KNN = {"k": 3, "samples": 10, "queries": 6}


def _first_run(tmp_path: Path, **kwargs: Any) -> PairExplanationCallback:
    L = namespace("lightning.pytorch")
    ckpt = L.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    cb = PairExplanationCallback(["gradcam"], log_images=False, knn=KNN, **{**FAST, **kwargs})
    tr = trainer(
        callbacks=[cb, ckpt], default_root_dir=tmp_path, max_epochs=3, enable_checkpointing=True
    )
    tr.fit(SSL())
    return cb


@pytest.mark.parametrize(
    "changed",
    [
        {"methods": ["input_x_gradient"]},
        {"methods": ["gradcam", "interaction_cam"]},
        {"hook": "validation_epoch_end"},
        {"metrics": ["insertion_simultaneous"], "every_n_epochs": 1},
    ],
)
def test_state_survives_a_change_of_methods_metrics_hook_or_schedule(
    tmp_path: Path, changed: dict[str, Any]
) -> None:
    first = _first_run(tmp_path)
    methods = changed.pop("methods", ["gradcam"])
    options = {**FAST, **changed}
    second = PairExplanationCallback(methods, log_images=False, knn=KNN, **options)
    assert second.state_key != first.state_key or methods == ["gradcam"]
    tr = trainer(callbacks=[second], default_root_dir=tmp_path, max_epochs=4)
    tr.fit(SSL(n=20), ckpt_path=tmp_path / "ckpt" / "last.ckpt")  # other data: a redraw differs
    assert torch.equal(second.probe.x1, first.probe.x1)
    assert torch.equal(second.probe.knn.bank, first.probe.knn.bank)
    assert second.state_dict()["evaluations"] == 4
    assert [e["epoch"] for e in second.history] == [0, 1, 2, 3]


def test_a_change_of_the_probe_settings_redraws_and_says_what_changed(tmp_path: Path) -> None:
    _first_run(tmp_path)
    other = PairExplanationCallback(
        ["gradcam"], log_images=False, knn=KNN, **{**FAST, "probe": {"n_pairs": 3}}
    )
    tr = trainer(callbacks=[other], default_root_dir=tmp_path, max_epochs=4)
    with pytest.warns(UserWarning, match=r"n_pairs: 2 -> 3"):
        tr.fit(SSL(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert len(other.probe) == 3


@pytest.mark.parametrize(
    "validation",
    [{"num_sanity_val_steps": 0}, {"limit_val_batches": 0}],
    ids=["no-sanity", "no-val"],
)
def test_a_bad_embedding_fails_at_train_start_without_validation(
    tmp_path: Path, validation: dict[str, Any]
) -> None:
    cb = PairExplanationCallback(["gradcam"], embedding="no_such_part", log_images=False, **FAST)
    model = SSL()
    steps: list[int] = []

    class Count(namespace("lightning.pytorch").Callback):  # type: ignore[misc]
        def on_train_batch_end(self, *args: Any) -> None:
            steps.append(1)

    tr = trainer(callbacks=[cb, Count()], default_root_dir=tmp_path, max_epochs=1, **validation)
    with pytest.raises(ValueError, match="embedding='no_such_part'"):
        tr.fit(model)
    assert steps == []  # not a single training step ran


def test_a_failing_logger_does_not_kill_the_run(tmp_path: Path) -> None:
    L = namespace("lightning.pytorch")

    class Broken(L.loggers.CSVLogger):  # type: ignore[misc, name-defined]
        def log_metrics(self, metrics: Any, step: Any = None) -> None:
            if any(k.startswith("explain/") for k in metrics):
                raise ConnectionError("tracker down")
            super().log_metrics(metrics, step)

    cb = PairExplanationCallback(["gradcam"], **FAST)
    tr = trainer(
        callbacks=[cb], default_root_dir=tmp_path, max_epochs=2, logger=Broken(str(tmp_path))
    )
    with pytest.warns(UserWarning, match="Broken.log_metrics.*tracker down"):
        tr.fit(SSL())
    assert tr.current_epoch == 2
    assert cb.error_count == 2  # one failed logger call per evaluation, counted


def test_a_failing_sink_is_counted_per_call_and_the_others_still_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(FileSink, "log_image", broken)
    cb = PairExplanationCallback(["gradcam"], **FAST)
    tr = trainer(callbacks=[cb], default_root_dir=tmp_path, max_epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr.fit(SSL())
    assert any("disk full" in str(w.message) for w in caught)
    assert cb.error_count == 1
    assert list(tmp_path.rglob("*.csv"))  # the table of the same evaluation was still written


def test_on_error_raise_stops_on_a_failing_sink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(FileSink, "log_image", broken)
    cb = PairExplanationCallback(["gradcam"], on_error="raise", **FAST)
    tr = trainer(callbacks=[cb], default_root_dir=tmp_path, max_epochs=1)
    with pytest.raises(RuntimeError, match="disk full") as info:
        tr.fit(SSL())
    assert isinstance(info.value.__cause__, OSError)
