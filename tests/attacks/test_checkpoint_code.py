"""Attacks through checkpoint and probe files: nothing recorded in a file is imported or
unpickled unless the user trusts the file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_explain.data import ProbeSet
from tests.cli.conftest import MODEL_CLASS, Run, run_cli

EVIL = """
from pathlib import Path
Path({marker!r}).write_text("ran")
import torch

class Model(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)

def embed(module, x):
    return x.flatten(1)
"""


def _tamper(src: Path, dst: Path, **edits: Any) -> Path:
    """A copy of the checkpoint ``src`` whose callback state records ``edits`` (weights_only-safe
    values only: the file still loads with ``torch.load(weights_only=True)``)."""
    ckpt = torch.load(src, weights_only=True)
    for state in ckpt["callbacks"].values():
        if state.get("format") != "lightning-explain-callback":
            continue  # ModelCheckpoint's own state
        for key, value in edits.items():
            if key == "knn_embedding":
                state["probe"]["knn"] = _knn_with_embedding(state["probe"], value)
            else:
                state[key] = value
    torch.save(ckpt, dst)
    torch.load(dst, weights_only=True)  # still a "safe" file
    return dst


def _knn_with_embedding(probe: dict[str, Any], spec: str) -> dict[str, Any]:
    from lightning_explain.data import KNNSet

    x = probe["x1"]
    labels = torch.arange(len(x)) % 2
    knn = KNNSet(x, labels, x, labels, num_classes=2, embedding=spec)
    return knn.to_dict()


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``evilmod.py`` planted in the working directory; importing it writes ``marker``."""
    marker = tmp_path / "marker.txt"
    (tmp_path / "evilmod.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


@pytest.mark.parametrize("recorded", ["evilmod:Model", "this:X"])
def test_a_recorded_class_path_is_not_imported_without_trust(
    run: Run, tmp_path: Path, planted: Path, recorded: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _tamper(run.epochs[1], tmp_path / "tampered.ckpt", model_class=recorded)
    code, _, err = run_cli(["compare", str(ckpt), "--out", str(tmp_path / "out"), "--n-steps", "4"])
    assert code == 2
    assert recorded in err
    assert "--model-class" in err
    assert "--trust-checkpoint" in err
    assert not planted.exists()  # evilmod's code did not run
    assert "Beautiful is better than ugly" not in capsys.readouterr().out  # nor `import this`


def test_trust_checkpoint_is_the_explicit_opt_in(run: Run, tmp_path: Path, planted: Path) -> None:
    ckpt = _tamper(run.epochs[1], tmp_path / "tampered.ckpt", model_class="evilmod:Model")
    run_cli(["compare", str(ckpt), "--trust-checkpoint", "--out", str(tmp_path / "o")])
    assert planted.exists()  # the user said they trust the file: its class path is used


def test_a_recorded_knn_embedding_is_not_imported_without_trust(
    run: Run, tmp_path: Path, planted: Path
) -> None:
    ckpt = _tamper(run.epochs[1], tmp_path / "knn.ckpt", knn_embedding="evilmod:embed")
    code, _, err = run_cli(
        [
            "compare",
            str(ckpt),
            "--model-class",
            MODEL_CLASS,
            "--methods",
            "input_x_gradient",
            "--metrics",
            "none",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2, err
    assert "evilmod:embed" in err
    assert "--knn-embedding" in err
    assert not planted.exists()


def test_a_class_defined_in_a_script_gets_a_hint(run: Run, tmp_path: Path) -> None:
    ckpt = _tamper(run.epochs[1], tmp_path / "main.ckpt", model_class="__main__:SimCLR")
    code, _, err = run_cli(["compare", str(ckpt), "--trust-checkpoint", "--out", str(tmp_path)])
    assert code == 2
    assert "defined in the script" in " ".join(err.split())


def test_a_probe_file_with_pickled_objects_gets_safe_advice(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "hostile.pt"
    torch.save({"format": "lightning-explain-probe", "payload": os.system}, path)  # a global
    with pytest.raises(ValueError, match="Do not load it with weights_only=False") as info:
        ProbeSet.load(path)
    assert "you can set weights_only=False" not in str(info.value)
    out = tmp_path / "out"
    argv = ["compare", str(run.epochs[0]), "--model-class", MODEL_CLASS, "--probe", str(path)]
    code, _, err = run_cli([*argv, "--out", str(out)])
    assert code == 2
    text = " ".join(err.split())
    assert "posix.system" in text or "os.system" in text  # the refused global is named
    assert "--trust-checkpoint" in text
    assert "will likely succeed" not in text  # torch's advice to switch the safe load off


def test_a_probe_file_storing_uint8_images_is_rejected(tmp_path: Path) -> None:
    probe = ProbeSet(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), (0, 1), 0, "dataset", "x")
    data = probe.to_dict()
    data["x1"] = (data["x1"] * 255).to(torch.uint8)
    torch.save(data, tmp_path / "uint8.pt")
    with pytest.raises(ValueError, match=r"stores `x1` as a torch.uint8 tensor.*0\.\.255"):
        ProbeSet.load(tmp_path / "uint8.pt")


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04truncated"])
def test_corrupt_probe_files_raise_a_value_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"cannot be read|safe load"):
        ProbeSet.load(path)
