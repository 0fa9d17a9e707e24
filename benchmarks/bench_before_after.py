"""Method defaults at 224 px before and after a change, timed in one sitting.

Issue 12 changed several defaults (sizes relative to 224 px, new estimators for RISE, pairwise
occlusion, context-agnostic occlusion and pixel invariance) under the rule that the defaults at
224 px must not get slower. This script measures that: it unpacks the package of an earlier
revision (``--before``, default ``c9a8288``, the last commit before those defaults changed) into a
temporary directory with ``git archive``, and for every method registered in both trees it runs
``explain(model, x1, x2, method=name)`` with default options in a fresh interpreter per tree and
repeat (all methods in turn), alternating the order of the two trees from one repeat to the next, so that machine load
affects both alike. Each worker builds the same model (ResNet-18 with ``weights=None``, seed 0,
nothing downloaded) and the same seeded pairs, times one call after a warm-up forward, counts
the images its forwards see, and saves the maps; the script reports the median seconds of each
tree, their ratio (after / before), the forward counts and whether the maps are identical.

Example::

    OMP_NUM_THREADS=2 python benchmarks/bench_before_after.py --size 224 --pairs 1 --repeats 2

``--smoke`` runs two cheap methods at 32 px (used by the test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]

_WORKER = r"""
import json, sys, time
import torch
from torch import nn
from torchvision.models import resnet18
from lightning_explain import explain, list_methods

size, pairs, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
wanted = sys.argv[4:] or list_methods()
torch.manual_seed(0)
net = resnet18(weights=None)
net.fc = nn.Identity()
net.eval()
seen = [0]

class Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
    def forward(self, x):
        seen[0] += int(x.shape[0])
        return self.inner(x)

model = Counting(net).eval()
g = torch.Generator().manual_seed(1)
x1 = torch.rand(pairs, 3, size, size, generator=g)
x2 = torch.rand(pairs, 3, size, size, generator=g)
with torch.inference_mode():
    net(torch.cat([x1, x2]))  # warm-up
results, maps = {}, {}
for name in wanted:
    if name not in list_methods():
        continue
    seen[0] = 0
    start = time.perf_counter()
    e = explain(model, x1, x2, method=name)
    results[name] = {"seconds": time.perf_counter() - start, "images": seen[0]}
    maps[name] = (e.h1, e.h2)
torch.save(maps, out)
print(json.dumps({"methods": list_methods(), "results": results}))
"""


def _unpack(revision: str, into: Path) -> Path:
    """The ``lightning_explain`` package of ``revision`` under ``into`` (via ``git archive``)."""
    blob = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "lightning_explain"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into


def _run(tree: Path, names: list[str], size: int, pairs: int, out: Path) -> dict[str, Any]:
    """One fresh interpreter on ``tree``: every method of ``names`` (all if empty), in order."""
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, str(size), str(pairs), str(out), *names],
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        cwd=tree,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the worker on {tree} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="c9a8288", help="git revision to compare with")
    parser.add_argument("--size", type=int, default=224, help="image side")
    parser.add_argument("--pairs", type=int, default=1, help="pairs per call")
    parser.add_argument("--repeats", type=int, default=2, help="runs per tree (median counts)")
    parser.add_argument("--methods", nargs="+", default=None, help="default: every method")
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.pairs, args.repeats = 32, 1, 1
        args.methods = ["gradcam", "input_x_gradient"]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": _unpack(args.before, Path(tmp) / "before"), "after": ROOT}
        runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        for r in range(args.repeats):
            for label in ("before", "after") if r % 2 == 0 else ("after", "before"):
                out = Path(tmp) / f"{label}.pt"
                runs[label].append(
                    _run(trees[label], args.methods or [], args.size, args.pairs, out)
                )
        maps = {label: torch.load(Path(tmp) / f"{label}.pt") for label in trees}
    common = [m for m in runs["after"][0]["methods"] if m in runs["before"][0]["methods"]]
    names = [m for m in (args.methods or common) if m in common]
    missing = sorted(set(args.methods or []) - set(common))
    if missing:
        print(f"not registered in both trees (skipped): {missing}; valid: {common}")
    print(
        f"torch {torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
        f"ResNet-18 (weights=None), {args.size} px, {args.pairs} pair(s), default options, "
        f"before = {args.before}, after = working tree, median of {args.repeats} runs per tree "
        "(order alternated)"
    )
    print("| method | before s | after s | after / before | images before | images after | maps |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        seconds = {
            label: statistics.median(run["results"][name]["seconds"] for run in runs[label])
            for label in runs
        }
        images = {label: runs[label][0]["results"][name]["images"] for label in runs}
        diff = max(
            float((a - b).abs().max()) for a, b in zip(maps["before"][name], maps["after"][name])
        )
        same = "identical" if diff == 0 else f"max diff {diff:.3g}"
        print(
            f"| {name} | {seconds['before']:.2f} | {seconds['after']:.2f} "
            f"| {seconds['after'] / seconds['before']:.2f}x | {images['before']} "
            f"| {images['after']} | {same} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
