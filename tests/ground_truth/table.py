"""Localisation of every registered method on the known-evidence models: the docs table.

Run ``python -m tests.ground_truth.table`` (from the repository root) to print the Markdown
tables of ``docs/methods/localisation.md``. Each cell is the share of a map's top-quartile pixels
that lie in the evidence (:func:`~tests.ground_truth.models.evidence_share`), as ``mean / worst``
over both maps of ``--pairs`` positive pairs and, for stochastic methods, over ``--seeds``; the
spread column gives the lowest and highest per-seed mean. Options are the defaults unless the
row says otherwise (the paper's variants of the methods whose default deviates from it).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_explain import explain
from lightning_explain.methods._registry import list_methods, method_info
from tests.ground_truth.models import KINDS, EvidenceModel, evidence_mask, evidence_share, view_pair

PAPER_VARIANTS: dict[str, dict[str, Any]] = {
    "context_agnostic_occlusion": {"estimator": "paper"},
    "pairwise_occlusion": {"estimator": "paper"},
    "rise": {"estimator": "paper"},
    "pixel_invariance": {"targets": "paper"},
}
"""The paper's variant of each method whose default estimator deviates from it."""

COMMAND = "python -m tests.ground_truth.table"


@dataclass(frozen=True)
class Localisation:
    """Evidence shares of one method on one model, ``(n_seeds, 2 * n_pairs)``."""

    shares: Tensor

    @property
    def mean(self) -> float:
        return float(self.shares.mean())

    @property
    def worst(self) -> float:
        return float(self.shares.min())

    @property
    def seed_spread(self) -> tuple[float, float]:
        per_seed = self.shares.mean(dim=1)
        return float(per_seed.min()), float(per_seed.max())


def localisation(
    method: str,
    kind: str,
    size: int,
    *,
    seeds: Sequence[int] = (0,),
    n_pairs: int = 2,
    saturated: bool = False,
    options: dict[str, Any] | None = None,
) -> Localisation:
    """Evidence shares of ``method`` on the ``kind`` model at ``size`` px.

    Deterministic methods run once whatever ``seeds`` holds; stochastic ones once per seed.
    """
    model = EvidenceModel(kind, saturated=saturated).eval()
    x1, x2 = view_pair(n_pairs, size, kind=kind, seed=0)
    ev1, ev2 = evidence_mask(kind, x1), evidence_mask(kind, x2)
    opts = dict(options or {})
    stochastic = method_info(method).stochastic
    rows = []
    for seed in seeds if stochastic else seeds[:1]:
        if stochastic:
            opts["seed"] = seed
        e = explain(model, x1, x2, method=method, **opts)
        rows.append(torch.cat([evidence_share(e.h1, ev1), evidence_share(e.h2, ev2)]))
    return Localisation(torch.stack(rows))


def _cell(loc: Localisation) -> str:
    return f"{loc.mean:.2f} / {loc.worst:.2f}"


def table(
    sizes: Sequence[int], seeds: Sequence[int], n_pairs: int, *, saturated: bool, verbose: bool
) -> str:
    """A Markdown table: one row per method (and paper variant), one column per kind and size."""
    head = ["method", "options", *[f"{k} {s} px" for s in sizes for k in KINDS], "seed spread"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in list_methods():
        variants: list[dict[str, Any]] = [{}]
        if method in PAPER_VARIANTS:
            variants.append(PAPER_VARIANTS[method])
        for opts in variants:
            cells, spreads = [], []
            for size in sizes:
                for kind in KINDS:
                    t = time.perf_counter()
                    loc = localisation(
                        method,
                        kind,
                        size,
                        seeds=seeds,
                        n_pairs=n_pairs,
                        saturated=saturated,
                        options=opts,
                    )
                    if verbose:
                        print(f"  {method} {opts} {kind} {size}: {_cell(loc)}", flush=True)
                        print(f"    ({time.perf_counter() - t:.1f} s)", flush=True)
                    cells.append(_cell(loc))
                    spreads.append(loc.seed_spread)
            spread = "-"
            if method_info(method).stochastic and len(seeds) > 1:
                spread = f"{min(s[0] for s in spreads):.2f} - {max(s[1] for s in spreads):.2f}"
            label = ", ".join(f"{k}={v!r}" for k, v in opts.items()) or "defaults"
            lines.append("| " + " | ".join([f"`{method}`", label, *cells, spread]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for saturated in (False, True):
        name = "saturated (similarity > 0.999)" if saturated else "centred"
        print(f"\n{name} models, {args.pairs} pairs, seeds {args.seeds}\n")
        print(table(args.sizes, args.seeds, args.pairs, saturated=saturated, verbose=args.verbose))


if __name__ == "__main__":
    main()
