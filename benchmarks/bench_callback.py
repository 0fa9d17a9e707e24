"""Cost of one PairExplanationCallback evaluation against one training epoch, its scaling and memory.

1. **Epoch time** of a CIFAR-10-sized run (50,000 images of 32 px, batch 256), estimated from
   measured training steps of a ResNet-18 (torchvision ``resnet18(weights=None, num_classes=10)``,
   train mode): the median time of ``--train-steps`` steps (forward + backward + SGD step with
   momentum) times ``50000 / 256``. A SimCLR-style step (two views of 256 images through the same
   network, NT-Xent loss) is timed too, for reference; the one-view step is the conservative
   (shorter) epoch and is the one the goal is checked against.
2. **One evaluation through the callback's real code path**: a tiny ``Trainer`` (CSVLogger, one
   training batch) fits a LightningModule wrapping a ResNet-18 embedding (``fc = Identity``,
   32 px) with ``PairExplanationCallback()`` at its defaults (default methods, metrics,
   ``n_pairs`` and ``n_steps``; only ``probe={"pairing": "dataset", "source": "train"}`` is set,
   because the toy dataset yields pairs). The fit includes the dry run and a first evaluation
   (the warm-up). Then ``callback.on_train_epoch_end(trainer, module)`` is timed (median of
   ``--repeats``): explanation, metrics, rendering, PNG/CSV files through the file sink and the
   logger calls. ``callback.compute_scores(module)`` (no rendering or logging) is timed too.
3. **Scaling**: ``compute_scores`` on a small one-factor-at-a-time grid around the defaults:
   ``n_pairs``, the methods and ``n_steps``, with the image forwards counted per evaluation.
4. **Memory vs ``batch_size``** (the chunk size of the metrics): a model wrapper records the
   largest batch (and its bytes) that reaches the model with and without autograd; on CUDA,
   ``torch.cuda.max_memory_allocated``; on CPU (Linux), the peak-RSS increase of one evaluation
   measured in a fresh subprocess per setting (``--no-rss`` skips it). The largest batch is bounded
   by ``max(batch_size, 2 * n_pairs)``: perturbed images come in chunks of ``batch_size``; the
   intact pairs (``explain/sim``) and the CAM forward/backward take the ``2 * n_pairs`` probe
   images at once.

Example::

    OMP_NUM_THREADS=2 python benchmarks/bench_callback.py

``--smoke`` runs a tiny configuration in seconds (used by the test suite); ``--profile`` prints
the top functions of one hook evaluation (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import ForwardRecorder, machine_line, median_time, resnet18_embedding
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

CIFAR_IMAGES = 50_000
CIFAR_BATCH = 256
GOAL = 0.05


# --------------------------------------------------------------------------------------------------
# Models and data


def smooth_images(n: int, size: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    fine = torch.rand(n, 3, size, size, generator=g)
    up = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (0.8 * up + 0.2 * fine).clamp(0, 1)


class PairData(Dataset[tuple[Tensor, Tensor]]):
    """Items ``(x1, x2)``: an image and its noisy horizontal flip."""

    def __init__(self, n: int, size: int) -> None:
        self.x1 = smooth_images(n, size, 0)
        g = torch.Generator().manual_seed(1)
        self.x2 = (self.x1.flip(-1) + 0.05 * torch.randn(self.x1.shape, generator=g)).clamp(0, 1)

    def __len__(self) -> int:
        return len(self.x1)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x1[i], self.x2[i]


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.t() / temperature
    n = z1.shape[0]
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -1e9)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def make_module(size: int, n_items: int) -> Any:
    import lightning.pytorch as L

    class SSLModule(L.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.backbone = resnet18_embedding(torch.device("cpu")).train()

        def forward(self, x: Tensor) -> Tensor:
            z: Tensor = self.backbone(x)
            return z

        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            x1, x2 = batch
            return nt_xent(self(x1), self(x2))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

        def train_dataloader(self) -> DataLoader[Any]:
            return DataLoader(PairData(n_items, size), batch_size=8, shuffle=False)

    return SSLModule()


# --------------------------------------------------------------------------------------------------
# Training steps and probe sets


def train_step_times(
    device: torch.device, batch: int, size: int, steps: int
) -> tuple[float, float]:
    """Median seconds of one training step: one view (CE), and two views (NT-Xent)."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    net = resnet18(weights=None, num_classes=10).to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    x_b = torch.rand(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)

    def one_view() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    def two_views() -> None:
        opt.zero_grad(set_to_none=True)
        nt_xent(net(x), net(x_b)).backward()
        opt.step()

    one_view()
    two_views()  # warm-up
    t1 = median_time(one_view, device, steps)
    t2 = median_time(two_views, device, steps)
    return t1, t2


def save_probe(n_pairs: int, size: int, directory: Path) -> Path:
    from lightning_explain.data import ProbeSet

    data = PairData(n_pairs, size)
    probe = ProbeSet(
        x1=data.x1,
        x2=data.x2,
        indices=tuple(range(n_pairs)),
        seed=0,
        pairing="dataset",
        source="bench_callback",
    )
    return probe.save(directory / f"probe_{n_pairs}_{size}.pt")


# --------------------------------------------------------------------------------------------------
# Sections


def bench_hook(args: argparse.Namespace, device: torch.device, workdir: Path) -> dict[str, Any]:
    """Time the callback's epoch-end hook and compute_scores on a fitted tiny Trainer."""
    import lightning.pytorch as L
    from lightning.pytorch.loggers import CSVLogger

    from lightning_explain import PairExplanationCallback

    probe: dict[str, Any] = {"pairing": "dataset", "source": "train"}
    small: dict[str, Any] = {"n_steps": 4} if args.smoke else {}
    if args.smoke:
        probe["n_pairs"] = 2
    callback = PairExplanationCallback(probe=probe, **small)
    module = make_module(args.size, max(16, callback.probe_settings.n_pairs))
    trainer = L.Trainer(
        accelerator="cuda" if device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=CSVLogger(str(workdir), name="bench"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(module)  # probe draw, dry run, and one evaluation at the epoch's end (warm-up)
    hook = median_time(lambda: callback.on_train_epoch_end(trainer, module), device, args.repeats)
    compute = median_time(lambda: callback.compute_scores(module), device, args.repeats)
    autocast = None
    if args.autocast is not None:
        # The same probe with autocast on, timed against float32 runs interleaved with it.
        fast = PairExplanationCallback(probe=probe, autocast=args.autocast, **small)
        fast.load_probe(callback.save_probe(workdir / "probe_autocast.pt"))
        fast.compute_scores(module)  # warm-up
        pairs = [
            (
                median_time(lambda: fast.compute_scores(module), device, 1),
                median_time(lambda: callback.compute_scores(module), device, 1),
            )
            for _ in range(args.repeats)
        ]
        half, full = sorted(p[0] for p in pairs), sorted(p[1] for p in pairs)
        autocast = (half[len(half) // 2], full[len(full) // 2])
    profile = None
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        callback.on_train_epoch_end(trainer, module)
        profiler.disable()
        profile = pstats.Stats(profiler)
    log_dir = Path(str(trainer.log_dir))
    files = sorted(p for p in log_dir.rglob("*") if p.suffix in (".png", ".csv"))
    return {
        "hook": hook,
        "compute": compute,
        "methods": list(callback.methods),
        "metrics": callback.metrics,
        "n_pairs": callback.probe_settings.n_pairs,
        "n_steps": callback.n_steps,
        "batch_size": callback.batch_size,
        "errors": callback.error_count,
        "files": len(files),
        "log_dir": str(log_dir),
        "profile": profile,
        "autocast": autocast,
    }


def evaluation(
    net: nn.Module,
    probe_path: Path,
    device: torch.device,
    repeats: int,
    **kwargs: Any,
) -> dict[str, Any]:
    """compute_scores of a callback built with ``kwargs``: median seconds, forwards, max batch."""
    from lightning_explain import PairExplanationCallback

    n_pairs = kwargs.pop("n_pairs", 8)
    callback = PairExplanationCallback(probe={"n_pairs": n_pairs, "pairing": "dataset"}, **kwargs)
    callback.load_probe(probe_path)
    recorder = ForwardRecorder(net)
    callback.compute_scores(recorder)  # warm-up and the forward count
    images = recorder.images
    max_batch = {grad: recorder.max_batch(grad) for grad in (False, True)}
    max_bytes = recorder.max_bytes
    seconds = median_time(lambda: callback.compute_scores(recorder), device, repeats)
    return {"seconds": seconds, "images": images, "max_batch": max_batch, "max_bytes": max_bytes}


def _status_mib(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def rss_child(args: argparse.Namespace) -> int:
    """Subprocess: peak-RSS increase of one evaluation (``--rss-child N_PAIRS BATCH_SIZE``).

    A fresh process, so no memory freed earlier but kept by the allocator hides the peak. The
    peak is the kernel's RSS high-water mark (``VmHWM``), reset through ``/proc/self/clear_refs``
    right before the evaluation (``ru_maxrss`` would include the parent's peak, inherited at
    fork).
    """
    n_pairs, batch_size = args.rss_child
    device = torch.device(args.device)
    net = resnet18_embedding(device)
    with tempfile.TemporaryDirectory() as tmp:
        from lightning_explain import PairExplanationCallback

        warm = PairExplanationCallback(probe={"pairing": "dataset"}, n_steps=1, batch_size=2)
        warm.load_probe(save_probe(1, args.size, Path(tmp)))
        warm.compute_scores(net)  # imports and lazy initialisation, at a tiny peak
        callback = PairExplanationCallback(probe={"pairing": "dataset"}, batch_size=batch_size)
        callback.load_probe(save_probe(n_pairs, args.size, Path(tmp)))
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark to the current RSS
        before = _status_mib("VmRSS")
        callback.compute_scores(net)
        peak = _status_mib("VmHWM")
    print(json.dumps({"delta": max(0.0, peak - before) * 2**20}))
    return 0


def rss_delta(args: argparse.Namespace, n_pairs: int, batch_size: int) -> float | None:
    cmd = [
        sys.executable,
        __file__,
        "--device",
        args.device,
        "--size",
        str(args.size),
        "--rss-child",
        str(n_pairs),
        str(batch_size),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"RSS child failed: {proc.stderr[-500:]}", file=sys.stderr)
        return None
    delta: float = json.loads(proc.stdout.strip().splitlines()[-1])["delta"]
    return delta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (the median counts)")
    parser.add_argument("--train-steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--grid-pairs", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--grid-steps", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument(
        "--grid-methods",
        nargs="+",
        default=["gradcam", "gradcam,interaction_cam", "gradcam,interaction_cam,input_x_gradient"],
        help="comma-separated method lists",
    )
    parser.add_argument("--memory-batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--memory-pairs", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--no-rss", action="store_true", help="skip the CPU peak-RSS subprocesses")
    parser.add_argument("--profile", action="store_true", help="cProfile one hook evaluation")
    parser.add_argument(
        "--autocast",
        choices=["bf16", "fp16"],
        default=None,
        help="also time compute_scores with PairExplanationCallback(autocast=...)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--rss-child", type=int, nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child is not None:
        return rss_child(args)
    if args.smoke:
        args.repeats, args.train_steps = 1, 1
        args.grid_pairs, args.grid_steps = [1, 2], [2, 4]
        args.grid_methods = ["gradcam", "gradcam,input_x_gradient"]
        args.memory_batch_sizes, args.memory_pairs, args.no_rss = [4, 16], [2], True
    device = torch.device(args.device)
    from lightning_explain.evaluation import DEFAULT_METHODS

    train_batch = 16 if args.smoke else CIFAR_BATCH
    print(f"{machine_line(device)}, size: {args.size}px, repeats: {args.repeats} (median)")

    # 1. Epoch time
    t_step, t_step2 = train_step_times(device, train_batch, args.size, args.train_steps)
    steps = CIFAR_IMAGES / CIFAR_BATCH
    scale = CIFAR_BATCH / train_batch  # smoke: a smaller batch, scaled up
    epoch, epoch2 = t_step * scale * steps, t_step2 * scale * steps
    print(
        f"training step (ResNet-18, {train_batch} images, forward+backward+SGD): {t_step:.3f} s; "
        f"epoch estimate ({CIFAR_IMAGES} images, batch {CIFAR_BATCH}, {steps:.1f} steps): "
        f"{epoch:.1f} s"
    )
    print(
        f"SimCLR-style step (2 views x {train_batch} images): {t_step2:.3f} s; epoch estimate "
        f"{epoch2:.1f} s"
    )

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # 2. The hook
        hook = bench_hook(args, device, workdir)
        print(
            f"callback settings{' (smoke)' if args.smoke else ' (defaults)'}: methods {hook['methods']}, metrics "
            f"{hook['metrics'] or 'default set'}, n_pairs {hook['n_pairs']}, n_steps "
            f"{hook['n_steps']}, batch_size {hook['batch_size']}; {hook['files']} PNG/CSV files "
            f"written by the file sink; errors: {hook['errors']}"
        )
        print(
            f"one evaluation (on_train_epoch_end, with rendering and logging): {hook['hook']:.3f} s"
        )
        print(f"one evaluation (compute_scores, no rendering/logging): {hook['compute']:.3f} s")
        print(f"rendering + logging: {hook['hook'] - hook['compute']:.3f} s")
        if hook["autocast"] is not None:
            half, full = hook["autocast"]
            print(
                f"compute_scores with autocast={args.autocast!r}: {half:.3f} s vs float32 "
                f"{full:.3f} s (interleaved, median of {args.repeats}; speed-up "
                f"{full / half:.2f}x)"
            )
        ratio = hook["hook"] / epoch
        verdict = "met" if ratio <= GOAL else "MISSED"
        print(
            f"callback evaluation / epoch: {100 * ratio:.2f}% (goal <= {100 * GOAL:.0f}%: "
            f"{verdict}); vs the SimCLR-style epoch: {100 * hook['hook'] / epoch2:.2f}%"
        )
        if hook["profile"] is not None:
            print("cProfile of one hook evaluation (top 15 by own time):")
            hook["profile"].sort_stats("tottime").print_stats(15)
            print("cProfile (top 25 by cumulative time):")
            hook["profile"].sort_stats("cumulative").print_stats(25)

        # 3. Scaling grid
        net = resnet18_embedding(device)
        default_pairs, default_steps = hook["n_pairs"], hook["n_steps"]
        default_methods = ",".join(DEFAULT_METHODS)
        configs: list[tuple[int, str, int]] = [(default_pairs, default_methods, default_steps)]
        configs += [(p, default_methods, default_steps) for p in args.grid_pairs]
        configs += [(default_pairs, m, default_steps) for m in args.grid_methods]
        configs += [(default_pairs, default_methods, s) for s in args.grid_steps]
        configs = list(dict.fromkeys(configs))
        probes = {p: save_probe(p, args.size, workdir) for p in {c[0] for c in configs}}
        print("| n_pairs | methods | n_steps | image forwards | seconds | ms / 1000 forwards |")
        print("|---|---|---|---|---|---|")
        for n_pairs, methods, n_steps in configs:
            out = evaluation(
                net,
                probes[n_pairs],
                device,
                args.repeats,
                methods=methods.split(","),
                n_pairs=n_pairs,
                n_steps=n_steps,
            )
            print(
                f"| {n_pairs} | {methods} | {n_steps} | {out['images']} | {out['seconds']:.3f} | "
                f"{1000 * out['seconds'] / out['images'] * 1000:.1f} |"
            )
            sys.stdout.flush()

        # 4. Memory vs batch_size
        rss = device.type == "cpu" and not args.no_rss
        mem_col = "CUDA peak MB" if device.type == "cuda" else "peak RSS increase MB"
        print(
            "| batch_size | n_pairs | images per evaluation | largest no-grad batch | "
            f"largest autograd batch | max(batch_size, 2 n_pairs) | largest input MB | {mem_col} |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for n_pairs in args.memory_pairs:
            probe = probes.get(n_pairs) or save_probe(n_pairs, args.size, workdir)
            for batch_size in args.memory_batch_sizes:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    base = torch.cuda.memory_allocated(device)
                out = evaluation(net, probe, device, 1, n_pairs=n_pairs, batch_size=batch_size)
                if device.type == "cuda":
                    peak = torch.cuda.max_memory_allocated(device) - base
                    mem = f"{peak / 2**20:.0f}"
                elif rss:
                    delta = rss_delta(args, n_pairs, batch_size)
                    mem = "n/a" if delta is None else f"{delta / 2**20:.0f}"
                else:
                    mem = "skipped"
                print(
                    f"| {batch_size} | {n_pairs} | {out['images']} | {out['max_batch'][False]} | "
                    f"{out['max_batch'][True]} | {max(batch_size, 2 * n_pairs)} | "
                    f"{out['max_bytes'] / 2**20:.2f} | {mem} |"
                )
                sys.stdout.flush()
    if hook["errors"]:
        print(f"ERROR: the callback counted {hook['errors']} failed evaluation(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
