"""DDP with two CPU processes (gloo): no deadlock, pairs explained and pictures drawn on both
ranks, images logged once (rank 0), the same scalars on every rank, and equal to a single-process
evaluation of rank 0's weights on the same probe set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_explain.callback import PairExplanationCallback
from tests.callback.helpers import FAST, make_module_class

SCRIPT = Path(__file__).with_name("_ddp_script.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_two_processes(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # Pictures: written by rank 0 only, once per evaluation.
    logged = (tmp_path / "images_rank0.txt").read_text().split("\n")
    assert [line for line in logged if line] == [
        "explain/gradcam/pairs 2",
        "explain/gradcam/curves 2",
        "explain/gradcam/pairs 4",
        "explain/gradcam/curves 4",
    ]
    assert not (tmp_path / "images_rank1.txt").exists()
    # Each encoded where it was drawn (below): rank 0 only writes rank 1's grid.
    encoded = {r: (tmp_path / f"encoded_rank{r}.txt").read_text().split("\n")[:-1] for r in (0, 1)}
    assert encoded == {0: ["explain/gradcam/curves"] * 2, 1: ["explain/gradcam/pairs"] * 2}

    # Scalars: identical on both ranks (broadcast from rank 0).
    m0 = json.loads((tmp_path / "metrics_rank0.json").read_text())
    m1 = json.loads((tmp_path / "metrics_rank1.json").read_text())
    assert m0 == m1
    assert m0["explain/errors"] == 0.0
    assert "explain/gradcam/insertion_simultaneous" in m0

    # Sharded: after the one-pair dry runs, each rank explained its own half of the pairs.
    probe = torch.load(tmp_path / "probe.pt", weights_only=True)
    first, second = (int(i) for i in probe["indices"])
    lines = {r: (tmp_path / f"pairs_rank{r}.txt").read_text().split("\n")[:-1] for r in (0, 1)}
    assert lines[0][1:] == [str(first), str(first)]  # two evaluations: pair 0 on rank 0
    assert lines[1][1:] == [str(second), str(second)]  # and pair 1 on rank 1

    # Drawing shared: per evaluation, rank 0 drew the curves figure and rank 1 the pair grid
    # (rank 0 wrote both: the lines above).
    drawn = {r: (tmp_path / f"drawn_rank{r}.txt").read_text().split("\n")[:-1] for r in (0, 1)}
    assert drawn == {0: ["curves:gradcam"] * 2, 1: ["pairs:gradcam"] * 2}, drawn
    files = sorted(p.name for p in (tmp_path / "csv" / "version_0" / "explanations").rglob("*"))
    assert files == sorted(
        ["epoch=000", "epoch=001"]
        + [f"gradcam{suffix}" for suffix in (".png", "_curves.png", "_curves.csv", "_scores.csv")]
        * 2
    ), files

    # Equal to one process evaluating rank 0's final weights on the same probe set.
    model = make_module_class()(n=16, batch_size=4)
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    model.load_state_dict(state["state_dict"])
    cb = PairExplanationCallback(["gradcam"], **FAST)
    cb.load_probe(tmp_path / "probe.pt")
    single = cb.compute_scores(model)
    for key, value in single.items():
        assert value == pytest.approx(m0[key], rel=1e-5, abs=1e-6), key


@pytest.mark.ddp
@pytest.mark.slow
def test_a_rank_zero_failure_is_raised_on_every_rank(tmp_path: Path) -> None:
    """A sink failure on rank 0 with on_error='raise' stops both ranks (no hang, no rank left
    waiting on a collective): the outcome travels with the one broadcast of the evaluation."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "sink_fails"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    outcomes = [(tmp_path / f"outcome_rank{r}.txt").read_text() for r in (0, 1)]
    for outcome in outcomes:
        assert outcome.startswith("raised:"), (outcome, proc.stderr[-2000:])
        assert "rank 0 lost its disk" in outcome
