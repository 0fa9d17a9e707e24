"""``benchmarks/bench_correspondence.py`` runs end to end (tiny configuration) and prints its
tables, so that it never rots. No timing is asserted."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_benchmarks_smoke import run_script


def test_bench_correspondence_smoke(tmp_path: Path) -> None:
    figure = tmp_path / "figure.png"
    proc = run_script("bench_correspondence.py", "--smoke", "--figure", str(figure))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    number = r"\d+(\.\d+)?"
    for method, options in (
        ("point_to_point", "defaults"),
        ("bilrp", "defaults"),
        ("bilrp", "level=layer"),
    ):
        row = rf"^\| 32 \| {method} \| {options} \| {number} \| {number} \| {number} \| {number} \| {number} \|$"
        assert re.search(row, out, re.M), f"no cost row for {method} {options}:\n{out}"
    # The pass counts are the documented ones: bilrp makes k = 32 backwards to the pixels per
    # chunk (one pair: both views in one chunk); at a layer the directions go in one batched
    # backward (point_to_point adds the partial backwards of layer='auto').
    assert re.search(r"^\| 32 \| bilrp \| defaults \| 2 \| 32 \|", out, re.M), out
    assert re.search(r"^\| 32 \| bilrp \| level=layer \| 2 \| 1 \|", out, re.M), out
    # Memory is bounded by the chunk: with batch_size=2 no autograd forward exceeds 2 images.
    rows = re.findall(r"^\| bilrp \| (\d+) \| 2 \| (\d+) \|", out, re.M)
    assert [int(p) for p, _ in rows] == [1, 2, 4], out
    assert all(int(largest) == 2 for _, largest in rows), out
    # The constructed check: point_to_point finds the shifted position almost everywhere.
    exact = re.search(r"^\| point_to_point \| layer='2' \| (\d+\.\d)% \|", out, re.M)
    assert exact is not None, out
    assert float(exact.group(1)) >= 90.0
    assert re.search(
        r"^matches beat random in \d+/2 pairs, either marginal alone in \d+/2$", out, re.M
    )
    assert re.search(r"^figure: .*within 1 cell: ", out, re.M), out
    assert figure.stat().st_size > 1000
