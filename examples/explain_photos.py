"""Explain real photos with every method of the paper.

Photos that ship inside scikit-image (the astronaut, a cat, coffee, a rocket, ...) are turned into
pairs (a centre view and an augmented view, as in the paper). A small CNN is first trained for a
short while with a SimCLR objective (lightly's NT-Xent loss) on random views of the photos, so the
explanations explain a model that has learned something. Every registered method then explains
every pair. One PNG per method is written, plus ``overview.png`` with every method side by side.

Run::

    python examples/explain_photos.py --out outputs/photos

No network is needed: the photos are part of the scikit-image package.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import Tensor, nn

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")

# Cheaper-than-default options so the demo finishes in a minute or two on two CPU cores; the
# defaults target 224 px images.
DEMO_OPTIONS: dict[str, dict[str, object]] = {
    "conditional_occlusion": {"window": 16, "stride": 4},
    "context_agnostic_occlusion": {"window": 16, "stride": 4},
    "pairwise_occlusion": {"n_erasures": 100},
    "rise": {"n_masks": 500},
    "smoothgrad": {"n_samples": 25},
    "averaged_transforms": {"steps": 10},
    "integrated_gradients": {"n_steps": 32},
    "pixel_invariance": {"n_augmentations": 256, "epochs": 200},
}


def load_photos(size: int) -> Tensor:
    """The scikit-image sample photos, centre-cropped square: ``(N, 3, size, size)`` in [0, 1]."""
    import skimage.data
    from torchvision.transforms.v2 import functional as TF

    out = []
    for name in PHOTOS:
        img = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
        short = min(img.shape[-2:])
        img = TF.center_crop(img, [short, short])
        out.append(TF.resize(img, [size, size], antialias=True))
    return torch.stack(out)


def small_cnn(dim: int = 64) -> nn.Sequential:
    """A small CNN with a projection head: ``(B, 3, H, W) -> (B, dim)``."""

    def block(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    return nn.Sequential(
        block(3, 32, 1),
        block(32, 64, 2),
        block(64, 64, 1),
        block(64, 128, 2),
        block(128, 128, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, dim),
    )


def views(photos: Tensor, index: Tensor, size: int, seed: int) -> Tensor:
    """SimCLR-style random views (crop, flip, colour jitter, grayscale) of ``photos[index]``."""
    from torchvision.transforms import v2

    pipeline = v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.25, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
    )
    with torch.random.fork_rng():  # torchvision draws from the global RNG: fork it, seeded
        torch.manual_seed(seed)
        return torch.stack([pipeline(photos[i]) for i in index.tolist()])


def train(model: nn.Module, photos: Tensor, *, steps: int, size: int, seed: int) -> None:
    """A short SimCLR run on random views of the photos."""
    from lightly.loss import NTXentLoss

    g = torch.Generator().manual_seed(seed)
    loss_fn = NTXentLoss(temperature=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for step in range(1, steps + 1):
        index = torch.randint(len(photos), (32,), generator=g)
        s1, s2 = torch.randint(2**31 - 1, (2,), generator=g).tolist()
        loss = loss_fn(model(views(photos, index, size, s1)), model(views(photos, index, size, s2)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(1, steps // 5) == 0 or step == steps:
            print(f"  train step {step:4d}/{steps}  NT-Xent loss {loss.item():.3f}", flush=True)
    model.eval()


def make_pairs(photos: Tensor, size: int, seed: int) -> tuple[Tensor, Tensor]:
    """The paper's pairs: the centre view of each photo and an augmented view of it."""
    from torchvision.transforms.v2 import functional as TF

    clean = TF.resize(photos, [size, size], antialias=True)
    augmented = views(photos, torch.arange(len(photos)), size, seed)
    return clean, augmented


def main(argv: list[str] | None = None) -> None:
    from lightning_explain import explain, list_methods
    from lightning_explain.render import pair_figure

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/photos"))
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--train-steps", type=int, default=150)
    parser.add_argument("--methods", nargs="*", default=None, help="default: every method")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    photos = load_photos(2 * args.size)
    print(f"{len(photos)} photos from scikit-image; training a small CNN with SimCLR ...")
    model = small_cnn()
    start = time.perf_counter()
    train(model, photos, steps=args.train_steps, size=args.size, seed=args.seed)
    print(f"  trained in {time.perf_counter() - start:.1f} s")

    x1, x2 = make_pairs(photos, args.size, args.seed + 1)
    methods = args.methods or list_methods()
    overview = []
    for i, name in enumerate(methods, 1):
        start = time.perf_counter()
        e = explain(model, x1, x2, method=name, **DEMO_OPTIONS.get(name, {}))
        took = time.perf_counter() - start
        captions = [f"{PHOTOS[j]}  sim {e.sim[j]:.2f}" for j in range(len(e))]
        fig = pair_figure(x1, x2, e.h1, e.h2, captions=captions)
        fig.suptitle(name)
        path = args.out / f"{name}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        overview.append((name, e))
        print(f"[{i:2d}/{len(methods)}] {name:28s} {took:6.2f} s  -> {path}", flush=True)

    _overview(x1, x2, overview, args.out / "overview.png")
    print(f"\nDone. Heatmaps of every method are in {args.out.resolve()}/ (overview.png first).")


def _overview(x1: Tensor, x2: Tensor, results: list[tuple[str, object]], path: Path) -> None:
    """One figure: a row per method, the first pair's two overlays side by side for each photo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lightning_explain.render import overlay

    n_pairs = x1.shape[0]
    fig, axes = plt.subplots(
        len(results) + 1, 2 * n_pairs, figsize=(1.6 * 2 * n_pairs, 1.6 * (len(results) + 1))
    )
    for j in range(n_pairs):
        for k, x in enumerate((x1, x2)):
            axes[0, 2 * j + k].imshow(x[j].permute(1, 2, 0).clamp(0, 1).numpy())
    for r, (name, e) in enumerate(results, 1):
        o1 = overlay(x1, e.h1)  # type: ignore[attr-defined]
        o2 = overlay(x2, e.h2)  # type: ignore[attr-defined]
        for j in range(n_pairs):
            axes[r, 2 * j].imshow(o1[j].permute(1, 2, 0).numpy())
            axes[r, 2 * j + 1].imshow(o2[j].permute(1, 2, 0).numpy())
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
