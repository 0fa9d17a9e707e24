"""Correspondence explanations: which position of image 1 the model matches with which of image 2.

Both methods decompose the similarity of a pair into a matrix of interactions between the
positions of the two images (:class:`~lightning_explain.correspondence.PairInteraction`). They share
one engine:

1. Pick a *site*: a feature layer (its ``(h, w)`` map or ViT patch grid) or the input pixels
   (pooled into a grid of patches).
2. Write the embedding as a sum of per-position contributions by gradient x input at the site:
   ``z_i = sum_c a_ic * dz / da_ic`` for position ``i`` (channels ``c``). For a map from the site
   to the embedding that is linear with no bias, ``sum_i z_i = z`` exactly (Euler's theorem);
   otherwise it is the first-order (gradient) linearisation of ``z`` around zero at the site.
3. Project onto directions ``v_1 .. v_K`` of the embedding space, ``c_i^m = <v_m, z_i>``, and pair
   the projections: ``interaction[i, j] = sum_m c1_i^m c2_j^m`` (divided by ``|z1| |z2|`` for the
   cosine similarity). With an orthonormal basis of all ``D`` directions this is
   ``<z1_i, z2_j>`` and the interactions of a pair sum to ``<z1, z2>``: the dot similarity, or,
   after the division, the cosine.

:func:`point_to_point` uses all ``D`` coordinate directions at a feature layer (Zhu et al. [0]);
:func:`bilrp` uses ``k`` random or principal directions, by default at the pixels (Eberle et al.
[1]). Each direction is one vector-Jacobian product; at a layer they are taken together, as one
batched (vmapped) backward per chunk through the part of the model after the layer (in blocks
when they exceed a memory budget); to the pixels they are one full backward each. The
contributions at a site are read without touching the model: a
forward hook multiplies the layer output by a ones tensor ``t`` of shape ``(N, 1, h, w)`` (maps)
or ``(N, T, 1)`` (tokens), and ``dz / dt`` is exactly the channel sum of gradient x activation.

Every gradient is taken with :func:`torch.autograd.grad` with respect to the input or that ``t``,
never into parameter ``.grad``; every method runs under the package's guest guard
(:func:`lightning_explain._core.pair_context`): eval mode with every submodule's flag restored, no
BatchNorm statistics updated, global RNGs forked, hooks removed even after an exception. Work is
chunked over pairs: one chunk holds at most ``batch_size`` images (both views of its pairs, in
one forward), and the directions are backpropagated one after the other, so memory is bounded by
the chunk whatever the number of pairs or directions.

References:
    [0] Zhu, Yang & Chen, "Visual Explanation for Deep Metric Learning", IEEE Transactions on
        Image Processing 30, 2021 (arXiv 1909.12977): the point-to-point activation intensity.
    [1] Eberle, Büttner, Kräutli, Müller, Valleriani & Montavon, "Building and Interpreting Deep
        Similarity Models", IEEE TPAMI 44(3), 2022 (arXiv 2003.05431): BiLRP.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
from torch import Tensor, nn

from lightning_explain._checks import (
    NonNegativeInt,
    PositiveInt,
    check_batch_size,
    check_int,
    check_layer,
    check_literal,
    check_positive_int,
    check_signature_options,
    describe,
)
from lightning_explain._core import Model, PairContext, check_embedding, pair_context
from lightning_explain.correspondence._registry import interaction_method_info
from lightning_explain.correspondence._types import Grid, PairInteraction, cell_index_map
from lightning_explain.methods.cam import LayerSpec, first_tensor, resolve_layer

__all__ = [
    "Directions",
    "InteractionSimilarity",
    "Level",
    "bilrp",
    "explain_interactions",
    "point_to_point",
]

InteractionSimilarity = Literal["cosine", "dot"]
"""The similarities an interaction decomposes: bilinear in the embeddings (``"dot"``) or bilinear
after normalisation (``"cosine"``). ``"neg_l2"`` and callables are not bilinear."""

Directions = Literal["principal", "random"]
"""How :func:`bilrp` picks its ``k`` embedding directions."""

Level = Literal["pixel", "layer"]
"""Where :func:`bilrp` reads its relevance: the input pixels or a feature layer."""

_SIMILARITY_HINT = (
    "An interaction decomposes a bilinear similarity; 'neg_l2' and custom callables are not "
    "bilinear in the two embeddings."
)

# A token count N is accepted as an (h, w) grid when h/w is within this factor of the input's H/W
# (the rule of the class-activation methods).
_GRID_ASPECT_TOLERANCE = math.log(1.5)

_VJP_BUDGET_BYTES = 256 * 2**20
"""Memory for the batched backward at a layer site: the directions go through the head in one
vmapped backward (``torch.autograd.grad(..., is_grads_batched=True)``) when ``directions x 4 x``
the layer's activation bytes fit in it, else in blocks that do. 256 MiB: every direction of a
512-dim embedding at ResNet-18's ``layer4`` (7 x 7 x 512 floats per image, 100 KB) for a chunk of
four images; the factor 4 covers the gradients of the head's intermediate tensors."""


def _direction_block(k: int, activations: Sequence[Tensor]) -> int:
    """Directions per batched backward: all ``k`` when they fit :data:`_VJP_BUDGET_BYTES`."""
    per_direction = 4 * sum(t.numel() * t.element_size() for t in activations)
    return max(1, min(k, _VJP_BUDGET_BYTES // max(1, per_direction)))


# --------------------------------------------------------------------------------------------------
# Sites


@dataclass(frozen=True)
class _Site:
    """Where the per-position contributions are read: the pixels or one layer."""

    module: nn.Module | None  # None: the input pixels
    name: str
    pixel_grid: Grid | None  # pixels: the grid they are pooled into
    prefix_tokens: int | None  # tokens: leading tokens to drop (None: infer)


def _token_grid(
    n_tokens: int, size: tuple[int, int], prefix: int | None
) -> tuple[int, Grid] | None:
    """Split ``n_tokens`` into ``prefix`` leading tokens and an ``(h, w)`` patch grid.

    With ``prefix=None`` a class token (1) or none (0) is tried, as the class-activation methods
    do, and the factorisation whose aspect ratio is closest to the input's wins (within a factor
    1.5); with an explicit ``prefix`` the closest factorisation of the rest is taken.
    """
    height, width = size
    target = math.log(height / width)
    best: tuple[int, Grid] | None = None
    best_err = math.inf
    for p in (1, 0) if prefix is None else (prefix,):
        n = n_tokens - p
        if n < (2 if prefix is None else 1):
            continue
        for h in range(1, math.isqrt(n) + 1):
            if n % h:
                continue
            for gh, gw in ((h, n // h), (n // h, h)):
                err = abs(math.log(gh / gw) - target)
                if err < best_err - 1e-12:
                    best, best_err = (p, (gh, gw)), err
    if best is None or (prefix is None and best_err > _GRID_ASPECT_TOLERANCE):
        return None
    return best


def _layer_site(ctx: PairContext, model: Model, layer: LayerSpec, prefix: int | None) -> _Site:
    """Resolve ``layer`` (as the class-activation methods do) on the pair ``(x1[0], x2[0])``."""
    module = resolve_layer(model, layer, torch.cat([ctx.x1[:1], ctx.x2[:1]]))
    name = layer if isinstance(layer, str) and layer != "auto" else None
    if name is None:
        for root in ctx.modules:
            for n, m in root.named_modules():
                if m is module and n:
                    name = n
                    break
            if name is not None:
                break
    return _Site(module, name or f"<{type(module).__name__}>", None, prefix)


def _select(outs: list[Tensor], scales: list[Tensor], n: int, site: _Site, owner: str) -> list[int]:
    """Indices of the layer firings that cover the ``n`` images of the chunk, in batch order."""
    if not outs:
        raise ValueError(
            f"`{owner}`: layer {site.name} did not run during the model's forward pass (or returned "
            f"no tensor), so it has no activations to explain. Pick a layer the forward pass uses; "
            f"`lightning_explain.methods.list_feature_layers(model, x)` lists them."
        )
    if len(outs) == 1 or all(t.shape[0] == n for t in outs):
        chosen = [len(outs) - 1]  # a block applied several times: its last application
    elif sum(int(t.shape[0]) for t in outs) == n and len({t.shape[1:] for t in outs}) == 1:
        chosen = list(range(len(outs)))  # the model runs the layer once per part of the batch
    else:
        raise ValueError(
            f"`{owner}`: layer {site.name} ran {len(outs)} times with batch sizes "
            f"{[int(t.shape[0]) for t in outs]} on a batch of {n} images; cannot tell which outputs "
            f"belong to which image. Pass a layer that runs once per image."
        )
    if not all(scales[i].ndim == outs[i].ndim for i in chosen):
        raise ValueError(
            f"`{owner}`: layer {site.name} outputs shape {tuple(outs[chosen[0]].shape)}; expected a "
            f"(N, C, h, w) feature map or (N, T, D) tokens with the batch dimension first."
        )
    return chosen


def _scale_shape(t: Tensor) -> tuple[int, ...] | None:
    if t.ndim == 4:
        return (int(t.shape[0]), 1, int(t.shape[2]), int(t.shape[3]))
    if t.ndim == 3:
        return (int(t.shape[0]), int(t.shape[1]), 1)
    return None


# --------------------------------------------------------------------------------------------------
# The engine


@dataclass(frozen=True)
class _Chunk:
    """Per-position contributions of one chunk: ``c (K, N, P)``, embeddings ``z (N, D)``."""

    c: Tensor
    z: Tensor
    grid: Grid


DirectionFn = Callable[[int, torch.device], Union[Tensor, None]]
"""``(D, device) -> (D, K)`` directions, or ``None`` for all ``D`` coordinate directions."""


def _contributions(
    ctx: PairContext, x: Tensor, site: _Site, directions: DirectionFn, owner: str
) -> _Chunk:
    """One forward of the ``(N, C, H, W)`` chunk; at a layer one batched backward of all
    directions (or blocks of them), at the pixels one backward per direction."""
    n = int(x.shape[0])
    scales: list[Tensor] = []
    outs: list[Tensor] = []

    def scale(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        found = first_tensor(output)
        if found is None:
            return None
        t, rebuild = found
        shape = _scale_shape(t)
        outs.append(t)
        ones = torch.ones(shape or (1,), dtype=t.dtype, device=t.device, requires_grad=True)
        scales.append(ones)
        # A product, not the tensor itself: later in-place ops cannot touch the activations.
        return rebuild(t * ones) if shape is not None else None

    if site.module is None:
        x = x.detach().requires_grad_(True)
        z = check_embedding(ctx.model(x), x, owner=owner)
        inputs = [x]
    else:
        handle = site.module.register_forward_hook(scale)
        try:
            z = check_embedding(ctx.model(x), x, owner=owner)
        finally:
            handle.remove()
        chosen = _select(outs, scales, n, site, owner)
        inputs = [scales[i] for i in chosen]
    if not z.requires_grad:
        raise ValueError(
            f"`{owner}`: the embedding does not depend on {site.name} through autograd: the model "
            f"detaches its output or runs under torch.no_grad()."
        )
    v = directions(int(z.shape[1]), z.device)
    y = z if v is None else z @ v.to(z.dtype)
    k = int(y.shape[1])
    pixel_cells = (
        None
        if site.pixel_grid is None
        else cell_index_map(site.pixel_grid, ctx.size, device=x.device).flatten()
    )
    x_det = x.detach().float()

    def reduce(grads: Sequence[Tensor | None], lead: tuple[int, ...]) -> Tensor:
        """Gradients (with ``lead`` batch dims of directions) to ``(*lead, N, P)`` contributions."""
        parts = [
            torch.zeros(*lead, *t.shape, dtype=t.dtype, device=t.device) if g is None else g
            for t, g in zip(inputs, grads)
        ]
        g = torch.cat(parts, dim=len(lead)).detach().float()
        if pixel_cells is None:  # layers: (*lead, N, 1, h, w) or (*lead, N, T, 1)
            return g.flatten(len(lead) + 1)
        if site.pixel_grid is None:  # pragma: no cover - pixel cells imply a pixel grid
            raise RuntimeError("pixel-level interactions without a pixel grid")
        relevance = (g * x_det).sum(dim=len(lead) + 1).flatten(len(lead) + 1)  # (*lead, N, H*W)
        n_cells = site.pixel_grid[0] * site.pixel_grid[1]
        pooled = relevance.new_zeros(*relevance.shape[:-1], n_cells)
        return pooled.index_add_(relevance.ndim - 1, pixel_cells, relevance)

    rows: list[Tensor] = []
    used = False
    done = 0
    if site.module is not None and k > 1:
        # At a layer the backwards only traverse the head after it: all directions (or blocks
        # that fit the memory budget) go in one call as batched vector-Jacobian products (vmap
        # over the backward). Models whose backward vmap cannot batch fall back to one backward
        # per direction, with the same numbers.
        size = _direction_block(k, [outs[i] for i in chosen])
        try:
            while done < k:
                block = min(size, k - done)
                seeds = torch.zeros(block, *y.shape, dtype=y.dtype, device=y.device)
                seeds[torch.arange(block), :, torch.arange(done, done + block)] = 1.0
                grads = torch.autograd.grad(
                    y, inputs, seeds, retain_graph=True, allow_unused=True, is_grads_batched=True
                )
                used = used or any(g is not None for g in grads)
                rows.extend(reduce(grads, (block,)).unbind(0))
                done += block
        except RuntimeError:  # includes running out of memory: the loop needs 1 / block of it
            rows, done = [], 0
    for m in range(done, k):
        grads = torch.autograd.grad(
            y[:, m].sum(), inputs, retain_graph=m < k - 1, allow_unused=True
        )
        used = used or any(g is not None for g in grads)
        rows.append(reduce(grads, ()))
    if not used:
        raise ValueError(
            f"`{owner}`: the embedding does not depend on {site.name}, so it has no contributions "
            f"to decompose. Pick a layer on the path from the input to the embedding."
        )
    c = torch.stack(rows)  # (K, N, P): pixel cells, or layer positions / tokens
    if site.module is None:
        if site.pixel_grid is None:  # pragma: no cover - a site without a layer is a pixel site
            raise RuntimeError("pixel-level interactions without a pixel grid")
        return _Chunk(c, z.detach(), site.pixel_grid)
    ones = scales[chosen[0]]  # (N, 1, h, w) for maps, (N, T, 1) for tokens
    if ones.ndim == 4:
        return _Chunk(c, z.detach(), (int(ones.shape[2]), int(ones.shape[3])))
    n_tokens = int(c.shape[2])
    split = _token_grid(n_tokens, ctx.size, site.prefix_tokens)
    if split is None:
        raise ValueError(
            f"`{owner}`: layer {site.name} outputs {n_tokens} tokens, which do not form a patch grid "
            f"with the input's aspect ratio {ctx.size[0]}x{ctx.size[1]} after dropping 0 or 1 "
            f"class token. Pass `prefix_tokens=` (class + register tokens), or pick a layer with a "
            f"(N, C, h, w) map."
        )
    prefix, grid = split
    return _Chunk(c[:, :, prefix:], z.detach(), grid)


def _interactions(
    ctx: PairContext,
    site: _Site,
    directions: DirectionFn,
    *,
    similarity: str,
    batch_size: int | None,
    owner: str,
) -> PairInteraction:
    """Chunk the pairs, pair the contributions of both views, divide by the norms for cosine."""
    pairs = max(1, ctx.chunk_size(batch_size, autograd=True, multiple=2) // 2)
    blocks: list[Tensor] = []
    sims: list[Tensor] = []
    grids: set[Grid] = set()
    for start in range(0, ctx.batch, pairs):
        a, b = ctx.x1[start : start + pairs], ctx.x2[start : start + pairs]
        m = int(a.shape[0])
        chunk = _contributions(ctx, torch.cat([a, b]), site, directions, owner)
        z1, z2 = chunk.z[:m].float(), chunk.z[m:].float()
        r = torch.einsum("kbi,kbj->bij", chunk.c[:, :m], chunk.c[:, m:])
        if similarity == "cosine":
            norms = torch.linalg.vector_norm(z1, dim=1) * torch.linalg.vector_norm(z2, dim=1)
            r = r / norms.clamp(min=1e-12).view(-1, 1, 1)
        blocks.append(r)
        sims.append(ctx.similarity(z1, z2).detach().float())
        grids.add(chunk.grid)
    (grid,) = grids
    return PairInteraction(torch.cat(blocks), grid, grid, torch.cat(sims), ctx.size)


# --------------------------------------------------------------------------------------------------
# Option checks


def _check_common(
    owner: str, *, similarity: object, batch_size: object, prefix_tokens: object
) -> tuple[InteractionSimilarity, int | None, int | None]:
    sim: InteractionSimilarity = check_literal(
        similarity, InteractionSimilarity, name="similarity", owner=owner, hint=_SIMILARITY_HINT
    )
    prefix = (
        None
        if prefix_tokens is None
        else check_int(prefix_tokens, name="prefix_tokens", owner=owner, minimum=0)
    )
    return sim, check_batch_size(batch_size, owner=owner), prefix


def _check_grid(grid: object, size: tuple[int, int], *, owner: str) -> Grid:
    if isinstance(grid, int) and not isinstance(grid, bool):
        grid = (grid, grid)
    if (
        not isinstance(grid, (tuple, list))
        or len(grid) != 2
        or not all(isinstance(g, int) and not isinstance(g, bool) for g in grid)
    ):
        raise TypeError(
            f"`{owner}`: expected `grid` to be an int or an (h, w) pair of ints (cells per side), "
            f"but got {describe(grid)}."
        )
    h, w = int(grid[0]), int(grid[1])
    if not (1 <= h <= size[0] and 1 <= w <= size[1]):
        raise ValueError(
            f"`{owner}`: expected `grid` between (1, 1) and the image size {size}, but got {(h, w)}."
        )
    return (h, w)


def _check_directions(directions: object, *, owner: str) -> str | Tensor:
    if isinstance(directions, Tensor):
        if directions.ndim != 2 or not directions.is_floating_point() or directions.shape[0] == 0:
            raise ValueError(
                f"`{owner}`: expected `directions` as a tensor to be a float (k, D) matrix of "
                f"embedding directions (one per row), but got {describe(directions)}."
            )
        if not torch.isfinite(directions).all():
            raise ValueError(f"`{owner}`: expected finite `directions`, but got NaN or inf.")
        return directions.detach()
    name: Directions = check_literal(
        directions,
        Directions,
        name="directions",
        owner=owner,
        hint="Or pass a (k, D) tensor of directions.",
    )
    return name


def _random_frame(d: int, k: int, seed: int) -> Tensor:
    """``(D, k)`` Haar-random orthonormal columns scaled by ``sqrt(D / k)``: ``E[V V^T] = I``, and
    ``V V^T = I`` exactly when ``k = D``. Drawn on the CPU from a private generator, so the frame
    does not depend on the device and no global RNG is touched."""
    g = torch.Generator().manual_seed(int(seed))
    gauss = torch.randn(d, k, generator=g, dtype=torch.float64)
    q: Tensor
    r: Tensor
    q, r = torch.linalg.qr(gauss)
    signs = torch.sign(torch.diagonal(r))
    q = q * torch.where(signs == 0, torch.ones_like(signs), signs)  # the Haar measure's sign fix
    return (q * math.sqrt(d / k)).float()


def _principal_frame(z: Tensor, k: int) -> Tensor:
    """``(D, k)`` leading right singular vectors of the uncentred ``(N, D)`` embeddings: the
    directions that carry most of the dot products between them. ``full_matrices`` completes the
    basis, so ``k = D`` is an orthonormal basis even when ``N < D``."""
    vh: Tensor = torch.linalg.svd(z.double(), full_matrices=True)[2]
    return vh[:k].T.float()


# --------------------------------------------------------------------------------------------------
# Public methods


def point_to_point(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    layer: LayerSpec = "auto",
    similarity: InteractionSimilarity = "cosine",
    prefix_tokens: NonNegativeInt | None = None,
    batch_size: PositiveInt | None = None,
) -> PairInteraction:
    """Point-to-point interactions at a feature layer (Zhu et al., IEEE TIP 2021).

    With per-position embedding contributions ``z_i = sum_c A_ic * dz / dA_ic`` at the layer
    (gradient x activation, one backward per embedding coordinate),
    ``interaction[i, j] = <z1_i, z2_j>`` for ``"dot"`` and ``<z1_i, z2_j> / (|z1| |z2|)`` for
    ``"cosine"``.

    **Exact** when the map from the layer to the embedding is linear with no bias, e.g. global
    average pooling and a bias-free linear head: then ``z_i = W A_i / (h w)``, the paper's
    activation decomposition ``s = sum_ij A1_i^T W^T W A2_j / (h w)^2``, and the interactions of a
    pair sum to its similarity. **Gradient-linearised** otherwise (ReLU or a bias in the head, a
    non-linear pooling): the contributions are the first-order expansion of ``z`` at the layer and
    the interactions sum to :attr:`PairInteraction.total`, not exactly to ``sim``. Zhu et al.
    derive the decomposition for global average pooling and a linear head; the gradient form
    extends it to any head. It equals ``bilrp(level="layer", k=D)`` up to float rounding.

    Token layers ``(N, T, D)`` are reshaped to their patch grid after dropping ``prefix_tokens``
    leading tokens (class and register tokens). A class token carries its own share of the
    embedding, which no patch position receives; a model that embeds with the class token of the
    *last* block gives all-zero interactions at that block's patch tokens (pick an earlier block).

    Args:
        model: an ``nn.Module`` or callable mapping ``(B, C, H, W)`` images to ``(B, D)``.
        x1: ``(B, C, H, W)`` first images of the pairs.
        x2: ``(B, C, H, W)`` second images.
        layer: ``"auto"`` (default: the last layer with a spatial map or patch tokens that the
            similarity depends on, as for the class-activation methods, the layer where the paper
            decomposes), a dotted module name such as ``"layer4"``, or a module. See
            :func:`lightning_explain.methods.resolve_layer`.
        similarity: ``"cosine"`` (default, the package's and the paper's similarity) or ``"dot"``.
        prefix_tokens: leading tokens of a token layer that are not patches. Default ``None``:
            0 or 1 (a class token), inferred from the token count and the input's aspect ratio;
            pass e.g. 5 for a ViT with a class token and 4 register tokens.
        batch_size: most images per forward (both views of ``batch_size // 2`` pairs). Default
            ``None``: chosen from the device's memory (see
            :meth:`lightning_explain._core.PairContext.chunk_size`, ``autograd=True``).

    Returns:
        :class:`PairInteraction` on the layer's grid, ``interaction (B, h*w, h*w)``.

    Raises:
        ValueError: for malformed images, an unknown or unusable layer, an unknown similarity or
            a token count that forms no grid.
        TypeError: for options of the wrong type.

    Cost: per chunk one forward with autograd and one batched backward of the ``D`` embedding
    coordinates to the layer (``torch.autograd.grad(..., is_grads_batched=True)``, split into
    blocks when ``D`` times the layer's activations exceed 256 MiB; one backward per coordinate
    for a model vmap cannot batch). The backward traverses only the part of the model after the
    layer, but it does ``D`` vector-Jacobian products' work: cheap after a pooling and a small
    head, expensive at an early layer (``benchmarks/bench_correspondence.py`` measures it).
    ``layer="auto"`` adds, the first time for a model and input shape, one forward of one pair and
    a few partial backwards (:func:`lightning_explain.methods.resolve_layer`).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> x1, x2 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> r = point_to_point(net, x1, x2, layer="0", similarity="dot")
        >>> tuple(r.interaction.shape), r.grid1
        ((2, 16, 16), (4, 4))
        >>> bool(torch.allclose(r.total, r.sim, atol=1e-5))
        True
    """
    owner = "point_to_point"
    check_layer(layer, owner=owner)
    sim, batch, prefix = _check_common(
        owner, similarity=similarity, batch_size=batch_size, prefix_tokens=prefix_tokens
    )
    with pair_context(model, x1, x2, similarity=sim, owner=owner) as ctx:
        site = _layer_site(ctx, model, layer, prefix)
        return _interactions(
            ctx, site, lambda d, device: None, similarity=sim, batch_size=batch, owner=owner
        )


def bilrp(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    level: Level = "pixel",
    grid: Union[PositiveInt, tuple[int, int]] = 8,
    layer: LayerSpec = "auto",
    k: PositiveInt = 32,
    directions: Union[Directions, Tensor] = "random",
    similarity: InteractionSimilarity = "cosine",
    seed: NonNegativeInt = 0,
    prefix_tokens: NonNegativeInt | None = None,
    batch_size: PositiveInt | None = None,
) -> PairInteraction:
    """BiLRP-style second-order gradient x input on ``k`` projections of the embedding.

    For directions ``v_1 .. v_k`` and the projected embeddings ``phi_m(x) = <v_m, f(x)>``::

        R = sum_m (x1 * grad phi_m(x1)) (x2 * grad phi_m(x2))^T     (/ |z1| |z2| for cosine)

    where each gradient x input is summed over channels and, at ``level="pixel"``, pooled (summed)
    into the cells of a ``grid`` of pixel patches; at ``level="layer"`` it is taken at a feature
    layer as in :func:`point_to_point`. With an orthonormal basis of all ``D`` directions (``k >=
    D``) and a model that is linear with no bias from the site to the embedding, the interactions
    of a pair sum to its similarity; with ``k < D`` they approximate the similarity of the
    projected embeddings.

    Deviations from Eberle et al.: relevance is plain gradient x input (their LRP-0 rule on a
    bias-free ReLU network; their LRP-gamma rules are not implemented), and the embedding is
    projected onto ``k`` directions instead of propagating all ``D`` output features, which makes
    the cost ``k`` rather than ``D`` backwards per image.

    Args:
        model: an ``nn.Module`` or callable mapping ``(B, C, H, W)`` images to ``(B, D)``.
        x1: ``(B, C, H, W)`` first images of the pairs.
        x2: ``(B, C, H, W)`` second images.
        level: ``"pixel"`` (default: the paper's input-level explanation, independent of the
            architecture) or ``"layer"`` (cheaper: the backwards stop at ``layer``).
        grid: ``level="pixel"`` only: cells per side (an int) or ``(h, w)``. Default 8: 64
            positions, 4096 interactions per pair, about the 7 x 7 grid of a ResNet's last stage,
            coarse enough that every cell holds an object part and the lines of a rendering stay
            readable. The cells partition the image (see
            :func:`lightning_explain.correspondence.cell_index_map`).
        layer: ``level="layer"`` only: as in :func:`point_to_point`. Default ``"auto"``.
        k: number of directions, capped at ``D``. Default 32: the cost is ``k`` backwards per
            image; on the circular-shift check of the docs (``D = 64``) random frames place the
            best match of 28% / 69% / 94% / 99% of the positions exactly at k = 8 / 16 / 32 / 64
            (``docs/correspondence.md``). ``k >= D`` is the full interaction.
        directions: ``"random"`` (default: a Haar-random orthonormal ``k``-frame scaled by
            ``sqrt(D / k)``, an unbiased estimate of the full ``k = D`` interaction, drawn from a
            private generator seeded with ``seed``), ``"principal"`` (the ``k`` leading right
            singular vectors of the uncentred embeddings of all ``2B`` images of the call, of
            the normalised embeddings for cosine) or a ``(k, D)`` tensor of directions (rows,
            used as they are). Why random by default: the principal directions carry the dot
            products between the *embeddings* (for ``k >= 2B`` the total is exact), but the
            per-position contributions that tell positions apart lie largely outside that span,
            so the matches suffer (43% exact at k = 16 on the check above, against 69% for
            random). Use ``"principal"`` when the marginals and the total matter more than the
            matches.
        similarity: ``"cosine"`` (default) or ``"dot"``.
        seed: seed of ``directions="random"``. Default 0: the same frame in every call, so
            results of a training run are comparable over epochs.
        prefix_tokens: token layers only; see :func:`point_to_point`.
        batch_size: most images per forward; see :func:`point_to_point`.

    Returns:
        :class:`PairInteraction` on the pixel grid (or the layer's grid).

    Raises:
        ValueError: for malformed images, a bad ``grid``, an unknown ``level``, ``directions`` or
            similarity, directions of the wrong width, or an unusable layer.
        TypeError: for options of the wrong type.

    Cost: per image one forward with autograd and ``k`` backwards (to the input at
    ``level="pixel"``, to the layer at ``level="layer"``); ``"principal"`` adds one forward
    without autograd per image (the embeddings the directions come from). Memory: one chunk's
    graph, kept across its ``k`` backwards, plus the ``(k, n, P)`` contributions.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> conv = nn.Conv2d(3, 8, 4, stride=4, bias=False)  # bias-free: the total is exact
        >>> net = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> x1, x2 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> r = bilrp(net, x1, x2, grid=4, k=8, directions="principal", similarity="dot")
        >>> tuple(r.interaction.shape), bool(torch.allclose(r.total, r.sim, atol=1e-4))
        ((2, 16, 16), True)
    """
    owner = "bilrp"
    level = check_literal(level, Level, name="level", owner=owner)
    check_layer(layer, owner=owner)
    k = check_positive_int(k, name="k", owner=owner)
    seed = check_int(seed, name="seed", owner=owner, minimum=0)
    how = _check_directions(directions, owner=owner)
    sim, batch, prefix = _check_common(
        owner, similarity=similarity, batch_size=batch_size, prefix_tokens=prefix_tokens
    )
    with pair_context(model, x1, x2, similarity=sim, owner=owner) as ctx:
        if level == "pixel":
            site = _Site(None, "the input", _check_grid(grid, ctx.size, owner=owner), None)
        else:
            site = _layer_site(ctx, model, layer, prefix)
        principal: Tensor | None = None
        if isinstance(how, str) and how == "principal":
            chunk = ctx.chunk_size(batch)
            z = ctx.embed_chunked(torch.cat([ctx.x1, ctx.x2]), chunk, autocast=False).float()
            if sim == "cosine":
                z = z / torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp(min=1e-12)
            principal = _principal_frame(z, min(k, int(z.shape[1])))
        cache: dict[str, Tensor] = {}

        def frame(d: int, device: torch.device) -> Tensor:
            if "v" not in cache:
                if isinstance(how, Tensor):
                    if how.shape[1] != d:
                        raise ValueError(
                            f"`{owner}`: expected `directions` of shape (k, {d}) for the model's "
                            f"{d}-dimensional embedding, but got {tuple(how.shape)}."
                        )
                    cache["v"] = how.T.float()
                elif principal is not None:
                    cache["v"] = principal
                else:
                    cache["v"] = _random_frame(d, min(k, d), seed)
            return cache["v"].to(device)

        return _interactions(ctx, site, frame, similarity=sim, batch_size=batch, owner=owner)


def explain_interactions(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    method: str = "point_to_point",
    **options: Any,
) -> PairInteraction:
    """Explain which positions of ``x1`` the model matches with which positions of ``x2``.

    The one call contract of the interaction methods (``list_interaction_methods()`` names them).

    Args:
        model: an ``nn.Module`` or callable mapping ``(B, C, H, W)`` images to ``(B, D)``.
        x1: ``(B, C, H, W)`` first images of the pairs.
        x2: ``(B, C, H, W)`` second images.
        method: a registered name, ``"point_to_point"`` (default) or ``"bilrp"``.
        **options: the method's keyword options.

    Returns:
        :class:`PairInteraction`.

    Raises:
        ValueError: for an unknown method (the message lists the valid names) or a bad option
            value.
        TypeError: for an unknown option (the message lists the method's options).
    """
    fn = interaction_method_info(method).load()
    check_signature_options(
        fn, options, owner="explain_interactions", what=f"interaction method {method!r}"
    )
    return fn(model, x1, x2, **options)
