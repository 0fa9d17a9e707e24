"""The benchmark scripts run end to end (tiny configurations) and print their tables and ratios,
so that they never rot. No timing is asserted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_explain import list_methods

ROOT = Path(__file__).resolve().parents[1]


def run_script(
    name: str, *args: str, cwd: Path = ROOT, pythonpath: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/NAME ARGS`` (default ``--smoke``) from ``cwd``, with or without the
    repository root on ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    if pythonpath:
        env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *(args or ("--smoke",))],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_bench_methods_smoke():
    proc = run_script("bench_methods.py")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"^32px: one forward of the pair batch .*forward\+backward", out, re.M), out
    assert "| size | method | options | fwd imgs/pair | f+b imgs/pair | s/pair |" in out, out
    number = r"\d+(\.\d+)?"
    for name in list_methods():
        row = rf"^\| 32 \| {name} \| [^|]+ \| {number} \| {number} \| {number} \| {number} \| {number} \|"
        assert re.search(row, out, re.M), f"no table row for {name}:\n{out}"
    # The pass counts are the ones the methods are documented to make: the gradient-free
    # perturbation methods never forward with autograd on, the gradient methods do.
    assert re.search(r"^\| 32 \| rise \| n_masks=4 \| 10 \| 0 \|", out, re.M), out
    assert re.search(r"^\| 32 \| input_x_gradient \| defaults \| 0 \| 2 \|", out, re.M), out


def test_bench_metrics_smoke():
    proc = run_script("bench_metrics.py", "--smoke", "--autocast", "bf16")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^ratio metrics/floor: \d+\.\d+x", proc.stdout, re.MULTILINE), proc.stdout
    assert re.search(r"max \|score difference\|: \d", proc.stdout), proc.stdout
    assert re.search(r"^autocast bf16: .* speed-up \d+\.\d+x", proc.stdout, re.M), proc.stdout


def test_bench_callback_smoke():
    proc = run_script("bench_callback.py", "--smoke", "--autocast", "bf16")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"^compute_scores with autocast='bf16': .* speed-up \d", out, re.M), out
    assert re.search(r"^training step \(ResNet-18, .*epoch estimate .*: \d+\.\d s$", out, re.M), out
    assert re.search(r"^one evaluation \(on_train_epoch_end, .*\): \d+\.\d+ s$", out, re.M), out
    assert re.search(
        r"^callback evaluation / epoch: \d+\.\d+% \(goal <= 5%: (met|MISSED)\)", out, re.M
    )
    assert re.search(r"errors: 0$", out, re.M), out
    assert "| n_pairs | methods | n_steps | image forwards | seconds |" in out, out
    assert "| batch_size | n_pairs | images per evaluation | largest no-grad batch |" in out, out
    # Memory is bounded by the chunk: no forward sees more than max(batch_size, 2 * n_pairs)
    # images (the perturbed images come in chunks, the intact pairs at once), although one
    # evaluation embeds hundreds of perturbed images.
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", out, re.M)
    assert len(rows) == 2, out
    for batch_size, n_pairs, images, no_grad, with_grad, bound in (map(int, r) for r in rows):
        assert bound == max(batch_size, 2 * n_pairs)
        assert images > 100
        assert no_grad <= bound
        assert with_grad <= 2 * n_pairs


def test_scripts_run_from_any_folder_without_pythonpath(tmp_path: Path):
    """``python benchmarks/bench_x.py`` finds the shared ``benchmarks/_common.py`` by itself."""
    for name in ("bench_methods.py", "bench_metrics.py", "bench_callback.py"):
        proc = run_script(name, "--help", cwd=tmp_path, pythonpath=False)
        assert proc.returncode == 0, proc.stderr
        assert "--smoke" in proc.stdout, proc.stdout


@pytest.mark.parametrize("model", ["tiny", "resnet18"])
def test_bench_ddp_smoke(model: str):
    proc = run_script("bench_ddp.py", "--smoke", "--model", model)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    parts = (
        r"explain\+score \d+\.\d+ s, gather \d+\.\d+ s, draw \d+\.\d+ s, log \d+\.\d+ s, "
        r"render\+log \d+\.\d+ s \(slowest rank's own drawing \d+\.\d+ s\)"
    )
    for devices in (1, 2):
        line = (
            rf"^{devices} process\(es\): one evaluation of 2 pairs \d+\.\d+ s \(1 timed\): {parts}$"
        )
        assert re.search(line, out, re.M), out
    assert re.search(
        r"^speed-up with 2 processes: \d+\.\d+x \(explain\+score \d+\.\d+x\)", out, re.M
    )


def test_bench_chunks_smoke():
    proc = run_script("bench_chunks.py", "--smoke")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for op in ("insertion+deletion", "conditional_occlusion", "rise", "smoothgrad"):
        row = rf"^tiny +16 +2 {re.escape(op)} +\d+\.\d+s +\d+\.\d+s .* \d+\.\d+x +\d+\.\d+x +\d+\.\d+x$"
        assert re.search(row, out, re.M), f"no row for {op}:\n{out}"
    assert re.search(r"max \|bound - tuned\| \d", out), out
    assert re.search(r"^worst tuned/floor: \d+\.\d+x", out, re.M), out


def test_bench_chunks_overhead_smoke():
    proc = run_script("bench_chunks.py", "--smoke", "--overhead", "--ops", "insertion+deletion")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"^ +16 +2 insertion\+deletion +\d+ +\d+ .* -?\d+\.\d+ ms$", out, re.M), out
    assert re.search(
        r"^ +16 +2 pixel ranks of 4 maps: torch\.argsort\(stable\) \d+\.\d+ ms, "
        r"pixel_ranks \d+\.\d+ ms \(\d+\.\d+x\)$",
        out,
        re.M,
    ), out
    assert re.search(
        r"^ +16 +2 blur \(k=3\) of 4 images: torchvision \d+\.\d+ ms, "
        r"gaussian_blur \d+\.\d+ ms \(\d+\.\d+x\)$",
        out,
        re.M,
    ), out


def test_bench_fit_smoke():
    proc = run_script("bench_fit.py", "--smoke")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"^  round 1, baseline: epochs \d+\.\d+, \d+\.\d+ s", out, re.M), out
    assert re.search(r"^baseline epoch: \d+\.\d+ s \(median of 1\)$", out, re.M), out
    assert re.search(
        r"^defaults: epoch \d+\.\d+ s, \d+\.\d+x the baseline .*epoch-end hook "
        r"\d+\.\d+ s = \d+\.\d+% of the baseline epoch; fit start",
        out,
        re.M,
    ), out
    assert re.search(r"^  round 1, defaults: .*; evaluations \d+\.\d+, \d+\.\d+ s$", out, re.M), out


def test_bench_stream_smoke():
    proc = run_script("bench_stream.py", "--smoke")
    assert proc.returncode == 0, proc.stderr
    assert re.search(
        r"^1 process\(es\): 8 pairs in \d+\.\d+ s = \d+\.\d+ pairs/s; failures: 0$",
        proc.stdout,
        re.M,
    ), proc.stdout


def test_bench_before_after_smoke():
    """Against HEAD (always in a checkout): both trees run, maps of unchanged code are identical."""
    proc = run_script("bench_before_after.py", "--smoke", "--before", "HEAD")
    assert proc.returncode == 0, proc.stderr
    for name in ("gradcam", "input_x_gradient"):
        row = rf"^\| {name} \| \d+\.\d+ \| \d+\.\d+ \| \d+\.\d+x \| (\d+) \| (\d+) \| identical \|$"
        match = re.search(row, proc.stdout, re.M)
        assert match, proc.stdout
        assert match.group(1) == match.group(2) != "0"
