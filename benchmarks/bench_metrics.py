"""Cost of the batched pairwise metrics against plain forward passes and a naive loop.

Runs insertion + deletion in both modes (``evaluate`` with the four keys
``insertion_simultaneous``, ``insertion_conditional``, ``deletion_simultaneous``,
``deletion_conditional``) on a ResNet-18 embedding (torchvision ``resnet18(weights=None)``,
``fc = Identity``) and compares its wall time with

* the **floor**: the same image forwards as plain batches of the same chunk size under
  ``torch.inference_mode``, timed in the same run. By default the floor replays the very batches
  ``evaluate`` fed to the model (recorded in the warm-up run; image content changes CPU conv
  times by ~10-20 %, zeros being cheaper than noise), so the ratio isolates the cost of building
  the perturbed images and the bookkeeping. Random full batches are timed too, for reference
  (``--floor random`` uses only those, e.g. when recording would not fit in memory), and
* a **naive loop**: per pair, per step, batch-1 forwards (the results must agree).

Example::

    OMP_NUM_THREADS=1 python benchmarks/bench_metrics.py --pairs 64 --size 32 --steps 28

``--smoke`` runs a tiny configuration in seconds (used by the test suite).
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F
from _common import ForwardRecorder, resnet18_embedding, timed
from torch import Tensor, nn

from lightning_explain import perturbation_autocast
from lightning_explain._perf import auto_batch_size
from lightning_explain.metrics import evaluate

KEYS = [
    "insertion_simultaneous",
    "insertion_conditional",
    "deletion_simultaneous",
    "deletion_conditional",
]


def replay_run(net: nn.Module, batches: list[Tensor]) -> None:
    """Embed recorded input batches as they are."""
    with torch.inference_mode():
        for batch in batches:
            net(batch)


def floor_run(net: nn.Module, n_images: int, batch_size: int, shape: tuple[int, ...]) -> None:
    """Embed ``n_images`` random images in plain batches of ``batch_size``."""
    device = next(net.parameters()).device
    full = torch.rand(batch_size, *shape, device=device)
    with torch.inference_mode():
        done = 0
        while done < n_images:
            n = min(batch_size, n_images - done)
            net(full[:n])
            done += n


def naive_scores(
    net: nn.Module, x1: Tensor, x2: Tensor, h1: Tensor, h2: Tensor, n_steps: int
) -> dict[str, Tensor]:
    """Per pair, per step, batch-1 forwards: the loop the batched engine replaces."""
    from lightning_explain._core import gaussian_blur, relative_blur

    b, c, height, width = x1.shape
    kernel, sigma = relative_blur(min(height, width))  # the 224 px k=11, sigma=5, scaled
    k = math.ceil(height * width / n_steps)
    out: dict[str, list[float]] = {key: [] for key in KEYS}
    with torch.inference_mode():
        for p in range(b):
            z1 = net(x1[p : p + 1])
            z2 = net(x2[p : p + 1])
            orders = [
                torch.argsort(h.flatten(), descending=True, stable=True) for h in (h1[p], h2[p])
            ]
            curves: dict[str, list[float]] = {key: [] for key in KEYS}
            for kind in ("insertion", "deletion"):
                imgs = []
                for x in (x1[p], x2[p]):
                    if kind == "insertion":
                        imgs.append((gaussian_blur(x.unsqueeze(0), kernel, sigma)[0], x))
                    else:
                        imgs.append((x, torch.zeros_like(x)))
                for t in range(n_steps + 1):
                    zs = []
                    for (start, finish), order in zip(imgs, orders):
                        img = start.clone().reshape(c, -1)
                        sel = order[: t * k]
                        img[:, sel] = finish.reshape(c, -1)[:, sel]
                        zs.append(net(img.reshape(1, c, height, width)))
                    curves[f"{kind}_simultaneous"].append(F.cosine_similarity(zs[0], zs[1]).item())
                    cond = 0.5 * (F.cosine_similarity(zs[0], z2) + F.cosine_similarity(zs[1], z1))
                    curves[f"{kind}_conditional"].append(cond.item())
            for key, values in curves.items():
                inner = sum(values) - 0.5 * (values[0] + values[-1])
                out[key].append(inner / n_steps)
    return {key: torch.tensor(v) for key, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=28, help="n_steps of insertion/deletion")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per forward (default: evaluate's own, chosen from the device's memory)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (the minimum counts)")
    parser.add_argument(
        "--floor",
        choices=["replay", "random"],
        default="replay",
        help="floor inputs: replay the recorded metric batches (default) or random images",
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive loop baseline")
    parser.add_argument(
        "--autocast",
        choices=["bf16", "fp16"],
        default=None,
        help="also time the metrics under lightning_explain.perturbation_autocast(<dtype>)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        args.pairs, args.size, args.steps, args.repeats, args.batch_size = 2, 16, 4, 1, 16

    device = torch.device(args.device)
    net = resnet18_embedding(device)
    counter = ForwardRecorder(net, record_inputs=args.floor == "replay")
    g = torch.Generator().manual_seed(0)
    shape = (3, args.size, args.size)
    x1 = torch.rand(args.pairs, *shape, generator=g).to(device)
    x2 = torch.rand(args.pairs, *shape, generator=g).to(device)
    h1 = torch.rand(args.pairs, 7, 7, generator=g).to(device)  # a CAM-like 7x7 map, upsampled
    h2 = torch.rand(args.pairs, 7, 7, generator=g).to(device)

    def run_metrics(model: nn.Module) -> dict[str, Tensor]:
        return evaluate(
            model, x1, x2, (h1, h2), KEYS, n_steps=args.steps, batch_size=args.batch_size
        )

    scores = run_metrics(counter)  # warm-up, the forward count and the recorded batches
    n_images, n_calls = counter.images, len(counter.calls)
    recorded = counter.inputs or []
    counter.inputs = None
    chunk = args.batch_size or auto_batch_size(device, shape)  # what evaluate uses
    floor_run(net, chunk, chunk, shape)  # warm-up
    metric_times, replay_times, random_times = [], [], []
    for _ in range(args.repeats):  # interleaved, so that load changes hit all alike
        metric_times.append(timed(lambda: run_metrics(net), device))
        if recorded:
            replay_times.append(timed(lambda: replay_run(net, recorded), device))
        random_times.append(timed(lambda: floor_run(net, n_images, chunk, shape), device))
    t_metric, t_random = min(metric_times), min(random_times)
    t_floor = min(replay_times) if replay_times else t_random

    print(
        f"device: {device} (torch threads: {torch.get_num_threads()}), pairs: {args.pairs}, "
        f"size: {args.size}px, n_steps: {args.steps}, batch_size: {args.batch_size or f'auto ({chunk})'}, "
        f"repeats: {args.repeats}"
    )
    print(f"metrics: {', '.join(KEYS)}")
    print(f"image forwards per evaluation: {n_images} in {n_calls} forward calls")
    print(f"batched metrics: {t_metric:.3f} s (min of {args.repeats})")
    if replay_times:
        print(
            f"floor (the same {n_calls} batches replayed): {t_floor:.3f} s (min of {args.repeats})"
        )
    print(
        f"floor (random images, full batches of {chunk}): {t_random:.3f} s "
        f"(min of {args.repeats}; ratio {t_metric / t_random:.3f}x)"
    )
    print(f"ratio metrics/floor: {t_metric / t_floor:.3f}x (target <= 1.15x)")
    for key, value in scores.items():
        print(f"  mean {key}: {value.mean().item():.4f}")

    if args.autocast is not None:
        half: dict[str, Tensor] = {}

        def run_autocast() -> None:
            with perturbation_autocast(args.autocast):
                half.update(run_metrics(net))

        run_autocast()  # warm-up
        auto_times, full_times = [], []
        for _ in range(args.repeats):  # interleaved with float32 runs of the same run
            auto_times.append(timed(run_autocast, device))
            full_times.append(timed(lambda: run_metrics(net), device))
        t_auto, t_full = min(auto_times), min(full_times)
        diff = max((half[k] - scores[k]).abs().max().item() for k in KEYS)
        print(
            f"autocast {args.autocast}: {t_auto:.3f} s vs float32 {t_full:.3f} s "
            f"(min of {args.repeats}; speed-up {t_full / t_auto:.2f}x); "
            f"max |score difference| {diff:.2e}"
        )

    if not args.no_naive:
        naive: dict[str, Tensor] = {}

        def run_naive() -> None:
            naive.update(naive_scores(net, x1, x2, h1_full, h2_full, args.steps))

        h1_full = F.interpolate(h1[:, None], size=shape[1:], mode="bilinear")[:, 0]
        h2_full = F.interpolate(h2[:, None], size=shape[1:], mode="bilinear")[:, 0]
        t_naive = timed(run_naive, device)
        diff = max((naive[k] - scores[k].cpu()).abs().max().item() for k in KEYS)
        print(f"naive per-pair per-step loop: {t_naive:.3f} s")
        print(f"speed-up over naive: {t_naive / t_metric:.1f}x; max |score difference|: {diff:.2e}")
        if diff > 1e-4:
            print("ERROR: batched and naive scores disagree", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
