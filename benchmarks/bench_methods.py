"""Cost per pair of every explanation method, against a plain forward and forward+backward.

For each image size and each registered method (``lightning_explain.list_methods()``) this
explains ``--pairs`` random pairs on a ResNet-18 embedding (torchvision ``resnet18(weights=None)``,
``fc = Identity``; nothing is downloaded) and reports, per pair:

* seconds per pair (median of ``--repeats`` timed runs after one warm-up run);
* the method's time in **forward equivalents** and **forward+backward equivalents**: multiples of
  one plain forward (``torch.inference_mode``) and of one forward + ``autograd.grad`` with respect
  to the input of the same batch, ``cat([x1, x2])`` (``2 * pairs`` images), timed in the same run.
  Because that batch holds every pair once, the multiples are per pair;
* the image passes counted during the warm-up run (images forwarded without autograd, and
  images forwarded with autograd on, i.e. for a backward pass), per pair;
* the **floor**: the same counted passes as plain batches of the same sizes, with no method
  around them (each distinct batch size timed once per repeat and multiplied by its count), and
  the ratio method / floor (method overhead: building perturbed images, hooks, surrogate fits).
  Each repeat times the method, its floor and the pair batch back to back, so that a change of
  machine load affects numerator and denominators alike; the medians are reported. Passes
  whose backward stops early (CAM methods stop at the explained layer) are floored as full
  backwards, so ratios below 1 can occur.

The defaults of the perturbation methods target 224 px images and take minutes per pair on a CPU.
Unless ``--full``, 224 px runs on a CPU use cheaper options (printed with every row) and scale
the time linearly to the defaults by the ratio of the dominant work knob (masks, augmentations,
window positions, samples, steps; ``est. default s/pair``). At 64 px, the occlusion window and
stride are scaled to the image (24 / 2: the same 21 x 21 window grid as 64 / 8 at 224 px); every
other option is the default.

Example::

    OMP_NUM_THREADS=2 python benchmarks/bench_methods.py --sizes 64 224 --pairs 4

``--smoke`` runs a tiny configuration in seconds (used by the test suite).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from _common import ForwardRecorder, machine_line, median_time, resnet18_embedding, timed
from torch import Tensor, nn

from lightning_explain import explain, list_methods, method_info
from lightning_explain.methods.occlusion import window_starts

PAPER_SIZE = 224


def forward_only(net: nn.Module, x: Tensor) -> None:
    with torch.inference_mode():
        net(x)


def forward_backward(net: nn.Module, x: Tensor, v: Tensor) -> None:
    """One forward and one backward to the input, as the gradient methods take them."""
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        z = net(xg)
        torch.autograd.grad((z * v[: z.shape[0]]).sum(), xg)


# --------------------------------------------------------------------------------------------------
# Options per method and size


def _positions(size: int, window: int, stride: int) -> int:
    return len(window_starts(size, window, stride)) ** 2


def method_options(name: str, size: int, *, cheap: bool, smoke: bool) -> dict[str, Any]:
    """Options used for ``name`` at ``size`` px (``cheap``: reduced work, scaled afterwards)."""
    if smoke:
        return {
            "conditional_occlusion": {"window": 16, "stride": 16},
            "context_agnostic_occlusion": {"window": 16, "stride": 16},
            "pairwise_occlusion": {"n_erasures": 4},
            "rise": {"n_masks": 4},
            "smoothgrad": {"n_samples": 2},
            "averaged_transforms": {"steps": 2},
            "integrated_gradients": {"n_steps": 2},
            "pixel_invariance": {"n_augmentations": 4, "epochs": 5},
        }.get(name, {})
    options: dict[str, Any] = {}
    if name in ("conditional_occlusion", "context_agnostic_occlusion") and size != PAPER_SIZE:
        # The paper's window 64 / stride 8 on 224 px is a 21 x 21 grid; keep that grid.
        stride = max(1, round(8 * size / PAPER_SIZE))
        window = size - 20 * stride if size > 20 * stride else max(1, size // 4)
        options = {"window": window, "stride": stride}
    if cheap:
        options.update(
            {
                "conditional_occlusion": {"stride": 32},
                "context_agnostic_occlusion": {"stride": 32},
                "pairwise_occlusion": {"n_erasures": 25},
                "rise": {"n_masks": 50},
                "smoothgrad": {"n_samples": 10},
                "integrated_gradients": {"n_steps": 8},
                "pixel_invariance": {"n_augmentations": 50},
            }.get(name, {})
        )
    return options


def work_scale(name: str, size: int, options: dict[str, Any]) -> float:
    """Ratio of the default work to the work with ``options`` (1 when the defaults are used)."""
    defaults = method_info(name).defaults()
    merged = {**defaults, **options}
    if name == "conditional_occlusion":
        return (1 + _positions(size, defaults["window"], defaults["stride"])) / (
            1 + _positions(size, merged["window"], merged["stride"])
        )
    if name == "context_agnostic_occlusion":
        return (1 + 2 * _positions(size, defaults["window"], defaults["stride"])) / (
            1 + 2 * _positions(size, merged["window"], merged["stride"])
        )
    knob = {
        "pairwise_occlusion": "n_erasures",
        "rise": "n_masks",
        "smoothgrad": "n_samples",
        "integrated_gradients": "n_steps",
        "averaged_transforms": "steps",
        "pixel_invariance": "n_augmentations",
    }.get(name)
    if knob is None:
        return 1.0
    return float(defaults[knob]) / float(merged[knob])


def describe(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"


# --------------------------------------------------------------------------------------------------
# Measurement


class Floor:
    """Plain batches of the model: forward only, or forward + backward to the input."""

    def __init__(self, net: nn.Module, shape: tuple[int, ...], device: torch.device) -> None:
        self.net = net
        self.shape = shape
        self.device = device
        self.runners: dict[tuple[int, bool], Callable[[], None]] = {}
        g = torch.Generator().manual_seed(1)
        self.v = torch.randn(4096, 512, generator=g).to(device)

    def runner(self, n: int, grad: bool) -> Callable[[], None]:
        key = (n, grad)
        if key not in self.runners:
            x = torch.rand(n, *self.shape, device=self.device)
            v = self.v[:n] if n <= self.v.shape[0] else torch.randn(n, 512, device=self.device)

            def run() -> None:
                if grad:
                    forward_backward(self.net, x, v)
                else:
                    forward_only(self.net, x)

            run()  # warm-up
            self.runners[key] = run
        return self.runners[key]

    def batch(self, n: int, grad: bool) -> float:
        """Seconds of one batch of ``n`` images."""
        return timed(self.runner(n, grad), self.device)

    def calls(self, calls: list[tuple[int, bool]]) -> float:
        """Seconds of the given ``(batch size, autograd)`` passes; each distinct batch is timed
        once and multiplied by its count."""
        counts = Counter(calls)
        return sum(count * self.batch(n, grad) for (n, grad), count in counts.items())


def bench_size(
    net: nn.Module,
    size: int,
    methods: list[str],
    args: argparse.Namespace,
    device: torch.device,
) -> list[dict[str, Any]]:
    cheap = not args.full and device.type != "cuda" and size >= PAPER_SIZE
    g = torch.Generator().manual_seed(0)
    shape = (3, size, size)
    x1 = torch.rand(args.pairs, *shape, generator=g).to(device)
    x2 = (x1.flip(-1) + 0.05 * torch.randn(x1.shape, generator=g).to(device)).clamp(0, 1)
    n_pair = 2 * args.pairs  # images in the pair batch cat([x1, x2])
    floor = Floor(net, shape, device)
    t_fwd = statistics.median(floor.batch(n_pair, False) for _ in range(3))
    t_fb = statistics.median(floor.batch(n_pair, True) for _ in range(3))
    print(
        f"{size}px: one forward of the pair batch ({n_pair} images): {t_fwd:.4f} s, "
        f"forward+backward: {t_fb:.4f} s (ratio {t_fb / t_fwd:.2f}), median of 3"
    )
    print(TABLE_HEADER, flush=True)
    rows = []
    for name in methods:
        options = method_options(name, size, cheap=cheap, smoke=args.smoke)
        counter = ForwardRecorder(net)
        explain(counter, x1, x2, method=name, **options)  # warm-up and pass count

        def run(name: str = name, options: dict[str, Any] = options) -> None:
            explain(net, x1, x2, method=name, **options)

        # Interleaved: each repeat times the method, then its floor and the pair batch, so
        # that a change of machine load hits the numerator and the denominators alike.
        times: dict[str, list[float]] = {"method": [], "floor": [], "fwd": [], "fb": []}
        for _ in range(args.repeats):
            times["method"].append(timed(run, device))
            times["floor"].append(floor.calls(counter.calls))
            times["fwd"].append(floor.batch(n_pair, False))
            times["fb"].append(floor.batch(n_pair, True))
        t, t_floor, t_fwd, t_fb = (
            statistics.median(times[k]) for k in ("method", "floor", "fwd", "fb")
        )
        n_fwd = sum(n for n, grad in counter.calls if not grad) / args.pairs
        n_fb = sum(n for n, grad in counter.calls if grad) / args.pairs
        scale = work_scale(name, size, options) if cheap and not args.smoke else 1.0
        rows.append(
            {
                "size": size,
                "method": name,
                "options": describe(options),
                "fwd": n_fwd,
                "fb": n_fb,
                "s_pair": t / args.pairs,
                "x_fwd": t / t_fwd,
                "x_fb": t / t_fb,
                "floor_pair": t_floor / args.pairs,
                "ratio": t / t_floor,
                "scale": scale,
                "est_pair": t / args.pairs * scale,
            }
        )
        print(table_row(rows[-1]), flush=True)
    return rows


def chunk_throughput(
    net: nn.Module, size: int, chunks: list[int], device: torch.device, repeats: int
) -> dict[int, float]:
    """Milliseconds per image of plain forwards (inference mode) in batches of each chunk size,
    over ``max(chunks)`` images per timing."""
    total = max(chunks)
    out: dict[int, float] = {}
    for chunk in chunks:
        x = torch.rand(chunk, 3, size, size, device=device)
        n_batches = max(1, total // chunk)

        def run(x: Tensor = x, n_batches: int = n_batches) -> None:
            for _ in range(n_batches):
                forward_only(net, x)

        forward_only(net, x)  # warm-up
        out[chunk] = 1000 * median_time(run, device, repeats) / (n_batches * chunk)
    return out


TABLE_HEADER = (
    "| size | method | options | fwd imgs/pair | f+b imgs/pair | s/pair | x fwd | x f+b "
    "| floor s/pair | method/floor | est. default s/pair |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def table_row(r: dict[str, Any]) -> str:
    est = f"{r['est_pair']:.3f} (x{r['scale']:.2f})" if r["scale"] != 1.0 else "same"
    return (
        f"| {r['size']} | {r['method']} | {r['options']} | {r['fwd']:g} | {r['fb']:g} "
        f"| {r['s_pair']:.4f} | {r['x_fwd']:.1f} | {r['x_fb']:.1f} | {r['floor_pair']:.4f} "
        f"| {r['ratio']:.2f} | {est} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224], help="image sides")
    parser.add_argument("--pairs", type=int, default=4, help="pairs explained per call")
    parser.add_argument(
        "--methods", nargs="+", default=None, help="registry names (default: every method)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (the median counts)")
    parser.add_argument(
        "--full", action="store_true", help="default options at 224 px also on CPU (slow)"
    )
    parser.add_argument(
        "--chunk-sizes",
        type=int,
        nargs="*",
        default=[16, 64, 256],
        help="also time plain forwards in batches of these sizes (none: skip)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.pairs, args.repeats, args.chunk_sizes = [32], 1, 1, [2, 8]
    methods = args.methods or list_methods()
    unknown = sorted(set(methods) - set(list_methods()))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; valid: {', '.join(list_methods())}")

    device = torch.device(args.device)
    net = resnet18_embedding(device)
    print(
        f"{machine_line(device)}, pairs: {args.pairs}, sizes: {args.sizes}, repeats: {args.repeats} (median)"
    )
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        rows += bench_size(net, size, methods, args, device)
    print("all sizes:")
    print(TABLE_HEADER)
    for r in rows:
        print(table_row(r))
    if args.chunk_sizes:
        print(
            "forward throughput by chunk size (ms per image, inference mode, "
            f"{max(args.chunk_sizes)} images per timing):"
        )
        print("| size | " + " | ".join(f"chunk {c}" for c in args.chunk_sizes) + " |")
        print("|---|" + "---|" * len(args.chunk_sizes))
        for size in args.sizes:
            ms = chunk_throughput(net, size, args.chunk_sizes, device, args.repeats)
            print(f"| {size} | " + " | ".join(f"{ms[c]:.2f}" for c in args.chunk_sizes) + " |")
    if any(r["scale"] != 1.0 for r in rows):
        print(
            "est. default s/pair: the measured time scaled linearly to the default options by the "
            "ratio of the dominant work knob (x factor); cheaper options were used because the "
            "defaults take minutes per pair at 224 px on a CPU (--full runs the defaults)."
        )
    for name in methods:
        print(f"registry cost {name}: {method_info(name).cost}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
