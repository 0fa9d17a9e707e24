"""The metrics benchmark script runs end to end (tiny configuration) and reports its ratio."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_metrics_smoke():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_metrics.py"), "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^ratio metrics/floor: \d+\.\d+x", proc.stdout, re.MULTILINE), proc.stdout
    assert re.search(r"max \|score difference\|: \d", proc.stdout), proc.stdout
