"""Gradient methods for pairs: input x gradient, SmoothGrad, Averaged Transforms, integrated gradients.

Every method explains the pair similarity ``s(f(x1), f(x2))`` through gradients taken with
:func:`torch.autograd.grad` with respect to clones of the inputs (never ``.backward()``, never a
parameter ``.grad``). Multi-sample methods process the flattened ``(samples x pairs)`` work list in
chunks of at most ``batch_size`` images per forward/backward pass; there is no Python loop over
pairs. ``batch_size=None`` (the default) chooses the chunk from the device's memory, for passes
that run forward and backward (:meth:`~lightning_explain._core.PairContext.chunk_size` with
``autograd=True``). Random draws come from a private generator seeded with ``seed``, one sample
after the other, so the result does not depend on ``batch_size``.

A pair is explained in both directions: the map of ``x1`` explains how the similarity depends on
``x1`` with ``x2`` held as it is, and the other way round.

References:
    [0] Sammani, Joukovsky, Deligiannis, "Visualizing and Understanding Contrastive Learning",
        IEEE TIP 2023/2024, https://arxiv.org/abs/2206.09753 (Averaged Transforms, and input x
        gradient and SmoothGrad as baselines).
    [1] Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017,
        https://arxiv.org/abs/1706.03825
    [2] Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks", ICML 2017,
        https://arxiv.org/abs/1703.01365
    [3] Springenberg et al., "Striving for Simplicity: The All Convolutional Net" (guided
        backpropagation), 2015, https://arxiv.org/abs/1412.6806
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar, Union, cast, get_args

import torch
from torch import Tensor

from lightning_explain._checks import (
    NonNegativeFloat,
    PositiveInt,
    check_batch_size,
    check_bool,
    check_int,
    check_literal,
    check_positive_int,
)
from lightning_explain._core import (
    REFERENCE_SIZE,
    Model,
    PairContext,
    gaussian_blur,
    guided_relu,
    pair_context,
    relative_blur,
)
from lightning_explain.explanation import PairExplanation
from lightning_explain.similarity import SimilarityFn, SimilarityName

__all__ = [
    "BaselineName",
    "TransformName",
    "averaged_transforms",
    "input_x_gradient",
    "integrated_gradients",
    "integrated_gradients_attributions",
    "smoothgrad",
    "smoothgrad_noise",
]

TransformName = Literal["combine", "color_jitter", "blur", "grayscale", "solarize"]
"""Built-in photometric transforms of :func:`averaged_transforms`."""

BaselineName = Literal["blur", "black"]
"""Baselines of :func:`integrated_gradients`."""

Similarity = Union[SimilarityName, SimilarityFn]
Transform = Union[TransformName, Callable[[Tensor], Tensor]]

_T = TypeVar("_T")

_TRANSFORMS: tuple[str, ...] = get_args(TransformName)

_NOISE_LEVEL = 0.15
"""The paper's noise numerator: ``sigma = 0.15 / (max(x) - min(x))``."""

_MAP_BLUR = (11, 5.0)
"""Kernel size and sigma of the optional output blur at 224 px (the paper's k=11, sigma=5),
scaled to the image size by :func:`_blur`."""


# --------------------------------------------------------------------------------------------------
# Option checks


def _check_sampling(
    owner: str, *, guided: object, blur: object, seed: object, batch_size: object
) -> tuple[bool, bool, int, int | None]:
    """Check the options the multi-sample gradient methods share: ``(guided, blur, seed,
    batch_size)``; ``batch_size`` is None (chosen per device) or a positive int."""
    return (
        check_bool(guided, name="guided", owner=owner),
        check_bool(blur, name="blur", owner=owner),
        check_int(seed, name="seed", owner=owner),
        check_batch_size(batch_size, owner=owner),
    )


def _check_sigma(value: object, *, owner: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"`{owner}`: expected `noise` to be None (the paper's 0.15 / (max - min) rule) or a "
            f"float standard deviation, but got {value!r}."
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"`{owner}`: expected `noise` to be a finite standard deviation >= 0, but got {value}."
        )
    return float(value)


def _check_transform(value: object, *, owner: str) -> Transform:
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


def _check_baseline(value: object, *, owner: str) -> BaselineName:
    out: BaselineName = check_literal(value, BaselineName, name="baseline", owner=owner)
    return out


# --------------------------------------------------------------------------------------------------
# Small tensor helpers


def _blur(x: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Gaussian blur of ``(..., H, W)`` tensors with a kernel and sigma given for 224 px images.

    Both are scaled by the shorter side ``s`` (:func:`~lightning_explain._core.relative_blur`):
    kernel ``kernel_size * s / 224`` rounded to the nearest odd size (at least 3, at most
    ``2 * s - 1``, which reflect padding allows), sigma ``sigma * s / 224``. At 224 px both are
    unchanged, so the paper's blur is bitwise the same there.
    """
    side = min(int(x.shape[-2]), int(x.shape[-1]))
    k, s = relative_blur(side, kernel=kernel_size, sigma=sigma, reference=REFERENCE_SIZE)
    return gaussian_blur(x, kernel_size=k, sigma=s) if k > 1 else x.clone()


def _channel_max_abs(x: Tensor) -> Tensor:
    """``(N, C, H, W) -> (N, H, W)``: max over channels of ``|x|``."""
    return x.abs().amax(dim=1)


def _image_range(x: Tensor) -> Tensor:
    """Per-image ``max - min`` of ``(N, C, H, W)`` as ``(N, 1, 1, 1)``; a constant image gives 1."""
    flat = x.flatten(1)
    span = flat.amax(dim=1) - flat.amin(dim=1)
    return torch.where(span > 0, span, torch.ones_like(span)).view(-1, 1, 1, 1)


class _NoiseStream:
    """Gaussian noise tensors of a fixed shape, drawn one sample after the other from a generator.

    Samples are drawn in order, so the ``k``-th tensor depends only on the seed, the shape and ``k``,
    not on how a caller chunks its work.
    """

    def __init__(self, generator: torch.Generator, like: Tensor, sigma: Tensor) -> None:
        self.generator = generator
        self.shape = tuple(like.shape)
        self.device = like.device
        self.dtype = like.dtype
        self.sigma = sigma

    def draw(self) -> Tensor:
        eps = torch.randn(
            self.shape, generator=self.generator, device=self.device, dtype=torch.float32
        )
        return (eps * self.sigma.float()).to(self.dtype)


def _grad(s: Tensor, inputs: Sequence[Tensor], *, owner: str) -> tuple[Tensor, ...]:
    """Gradients of ``s.sum()`` with respect to ``inputs``; unused inputs get zeros."""
    if not s.requires_grad:
        raise ValueError(
            f"`{owner}`: the similarity does not depend on the input images through autograd, so "
            f"gradients cannot be taken. Pass a differentiable `model` (one that does not detach "
            f"its output or run under torch.no_grad())."
        )
    grads = torch.autograd.grad(s.sum(), list(inputs), allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads))


def _summed_gradients(
    ctx: PairContext,
    *,
    n_points: int,
    n_items: int,
    n_parts: int,
    point: Callable[[int], tuple[Tensor, ...]],
    objective: Callable[[Sequence[Tensor], Tensor], Tensor],
    batch_size: int | None,
    guided: bool = False,
) -> tuple[Tensor, ...]:
    """Sum of input gradients over ``n_points`` points, each a batch of ``n_items`` items.

    ``point(k)`` returns ``n_parts`` tensors of shape ``(n_items, C, H, W)``: the inputs of point
    ``k``. It is called once per ``k``, in increasing order. The flattened ``(point, item)`` list is
    processed in chunks of at most ``max(1, chunk // n_parts)`` items, i.e. about ``chunk`` images
    per forward/backward, with ``chunk = ctx.chunk_size(batch_size, autograd=True)`` (``batch_size``
    if given, else a default for forward + backward passes on this device).
    ``objective(zs, items)`` maps the embeddings of the chunk's parts (each ``(n, D)``) and the
    chunk's item indices ``(n,)`` to per-item similarities ``(n,)``. ``guided``: guided
    backpropagation through the ``nn.ReLU`` modules of the model.

    Returns:
        ``n_parts`` tensors of shape ``(n_items, C, H, W)``: per item, the gradient of its
        similarity with respect to each part, summed over the points.
    """
    per_chunk = max(1, ctx.chunk_size(batch_size, autograd=True) // n_parts)
    total = n_points * n_items
    sums: list[Tensor] = []
    cache: dict[int, tuple[Tensor, ...]] = {}
    with guided_relu(ctx.modules, enabled=guided):
        for start in range(0, total, per_chunk):
            stop = min(total, start + per_chunk)
            first, last = start // n_items, (stop - 1) // n_items
            for k in [k for k in cache if k < first]:
                del cache[k]
            pieces: list[list[Tensor]] = [[] for _ in range(n_parts)]
            for k in range(first, last + 1):
                if k not in cache:
                    cache[k] = point(k)
                lo = max(start, k * n_items) - k * n_items
                hi = min(stop, (k + 1) * n_items) - k * n_items
                for j in range(n_parts):
                    pieces[j].append(cache[k][j][lo:hi])
            items = torch.arange(start, stop, device=ctx.device) % n_items
            inputs = [torch.cat(p).detach().requires_grad_(True) for p in pieces]
            z = ctx.embed(torch.cat(inputs) if n_parts > 1 else inputs[0])
            n = stop - start
            s = objective([z[j * n : (j + 1) * n] for j in range(n_parts)], items)
            grads = _grad(s, inputs, owner=ctx.owner)
            if not sums:
                acc_dtype = torch.promote_types(grads[0].dtype, torch.float32)
                sums = [
                    torch.zeros((n_items, *g.shape[1:]), dtype=acc_dtype, device=ctx.device)
                    for g in grads
                ]
            for acc, g in zip(sums, grads):
                acc.index_add_(0, items, g.to(acc.dtype))
    return tuple(sums)


def _pair_embeddings(ctx: PairContext, batch_size: int | None) -> tuple[Tensor, Tensor]:
    """``(sim (B,), partner (2B, D))``: the clean similarity and, for each image of ``cat([x1, x2])``,
    the constant embedding of its partner (``z2`` for the images of ``x1``, ``z1`` for ``x2``).

    The intact images are embedded without autograd, in chunks of ``ctx.chunk_size(batch_size)``,
    in the caller's precision (not under :func:`lightning_explain.perturbation_autocast`: they are
    the targets of the gradient passes).
    """
    b = ctx.batch
    z = ctx.embed_chunked(torch.cat([ctx.x1, ctx.x2]), ctx.chunk_size(batch_size), autocast=False)
    z = z.clone()  # an ordinary tensor: inference tensors cannot be saved for backward
    sim = ctx.similarity(z[:b], z[b:])
    return sim.detach(), torch.cat([z[b:], z[:b]]).detach()


def _partner_gradients(
    ctx: PairContext,
    path: Callable[[int], Tensor],
    *,
    n_points: int,
    batch_size: int | None,
    guided: bool = False,
) -> tuple[Tensor, Tensor]:
    """Gradients of each image's similarity to its intact partner, summed along a path.

    ``path(k)`` returns point ``k`` of the ``(2B, C, H, W)`` path of ``cat([x1, x2])``; image ``j``
    of it is compared with the intact partner of image ``j``, ``s(f(path(k)[j]), partner[j])``.

    Returns:
        ``(grads (2B, C, H, W), sim (B,))``: the gradients summed over the ``n_points`` points,
        and the clean similarity of the pairs.
    """
    sim, partner = _pair_embeddings(ctx, batch_size)

    def objective(zs: Sequence[Tensor], items: Tensor) -> Tensor:
        return ctx.similarity(zs[0], partner[items])

    (grads,) = _summed_gradients(
        ctx,
        n_points=n_points,
        n_items=2 * ctx.batch,
        n_parts=1,
        point=lambda k: (path(k),),
        objective=objective,
        batch_size=batch_size,
        guided=guided,
    )
    return grads, sim


def _finish(ctx: PairContext, raw: Tensor, sim: Tensor, *, blur: bool) -> PairExplanation:
    """``raw`` is ``(2B, H, W)``: the maps of ``x1`` then ``x2``; optional blur, then normalise."""
    if blur:
        raw = _blur(raw.float(), *_MAP_BLUR)
    b = ctx.batch
    return ctx.finish(raw[:b], raw[b:], sim)


# --------------------------------------------------------------------------------------------------
# Input x gradient


def input_x_gradient(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    guided: bool = False,
    blur: bool = False,
    similarity: Similarity = "cosine",
) -> PairExplanation:
    """Input x gradient of the pair similarity (the paper's "vanilla" gradient baseline).

    ``h_i = max_c |x_i * d s(f(x1), f(x2)) / d x_i|`` for ``i = 1, 2``: how strongly each pixel,
    scaled by its value, moves the similarity of the pair.

    Args:
        model: an ``nn.Module`` or callable mapping ``(B, C, H, W)`` to ``(B, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images, same shape and device.
        guided: guided backpropagation [3]: every ``nn.ReLU`` module passes back only the
            positive part of its gradient (the paper's "G" variants; functional ``F.relu`` calls
            are not affected). Default ``False``.
        blur: blur the maps with a Gaussian kernel (k=11, sigma=5 at 224 px, scaled to the
            shorter side ``s``: k = 11 s / 224 rounded to odd, at least 3, sigma = 5 s / 224;
            k=3, sigma=0.71 at 32 px) before normalising, as in the
            paper's demo. Default ``False``.
        similarity: ``"cosine"`` (the paper), ``"dot"``, ``"neg_l2"`` or a callable
            ``(z1, z2) -> (N,)``.

    Returns:
        :class:`PairExplanation` with ``h1``, ``h2`` of shape ``(B, H, W)`` in ``[0, 1]`` and
        ``sim`` of shape ``(B,)``.

    Cost:
        One forward of the ``2B`` images ``cat([x1, x2])`` and one backward: per pair, 2 image
        forwards + backwards.

    Raises:
        TypeError: for a non-bool ``guided``/``blur`` or malformed inputs.
        ValueError: for malformed inputs or a model that is not differentiable.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> e = input_x_gradient(net, torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
        >>> tuple(e.h1.shape), tuple(e.sim.shape)
        ((2, 32, 32), (2,))
    """
    owner = "input_x_gradient"
    guided = check_bool(guided, name="guided", owner=owner)
    blur = check_bool(blur, name="blur", owner=owner)
    with pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx:
        b = ctx.batch
        a1 = ctx.x1.clone().requires_grad_(True)
        a2 = ctx.x2.clone().requires_grad_(True)
        with guided_relu(ctx.modules, enabled=guided):
            z = ctx.embed(torch.cat([a1, a2]))
            s = ctx.similarity(z[:b], z[b:])
            g1, g2 = _grad(s, (a1, a2), owner=owner)
        raw = _channel_max_abs(torch.cat([ctx.x1 * g1, ctx.x2 * g2]))
        return _finish(ctx, raw, s.detach(), blur=blur)


# --------------------------------------------------------------------------------------------------
# SmoothGrad


def _smoothgrad_sigma(x1: Tensor, x2: Tensor, noise: float | None) -> Tensor:
    """Per-pair noise standard deviation, ``(B, 1, 1, 1)``.

    ``noise=None``: the paper's ``0.15 / (max - min)``, with the range taken over both images of
    the pair (so that swapping them changes nothing); a constant pair uses range 1.
    """
    if noise is not None:
        return torch.full((x1.shape[0], 1, 1, 1), noise, device=x1.device, dtype=torch.float32)
    both = torch.cat([x1.flatten(1), x2.flatten(1)], dim=1).float()
    span = both.amax(dim=1) - both.amin(dim=1)
    span = torch.where(span > 0, span, torch.ones_like(span))
    return (_NOISE_LEVEL / span).view(-1, 1, 1, 1)


def _smoothgrad_stream(ctx: PairContext, noise: float | None, seed: int) -> _NoiseStream:
    sigma = _smoothgrad_sigma(ctx.x1, ctx.x2, noise)
    return _NoiseStream(ctx.generator(seed), ctx.x1, sigma)


def smoothgrad_noise(
    x1: Tensor, x2: Tensor, *, n_samples: int, noise: float | None = None, seed: int = 0
) -> Tensor:
    """The noise :func:`smoothgrad` adds, ``(n_samples, B, C, H, W)``: sample ``k`` is added to
    both ``x1`` and ``x2``. Use it to reproduce a SmoothGrad map with another library (e.g.
    captum's ``Saliency`` on ``x + noise[k]``)."""
    with pair_context(lambda x: x.flatten(1), x1, x2, owner="smoothgrad") as ctx:
        stream = _smoothgrad_stream(ctx, noise, seed)
        return torch.stack([stream.draw() for _ in range(n_samples)])


def smoothgrad(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    n_samples: PositiveInt = 50,
    noise: NonNegativeFloat | None = None,
    guided: bool = False,
    blur: bool = False,
    seed: int = 0,
    similarity: Similarity = "cosine",
    batch_size: PositiveInt | None = None,
) -> PairExplanation:
    """SmoothGrad x input of the pair similarity, with the same noise on both images [0, 1].

    For each of ``n_samples`` samples one Gaussian noise tensor ``eps_k`` is drawn per pair and
    added to **both** images; the gradients of ``s(f(x1 + eps_k), f(x2 + eps_k))`` with respect
    to each noisy image are averaged over the samples, and
    ``h_i = max_c |x_i * mean_k grad_i|``.

    The paper's noise level is ``sigma = 0.15 / (max(x1) - min(x1))``: 0.15 *divided* by the
    input range, not multiplied as in the SmoothGrad paper (so ``sigma`` is about 0.15 for
    ``[0, 1]`` inputs and about 0.03 for ImageNet-normalised ones). We keep that rule but take the
    range per pair over both images, so that swapping ``x1`` and ``x2`` swaps the maps (the paper
    explains one pair at a time and uses ``x1``'s range).

    Args:
        model: an ``nn.Module`` or callable mapping ``(B, C, H, W)`` to ``(B, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images, same shape and device.
        n_samples: number of noisy copies per pair. Default 50 (the paper).
        noise: ``None`` for the paper's rule above, or an explicit standard deviation in input
            units.
        guided: guided backpropagation through ``nn.ReLU`` modules (the paper's "G" variant).
        blur: blur the maps (k=11, sigma=5 at 224 px, scaled to the shorter side as in
            :func:`input_x_gradient`) before normalising.
        seed: seed of the noise; the global RNG is not used.
        similarity: ``"cosine"`` (the paper), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward/backward pass (each noisy pair counts 2). Default None:
            chosen from the device's memory (see
            :meth:`~lightning_explain._core.PairContext.chunk_size`).

    Returns:
        :class:`PairExplanation` with ``(B, H, W)`` maps in ``[0, 1]`` and the clean ``sim``.

    Cost:
        Per pair, ``n_samples`` forwards + backwards of the 2 noisy images (100 image passes at
        the default), plus one forward of the clean pair for ``sim``.

    Raises:
        TypeError: for options of the wrong type (``batch_size`` must be an int or None) or
            malformed inputs.
        ValueError: for ``n_samples < 1``, ``batch_size < 1``, a negative ``noise`` or a
            non-differentiable model.
    """
    owner = "smoothgrad"
    n_samples = check_positive_int(n_samples, name="n_samples", owner=owner)
    sigma = _check_sigma(noise, owner=owner)
    guided, blur, seed, batch_size = _check_sampling(
        owner, guided=guided, blur=blur, seed=seed, batch_size=batch_size
    )
    with pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx:
        sim, _ = _pair_embeddings(ctx, batch_size)
        stream = _smoothgrad_stream(ctx, sigma, seed)

        def point(k: int) -> tuple[Tensor, ...]:
            eps = stream.draw()
            return ctx.x1 + eps, ctx.x2 + eps

        def objective(zs: Sequence[Tensor], items: Tensor) -> Tensor:
            return ctx.similarity(zs[0], zs[1])

        g1, g2 = _summed_gradients(
            ctx,
            n_points=n_samples,
            n_items=ctx.batch,
            n_parts=2,
            point=point,
            objective=objective,
            batch_size=batch_size,
            guided=guided,
        )
        raw = _channel_max_abs(torch.cat([ctx.x1 * g1, ctx.x2 * g2]) / n_samples)
        return _finish(ctx, raw, sim, blur=blur)


# --------------------------------------------------------------------------------------------------
# Averaged Transforms


def _photometric(x: Tensor, op: Callable[[Tensor], Tensor]) -> Tensor:
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


def _color_jitter_op(
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


def _grayscale(x: Tensor) -> Tensor:
    from torchvision.transforms.v2 import functional as TF

    if x.shape[1] == 1:
        return x
    return TF.rgb_to_grayscale(x, num_output_channels=3)  # type: ignore[no-any-return]


def _solarize(x: Tensor) -> Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.solarize(x, threshold=0.5)  # type: ignore[no-any-return]


def _builtin_transform(name: str, x: Tensor, g: torch.Generator) -> Tensor:
    """The paper's photometric transforms of ``(N, C, H, W)`` images, parameters drawn from ``g``
    once (one transform for the whole batch)."""
    if name == "blur":
        return _blur(x, 11, 5.0)
    if name == "grayscale":
        return _photometric(x, _grayscale)
    if name == "solarize":
        return _photometric(x, _solarize)
    if name == "color_jitter":
        return _photometric(x, _color_jitter_op(g, (0.8, 0.8, 0.8, 0.4)))
    # "combine": the SimCLR colour pipeline of the paper's pairs.
    u = torch.rand(4, generator=g, device=g.device).tolist()
    jitter = _color_jitter_op(g, (0.8, 0.8, 0.8, 0.2))
    if u[0] < 0.8:
        x = _photometric(x, jitter)
    if u[1] < 0.2:
        x = _photometric(x, _grayscale)
    if u[2] < 0.5:
        x = _blur(x, 21, 0.1 + u[3] * (2.0 - 0.1))
    return x


def _user_transform(fn: Callable[[Tensor], Tensor], x: Tensor, seed: int, owner: str) -> Tensor:
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


def averaged_transforms(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    transform: Transform = "combine",
    steps: PositiveInt = 10,
    noise: bool = False,
    guided: bool = False,
    blur: bool = False,
    seed: int = 0,
    similarity: Similarity = "cosine",
    batch_size: PositiveInt | None = None,
) -> PairExplanation:
    """Averaged Transforms (the paper's proposed gradient method) generalised to pairs [0].

    The paper explains one image ``x`` against its own photometric transform ``T(x)``: it walks
    ``x_lam = lam * x + (1 - lam) * T(x)`` for ``lam`` in ``{1.0, 0.9, ..., 0.1}`` and averages the
    gradients of ``cos(f(x_1.0), f(x_lam))``. For a pair we explain each image against its intact
    partner: image 1 walks towards ``T(x1)`` while ``x2`` stays as it is,

        ``g1 = mean_lam d s(f(x1_lam), f(x2)) / d x1_lam``,  ``h1 = max_c |x1 * g1|``,

    and symmetrically image 2 walks towards ``T(x2)`` with ``x1`` intact. With ``steps = n`` the
    coefficients are ``lam_k = 1 - k / n`` for ``k = 0 .. n - 1`` (``lam = 0``, the pure transform,
    is excluded as in the paper). The method is not symmetric: a random transform is one draw.

    Built-in transforms (torchvision), drawn once per call from ``seed`` and shared by every image
    of the batch (so a pair's map does not depend on its batch neighbours):

    * ``"color_jitter"``: ``ColorJitter(0.8, 0.8, 0.8, 0.4)`` with p=1;
    * ``"blur"``: Gaussian blur, kernel 11, sigma 5 at 224 px (scaled to the shorter side ``s``:
      kernel ``11 s / 224`` rounded to odd, at least 3, sigma ``5 s / 224``);
    * ``"grayscale"``: luminance copied to the 3 channels;
    * ``"solarize"``: values above the middle of the range inverted (threshold 0.5);
    * ``"combine"`` (default): the SimCLR colour pipeline, ``ColorJitter(0.8, 0.8, 0.8, 0.2)``
      with p=0.8, grayscale p=0.2, Gaussian blur kernel 21 with sigma in ``[0.1, 2]`` with p=0.5
      (both at 224 px, scaled to the shorter side like ``"blur"``: kernel 3 at 32 px).

    Colour ops expect ``[0, 1]`` images; each image is mapped affinely from
    ``[min(0, min x), max(1, max x)]`` to ``[0, 1]`` and back around the op (the identity for
    ``[0, 1]`` images), so ImageNet-normalised inputs work. Images with ``C != 3`` are jittered
    channel by channel as grayscale images (brightness and contrast only; saturation, hue and
    grayscale are identities). Kernels never exceed ``2 * s - 1``, which reflect padding allows.

    Args:
        model: an ``nn.Module`` or callable mapping ``(B, C, H, W)`` to ``(B, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images, same shape and device.
        transform: a name above, or a callable ``(N, C, H, W) -> (N, C, H, W)`` pixel-aligned
            transform, called once on ``cat([x1, x2])`` as given (no range mapping) under
            ``torch.no_grad()``, with the global RNG seeded from ``seed`` inside a fork.
        steps: number of interpolants. Default 10 (the paper's step 0.1).
        noise: the paper's "N" variant: add Gaussian noise with ``sigma = 0.15 / (max - min)`` of
            the image to the interior interpolants (all but the first and the last).
        guided: guided backpropagation through ``nn.ReLU`` modules (the "G" variant).
        blur: blur the maps (k=11, sigma=5 at 224 px, scaled to the shorter side as in
            :func:`input_x_gradient`) before normalising.
        seed: seed of the transform parameters and the noise; the global RNG is not used.
        similarity: ``"cosine"`` (the paper), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward/backward pass. Default None: chosen from the device's
            memory (see :meth:`~lightning_explain._core.PairContext.chunk_size`).

    Returns:
        :class:`PairExplanation` with ``(B, H, W)`` maps in ``[0, 1]`` and the clean ``sim``.

    Cost:
        Per pair, ``2 * steps`` image forwards + backwards (20 at the default), plus one forward
        of the clean pair.

    Raises:
        TypeError: for options of the wrong type (``batch_size`` must be an int or None) or
            malformed inputs.
        ValueError: for an unknown transform name (the message lists the valid ones),
            ``steps < 1``, ``batch_size < 1``, a transform callable returning a wrong shape or
            a non-differentiable model.
    """
    owner = "averaged_transforms"
    transform = _check_transform(transform, owner=owner)
    steps = check_positive_int(steps, name="steps", owner=owner)
    noise = check_bool(noise, name="noise", owner=owner)
    guided, blur, seed, batch_size = _check_sampling(
        owner, guided=guided, blur=blur, seed=seed, batch_size=batch_size
    )
    with pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx:
        x = torch.cat([ctx.x1, ctx.x2])
        g = ctx.generator(seed)
        with torch.no_grad():
            if isinstance(transform, str):
                tx = _builtin_transform(transform, x, g)
            else:
                tx = _user_transform(transform, x, seed, owner)
        stream = _NoiseStream(g, x, _NOISE_LEVEL / _image_range(x.float()))

        def path(k: int) -> Tensor:
            lam = 1.0 - k / steps
            xk = lam * x + (1.0 - lam) * tx
            if noise and 0 < k < steps - 1:
                xk = xk + stream.draw()
            return xk

        grads, sim = _partner_gradients(
            ctx, path, n_points=steps, batch_size=batch_size, guided=guided
        )
        raw = _channel_max_abs(x * grads / steps)
        return _finish(ctx, raw, sim, blur=blur)


# --------------------------------------------------------------------------------------------------
# Integrated gradients


def _integrated_gradients(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    options: tuple[object, object, object],
    similarity: Similarity,
    finish: Callable[[PairContext, Tensor, Tensor], _T],
) -> _T:
    """Check ``(baseline, n_steps, batch_size)``, compute the attributions of ``cat([x1, x2])``
    in a pair context, and return ``finish(ctx, attributions (2B, C, H, W), sim (B,))``."""
    owner = "integrated_gradients"
    baseline = _check_baseline(options[0], owner=owner)
    n_steps = check_positive_int(options[1], name="n_steps", owner=owner)
    batch_size = check_batch_size(options[2], owner=owner)
    with pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx:
        x = torch.cat([ctx.x1, ctx.x2])
        with torch.no_grad():
            base = _blur(x, 11, 5.0) if baseline == "blur" else torch.zeros_like(x)
        delta = x - base

        def path(k: int) -> Tensor:
            alpha = (k + 0.5) / n_steps  # midpoint Riemann rule
            return base + alpha * delta

        grads, sim = _partner_gradients(ctx, path, n_points=n_steps, batch_size=batch_size)
        return finish(ctx, delta * (grads / n_steps).to(delta.dtype), sim)


def integrated_gradients_attributions(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    baseline: BaselineName = "blur",
    n_steps: PositiveInt = 32,
    similarity: Similarity = "cosine",
    batch_size: PositiveInt | None = None,
) -> tuple[Tensor, Tensor]:
    """Signed integrated-gradients attributions ``(attr1, attr2)``, each ``(B, C, H, W)``, before
    the per-pixel reduction of :func:`integrated_gradients` (same arguments).

    ``attr1.sum((1, 2, 3))`` approximates ``s(x1, x2) - s(b1, x2)`` (completeness), which makes
    these attributions the ones to check a convergence delta on.
    """

    def split(ctx: PairContext, attr: Tensor, sim: Tensor) -> tuple[Tensor, Tensor]:
        return attr[: ctx.batch].detach(), attr[ctx.batch :].detach()

    return _integrated_gradients(
        model, x1, x2, (baseline, n_steps, batch_size), similarity, finish=split
    )


def integrated_gradients(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    baseline: BaselineName = "blur",
    n_steps: PositiveInt = 32,
    similarity: Similarity = "cosine",
    batch_size: PositiveInt | None = None,
) -> PairExplanation:
    """Integrated gradients [2] of the pair similarity, each image against its intact partner.

    Not in the paper (which uses Averaged Transforms, an IG-inspired method without the
    ``(x - baseline)`` factor); added as a baseline with the completeness property. For image 1,
    with ``b1`` its baseline and ``x2`` held fixed,

        ``attr1 = (x1 - b1) * (1 / n) * sum_k grad s(f(b1 + a_k (x1 - b1)), f(x2))``,
        ``a_k = (k + 0.5) / n`` (midpoint Riemann rule, captum's ``"riemann_middle"``),

    so ``attr1`` summed over pixels and channels approximates ``s(x1, x2) - s(b1, x2)``; image 2
    symmetrically. The map is ``h_i = max_c |attr_i|``, the reduction of the other gradient maps,
    so that maps of the family are comparable; it ranks pixels by how much they moved the
    similarity away from the baseline's, in either direction (summing over channels and
    clamping would give an empty map whenever the baseline is more similar to the partner than
    the image is).

    Args:
        model: an ``nn.Module`` or callable mapping ``(B, C, H, W)`` to ``(B, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images, same shape and device.
        baseline: ``"blur"`` (default; the paper's insertion substrate, the image blurred with
            k=11, sigma=5 at 224 px, scaled to the shorter side as that substrate: k=3,
            sigma=0.71 at 32 px) or ``"black"`` (all zeros; the dataset-mean colour for
            normalised inputs).
        n_steps: Riemann steps along each path. Default 32.
        similarity: ``"cosine"``, ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward/backward pass. Default None: chosen from the device's
            memory (see :meth:`~lightning_explain._core.PairContext.chunk_size`).

    Returns:
        :class:`PairExplanation` with ``(B, H, W)`` maps in ``[0, 1]`` and the clean ``sim``.

    Cost:
        Per pair, ``2 * n_steps`` image forwards + backwards (64 at the default), plus one forward
        of the clean pair.

    Raises:
        TypeError: for options of the wrong type (``batch_size`` must be an int or None) or
            malformed inputs.
        ValueError: for an unknown baseline, ``n_steps < 1``, ``batch_size < 1`` or a
            non-differentiable model.
    """

    def maps(ctx: PairContext, attr: Tensor, sim: Tensor) -> PairExplanation:
        return _finish(ctx, _channel_max_abs(attr), sim, blur=False)

    return _integrated_gradients(
        model, x1, x2, (baseline, n_steps, batch_size), similarity, finish=maps
    )
