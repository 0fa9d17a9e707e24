"""Brute-force loop references for the pairwise metrics (per pair, per step, batch-1 forwards).

Written independently of the package: explicit pixel orders instead of rank tensors, in-place
pixel copies instead of ``torch.where``, a Python trapezoid sum, manual cosine.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur

from tests.helpers import TinyCNN

Embed = Callable[[Tensor], Tensor]


class Centered(nn.Module):
    """``net(x) - net(gray)``: a random CNN whose cosine similarities spread over [-1, 1].

    Random ReLU networks map every image close to one direction (cosine ~ 0.999); subtracting the
    embedding of a mid-gray image makes the metrics discriminative.
    """

    def __init__(self, net: nn.Module, in_channels: int = 3) -> None:
        super().__init__()
        self.net = net
        flags = [(m, m.training) for m in net.modules()]
        net.eval()
        with torch.no_grad():
            offset = net(torch.full((1, in_channels, 8, 8), 0.5))
        for m, flag in flags:
            m.training = flag
        self.register_buffer("offset", offset)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) - self.offset


class Counting(nn.Module):
    """Counts the images that go through ``model``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x: Tensor) -> Tensor:
        self.images += int(x.shape[0])
        out: Tensor = self.model(x)
        return out


def centered_cnn(seed: int, in_channels: int = 3) -> Centered:
    return Centered(TinyCNN(in_channels=in_channels, seed=seed), in_channels)


def cos(za: Tensor, zb: Tensor) -> float:
    za, zb = za.flatten().double(), zb.flatten().double()
    return float((za @ zb) / (za.norm() * zb.norm()).clamp(min=1e-8))


def embed1(model: Embed, x: Tensor) -> Tensor:
    """Batch-1 forward of one ``(C, H, W)`` image."""
    with torch.no_grad():
        return model(x.unsqueeze(0))[0]


def full_map(h: Tensor, size: tuple[int, int]) -> Tensor:
    """One ``(h, w)`` map at image size (bilinear, as the paper's torchvision Resize)."""
    if tuple(h.shape) == size:
        return h
    return F.interpolate(h[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


def paper_blur(side: int, kernel: int = 11, sigma: float = 5.0) -> tuple[int, float]:
    """The paper's 224 px blur scaled to ``side`` px, restated: kernel ``kernel * side / 224``
    rounded to the nearest odd size (ties: the larger), at least 3, at most ``2 * side - 1``;
    sigma scaled alike."""
    if side == 224:
        return kernel, sigma
    k = kernel * side / 224
    odd = min(range(1, int(k) + 3, 2), key=lambda o: (abs(o - k), -o))
    return min(max(3, odd), 2 * side - 1), sigma * side / 224


def blurred(x: Tensor) -> Tensor:
    k, sigma = paper_blur(min(int(x.shape[-2]), int(x.shape[-1])))
    return gaussian_blur(x.unsqueeze(0), [k, k], [sigma, sigma])[0]


def step_images(
    start: Tensor, finish: Tensor, h: Tensor, n_steps: int, ties: str = "raster"
) -> list[Tensor]:
    """The ``n_steps + 1`` images of one insertion/deletion sequence. ``ties="paper"``: pixels in
    the authors' order, ``flip(argsort(map.view(1, -1)))``."""
    c, height, width = start.shape
    flat = full_map(h, (height, width)).flatten()
    if ties == "paper":
        order = torch.flip(flat.view(1, -1).argsort(), dims=[-1])[0]
    else:
        order = torch.argsort(flat, descending=True, stable=True)
    k = math.ceil(height * width / n_steps)
    out = []
    for t in range(n_steps + 1):
        img = start.clone().reshape(c, -1)
        chosen = order[: t * k]
        img[:, chosen] = finish.reshape(c, -1)[:, chosen]
        out.append(img.reshape(c, height, width))
    return out


def trapezoid(values: list[float]) -> float:
    n = len(values) - 1
    if n == 0:
        return values[0]
    return sum((values[i] + values[i + 1]) / 2 for i in range(n)) / n


def curve_ref(
    model: Embed,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor,
    *,
    kind: str,
    mode: str,
    n_steps: int,
    corrected: bool = False,
    direction: str = "x1",
    ties: str = "raster",
) -> tuple[list[float], list[list[float]]]:
    """Scores and curves of insertion/deletion.

    Conditional ``direction``: ``"x1"`` perturbs x1 with x2 intact, ``"x2"`` perturbs x2 with x1
    intact, ``"both"`` is the mean of those two references (curve by curve; the trapezoid is
    linear, so the score is the mean score too). Simultaneous mode ignores ``direction``.
    """
    if mode == "conditional" and direction == "both":
        one = curve_ref(model, x1, x2, h1, h2, kind=kind, mode=mode, n_steps=n_steps, ties=ties)
        two = curve_ref(
            model, x1, x2, h1, h2, kind=kind, mode=mode, n_steps=n_steps, direction="x2", ties=ties
        )
        curves = [[(a + b) / 2 for a, b in zip(c1, c2)] for c1, c2 in zip(one[1], two[1])]
        return [trapezoid(c) for c in curves], curves
    scores, curves = [], []
    for b in range(x1.shape[0]):
        seqs = []
        for x, h in ((x1[b], h1[b]), (x2[b], h2[b])):
            if kind == "insertion":
                seqs.append(step_images(blurred(x), x, h, n_steps, ties))
            elif corrected:
                seqs.append(step_images(x, blurred(x), h, n_steps, ties))
            else:
                seqs.append(step_images(x, torch.zeros_like(x), h, n_steps, ties))
        values = []
        for t in range(n_steps + 1):
            if mode == "simultaneous":
                pair = (seqs[0][t], seqs[1][t])
            elif direction == "x1":
                pair = (seqs[0][t], x2[b])
            else:
                pair = (x1[b], seqs[1][t])
            values.append(cos(embed1(model, pair[0]), embed1(model, pair[1])))
        curves.append(values)
        scores.append(trapezoid(values))
    return scores, curves


def drop_increase_ref(
    model: Embed,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor,
    *,
    mode: str,
    direction: str = "x1",
) -> tuple[list[float], list[float]]:
    """Average drop and increase per pair (paper's formula for b > 0; our extension otherwise).

    Conditional ``direction`` as in :func:`curve_ref` (``"both"``: the mean of the two
    directions' drops, and of their increase indicators).
    """
    if mode == "conditional" and direction == "both":
        d1, i1 = drop_increase_ref(model, x1, x2, h1, h2, mode=mode)
        d2, i2 = drop_increase_ref(model, x1, x2, h1, h2, mode=mode, direction="x2")
        return [(a + b) / 2 for a, b in zip(d1, d2)], [(a + b) / 2 for a, b in zip(i1, i2)]
    drops, increases = [], []
    for b in range(x1.shape[0]):
        masked = []
        for x, h in ((x1[b], h1[b]), (x2[b], h2[b])):
            hf = full_map(h, tuple(x.shape[1:]))
            mask = (hf - hf.min()) / (hf.max() - hf.min())
            masked.append(mask * x)
        base = cos(embed1(model, x1[b]), embed1(model, x2[b]))
        if mode == "simultaneous":
            pair = (masked[0], masked[1])
        elif direction == "x1":
            pair = (masked[0], x2[b])
        else:
            pair = (x1[b], masked[1])
        out = cos(embed1(model, pair[0]), embed1(model, pair[1]))
        if base > 0:
            drops.append(max(0.0, base - out) / base)
        elif base < 0:
            drops.append(max(0.0, base - out) / abs(base))
        else:
            drops.append(float(out < base))
        increases.append(float(out > base))
    return drops, increases
