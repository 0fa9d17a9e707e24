"""Ground truth for correspondences: the known geometry between two views of one image.

A contrastive pipeline makes its two views from one image by random resized crops and flips, so
it knows exactly which point of view 2 shows which point of view 1. :class:`ViewGeometry` holds
that mapping per pair, as an affine map from view-2 normalised coordinates to view-1 normalised
coordinates (``(u, v) = (x / W, y / H)``, see :mod:`lightning_explain.correspondence._types`);
points that land outside view 1 have no match there and are marked invalid.

* :func:`random_views` makes two views of a batch of images with random resized crops and
  horizontal flips drawn from a private, seeded generator, and returns their geometry;
* :func:`geometry_from_crops` builds the geometry from crop boxes and flip flags that a user's
  transform reports (the ``(top, left, height, width)`` boxes of torchvision's
  ``RandomResizedCrop.get_params``);
* :func:`circular_shift` is the geometry of ``x2 = torch.roll(x1, (dy, dx), dims=(2, 3))``,
  periodic, for the constructed check of a CNN with circular padding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import torch
from torch import Tensor

from lightning_explain._checks import check_range, check_real, describe
from lightning_explain._core import check_pair

if TYPE_CHECKING:
    from lightning_explain.data.probe import ProbeSet

__all__ = [
    "ViewGeometry",
    "ViewPair",
    "circular_shift",
    "geometry_from_crops",
    "random_views",
]

_ATTEMPTS = 10
"""Crop draws per image before falling back to a centre crop (torchvision's RandomResizedCrop)."""


@dataclass(frozen=True)
class ViewGeometry:
    """Where each point of view 2 lies in view 1, for a batch of pairs.

    Attributes:
        affine: ``(B, 2, 3)`` float32 maps ``[u1, v1] = affine[:, :, :2] @ [u2, v2] +
            affine[:, :, 2]`` in normalised coordinates.
        periodic: the views wrap around (circular shifts): mapped points are taken modulo 1 and
            are always valid, and distances are measured on the torus.
    """

    affine: Tensor
    periodic: bool = False

    def __post_init__(self) -> None:
        a = self.affine
        if (
            not isinstance(a, Tensor)
            or not a.is_floating_point()
            or a.ndim != 3
            or a.shape[1:] != (2, 3)
        ):
            raise ValueError(
                f"`ViewGeometry`: expected `affine` to be a float tensor of shape (B, 2, 3), but "
                f"got {describe(a)}."
            )
        if not torch.isfinite(a).all():
            raise ValueError("`ViewGeometry`: expected a finite `affine`, but got NaN or inf.")
        if not isinstance(self.periodic, bool):
            raise TypeError(
                f"`ViewGeometry`: expected `periodic` to be a bool, but got {describe(self.periodic)}."
            )

    def __len__(self) -> int:
        return int(self.affine.shape[0])

    @classmethod
    def from_probe(cls, probe: ProbeSet) -> ViewGeometry:
        """The geometry a probe set recorded (:attr:`lightning_explain.data.ProbeSet.geometry`).

        Raises:
            TypeError: if ``probe`` is not a probe set.
            ValueError: if it recorded no geometry (its pairs were not made with known crops).
        """
        from lightning_explain.data.probe import ProbeSet

        if not isinstance(probe, ProbeSet):
            raise TypeError(
                f"`ViewGeometry.from_probe`: expected `probe` to be a ProbeSet, but got "
                f"{describe(probe)}."
            )
        if probe.geometry is None:
            raise ValueError(
                "`ViewGeometry.from_probe`: the probe set recorded no view geometry (its pairs were "
                "not made with known crops and flips). Make the pairs with `random_views(...)` and "
                "`ViewPair.to_probe_set()`, or pass `geometry_from_crops(...)` of your transform."
            )
        return cls(probe.geometry.float())

    def to(self, device: torch.device | str) -> ViewGeometry:
        """Return a copy on ``device``."""
        return ViewGeometry(self.affine.to(device), self.periodic)

    def map_points(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Map view-2 points into view 1.

        Args:
            points: ``(N, 2)`` points shared by every pair, or ``(B, N, 2)``, normalised ``(u, v)``.

        Returns:
            ``(B, N, 2)`` mapped points and ``(B, N)`` bool validity (inside ``[0, 1]^2``; always
            true when periodic, where points are wrapped into ``[0, 1)``).
        """
        a = self.affine.float()
        pts = points.to(a.device).float()
        if pts.ndim == 2:
            pts = pts.expand(a.shape[0], -1, -1)
        mapped = torch.einsum("bij,bnj->bni", a[:, :, :2], pts) + a[:, None, :, 2]
        if self.periodic:
            return torch.remainder(mapped, 1.0), torch.ones(
                mapped.shape[:2], dtype=torch.bool, device=a.device
            )
        valid = ((mapped >= 0) & (mapped <= 1)).all(dim=-1)
        return mapped, valid

    def inverse(self) -> ViewGeometry:
        """The geometry of the swapped pairs (view 1 to view 2).

        Example:
            >>> g = circular_shift((0, 4), (8, 8))
            >>> g.inverse().affine[0, :, 2].tolist()
            [0.5, -0.0]
        """
        m = self.affine[:, :, :2].double()
        inv = torch.linalg.inv(m)
        t = -(inv @ self.affine[:, :, 2:].double())
        return ViewGeometry(torch.cat([inv, t], dim=2).to(self.affine.dtype), self.periodic)


@dataclass(frozen=True)
class ViewPair:
    """Two views of a batch of images and the geometry between them (see :func:`random_views`).

    Attributes:
        x1: ``(B, C, h, w)`` first views.
        x2: ``(B, C, h, w)`` second views.
        geometry: view 2 to view 1 (:class:`ViewGeometry`).
        boxes1: ``(B, 4)`` int64 crop boxes of view 1 in source pixels, ``(top, left, height,
            width)``.
        boxes2: ``(B, 4)`` crop boxes of view 2.
        flips1: ``(B,)`` bool, view 1 flipped horizontally (after cropping).
        flips2: ``(B,)`` bool, view 2 flipped.
    """

    x1: Tensor
    x2: Tensor
    geometry: ViewGeometry
    boxes1: Tensor
    boxes2: Tensor
    flips1: Tensor
    flips2: Tensor

    def to_probe_set(
        self,
        *,
        seed: int = 0,
        source: str = "random_views",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> ProbeSet:
        """The views as a :class:`lightning_explain.data.ProbeSet` that records their geometry.

        The affine maps go to ``ProbeSet.geometry`` (kept by ``subset``, ``shard``, ``save`` and
        ``load``); crop boxes and flips go to ``extra`` as text. Indices are ``0 .. B - 1``.

        Args:
            seed: the seed the views were drawn with (stored with the set).
            source: label of the set. Default ``"random_views"``.
            mean: normalisation mean of the images, if any (for rendering).
            std: normalisation standard deviation.

        Example:
            >>> import torch
            >>> probe = random_views(torch.rand(3, 3, 16, 16), seed=2).to_probe_set(seed=2)
            >>> tuple(probe.geometry.shape), probe.pairing
            ((3, 2, 3), 'two_views')
        """
        from lightning_explain.data.probe import ProbeSet

        n = int(self.x1.shape[0])
        return ProbeSet(
            x1=self.x1.detach().float().cpu(),
            x2=self.x2.detach().float().cpu(),
            indices=tuple(range(n)),
            seed=int(seed),
            pairing="two_views",
            source=source,
            mean=None if mean is None else tuple(float(v) for v in mean),
            std=None if std is None else tuple(float(v) for v in std),
            extra={
                "boxes1": str(self.boxes1.tolist()),
                "boxes2": str(self.boxes2.tolist()),
                "flips1": str(self.flips1.tolist()),
                "flips2": str(self.flips2.tolist()),
            },
            geometry=self.geometry.affine.detach().float().cpu(),
        )


# --------------------------------------------------------------------------------------------------
# Geometry from crop parameters


def _as_boxes(boxes: object, *, name: str, owner: str) -> Tensor:
    try:
        t = torch.as_tensor(boxes, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"`{owner}`: expected `{name}` to be a (B, 4) tensor of (top, left, height, width) "
            f"boxes, but got {describe(boxes)}."
        ) from err
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2 or t.shape[1] != 4 or not torch.isfinite(t).all():
        raise ValueError(
            f"`{owner}`: expected `{name}` of shape (B, 4) holding finite (top, left, height, "
            f"width) boxes, but got shape {tuple(t.shape)}."
        )
    if (t[:, 2:] <= 0).any():
        raise ValueError(f"`{owner}`: expected every box of `{name}` to have height and width > 0.")
    return t


def _as_flags(flags: object, n: int, *, name: str, owner: str) -> Tensor:
    if flags is None:
        return torch.zeros(n, dtype=torch.bool)
    t = torch.as_tensor(flags).flatten()
    if t.dtype != torch.bool or t.numel() != n:
        raise ValueError(
            f"`{owner}`: expected `{name}` to be None or {n} bools (one flip flag per pair), but got "
            f"{describe(flags)}."
        )
    return t


def geometry_from_crops(
    boxes1: Union[Tensor, Sequence[Sequence[float]]],
    boxes2: Union[Tensor, Sequence[Sequence[float]]],
    flips1: Union[Tensor, Sequence[bool], None] = None,
    flips2: Union[Tensor, Sequence[bool], None] = None,
) -> ViewGeometry:
    """The geometry of views made by cropping one source image and flipping horizontally.

    A view made from the crop box ``(top, left, height, width)`` (source pixels; the box spans
    ``[left, left + width] x [top, top + height]``), resized to any output size and then flipped
    if its flag is set, shows the source point ``X = left + width * (1 - u if flip else u)``,
    ``Y = top + height * v`` at its normalised point ``(u, v)``. Composing view 2's map with the
    inverse of view 1's gives the affine map; the source image size cancels, so it is not needed.

    Args:
        boxes1: ``(B, 4)`` crop boxes of view 1 (a tensor or nested sequences of numbers), in
            torchvision's ``(top, left, height, width)`` order (``RandomResizedCrop.get_params``).
        boxes2: ``(B, 4)`` crop boxes of view 2.
        flips1: ``(B,)`` bool horizontal-flip flags of view 1 (applied after the crop); ``None``:
            no flips.
        flips2: ``(B,)`` flags of view 2.

    Returns:
        :class:`ViewGeometry` (view 2 to view 1), not periodic.

    Raises:
        TypeError: for boxes that are not numbers.
        ValueError: for boxes of the wrong shape or with non-positive sides, or flags of the
            wrong length.

    Example:
        >>> g = geometry_from_crops([[0, 0, 10, 20]], [[0, 10, 10, 10]])  # view 2: right half
        >>> g.affine[0].tolist()
        [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]]
    """
    owner = "geometry_from_crops"
    b1 = _as_boxes(boxes1, name="boxes1", owner=owner)
    b2 = _as_boxes(boxes2, name="boxes2", owner=owner)
    if b1.shape != b2.shape:
        raise ValueError(
            f"`{owner}`: expected as many boxes in `boxes1` as in `boxes2`, but got "
            f"{b1.shape[0]} and {b2.shape[0]}."
        )
    n = int(b1.shape[0])
    f1 = _as_flags(flips1, n, name="flips1", owner=owner).double()
    f2 = _as_flags(flips2, n, name="flips2", owner=owner).double()
    top1, left1, h1, w1 = b1.unbind(1)
    top2, left2, h2, w2 = b2.unbind(1)
    s1, s2 = 1 - 2 * f1, 1 - 2 * f2  # -1 where flipped
    a = torch.zeros(n, 2, 3, dtype=torch.float64)
    # x: X = left2 + w2 * f2 + s2 * w2 * u2;  u1 = f1 + s1 * (X - left1) / w1
    a[:, 0, 0] = s1 * s2 * w2 / w1
    a[:, 0, 2] = f1 + s1 * (left2 + w2 * f2 - left1) / w1
    a[:, 1, 1] = h2 / h1
    a[:, 1, 2] = (top2 - top1) / h1
    return ViewGeometry(a.float())


def circular_shift(
    shifts: Union[Tensor, tuple[int, int]], size: tuple[int, int], *, batch: int = 1
) -> ViewGeometry:
    """The geometry of ``x2 = torch.roll(x1, shifts=(dy, dx), dims=(2, 3))``: periodic.

    View-2 pixel ``(y, x)`` shows view-1 pixel ``((y - dy) mod H, (x - dx) mod W)``.

    Args:
        shifts: ``(dy, dx)`` in pixels for every pair, or a ``(B, 2)`` tensor of per-pair shifts.
        size: ``(H, W)`` of the views.
        batch: number of pairs when ``shifts`` is one ``(dy, dx)``. Default 1.

    Returns:
        :class:`ViewGeometry` with ``periodic=True``.

    Example:
        >>> circular_shift((2, 4), (8, 16), batch=2).affine[1].tolist()
        [[1.0, 0.0, -0.25], [0.0, 1.0, -0.25]]
    """
    t = torch.as_tensor(shifts, dtype=torch.float32)
    if t.ndim == 1:
        t = t.expand(batch, -1)
    if t.ndim != 2 or t.shape[1] != 2:
        raise ValueError(
            f"`circular_shift`: expected `shifts` as (dy, dx) or a (B, 2) tensor, but got shape "
            f"{tuple(t.shape)}."
        )
    height, width = size
    a = torch.zeros(t.shape[0], 2, 3)
    a[:, 0, 0] = a[:, 1, 1] = 1.0
    a[:, 0, 2] = -t[:, 1] / width
    a[:, 1, 2] = -t[:, 0] / height
    return ViewGeometry(a, periodic=True)


# --------------------------------------------------------------------------------------------------
# Random views


def _sample_boxes(
    n: int,
    size: tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    g: torch.Generator,
) -> Tensor:
    """``(n, 4)`` int64 ``(top, left, height, width)`` boxes, drawn as torchvision's
    ``RandomResizedCrop.get_params`` draws them (area share in ``scale``, log-uniform aspect ratio
    in ``ratio``, ten attempts, then a centre crop), for all images at once."""
    height, width = size
    area = height * width
    u = torch.rand(n, _ATTEMPTS, 4, generator=g, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    top = torch.floor(u[..., 2] * (height - h + 1))
    left = torch.floor(u[..., 3] * (width - w + 1))
    # The centre-crop fallback of torchvision.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=torch.float64)
    boxes = torch.stack([top, left, h, w], dim=-1)  # (n, attempts, 4)
    first = torch.where(ok.any(dim=1), ok.double().argmax(dim=1), 0)
    chosen = boxes[torch.arange(n), first]
    return torch.where(ok.any(dim=1, keepdim=True), chosen, fallback).long()


def random_views(
    images: Tensor,
    *,
    size: Union[int, tuple[int, int], None] = None,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    seed: int = 0,
) -> ViewPair:
    """Two random resized crops (and horizontal flips) of every image, with their geometry.

    Boxes are drawn as torchvision's ``RandomResizedCrop`` draws them, and flips with probability
    ``flip_p``, from a private ``torch.Generator`` seeded with ``seed`` (the global RNGs are not
    touched); the views are made with ``torchvision.transforms.v2.functional.resized_crop``
    (bilinear, antialiased) and ``horizontal_flip``. The two crops of an image may not overlap;
    then no position of view 2 has a match in view 1 and the correspondence scores of that pair
    are NaN.

    Args:
        images: ``(B, C, H, W)`` float source images.
        size: output ``(h, w)`` of the views (an int for square views). Default: ``(H, W)``.
        scale: range of the crop area as a share of the image. Default ``(0.2, 1.0)``, the range
            SimCLR-style pipelines use (lightly's default min scale is 0.08; 0.2 keeps most pairs
            overlapping).
        ratio: range of the crop aspect ratio. Default ``(3/4, 4/3)``, torchvision's.
        flip_p: probability of a horizontal flip of each view. Default 0.5.
        seed: seed of the private generator. Default 0.

    Returns:
        :class:`ViewPair`.

    Raises:
        TypeError: if ``images`` is not a float tensor.
        ValueError: for a wrong shape or option values out of range.

    Example:
        >>> import torch
        >>> views = random_views(torch.rand(2, 3, 32, 32), size=16, seed=1)
        >>> tuple(views.x1.shape), tuple(views.geometry.affine.shape)
        ((2, 3, 16, 16), (2, 2, 3))
    """
    from torchvision.transforms.v2 import functional as tvf

    owner = "random_views"
    images, _ = check_pair(images, images, owner=owner)
    scale = check_range(scale, name="scale", owner=owner, upper=1.0)
    ratio = check_range(ratio, name="ratio", owner=owner)
    flip_p = check_real(flip_p, name="flip_p", owner=owner, minimum=0.0, maximum=1.0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`{owner}`: expected `seed` to be an int, but got {describe(seed)}.")
    source = (int(images.shape[2]), int(images.shape[3]))
    if size is None:
        out = source
    elif isinstance(size, int) and not isinstance(size, bool) and size > 0:
        out = (size, size)
    elif (
        isinstance(size, tuple)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        out = (int(size[0]), int(size[1]))
    else:
        raise ValueError(
            f"`{owner}`: expected `size` to be None, a positive int or an (h, w) pair of positive "
            f"ints, but got {size!r}."
        )
    n = int(images.shape[0])
    g = torch.Generator().manual_seed(seed)
    boxes1 = _sample_boxes(n, source, scale, ratio, g)
    boxes2 = _sample_boxes(n, source, scale, ratio, g)
    flips = torch.rand(2, n, generator=g) < flip_p
    views: list[list[Tensor]] = [[], []]
    for side, boxes in enumerate((boxes1, boxes2)):
        for i in range(n):
            top, left, h, w = (int(v) for v in boxes[i].tolist())
            view = tvf.resized_crop(images[i], top, left, h, w, list(out), antialias=True)
            views[side].append(tvf.horizontal_flip(view) if bool(flips[side, i]) else view)
    return ViewPair(
        x1=torch.stack(views[0]),
        x2=torch.stack(views[1]),
        geometry=geometry_from_crops(boxes1, boxes2, flips[0], flips[1]).to(images.device),
        boxes1=boxes1,
        boxes2=boxes2,
        flips1=flips[0],
        flips2=flips[1],
    )
