"""Photometric transforms of :func:`~lightning_explain.methods.gradients.averaged_transforms`
and the size-scaled Gaussian blur of the gradient methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Union, cast, get_args

import torch
from torch import Tensor

from lightning_explain._checks import check_literal
from lightning_explain._core import REFERENCE_SIZE, gaussian_blur, relative_blur

__all__ = [
    "Transform",
    "TransformName",
    "builtin_transform",
    "check_transform",
    "scaled_blur",
    "user_transform",
]

TransformName = Literal["combine", "color_jitter", "blur", "grayscale", "solarize"]
"""Built-in photometric transforms of :func:`averaged_transforms`."""

Transform = Union[TransformName, Callable[[Tensor], Tensor]]
"""A built-in transform name or a pixel-aligned ``(N, C, H, W) -> (N, C, H, W)`` callable."""

_TRANSFORMS: tuple[str, ...] = get_args(TransformName)


def check_transform(value: object, *, owner: str) -> Transform:
    if isinstance(value, str):
        name: TransformName = check_literal(
            value,
            TransformName,
            name="transform",
            owner=owner,
            hint="Or pass a callable (B, C, H, W) -> (B, C, H, W).",
        )
        return name
    if callable(value):
        return cast(Callable[[Tensor], Tensor], value)
    raise TypeError(
        f"`{owner}`: expected `transform` to be one of {list(_TRANSFORMS)} or a callable "
        f"(B, C, H, W) -> (B, C, H, W), but got an object of type {type(value).__name__}."
    )


def scaled_blur(x: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Gaussian blur of ``(..., H, W)`` tensors with a kernel and sigma given for 224 px images.

    Both are scaled by the shorter side ``s`` (:func:`~lightning_explain._core.relative_blur`):
    kernel ``kernel_size * s / 224`` rounded to the nearest odd size (at least 3, at most
    ``2 * s - 1``, which reflect padding allows), sigma ``sigma * s / 224``. At 224 px both are
    unchanged, so the paper's blur is bitwise the same there.
    """
    side = min(int(x.shape[-2]), int(x.shape[-1]))
    k, s = relative_blur(side, kernel=kernel_size, sigma=sigma, reference=REFERENCE_SIZE)
    return gaussian_blur(x, kernel_size=k, sigma=s) if k > 1 else x.clone()


def photometric(x: Tensor, op: Callable[[Tensor], Tensor]) -> Tensor:
    """Apply a torchvision colour op to ``(N, C, H, W)`` images of any value range.

    Each image is mapped affinely from ``[lo, hi] = [min(0, min x), max(1, max x)]`` to ``[0, 1]``
    (the identity for images in ``[0, 1]``), transformed, and mapped back. Images with ``C != 3``
    are transformed channel by channel as 1-channel images.
    """
    n, c, h, w = x.shape
    flat = x.flatten(1)
    lo = flat.amin(dim=1).clamp(max=0).view(-1, 1, 1, 1)
    hi = flat.amax(dim=1).clamp(min=1).view(-1, 1, 1, 1)
    u = (x - lo) / (hi - lo)
    # Channel by channel as 1-channel images unless the images are RGB.
    u = op(u) if c == 3 else op(u.reshape(n * c, 1, h, w)).reshape(n, c, h, w)
    return u * (hi - lo) + lo


def color_jitter_op(
    g: torch.Generator, strength: tuple[float, float, float, float]
) -> Callable[[Tensor], Tensor]:
    """torchvision's ``ColorJitter(brightness, contrast, saturation, hue)`` with parameters drawn
    from ``g``: factors uniform in ``[max(0, 1 - v), 1 + v]`` (hue in ``[-v, v]``), random order."""
    from torchvision.transforms.v2 import functional as TF

    b, c, s, h = strength
    u = torch.rand(4, generator=g, device=g.device).tolist()
    order = torch.randperm(4, generator=g, device=g.device).tolist()
    factors = [
        max(0.0, 1 - b) + u[0] * (1 + b - max(0.0, 1 - b)),
        max(0.0, 1 - c) + u[1] * (1 + c - max(0.0, 1 - c)),
        max(0.0, 1 - s) + u[2] * (1 + s - max(0.0, 1 - s)),
        -h + u[3] * 2 * h,
    ]
    ops: list[Callable[[Tensor, float], Tensor]] = [
        TF.adjust_brightness,
        TF.adjust_contrast,
        TF.adjust_saturation,
        TF.adjust_hue,
    ]

    def apply(x: Tensor) -> Tensor:
        for i in order:
            x = ops[i](x, factors[i])
        return x

    return apply


def grayscale(x: Tensor) -> Tensor:
    from torchvision.transforms.v2 import functional as TF

    if x.shape[1] == 1:
        return x
    return TF.rgb_to_grayscale(x, num_output_channels=3)  # type: ignore[no-any-return]


def solarize(x: Tensor) -> Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.solarize(x, threshold=0.5)  # type: ignore[no-any-return]


def builtin_transform(name: str, x: Tensor, g: torch.Generator) -> Tensor:
    """The paper's photometric transforms of ``(N, C, H, W)`` images, parameters drawn from ``g``
    once (one transform for the whole batch)."""
    if name == "blur":
        return scaled_blur(x, 11, 5.0)
    if name == "grayscale":
        return photometric(x, grayscale)
    if name == "solarize":
        return photometric(x, solarize)
    if name == "color_jitter":
        return photometric(x, color_jitter_op(g, (0.8, 0.8, 0.8, 0.4)))
    # "combine": the SimCLR colour pipeline of the paper's pairs.
    u = torch.rand(4, generator=g, device=g.device).tolist()
    jitter = color_jitter_op(g, (0.8, 0.8, 0.8, 0.2))
    if u[0] < 0.8:
        x = photometric(x, jitter)
    if u[1] < 0.2:
        x = photometric(x, grayscale)
    if u[2] < 0.5:
        x = scaled_blur(x, 21, 0.1 + u[3] * (2.0 - 0.1))
    return x


def user_transform(fn: Callable[[Tensor], Tensor], x: Tensor, seed: int, owner: str) -> Tensor:
    """Call a user transform on ``(N, C, H, W)`` images with the global RNG seeded from ``seed``
    (inside a fork, so the caller's stream is untouched) and check its output."""
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.default_generator.manual_seed(seed)
        if x.device.type == "cuda":
            with torch.cuda.device(x.device):
                torch.cuda.manual_seed(seed)
        y = fn(x.clone())
    if not isinstance(y, Tensor) or y.shape != x.shape or not y.is_floating_point():
        got = (
            f"a {y.dtype} tensor of shape {tuple(y.shape)}"
            if isinstance(y, Tensor)
            else f"an object of type {type(y).__name__}"
        )
        raise ValueError(
            f"`{owner}`: expected the `transform` callable to return a float tensor of the input "
            f"shape {tuple(x.shape)} (a pixel-aligned photometric transform), but it returned {got}."
        )
    if not torch.isfinite(y).all():
        raise ValueError(f"`{owner}`: the `transform` callable returned NaN or infinite values.")
    return y.detach().to(device=x.device, dtype=x.dtype)
