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

import functools
import math
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar, Union

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
    Model,
    PairContext,
    guided_relu,
    pair_context,
)
from lightning_explain.explanation import PairExplanation
from lightning_explain.methods._photometric import (
    Transform,
    TransformName,
    builtin_transform,
    check_transform,
    scaled_blur,
    user_transform,
)
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

BaselineName = Literal["blur", "black"]
"""Baselines of :func:`integrated_gradients`."""

Similarity = Union[SimilarityName, SimilarityFn]

_T = TypeVar("_T")

_NOISE_LEVEL = 0.15
"""The paper's noise numerator: ``sigma = 0.15 / (max(x) - min(x))``."""

_MAP_BLUR = (11, 5.0)
"""Kernel size and sigma of the optional output blur at 224 px (the paper's k=11, sigma=5),
scaled to the image size by :func:`~lightning_explain.methods._photometric.scaled_blur`."""


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


def _check_baseline(value: object, *, owner: str) -> BaselineName:
    out: BaselineName = check_literal(value, BaselineName, name="baseline", owner=owner)
    return out


# --------------------------------------------------------------------------------------------------
# Small tensor helpers


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
    per forward/backward, with ``chunk = ctx.chunk_size(batch_size, autograd=True,
    multiple=n_parts)`` (``batch_size`` if given, else a default for forward + backward passes on
    this device; tuned inside :func:`lightning_explain._perf.chunk_tuning` as a multiple of
    ``n_parts``).
    ``objective(zs, items)`` maps the embeddings of the chunk's parts (each ``(n, D)``) and the
    chunk's item indices ``(n,)`` to per-item similarities ``(n,)``. ``guided``: guided
    backpropagation through the ``nn.ReLU`` modules of the model.

    Returns:
        ``n_parts`` tensors of shape ``(n_items, C, H, W)``: per item, the gradient of its
        similarity with respect to each part, summed over the points.
    """
    per_chunk = max(1, ctx.chunk_size(batch_size, autograd=True, multiple=n_parts) // n_parts)
    total = n_points * n_items
    sums: list[Tensor] = []
    cache: dict[int, tuple[Tensor, ...]] = {}
    with guided_relu(ctx.modules, enabled=guided):
        for start in range(0, total, per_chunk):
            stop = min(total, start + per_chunk)
            first, last = start // n_items, (stop - 1) // n_items
            for k in [k for k in cache if k < first]:
                del cache[k]
            for k in range(first, last + 1):
                if k not in cache:
                    cache[k] = point(k)
            n = stop - start
            # The chunk's inputs, part after part, copied once into one leaf (no per-part
            # concatenation and no second one for the forward).
            parts = cache[first]
            dtype = functools.reduce(torch.promote_types, [t.dtype for t in parts])
            leaf = torch.empty((n_parts * n, *parts[0].shape[1:]), dtype=dtype, device=ctx.device)
            with torch.no_grad():
                for k in range(first, last + 1):
                    lo = max(start, k * n_items) - k * n_items
                    hi = min(stop, (k + 1) * n_items) - k * n_items
                    row = k * n_items + lo - start
                    for j in range(n_parts):
                        leaf[j * n + row : j * n + row + hi - lo].copy_(cache[k][j][lo:hi])
            leaf.requires_grad_(True)
            items = torch.arange(start, stop, device=ctx.device) % n_items
            z = ctx.embed(leaf)
            s = objective([z[j * n : (j + 1) * n] for j in range(n_parts)], items)
            grads = torch.split(_grad(s, [leaf], owner=ctx.owner)[0], n)
            if not sums:
                acc_dtype = torch.promote_types(grads[0].dtype, torch.float32)
                sums = [
                    torch.zeros((n_items, *g.shape[1:]), dtype=acc_dtype, device=ctx.device)
                    for g in grads
                ]
            for acc, g in zip(sums, grads):
                acc.index_add_(0, items, g.to(acc.dtype))
    return tuple(sums)


def _pair_embeddings(
    ctx: PairContext, batch_size: int | None, images: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(sim (B,), partner (2B, D))``: the clean similarity and, for each image of ``cat([x1, x2])``,
    the constant embedding of its partner (``z2`` for the images of ``x1``, ``z1`` for ``x2``).

    The intact images (``images``, default ``cat([x1, x2])``) are embedded without autograd, in
    chunks of ``ctx.chunk_size(batch_size)``, in the caller's precision (not under
    :func:`lightning_explain.perturbation_autocast`: they are the targets of the gradient passes).
    """
    b = ctx.batch
    if images is None:
        images = torch.cat([ctx.x1, ctx.x2])
    z = ctx.embed_chunked(images, ctx.chunk_size(batch_size), autocast=False)
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
    intact: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Gradients of each image's similarity to its intact partner, summed along a path.

    ``path(k)`` returns point ``k`` of the ``(2B, C, H, W)`` path of ``cat([x1, x2])``; image ``j``
    of it is compared with the intact partner of image ``j``, ``s(f(path(k)[j]), partner[j])``.
    ``intact``: the ``(2B, C, H, W)`` intact images whose embeddings are the partners (default
    ``cat([x1, x2])``).

    Returns:
        ``(grads (2B, C, H, W), sim (B,))``: the gradients summed over the ``n_points`` points,
        and the similarity of the intact pairs.
    """
    sim, partner = _pair_embeddings(ctx, batch_size, intact)

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
        raw = scaled_blur(raw.float(), *_MAP_BLUR)
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


def _check_path_noise(value: object, x1: Tensor, *, owner: str) -> Tensor | None:
    """``path_noise``: None, or a finite float tensor of ``x1``'s shape (moved to its device)."""
    if value is None:
        return None
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise TypeError(
            f"`{owner}`: expected `path_noise` to be None or a float tensor of shape "
            f"{tuple(x1.shape)} (one noise image per pair), but got {value!r:.80}."
        )
    if tuple(value.shape) != tuple(x1.shape):
        raise ValueError(
            f"`{owner}`: expected `path_noise` of shape {tuple(x1.shape)} (the shape of x1), but "
            f"got {tuple(value.shape)}."
        )
    if not torch.isfinite(value).all():
        raise ValueError(f"`{owner}`: `path_noise` contains NaN or infinite values.")
    return value.detach().to(device=x1.device, dtype=x1.dtype)


def _paper_design(
    ctx: PairContext,
    *,
    steps: int,
    noise: bool,
    guided: bool,
    g: torch.Generator,
    offset: Tensor | None,
    batch_size: int | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The authors' Averaged Transforms on ``(x, T(x)) = (x1, x2)``: ``(raw1, raw2, sim)``.

    Mixed images ``m_k = lam_k * x1 + (1 - lam_k) * x2`` for ``k = 0 .. steps - 1``,
    ``lam_k = 1 - k / steps`` (``m_0 = x1``), plus ``offset`` on every one of them and, with
    ``noise``, Gaussian noise of ``sigma = 0.15 / (max(x1) - min(x1))`` on the interior ones. The
    gradients of ``s(f(m_0), f(m_k))`` for ``k = 1 .. steps - 1`` are averaged, with respect to
    ``m_0`` for the first map and to ``m_k`` for the second; the first map is
    ``max_c |m_0 * g1|``, the second ``max_c |m_last * g2|``.
    """
    x1, x2 = ctx.x1, ctx.x2
    pure = x1 if offset is None else x1 + offset
    stream = _NoiseStream(g, x1, _NOISE_LEVEL / _image_range(x1.float()))
    mixed: dict[int, Tensor] = {}

    def mixed_image(k: int) -> Tensor:
        if k not in mixed:
            lam = 1.0 - k / steps
            xk = lam * x1 + (1.0 - lam) * x2
            if offset is not None:
                xk = xk + offset
            if noise and 0 < k < steps - 1:
                xk = xk + stream.draw()
            mixed[k] = xk
        return mixed[k]

    def objective(zs: Sequence[Tensor], items: Tensor) -> Tensor:
        return ctx.similarity(zs[0], zs[1])

    grads1, grads2 = _summed_gradients(
        ctx,
        n_points=steps - 1,
        n_items=ctx.batch,
        n_parts=2,
        point=lambda k: (pure, mixed_image(k + 1)),
        objective=objective,
        batch_size=batch_size,
        guided=guided,
    )
    last = mixed_image(steps - 1)
    with torch.no_grad():
        z = ctx.embed_chunked(torch.cat([x1, x2]), ctx.chunk_size(batch_size), autocast=False)
        sim = ctx.similarity(z[: ctx.batch], z[ctx.batch :])
    raw1 = _channel_max_abs(pure * grads1 / (steps - 1))
    raw2 = _channel_max_abs(last * grads2 / (steps - 1))
    return raw1, raw2, sim.detach()


def averaged_transforms(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    transform: Transform | None = None,
    design: Literal["pair", "paper"] = "pair",
    steps: PositiveInt = 10,
    noise: bool = False,
    path_noise: Tensor | None = None,
    guided: bool = False,
    blur: bool = False,
    seed: int = 0,
    similarity: Similarity = "cosine",
    batch_size: PositiveInt | None = None,
) -> PairExplanation:
    """Averaged Transforms (the paper's proposed gradient method) generalised to pairs [0].

    The paper explains one image ``x`` against its own photometric transform ``T(x)``: it walks
    ``x_lam = lam * x + (1 - lam) * T(x)`` for ``lam`` in ``{1.0, 0.9, ..., 0.1}`` and averages the
    gradients of ``cos(f(x_1.0), f(x_lam))``.

    ``design="pair"`` (default, our generalisation to pairs). Each image is explained against its
    intact partner: image 1 walks towards ``T(x1)`` while ``x2`` stays as it is,

        ``g1 = mean_lam d s(f(x1_lam), f(x2)) / d x1_lam``,  ``h1 = max_c |x1 * g1|``,

    and symmetrically image 2 walks towards ``T(x2)`` with ``x1`` intact. With ``steps = n`` the
    coefficients are ``lam_k = 1 - k / n`` for ``k = 0 .. n - 1`` (``lam = 0``, the pure transform,
    is excluded as in the paper). The method is not symmetric: a random transform is one draw.

    ``design="paper"`` (the authors' code, ``averaged_transforms`` of explain-cl). The pair *is*
    the paper's ``(x, T(x))``: ``x2`` must be a pixel-aligned transform of ``x1`` (pass it
    yourself; ``transform`` is not used and may not be given). The mixed images are
    ``m_k = lam_k * x1 + (1 - lam_k) * x2``, ``m_0 = x1``; the gradients of ``s(f(m_0), f(m_k))``
    for ``k = 1 .. steps - 1`` are averaged, and

        ``h1 = max_c |x1 * mean_k d s / d m_0|``,  ``h2 = max_c |m_last * mean_k d s / d m_k|``:

    the first map is the gradient with respect to the fixed pure image against each mixed
    partner, the second is multiplied by the last mixed image, not by ``x2``. It needs
    ``steps >= 2``. We do not make it the default because on the two augmented views of a
    contrastive pair (not pixel-aligned) the mixed images are blends of two different crops.

    Built-in transforms of the pair design (torchvision), drawn once per call from ``seed`` and
    shared by every image of the batch (so a pair's map does not depend on its batch neighbours):

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
    The built-in transforms act on float tensors; the paper's act on PIL images, which round to
    uint8 after blur and grayscale (up to 2e-3 per pixel of a ``[0, 1]`` image), so maps made from
    the paper's PIL-transformed images differ by that much in their inputs.

    Args:
        model: an ``nn.Module`` or callable mapping ``(B, C, H, W)`` to ``(B, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images (with ``design="paper"``: the pure images ``x``).
        x2: ``(B, C, H, W)`` second images, same shape and device (with ``design="paper"``:
            their transforms ``T(x)``).
        transform: ``design="pair"`` only: a name above (default None: ``"combine"``), or a
            callable ``(N, C, H, W) -> (N, C, H, W)`` pixel-aligned transform, called once on
            ``cat([x1, x2])`` as given (no range mapping) under ``torch.no_grad()``, with the
            global RNG seeded from ``seed`` inside a fork.
        design: ``"pair"`` (default) or ``"paper"``, see above.
        steps: number of interpolants including the pure image. Default 10 (the paper's 0.1).
        noise: the paper's "N" variant: add Gaussian noise with ``sigma = 0.15 / (max - min)`` of
            the image (of ``x1`` with ``design="paper"``) to the interior interpolants (all but the
            first and the last).
        path_noise: None (default), or a ``(B, C, H, W)`` tensor added to every interpolant of
            both images, the intact partners and the pure images included (after the transform):
            the paper's max-sensitivity protocol for this method, used by
            :func:`~lightning_explain.metrics.functional.sensitivity.max_sensitivity` with
            ``noise_at="mixed"``. With ``design="paper"`` it is the same as adding it to ``x1``
            and ``x2``.
        guided: guided backpropagation through ``nn.ReLU`` modules (the "G" variant).
        blur: blur the maps (k=11, sigma=5 at 224 px, scaled to the shorter side as in
            :func:`input_x_gradient`) before normalising.
        seed: seed of the transform parameters and the noise; the global RNG is not used.
        similarity: ``"cosine"`` (the paper), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward/backward pass. Default None: chosen from the device's
            memory (see :meth:`~lightning_explain._core.PairContext.chunk_size`).

    Returns:
        :class:`PairExplanation` with ``(B, H, W)`` maps in ``[0, 1]`` and the ``sim`` of the
        intact pair (with ``path_noise``, of the noisy pair).

    Cost:
        Per pair, ``2 * steps`` image forwards + backwards (20 at the default), plus one forward
        of the pair; ``design="paper"``: ``2 * (steps - 1)`` (18).

    Raises:
        TypeError: for options of the wrong type (``batch_size`` must be an int or None) or
            malformed inputs.
        ValueError: for an unknown transform name or design (the message lists the valid ones),
            ``steps < 1`` (``< 2`` with ``design="paper"``), ``transform`` given with
            ``design="paper"``, ``batch_size < 1``, a ``path_noise`` of the wrong shape, a
            transform callable returning a wrong shape or a non-differentiable model.
    """
    owner = "averaged_transforms"
    design = check_literal(design, Literal["pair", "paper"], name="design", owner=owner)
    steps = check_positive_int(steps, name="steps", owner=owner)
    if design == "paper":
        if transform is not None:
            raise ValueError(
                f"`{owner}`: design='paper' walks from x1 to x2 (the pair is the paper's "
                f"(x, T(x))), so it takes no `transform`, but got transform={transform!r}. Pass "
                "x2 = T(x1) yourself, or use design='pair' to walk each image towards `transform`."
            )
        if steps < 2:
            raise ValueError(
                f"`{owner}`: design='paper' needs steps >= 2 (the pure image and at least one "
                f"mixed partner), but got steps={steps}."
            )
    else:
        transform = check_transform("combine" if transform is None else transform, owner=owner)
    noise = check_bool(noise, name="noise", owner=owner)
    guided, blur, seed, batch_size = _check_sampling(
        owner, guided=guided, blur=blur, seed=seed, batch_size=batch_size
    )
    with pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx:
        offset = _check_path_noise(path_noise, ctx.x1, owner=owner)
        g = ctx.generator(seed)
        if design == "paper":
            raw1, raw2, sim = _paper_design(
                ctx,
                steps=steps,
                noise=noise,
                guided=guided,
                g=g,
                offset=offset,
                batch_size=batch_size,
            )
            return _finish(ctx, torch.cat([raw1, raw2]), sim, blur=blur)
        x = torch.cat([ctx.x1, ctx.x2])
        with torch.no_grad():
            if isinstance(transform, str):
                tx = builtin_transform(transform, x, g)
            elif transform is not None:
                tx = user_transform(transform, x, seed, owner)
        shift = None if offset is None else torch.cat([offset, offset])
        stream = _NoiseStream(g, x, _NOISE_LEVEL / _image_range(x.float()))

        def path(k: int) -> Tensor:
            lam = 1.0 - k / steps
            xk = lam * x + (1.0 - lam) * tx
            if shift is not None:
                xk = xk + shift
            if noise and 0 < k < steps - 1:
                xk = xk + stream.draw()
            return xk

        intact = None if shift is None else x + shift
        grads, sim = _partner_gradients(
            ctx, path, n_points=steps, batch_size=batch_size, guided=guided, intact=intact
        )
        raw = _channel_max_abs((x if intact is None else intact) * grads / steps)
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
            base = scaled_blur(x, 11, 5.0) if baseline == "blur" else torch.zeros_like(x)
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
