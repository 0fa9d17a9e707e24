"""Models whose evidence is known by construction, their images, and the localisation score.

Every model masks its input to an *evidence region* before anything else runs, so no pixel outside
the region can change the embedding or receive a gradient:

* ``"left"``: only the left half of the image;
* ``"patch"``: only one fixed, off-centre square (half the side, a quarter of the area);
* ``"object"``: only the pixels of a small bright object (channel mean above 0.7) on a dark
  background (values at most 0.35), wherever it is: a background-invariant object detector.

Behind the mask: an adaptive average pool to at most 32 x 32 (so the cost hardly grows with the
image size), a bias-free 3 x 3 convolution with ReLU (bias-free, so that masked regions have zero
activations: a class-activation map cannot tell a constant activation from evidence), an average
pool to 8 x 8 and a random linear head. ``saturated=False`` centres the embedding half-way between the
embedding of the empty image and the mean embedding of random images (:data:`CENTRING`) (pair similarities spread over ``[0, 1]``).
``saturated=True`` returns ``c + alpha * z`` for a fixed unit vector ``c``: every pair has a
similarity above 0.999 and perturbations move it by about ``1e-5``, as for an untrained network.

:func:`evidence_share` is the score: the share of a map's top pixels (the top quarter, or the top
``|E|`` when the evidence ``E`` covers less than a quarter of the image, so that a perfect map
can reach 1) that fall in the evidence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KINDS = ("left", "patch", "object")
OBJECT_THRESHOLD = 0.7
CENTRING = 0.5
"""Where the trained-like models put the origin, between the empty image's embedding (0) and the
mean embedding of random images (1): 0.5 separates unrelated images (similarities about 0.1 to
0.8) while erasing 10 / 25 / 50 % of the evidence lowers a pair's similarity gradually (by about
0.05 / 0.35 / 0.9 at 32 px); at 1 erasing a tenth of the evidence already flips the embedding."""
SATURATION = 1e-2
"""``alpha`` of the saturated models: pair similarities above 0.999, perturbation effects ~1e-5."""


def evidence_mask(kind: str, x: Tensor) -> Tensor:
    """``(B, H, W)`` bool evidence region of ``(B, C, H, W)`` images for a model ``kind``."""
    b, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(-1, 1)
    cols = torch.arange(w, device=x.device).view(1, -1)
    if kind == "left":
        m = (cols < w // 2).expand(h, w)
    elif kind == "patch":
        m = (rows >= 3 * h // 8) & (rows < 7 * h // 8) & (cols >= w // 8) & (cols < 5 * w // 8)
    elif kind == "object":
        return x.mean(dim=1) > OBJECT_THRESHOLD
    else:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    return m.unsqueeze(0).expand(b, h, w)


class EvidenceModel(nn.Module):
    """``(B, 3, H, W) -> (B, 16)`` embedding that depends only on the evidence region of ``kind``."""

    def __init__(self, kind: str, *, saturated: bool = False, seed: int = 0) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
        self.kind = kind
        self.saturated = saturated
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.head = nn.Linear(16 * 8 * 8, 16)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) / 5.0)
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) / 32.0)
            self.head.bias.copy_(torch.randn(16, generator=g) / 4.0)
            offset = torch.randn(16, generator=g)
        self.relu = nn.ReLU()
        self.register_buffer("offset", offset / offset.norm())
        self.register_buffer("centre", torch.zeros(16))
        with torch.no_grad():
            empty = self._raw(torch.zeros(1, 3, 32, 32))[0]
            mean = self._raw(scene(64, 32, kind=kind, seed=12345)).mean(0)
            self.centre.copy_(empty + CENTRING * (mean - empty))

    def features(self, x: Tensor) -> Tensor:
        """The masked input, pooled to at most 32 x 32, through the convolution and ReLU."""
        x = x * evidence_mask(self.kind, x).unsqueeze(1).to(x.dtype)
        h, w = x.shape[-2:]
        if max(h, w) > 32:
            x = F.adaptive_avg_pool2d(x, (min(h, 32), min(w, 32)))
        return self.relu(self.conv(x))

    def _raw(self, x: Tensor) -> Tensor:
        return self.head(F.adaptive_avg_pool2d(self.features(x), 8).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        z = self._raw(x) - self.centre
        if self.saturated:
            return self.offset + SATURATION * z
        return z


def scene(b: int, size: int, *, kind: str, seed: int = 0) -> Tensor:
    """``(B, 3, size, size)`` images for a model ``kind``: smooth random images in ``[0, 1]``; for
    ``"object"`` a dark background (at most 0.35) with one bright textured square (side 3/8 of the
    image, values 0.9 to 1) at a random place."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, max(2, size // 8), max(2, size // 8), generator=g)
    fine = torch.rand(b, 3, size, size, generator=g)
    up = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    x = (0.8 * up + 0.2 * fine).clamp(0, 1)
    if kind != "object":
        return x
    x = 0.35 * x
    side = 3 * size // 8
    top = torch.randint(0, size - side + 1, (b,), generator=g)
    left = torch.randint(0, size - side + 1, (b,), generator=g)
    texture = 0.9 + 0.1 * torch.rand(b, 3, size, size, generator=g)
    r = torch.arange(size).view(1, -1, 1)
    c = torch.arange(size).view(1, 1, -1)
    inside = (r >= top.view(-1, 1, 1)) & (r < top.view(-1, 1, 1) + side)
    inside = inside & (c >= left.view(-1, 1, 1)) & (c < left.view(-1, 1, 1) + side)
    return torch.where(inside.unsqueeze(1), texture, x)


def view_pair(b: int, size: int, *, kind: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A positive pair: an image and a pixel-aligned second view of it (a small brightness
    change and noise), as the paper's pairs; the object stays bright in both views."""
    x1 = scene(b, size, kind=kind, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x2 = (0.95 * x1 + 0.03 + 0.02 * torch.randn(x1.shape, generator=g)).clamp(0, 1)
    return x1, x2


def evidence_share(h: Tensor, evidence: Tensor, quantile: float = 0.25) -> Tensor:
    """``(B,)`` share of each map's top pixels that lie in the evidence.

    Args:
        h: ``(B, H, W)`` maps.
        evidence: ``(B, H, W)`` bool evidence regions.
        quantile: the share of pixels called "top" (0.25: the top quartile); capped at each
            evidence region's own area.
    """
    flat = h.flatten(1).float()
    ev = evidence.flatten(1)
    n = flat.shape[1]
    k = torch.minimum(torch.full_like(ev.sum(1), round(quantile * n)), ev.sum(1)).clamp(min=1)
    # Ties at the threshold are split in proportion, so a constant map scores the chance level.
    out = []
    for i in range(flat.shape[0]):  # a handful of maps; not a hot path
        v, e, kk = flat[i], ev[i], int(k[i])
        thresh = torch.topk(v, kk).values[-1]
        above = v > thresh
        at = v == thresh
        need = kk - int(above.sum())
        hits = float((above & e).sum()) + need * float((at & e).sum()) / max(1, int(at.sum()))
        out.append(hits / kk)
    return torch.tensor(out)


def chance(evidence: Tensor) -> Tensor:
    """``(B,)`` share of the image the evidence covers: the score of a random map."""
    return evidence.flatten(1).float().mean(1)
