"""Checkpoints of models defined in a script (``__main__``): a message that says so, and
``--model-factory`` to build them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.cli.conftest import Run, run_cli


def _as_if_trained_in_a_script(src: Path, dst: Path) -> Path:
    ckpt = torch.load(src, weights_only=True)
    for state in ckpt["callbacks"].values():
        state["model_class"] = "__main__:TinyContrastive"
    torch.save(ckpt, dst)
    return dst


def test_a_script_class_gets_a_hint_naming_model_factory(run: Run, tmp_path: Path) -> None:
    ckpt = _as_if_trained_in_a_script(run.epochs[1], tmp_path / "script.ckpt")
    code, _, err = run_cli(
        ["compare", str(ckpt), "--trust-checkpoint", "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert "--model-factory" in err
    assert "__main__:TinyContrastive" in err


def test_model_factory_builds_the_module_and_loads_the_weights(run: Run, tmp_path: Path) -> None:
    ckpt = _as_if_trained_in_a_script(run.epochs[1], tmp_path / "script.ckpt")
    out = tmp_path / "out"
    argv = [
        "report",
        str(ckpt),
        "--model-factory",
        "tests.cli.tiny_module:TinyContrastive",
        "--methods",
        "input_x_gradient",
        "--metrics",
        "insertion_simultaneous",
        "--n-steps",
        "4",
        "--out",
        str(out),
    ]
    code, stdout, err = run_cli(argv)
    assert code == 0, err
    assert "input_x_gradient" in stdout
    # The same scores as with the class: the factory's module got the checkpoint's weights.
    other = tmp_path / "other"
    by_class = [
        *argv[:2],
        "--model-class",
        "tests.cli.tiny_module:TinyContrastive",
        *argv[4:-1],
        str(other),
    ]
    code, _, err = run_cli(by_class)
    assert code == 0, err
    rows = (out / "report.csv").read_text().splitlines()
    assert rows == (other / "report.csv").read_text().splitlines()
    assert float(rows[1].split(",")[1]) > 0


def test_a_factory_that_returns_no_module_is_reported(run: Run, tmp_path: Path) -> None:
    code, _, err = run_cli(
        [
            "compare",
            str(run.epochs[1]),
            "--model-factory",
            "math:sqrt",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "--model-factory 'math:sqrt'" in err


def test_a_missing_tracker_extra_is_reported_before_any_work(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    import time

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    start = time.perf_counter()
    code, _, err = run_cli(
        [
            "compare",
            str(run.epochs[1]),
            "--model-class",
            "tests.cli.tiny_module:TinyContrastive",
            "--wandb",
            "proj",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "pip install 'lightning-explain[wandb]'" in err
    assert time.perf_counter() - start < 5.0  # before loading or explaining any checkpoint
