"""Cost, memory and accuracy of the correspondence (interaction) methods.

Three tables, and optionally the figure of the docs page (``docs/correspondence.md``):

* **cost**: for each image size and interaction configuration, ``--pairs`` random pairs are
  explained on a ResNet-18 embedding (torchvision ``resnet18(weights=None)``, ``fc = Identity``,
  ``D = 512``; nothing is downloaded). Per pair: images forwarded with autograd on, backward
  passes (``torch.autograd.grad`` calls, counted during a warm-up run; one call covers a whole
  chunk), seconds (median of ``--repeats``), and the time in multiples of the **forward floor**
  (one plain forward of ``cat([x1, x2])`` under ``torch.inference_mode``) and of one forward +
  backward to the input of that batch, timed in the same repeat;
* **memory**: ``bilrp`` with ``batch_size=2`` (one pair per chunk) on 1, 2 and 4 pairs: the
  largest batch forwarded with autograd and, on CUDA, the peak memory; both stay flat as the
  number of pairs grows (memory is bounded by the chunk);
* **check**: the constructed case with an exact answer (a bias-free CNN with circular padding,
  view 2 a circular shift of view 1 by whole cells): the share of view-2 positions whose best
  match is the shifted position, and ``total / sim``, for each method and number of directions;
  then the faithfulness check on pairs whose content fills a quarter of the cells.

Example::

    OMP_NUM_THREADS=2 python benchmarks/bench_correspondence.py --sizes 32 64 224 --pairs 2
    python benchmarks/bench_correspondence.py --device cuda --sizes 32 64 224 --pairs 4

``--smoke`` runs a tiny configuration in seconds (used by the test suite); ``--figure PATH``
writes the docs figure (two views of sklearn digits with their top matches).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from _common import ForwardRecorder, machine_line, resnet18_embedding, sync, timed
from torch import Tensor, nn

from lightning_explain.correspondence import (
    circular_shift,
    correspondence_scores,
    explain_interactions,
    match_faithfulness,
    match_grid,
    point_to_point,
    random_views,
)

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("point_to_point", {}),
    ("bilrp", {}),
    ("bilrp", {"level": "layer"}),
]


def describe(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"


@contextmanager
def counted_backwards() -> Iterator[list[int]]:
    """Count ``torch.autograd.grad`` calls made inside."""
    calls = [0]
    original = torch.autograd.grad

    def grad(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    with mock.patch.object(torch.autograd, "grad", grad):
        yield calls


def forward_backward(net: nn.Module, x: Tensor) -> None:
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        torch.autograd.grad(net(xg).sum(), xg)


def forward_only(net: nn.Module, x: Tensor) -> None:
    with torch.inference_mode():
        net(x)


# --------------------------------------------------------------------------------------------------
# Cost


def cost_table(args: argparse.Namespace, device: torch.device) -> None:
    net = ForwardRecorder(resnet18_embedding(device))
    print(
        "| size | method | options | autograd imgs/pair | backwards/pair | s/pair "
        "| x forward | x fwd+bwd |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        g = torch.Generator().manual_seed(size)
        x1 = torch.rand(args.pairs, 3, size, size, generator=g).to(device)
        x2 = torch.rand(args.pairs, 3, size, size, generator=g).to(device)
        both = torch.cat([x1, x2])
        for name, options in CONFIGS:
            run = functools.partial(explain_interactions, net, x1, x2, method=name, **options)
            plain = functools.partial(forward_only, net, both)
            with_backward = functools.partial(forward_backward, net, both)
            net.calls.clear()
            with counted_backwards() as backwards:
                first = timed(run, device)  # warm-up, counted
            autograd_images = sum(n for n, grad in net.calls if grad)
            times, fwd, fb = [first] if args.repeats == 0 else [], [], []
            for _ in range(args.repeats):
                times.append(timed(run, device))
            for _ in range(max(1, args.repeats)):
                fwd.append(timed(plain, device))
                fb.append(timed(with_backward, device))
            t, f, b = (statistics.median(v) for v in (times, fwd, fb))
            print(
                f"| {size} | {name} | {describe(options)} | {autograd_images / args.pairs:g} | "
                f"{backwards[0] / args.pairs:g} | {t / args.pairs:.4f} | {t / f:.1f} | "
                f"{t / b:.1f} |",
                flush=True,
            )


# --------------------------------------------------------------------------------------------------
# Memory


def memory_table(args: argparse.Namespace, device: torch.device) -> None:
    net = ForwardRecorder(resnet18_embedding(device))
    size = args.memory_size
    print("| method | pairs | batch_size | largest autograd batch | peak CUDA MiB |")
    print("|---|---|---|---|---|")
    for pairs in (1, 2, 4):
        g = torch.Generator().manual_seed(pairs)
        x1 = torch.rand(pairs, 3, size, size, generator=g).to(device)
        x2 = torch.rand(pairs, 3, size, size, generator=g).to(device)
        net.calls.clear()
        if device.type == "cuda":
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        options = {} if args.memory_k is None else {"k": args.memory_k}
        explain_interactions(net, x1, x2, method="bilrp", batch_size=2, **options)
        peak = "n/a (cpu)"
        if device.type == "cuda":
            sync(device)
            peak = f"{(torch.cuda.max_memory_allocated(device) - base) / 2**20:.0f}"
        print(f"| bilrp | {pairs} | 2 | {net.max_batch(True)} | {peak} |", flush=True)


# --------------------------------------------------------------------------------------------------
# The constructed check


def circular_cnn() -> nn.Sequential:
    """The tests' circular-padding CNN (stride 4, bias-free, 128 channels, D = 64)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, padding_mode="circular", bias=False),
            nn.ReLU(),
            nn.Conv2d(32, 128, 4, stride=4, bias=False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(128, 64, bias=False),
        )


def shifted(b: int, share: float = 1.0, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Noise images (in ``share`` of the 4 x 4 cells) and their circular shift by (8, 12) px."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, 32, 32, generator=g)
    if share < 1.0:
        keep = (torch.rand(b, 1, 8, 8, generator=g) < share).float()
        x = x * keep.repeat_interleave(4, 2).repeat_interleave(4, 3)
    return x, torch.roll(x, (8, 12), dims=(2, 3))


def check_table(args: argparse.Namespace) -> None:
    net = circular_cnn()
    x1, x2 = shifted(args.check_pairs)
    geo = circular_shift((8, 12), (32, 32), batch=args.check_pairs)
    rows: list[tuple[str, Callable[[], Any]]] = [
        ("point_to_point | layer='2'", lambda: point_to_point(net, x1, x2, similarity="dot")),
    ]
    for directions in ("random", "principal"):
        for k in args.check_k:
            rows.append(
                (
                    f"bilrp | directions={directions!r}, k={k}",
                    lambda d=directions, k=k: explain_interactions(
                        net, x1, x2, method="bilrp", directions=d, k=k, similarity="dot"
                    ),
                )
            )
    print(
        f"shift check: {args.check_pairs} pairs, 32 px, 8 x 8 grid, view 2 = view 1 rolled by "
        f"(8, 12) px = (2, 3) cells"
    )
    print("| method | options | exact best match | within 1 cell | total / sim |")
    print("|---|---|---|---|---|")
    for label, fn in rows:
        r = fn()
        exact = correspondence_scores(r, geo, tolerance=0).accuracy.mean()
        near = correspondence_scores(r, geo, tolerance=1).accuracy.mean()
        ratio = (r.total / r.sim).mean()
        print(f"| {label} | {100 * exact:.1f}% | {100 * near:.1f}% | {ratio:.3f} |", flush=True)

    print(
        f"faithfulness: {args.check_pairs} pairs with content in 1/4 of the cells, k=4, "
        f"substrate='zero', dot similarity; drops as a share of the similarity, mean over pairs"
    )
    x1, x2 = shifted(args.check_pairs, share=0.25)
    r = point_to_point(net, x1, x2, similarity="dot")
    f = match_faithfulness(net, x1, x2, r, k=4)
    print("| removed | mean drop / sim |")
    print("|---|---|")
    for label, drop in (
        ("top-4 matched pairs, both views", f.matched),
        ("4 random pairs, both views", f.random),
        ("top-4 of marginal 1, view 1 alone", f.marginal1),
        ("top-4 of marginal 2, view 2 alone", f.marginal2),
        ("top-4 of each marginal, both views", f.marginal_both),
    ):
        print(f"| {label} | {float((drop / f.sim).mean()):.3f} |")
    print(
        f"matches beat random in {int(f.beats_random.sum())}/{len(f.sim)} pairs, "
        f"either marginal alone in {int(f.beats_marginal.sum())}/{len(f.sim)}",
        flush=True,
    )


# --------------------------------------------------------------------------------------------------
# The figure


def write_figure(path: Path) -> None:
    """The docs figure: top, two pairs of the shift check (exact answer: parallel lines, two cells
    down and three right, wrapping around); below, two random crops of three sklearn digits (the
    demo's data) explained on the same untrained circular CNN. ``point_to_point``, 8 matches per
    pair, one per view-2 cell (``distinct``)."""
    import torch.nn.functional as F
    from PIL import Image
    from sklearn.datasets import load_digits

    net = circular_cnn()
    s1, s2 = shifted(2, seed=1)
    shift = point_to_point(net, s1, s2, similarity="dot")
    shift_scores = correspondence_scores(shift, circular_shift((8, 12), (32, 32), batch=2))
    digits = torch.tensor(load_digits().images[[0, 3, 5]], dtype=torch.float32) / 16.0
    images = F.interpolate(digits[:, None], size=(64, 64), mode="bilinear").repeat(1, 3, 1, 1)
    views = random_views(images, size=32, scale=(0.4, 1.0), seed=0)
    crops = point_to_point(net, views.x1, views.x2, similarity="dot")
    crop_scores = correspondence_scores(crops, views.geometry)
    # Noise in [-3, 3] shown through the renderer's un-normalisation (mean 0.5, std 1/6).
    top = match_grid(s1, s2, shift, k=8, min_tile=128, mean=(0.5,) * 3, std=(1 / 6,) * 3)
    bottom = match_grid(views.x1, views.x2, crops, k=8, min_tile=128)
    picture = torch.cat([top, bottom[:, 2:]], dim=1)  # the bottom's top padding is the seam
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture.permute(1, 2, 0).numpy()).save(path)

    def pct(t: Tensor) -> str:
        return ", ".join(f"{100 * a:.0f}%" for a in t.tolist())

    print(
        f"figure: {path}; shift pairs within 1 cell: {pct(shift_scores.accuracy)}; digit crops "
        f"within 1 cell: {pct(crop_scores.accuracy)}, mean error px: "
        + ", ".join(f"{e:.1f}" for e in crop_scores.error_px.tolist())
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 224], help="image sides")
    parser.add_argument("--pairs", type=int, default=2, help="pairs explained per call")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs after the warm-up (0: time the warm-up)"
    )
    parser.add_argument(
        "--memory-size", type=int, default=64, help="image side of the memory table"
    )
    parser.add_argument(
        "--memory-k", type=int, default=None, help="bilrp directions of the memory table"
    )
    parser.add_argument("--check-pairs", type=int, default=8, help="pairs of the shift check")
    parser.add_argument(
        "--check-k", type=int, nargs="+", default=[8, 16, 32, 64], help="directions of bilrp"
    )
    parser.add_argument("--figure", type=Path, default=None, help="write the docs figure here")
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.pairs, args.repeats = [32], 1, 0
        args.memory_size, args.memory_k, args.check_pairs, args.check_k = 32, 4, 2, [8]
    device = torch.device(args.device)
    print(machine_line(device), flush=True)
    cost_table(args, device)
    memory_table(args, device)
    check_table(args)
    if args.figure is not None:
        write_figure(args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
