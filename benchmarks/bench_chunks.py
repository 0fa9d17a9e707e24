"""Chunk sizes that fit the model: methods and metrics against their forward-pass floor, with the
memory-bound default chunk and with the chunk measured for the model (``chunk_tuning``).

For each model (a tiny CNN and torchvision's ResNet-18, ``weights=None``) and image size, every
operation (insertion + deletion in both modes, conditional occlusion, RISE, SmoothGrad) runs

* **bound**: ``batch_size=None`` outside :func:`lightning_explain._perf.chunk_tuning`, i.e. the
  memory bound of :func:`lightning_explain._perf.auto_batch_size` (the default before tuning);
* **tuned**: the same call inside ``chunk_tuning()`` (what ``evaluate_probe``, the callback and
  the CLI do): the memory bound from the model's measured activation memory
  (:func:`lightning_explain._perf.activation_bytes`), then the timed probe below it; the one-off
  probe is timed separately (``probe``) and excluded from the runs;
* **floor**: the same number of image forwards as the operation (forward-only under
  ``torch.inference_mode``; forward + input-gradient backward for the images the operation runs
  with autograd), on random images drawn before the timing, in full batches of the fastest of
  the chunk sizes involved (both bounds and the tuned chunks).

Runs are interleaved and the minimum of ``--repeats`` counts. Scores and maps of the bound and
tuned runs must agree to 1e-4 (chunking changes only float rounding), except for maps of pairs
whose similarity is within 1e-5 of 1, where the normalised map is rounding noise (reported).

Example::

    OMP_NUM_THREADS=2 python benchmarks/bench_chunks.py --models tiny resnet18 --sizes 32 64 224

``--overhead`` measures instead what the engines cost per chunk besides the model (the
:data:`lightning_explain._perf.CHUNK_OVERHEAD_S` the chunk probe adds to every candidate): each
operation with a nearly free model (an average pool) at ``batch_size=16`` and ``256``, the
difference in time over the difference in forward calls, and the time of the pixel ranks of
insertion/deletion against torch's stable argsort and of the blurred substrate against
torchvision's blur of the contiguous images::

    OMP_NUM_THREADS=2 python benchmarks/bench_chunks.py --overhead --sizes 32 64

``--smoke`` runs a tiny configuration in seconds (used by the test suite).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial

import torch
from _common import ForwardRecorder, machine_line, resnet18_embedding, timed
from torch import Tensor, nn
from torchvision.transforms.v2.functional import gaussian_blur as tv_gaussian_blur

from lightning_explain import explain
from lightning_explain._core import gaussian_blur, relative_blur
from lightning_explain._perf import (
    _TUNED,
    AUTOGRAD_BYTES_PER_INPUT_BYTE,
    BYTES_PER_INPUT_BYTE,
    activation_bytes,
    auto_batch_size,
    chunk_tuning,
)
from lightning_explain.metrics import evaluate
from lightning_explain.metrics.functional._common import BLUR_KERNEL, BLUR_SIGMA, pixel_ranks

KEYS = [
    "insertion_simultaneous",
    "insertion_conditional",
    "deletion_simultaneous",
    "deletion_conditional",
]


def tiny_cnn(device: torch.device) -> nn.Module:
    """A 3-conv CNN (8-16-32 channels, ~7k parameters), global average pool, linear head."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 32),
    )
    return net.eval().to(device)


MODELS: dict[str, Callable[[torch.device], nn.Module]] = {
    "tiny": tiny_cnn,
    "resnet18": resnet18_embedding,
}


def operations(
    x1: Tensor,
    x2: Tensor,
    h: tuple[Tensor, Tensor],
    n_steps: int,
    rise_masks: int,
    batch_size: int | None = None,
) -> dict[str, Callable[[nn.Module], dict[str, Tensor]]]:
    """name -> run(model) returning the tensors whose agreement is checked (``batch_size``:
    every operation's, default None: the engines' default chunk)."""

    def metrics(model: nn.Module) -> dict[str, Tensor]:
        return evaluate(model, x1, x2, h, KEYS, n_steps=n_steps, batch_size=batch_size)

    def method(name: str, **options: object) -> Callable[[nn.Module], dict[str, Tensor]]:
        def run(model: nn.Module) -> dict[str, Tensor]:
            e = explain(model, x1, x2, method=name, batch_size=batch_size, **options)
            return {"h1": e.h1, "h2": e.h2, "sim": e.sim}

        return run

    return {
        "insertion+deletion": metrics,
        "conditional_occlusion": method("conditional_occlusion"),
        "rise": method("rise", n_masks=rise_masks),
        "smoothgrad": method("smoothgrad"),
    }


def floor_run(net: nn.Module, x: Tensor, n_plain: int, n_grad: int) -> None:
    """``n_plain`` forwards under inference mode and ``n_grad`` forward + input backward, in
    batches of ``chunk = len(x)`` random images (drawn before the timing starts)."""
    chunk = len(x)
    with torch.inference_mode():
        for start in range(0, n_plain, chunk):
            net(x[: min(chunk, n_plain - start)])
    for start in range(0, n_grad, chunk):
        leaf = x[: min(chunk, n_grad - start)].clone().requires_grad_(True)
        torch.autograd.grad(net(leaf).sum(), leaf)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "resnet18"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 64, 224])
    parser.add_argument("--pairs", type=int, default=8, help="pairs below 224 px")
    parser.add_argument("--pairs-224", type=int, default=2, help="pairs at 224 px and above")
    parser.add_argument("--steps", type=int, default=16, help="n_steps of insertion/deletion")
    parser.add_argument("--rise-masks", type=int, default=200)
    parser.add_argument("--ops", nargs="+", default=None, help="operations to run (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (the minimum counts)")
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    parser.add_argument(
        "--overhead", action="store_true", help="the engines' cost per chunk besides the model"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.sizes, args.pairs, args.steps, args.repeats = ["tiny"], [16], 2, 4, 1
        args.rise_masks = 16

    device = torch.device(args.device)
    if args.overhead:
        return overhead(args, device)
    print(
        f"{machine_line(device)}, n_steps: {args.steps}, RISE masks: {args.rise_masks}, "
        f"repeats: {args.repeats} (min counts)"
    )
    print(
        f"{'model':9} {'size':>4} {'pairs':>5} {'operation':22} {'bound':>10} {'tuned':>10} "
        f"{'probe':>7} {'floor':>8} {'bound/floor':>11} {'tuned/floor':>11} {'speed-up':>8}"
    )
    worst = 0.0
    for model_name in args.models:
        for size in args.sizes:
            net = MODELS[model_name](device)
            pairs = args.pairs if size < 224 else args.pairs_224
            shape = (3, size, size)
            g = torch.Generator().manual_seed(0)
            x1 = torch.rand(pairs, *shape, generator=g).to(device)
            x2 = torch.rand(pairs, *shape, generator=g).to(device)
            h = (
                torch.rand(pairs, 7, 7, generator=g).to(device),
                torch.rand(pairs, 7, 7, generator=g).to(device),
            )
            ops = operations(x1, x2, h, args.steps, args.rise_masks)
            for op_name, run in ops.items():
                if args.ops is not None and op_name not in args.ops:
                    continue
                recorder = ForwardRecorder(net)
                bound_out = run(recorder)  # warm-up and the forward count
                n_plain = sum(n for n, grad in recorder.calls if not grad)
                n_grad = sum(n for n, grad in recorder.calls if grad)
                _TUNED.pop(net, None)
                probe = timed(partial(_tuned, run, net), device)  # probe + one run
                tuned_out = _tuned(run, net)
                chunks = dict(_TUNED.get(net, {}))
                caps = [
                    auto_batch_size(device, shape, bytes_per_input_byte=BYTES_PER_INPUT_BYTE),
                    auto_batch_size(
                        device, shape, bytes_per_input_byte=AUTOGRAD_BYTES_PER_INPUT_BYTE
                    ),
                ]
                measured = activation_bytes(net, x1, key=net)
                lifted = [
                    auto_batch_size(device, shape, bytes_per_image=k * measured)
                    for k in (1, 2)
                    if measured is not None
                ]
                floor_chunks = sorted({*caps, *lifted, *chunks.values()})
                floor_inputs = [torch.rand(c, *shape, device=device) for c in floor_chunks]
                diff = max((bound_out[k] - tuned_out[k]).abs().max().item() for k in bound_out)
                bound_t, tuned_t, floor_t = [], [], []
                for _ in range(args.repeats):  # interleaved
                    bound_t.append(timed(partial(run, net), device))
                    tuned_t.append(timed(partial(_tuned, run, net), device))
                    floor_t.append(
                        min(
                            timed(partial(floor_run, net, x, n_plain, n_grad), device)
                            for x in floor_inputs
                        )
                    )
                b, t, f = min(bound_t), min(tuned_t), min(floor_t)
                worst = max(worst, t / f)
                print(
                    f"{model_name:9} {size:>4} {pairs:>5} {op_name:22} {b:>9.3f}s {t:>9.3f}s "
                    f"{max(0.0, probe - t):>6.2f}s {f:>7.3f}s {b / f:>10.2f}x {t / f:>10.2f}x "
                    f"{b / t:>7.2f}x"
                )
                print(
                    f"{'':15} forwards: {n_plain} plain + {n_grad} with autograd; chunks: bound "
                    f"{caps[0]} (autograd {caps[1]}), measured bound "
                    f"{lifted[0] if lifted else '-'} (autograd {lifted[1] if lifted else '-'}), tuned "
                    f"{sorted(set(chunks.values())) or 'none (no chunked pass)'}; "
                    f"max |bound - tuned| {diff:.1e}"
                )
                if diff > 1e-4 and _degenerate(bound_out):
                    print(
                        f"{'':15} (not an error: every pair similarity is within {FLAT} of 1 "
                        f"(min {bound_out['sim'].min().item():.7f}), so the normalised map holds "
                        "rounding noise that depends on the chunk)"
                    )
                elif diff > 1e-4:
                    print(f"ERROR: {op_name}: bound and tuned results disagree", file=sys.stderr)
                    return 1
    print(f"worst tuned/floor: {worst:.2f}x (goal <= 1.2x)")
    return 0


def overhead(args: argparse.Namespace, device: torch.device) -> int:
    """Print each operation's seconds per chunk besides the model (see the module docstring)."""
    print(
        f"{machine_line(device)}, n_steps: {args.steps}, RISE masks: {args.rise_masks}, "
        f"repeats: {args.repeats} (min counts); model: AdaptiveAvgPool2d(2) + Flatten"
    )
    print(
        f"{'size':>4} {'pairs':>5} {'operation':22} {'calls@16':>8} {'calls@256':>9} "
        f"{'t@16':>8} {'t@256':>8} {'per chunk':>10}"
    )
    free = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()).eval().to(device)
    for size in args.sizes:
        pairs = args.pairs if size < 224 else args.pairs_224
        g = torch.Generator().manual_seed(0)
        x1 = torch.rand(pairs, 3, size, size, generator=g).to(device)
        x2 = torch.rand(pairs, 3, size, size, generator=g).to(device)
        h = (
            torch.rand(pairs, 7, 7, generator=g).to(device),
            torch.rand(pairs, 7, 7, generator=g).to(device),
        )
        for op_name in operations(x1, x2, h, args.steps, args.rise_masks):
            if args.ops is not None and op_name not in args.ops:
                continue
            counts, times = [], []
            for chunk in (16, 256):
                run = operations(x1, x2, h, args.steps, args.rise_masks, chunk)[op_name]
                recorder = ForwardRecorder(free)
                run(recorder)
                counts.append(len(recorder.calls))
                times.append(min(timed(partial(run, free), device) for _ in range(args.repeats)))
            per_chunk = (times[0] - times[1]) / max(1, counts[0] - counts[1])
            print(
                f"{size:>4} {pairs:>5} {op_name:22} {counts[0]:>8} {counts[1]:>9} "
                f"{times[0]:>7.4f}s {times[1]:>7.4f}s {per_chunk * 1e3:>7.3f} ms"
            )
        # The pixel ranks of insertion/deletion (both maps of every pair at image size): the
        # engine's pixel_ranks against torch's stable descending argsort, which it reproduces.
        maps = torch.rand(2 * pairs, size, size, generator=g).to(device)
        flat = maps.flatten(1)
        sort_s, ranks_s = _fastest(
            device,
            max(20, args.repeats),
            partial(torch.argsort, flat, dim=1, descending=True, stable=True),
            partial(pixel_ranks, maps),
        )
        print(
            f"{size:>4} {pairs:>5} pixel ranks of {2 * pairs} maps: torch.argsort(stable) "
            f"{sort_s * 1e3:.3f} ms, pixel_ranks {ranks_s * 1e3:.3f} ms "
            f"({sort_s / ranks_s:.2f}x)"
        )
        # The blurred substrate of both images of every pair: torchvision's blur of the
        # contiguous images against the engine's gaussian_blur (channels-last on a CPU).
        images = torch.cat([x1, x2])
        kernel, sigma = relative_blur(size, kernel=BLUR_KERNEL, sigma=BLUR_SIGMA)
        plain_s, blur_s = _fastest(
            device,
            max(20, args.repeats),
            partial(tv_gaussian_blur, images, [kernel, kernel], [sigma, sigma]),
            partial(gaussian_blur, images, kernel, sigma),
        )
        print(
            f"{size:>4} {pairs:>5} blur (k={kernel}) of {2 * pairs} images: torchvision "
            f"{plain_s * 1e3:.3f} ms, gaussian_blur {blur_s * 1e3:.3f} ms "
            f"({plain_s / blur_s:.2f}x)"
        )
    return 0


def _fastest(device: torch.device, repeats: int, *fns: Callable[[], object]) -> list[float]:
    """The fastest of ``repeats`` timed calls of each of ``fns``, in seconds."""
    return [min(timed(fn, device) for _ in range(repeats)) for fn in fns]


FLAT = 1e-5
"""Pairs whose similarity is this close to 1 (random images through a random global-pool CNN at
224 px embed almost alike) leave perturbation maps below float rounding."""


def _degenerate(out: dict[str, Tensor]) -> bool:
    return "sim" in out and bool((out["sim"] > 1 - FLAT).all())


def _tuned(run: Callable[[nn.Module], dict[str, Tensor]], net: nn.Module) -> dict[str, Tensor]:
    with chunk_tuning():
        return run(net)


if __name__ == "__main__":
    sys.exit(main())
