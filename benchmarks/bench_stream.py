"""Large offline evaluations: pairs per second of ``evaluate_stream`` at 1 and 2 processes.

``--images`` generated 32 px images (smooth random colour fields with random rectangles, the
images of ``bench_fit.py``) are written as PNG files into an image folder; each run streams every
pair (clean vs augmented view, made per item by ``ImageFolderPairs``) through a Lightning
``Trainer`` on the CPU: ``devices=1``, and ``devices=2, strategy="ddp"`` (two processes, gloo),
each process with ``torch.set_num_threads(1)``. The model is a ResNet-18 embedding (torchvision
``resnet18(weights=None)``, ``fc = Identity``); methods ``gradcam`` and ``interaction_cam``, the
default metrics. Each setting runs in a fresh subprocess; the time counted is the prediction
loop's on rank 0 (Trainer start-up and process launch excluded), and the per-method means of the
two settings must agree (the same pairs, only split differently).

Example::

    python benchmarks/bench_stream.py --images 256 --devices 1 2

``--smoke`` runs a tiny configuration (used by the test suite).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from _common import resnet18_embedding

METHODS = ["gradcam", "interaction_cam"]


def child(args: argparse.Namespace) -> int:
    import warnings

    from lightning_explain.streaming import ImageFolderPairs, evaluate_stream

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    net = resnet18_embedding(torch.device("cpu"))
    result = evaluate_stream(
        net,
        ImageFolderPairs(args.folder, size=args.size),
        METHODS,
        None,
        batch_pairs=args.batch_pairs,
        accelerator="cpu",
        devices=args.child,
        strategy="ddp" if args.child > 1 else "auto",
        progress=False,
        n_steps=args.steps,
    )
    if result is not None:
        Path(args.out).write_text(
            json.dumps(
                {
                    "pairs": result.n_pairs,
                    "seconds": result.seconds,
                    "means": {m: result.means(m) for m in METHODS},
                    "failures": result.failures,
                }
            )
        )
    return 0


def write_folder(root: Path, n: int, size: int) -> None:
    from bench_fit import generated_images
    from PIL import Image

    images = generated_images(n, size)
    for i, pixels in enumerate(images):
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=32, help="n_steps of insertion/deletion")
    parser.add_argument("--batch-pairs", type=int, default=16)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child(args)
    if args.smoke:
        args.images, args.steps, args.batch_pairs, args.devices = 8, 4, 4, [1]
    print(
        f"torch {torch.__version__}; ResNet-18, {', '.join(METHODS)}, default metrics, "
        f"n_steps {args.steps}; {args.images} generated {args.size} px images as PNG files; "
        f"batch_pairs {args.batch_pairs}; 1 thread per process"
    )
    results: dict[int, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        write_folder(folder, args.images, args.size)
        for devices in args.devices:
            out = Path(tmp) / f"result{devices}.json"
            cmd = [
                sys.executable, __file__, "--child", str(devices), "--folder", str(folder),
                "--out", str(out), "--size", str(args.size), "--steps", str(args.steps),
                "--batch-pairs", str(args.batch_pairs),
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0 or not out.is_file():
                print(proc.stdout + proc.stderr, file=sys.stderr)
                return 1
            results[devices] = json.loads(out.read_text())
            r = results[devices]
            rate = float(r["pairs"]) / float(r["seconds"])  # type: ignore[arg-type]
            print(
                f"{devices} process(es): {r['pairs']} pairs in {float(r['seconds']):.2f} s "  # type: ignore[arg-type]
                f"= {rate:.2f} pairs/s; failures: {len(r['failures'])}"  # type: ignore[arg-type]
            )
    if 1 in results:
        base = results[1]
        for devices, r in results.items():
            if devices == 1:
                continue
            speed = float(base["seconds"]) / float(r["seconds"])  # type: ignore[arg-type]
            diff = max(
                abs(r["means"][m][k] - base["means"][m][k])  # type: ignore[index]
                for m in METHODS
                for k in base["means"][m]  # type: ignore[index]
            )
            print(
                f"speed-up with {devices} processes: {speed:.2f}x; max |mean score difference| "
                f"{diff:.1e}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
