"""Class-activation explanations of a pair: Grad-CAM for pairs and Interaction-CAM.

Both methods read the activations ``A_i`` of one layer of the encoder for each image of the pair and
the gradients ``G_i = d s / d A_i`` of the pair similarity ``s = similarity(f(x1), f(x2))``, then sum
activation times positive gradient over channels. The encoder runs **once** on
``torch.cat([x1, x2])`` (a ``(2B, C, H, W)`` batch), so a forward hook on a shared encoder sees both
images; eval mode (see :func:`lightning_explain._core.pair_context`) keeps the pairs independent.

Layers are given as a dotted module name, a module, or ``"auto"`` (see :func:`resolve_layer`). A layer
may output a ``(B, C, h, w)`` feature map or ``(B, N, D)`` tokens of a vision transformer, which are
reshaped to ``(B, D, h, w)`` after dropping a class token.

Reference:
    [0] Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive Learning",
    IEEE TIP, arXiv 2206.09753. Section "Class-activation methods"; code ``fawazsammani/explain-cl``.
"""

from __future__ import annotations

import difflib
import math
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
from torch import Tensor, nn

from lightning_explain._checks import check_literal
from lightning_explain._core import (
    Model,
    PairContext,
    check_embedding,
    check_pair,
    pair_context,
    removable_hooks,
)
from lightning_explain.explanation import PairExplanation
from lightning_explain.similarity import SimilarityFn

__all__ = [
    "LayerCapture",
    "LayerSpec",
    "Reduction",
    "capture_layer",
    "first_tensor",
    "gradcam",
    "interaction_cam",
    "list_feature_layers",
    "resolve_layer",
]

LayerSpec = Union[str, nn.Module]
"""A layer: a dotted submodule name such as ``"features.7"``, an ``nn.Module``, or ``"auto"``."""

Reduction = Literal["mean", "max", "attn"]
"""How Interaction-CAM pools each image's activations into a channel vector."""


# A token count N is accepted as an (h, w) grid when h/w is within this factor of the input's H/W.
_GRID_ASPECT_TOLERANCE = math.log(1.5)

# Interaction-CAM's gradient interaction builds the (B, D, D) matrix M in row blocks of at most this
# many elements, so its memory stays bounded for wide encoders (D = 4096 for SimCLRv2-2x).
_GRAD_INTERACT_BLOCK = 2**24

# Number of names shown when an error lists every named module.
_MAX_LISTED = 40

# ``layer="auto"`` resolutions, per root module (held weakly) and per input shape, dtype, device,
# similarity and the other modules the callable reaches: detection costs a forward and a few
# backwards, as much as a CAM itself, and the layer must not drift between evaluations of a run.
_AUTO_LAYERS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[object, ...], _Target]] = (
    weakref.WeakKeyDictionary()
)


# --------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class LayerCapture:
    """Activations and similarity gradients of one layer for a batch of pairs (all detached).

    Attributes:
        a1: ``(B, D, h, w)`` activations of the first images (tokens reshaped to a grid).
        a2: ``(B, D, h, w)`` activations of the second images.
        g1: ``(B, D, h, w)`` gradient of the pair similarity with respect to ``a1``.
        g2: ``(B, D, h, w)`` gradient of the pair similarity with respect to ``a2``.
        sim: ``(B,)`` pair similarity.
        layer: the layer's dotted name (or ``<ClassName>`` for a module without a name).
    """

    a1: Tensor
    a2: Tensor
    g1: Tensor
    g2: Tensor
    sim: Tensor
    layer: str


@dataclass(frozen=True)
class _Target:
    """A resolved layer; ``grid`` is ``(prefix_tokens, h, w)`` for token layers found by ``auto``."""

    module: nn.Module
    name: str
    grid: tuple[int, int, int] | None


@dataclass(frozen=True)
class _Candidate:
    """One module output seen by the detection forward that qualifies as a spatial layer."""

    module: nn.Module
    tensor: Tensor
    grid: tuple[int, int, int] | None  # None: a 4-D map


# --------------------------------------------------------------------------------------------------
# Small helpers


def first_tensor(output: Any) -> tuple[Tensor, Callable[[Tensor], Any]] | None:
    """The tensor a layer output stands for, and a function rebuilding the output around a new one.

    A tensor stands for itself; a tuple or list (e.g. ``nn.MultiheadAttention``'s ``(out, weights)``)
    stands for its first tensor element. Anything else has no tensor (``None``).
    """
    if isinstance(output, Tensor):
        return output, lambda t: t
    if isinstance(output, (tuple, list)):
        for i, item in enumerate(output):
            if isinstance(item, Tensor):

                def rebuild(t: Tensor, i: int = i) -> Any:
                    items = list(output)
                    items[i] = t
                    if isinstance(output, list):
                        return items
                    if hasattr(output, "_fields"):  # namedtuple
                        return type(output)(*items)
                    return tuple(items)

                return item, rebuild
    return None


def _unique_modules(roots: Iterable[nn.Module]) -> list[nn.Module]:
    seen: set[int] = set()
    found: list[nn.Module] = []
    for root in roots:
        for m in root.modules():
            if id(m) not in seen:
                seen.add(id(m))
                found.append(m)
    return found


def _module_names(roots: list[nn.Module]) -> dict[int, str]:
    """``id(module) -> dotted name`` (first name found; the roots themselves are unnamed)."""
    names: dict[int, str] = {}
    for root in roots:
        for name, m in root.named_modules():
            if name and id(m) not in names:
                names[id(m)] = name
    return names


def _display_name(module: nn.Module, names: dict[int, str]) -> str:
    return names.get(id(module), f"<{type(module).__name__}>")


def _infer_grid(n_tokens: int, size: tuple[int, int]) -> tuple[int, int, int] | None:
    """Split ``n_tokens`` into ``(prefix, h, w)``: ``prefix`` in {1, 0} class tokens, ``h * w`` patches.

    The ``(h, w)`` factorisation whose aspect ratio is closest to the input's ``H / W`` wins (a perfect
    square for square inputs); ``None`` if none is within a factor 1.5 of it or the grid is 1x1.
    """
    height, width = size
    target = math.log(height / width)
    best: tuple[int, int, int] | None = None
    best_err = math.inf
    for prefix in (1, 0):
        n = n_tokens - prefix
        if n < 2:
            continue
        for h in range(1, math.isqrt(n) + 1):
            if n % h:
                continue
            for gh, gw in ((h, n // h), (n // h, h)):
                if gh > height or gw > width:
                    continue
                err = abs(math.log(gh / gw) - target)
                if err < best_err - 1e-12:
                    best, best_err = (prefix, gh, gw), err
    if best is None or best_err > _GRID_ASPECT_TOLERANCE:
        return None
    return best


def _embed_views(ctx: PairContext, x: Tensor) -> Tensor:
    """Embed the ``(2n, C, H, W)`` batch ``cat([views1, views2])`` in one forward.

    The output is checked per view, so an error names the shapes of the caller's ``x1`` and ``x2``
    rather than of the concatenated batch.
    """
    z = ctx.model(x)
    n = x.shape[0] // 2
    if isinstance(z, Tensor) and z.ndim >= 1 and z.shape[0] == x.shape[0]:
        check_embedding(z[:n], x[:n], owner=ctx.owner)
        check_embedding(z[n:], x[n:], owner=ctx.owner)
        return z
    return check_embedding(z, x, owner=ctx.owner)


# --------------------------------------------------------------------------------------------------
# Layer detection and resolution


def _detect(ctx: PairContext) -> tuple[list[_Candidate], Tensor]:
    """Run one pair through the model with a forward hook on every module; return the spatial
    candidates in forward-completion order and the ``(1,)`` similarity (with its graph).

    A candidate has batch size 2 (or batch size 1 from a module run once per image) and is either a
    4-D map with more than one position or ``(2, N, D)`` tokens. After a 4-D map of grid ``(h, w)``
    (a patch embedding), tokens must number ``h*w`` or ``h*w + 1``; with no 4-D map before them,
    ``N`` or ``N - 1`` must factor into a grid with the input's aspect ratio (:func:`_infer_grid`).
    """
    x = torch.cat([ctx.x1[:1], ctx.x2[:1]]).requires_grad_(True)
    firings: list[tuple[nn.Module, Tensor]] = []

    def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        found = first_tensor(output)
        if found is not None:
            firings.append((module, found[0]))

    with removable_hooks() as handles:
        for m in _unique_modules(ctx.modules):
            handles.append(m.register_forward_hook(record))
        z = _embed_views(ctx, x)
    sim = ctx.similarity(z[:1], z[1:])

    # A model may split the batch and run a module once per image (two firings of batch 1).
    per_module: dict[int, list[int]] = {}
    for module, t in firings:
        per_module.setdefault(id(module), []).append(int(t.shape[0]) if t.ndim else 0)
    candidates: list[_Candidate] = []
    last_grid: tuple[int, int] | None = None
    for module, t in firings:
        if t.ndim == 0 or not (t.shape[0] == 2 or per_module[id(module)] == [1, 1]):
            continue
        if t.ndim == 4 and t.shape[2] * t.shape[3] > 1:
            candidates.append(_Candidate(module, t, None))
            last_grid = (int(t.shape[2]), int(t.shape[3]))
        elif t.ndim == 3:
            grid: tuple[int, int, int] | None
            if last_grid is not None:
                prefix = int(t.shape[1]) - last_grid[0] * last_grid[1]
                grid = (prefix, *last_grid) if prefix in (0, 1) else None
            else:
                grid = _infer_grid(int(t.shape[1]), ctx.size)
            if grid is not None:
                candidates.append(_Candidate(module, t, grid))
    return candidates, sim


def _auto(ctx: PairContext) -> _Target:
    """:func:`_detect_auto`, computed once per model and input: cached under the first module
    the model reaches, for the image shape, dtype, device, similarity and the other modules; a
    cached layer that is no longer part of the model is detected again."""
    if not ctx.modules:
        return _detect_auto(ctx)
    root, others = ctx.modules[0], ctx.modules[1:]
    slot = (
        tuple(ctx.x1.shape[1:]),
        ctx.x1.dtype,
        str(ctx.x1.device),
        ctx.similarity,
        tuple(id(m) for m in others),
    )
    cached = _AUTO_LAYERS.get(root, {}).get(slot)
    if cached is not None and any(m is cached.module for r in ctx.modules for m in r.modules()):
        return cached
    target = _detect_auto(ctx)
    _AUTO_LAYERS.setdefault(root, {})[slot] = target
    return target


def _detect_auto(ctx: PairContext) -> _Target:
    """The last spatial candidate whose map the similarity depends on (non-zero gradient)."""
    candidates, sim = _detect(ctx)
    names = _module_names(ctx.modules)
    if not candidates:
        listed = _all_names(ctx.modules)
        raise ValueError(
            f"`{ctx.owner}`: `layer='auto'` found no module producing a (B, C, h, w) feature map "
            f"with h*w > 1 or (B, N, D) patch tokens for inputs of size {ctx.size}. Pass `layer=` "
            f"a module or one of the named modules: {listed}."
        )
    chosen = candidates[-1]
    if sim.requires_grad:
        for c in reversed(candidates):
            if not c.tensor.requires_grad:
                continue
            (g,) = torch.autograd.grad(sim.sum(), c.tensor, retain_graph=True, allow_unused=True)
            if g is None:
                continue
            spatial = g if c.grid is None else g[:, c.grid[0] :]
            if bool((spatial != 0).any()):
                chosen = c
                break
    return _Target(chosen.module, _display_name(chosen.module, names), chosen.grid)


def _all_names(roots: list[nn.Module]) -> str:
    names = [n for root in roots for n, _ in root.named_modules() if n]
    if len(names) > _MAX_LISTED:
        return ", ".join(names[:_MAX_LISTED]) + f", ... ({len(names) - _MAX_LISTED} more)"
    return ", ".join(names) if names else "(none)"


def _candidate_names(ctx: PairContext) -> list[str]:
    candidates, _ = _detect(ctx)
    names = _module_names(ctx.modules)
    listed: list[str] = []
    for c in candidates:
        name = names.get(id(c.module))
        if name is not None and name not in listed:
            listed.append(name)
    return listed


def _resolve(ctx: PairContext, layer: object) -> _Target:
    """Turn a layer spec into a module (see :func:`resolve_layer`)."""
    names = _module_names(ctx.modules)
    if isinstance(layer, nn.Module):
        return _Target(layer, _display_name(layer, names), None)
    if not isinstance(layer, str):
        raise TypeError(
            f"`{ctx.owner}`: expected `layer` to be 'auto', a dotted module name such as "
            f"'features.7', or an nn.Module, but got {type(layer).__name__}."
        )
    if layer == "auto":
        return _auto(ctx)
    if not ctx.modules:
        raise ValueError(
            f"`{ctx.owner}`: cannot resolve `layer={layer!r}`: `model` is a callable without any "
            f"reachable nn.Module. Pass the layer module itself, e.g. `layer=encoder.layer4`."
        )
    matches: dict[int, nn.Module] = {}
    for root in ctx.modules:
        try:
            m = root.get_submodule(layer)
        except AttributeError:
            continue
        matches.setdefault(id(m), m)
    if len(matches) > 1:
        raise ValueError(
            f"`{ctx.owner}`: `layer={layer!r}` names {len(matches)} different modules among the "
            f"{len(ctx.modules)} modules the model callable uses. Pass the module itself instead."
        )
    if not matches:
        candidates = _candidate_names(ctx)
        pool = candidates or [n for root in ctx.modules for n, _ in root.named_modules() if n]
        close = difflib.get_close_matches(layer, pool, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listed = (
            f"Layers with spatial outputs: {', '.join(candidates)}."
            if candidates
            else f"No layer produces a spatial map; named modules: {_all_names(ctx.modules)}."
        )
        raise ValueError(f"`{ctx.owner}`: unknown layer {layer!r}.{hint} {listed}")
    (module,) = matches.values()
    return _Target(module, layer, None)


def _probe_pair(x: Tensor) -> tuple[Tensor, Tensor]:
    """A pair for layer detection: the first two images, or an image and its horizontal flip."""
    if x.shape[0] > 1:
        return x[:1], x[1:2]
    return x[:1], x[:1].flip(-1)


def resolve_layer(model: Model, layer: LayerSpec, x: Tensor) -> nn.Module:
    """Resolve a layer spec to the module that class-activation methods hook.

    Args:
        model: an ``nn.Module`` or callable mapping ``(B, C, H, W)`` images to ``(B, D)`` embeddings.
            For a callable that is not a module (e.g. ``lambda x: enc(x)``), names are looked up in
            the modules it reaches (closure, bound method owner, ``functools.partial`` arguments).
        layer: a dotted name (``"features.7"``, looked up with ``get_submodule``), an ``nn.Module``
            (returned as is), or ``"auto"``: the last module, in forward-completion order, that
            outputs a ``(B, C, h, w)`` map with ``h*w > 1`` or ``(B, N, D)`` patch tokens (see
            :func:`list_feature_layers`) and whose output receives a non-zero similarity gradient
            on the detection pair. When no candidate receives gradient the last candidate is taken.
            The resolution is cached per model object and input shape, dtype, device and
            similarity: a training run keeps one layer across evaluations, and repeated calls
            do not pay for detection again.
        x: ``(B, C, H, W)`` sample images. The detection pair is ``(x[0], x[1])``, or ``x[0]`` and its
            horizontal flip when ``B == 1``.

    Returns:
        The layer module.

    Raises:
        ValueError: unknown name (the message lists the spatial layers), an ambiguous name, or no
            spatial layer for ``"auto"``.
        TypeError: ``layer`` is neither a string nor a module.

    Cost: none for a name or module; one forward and at most a few partial backwards of one pair
    for ``"auto"``, the first time for a model and input shape.
    """
    x, _ = check_pair(x, x, owner="resolve_layer")
    xa, xb = _probe_pair(x)
    with pair_context(model, xa, xb, owner="resolve_layer") as ctx:
        return _resolve(ctx, layer).module


def list_feature_layers(model: Model, x: Tensor) -> list[str]:
    """Names of the layers a class-activation method can explain, in forward-completion order.

    A layer qualifies when, for a pair of ``x``'s images, it outputs a ``(B, C, h, w)`` map with
    ``h*w > 1`` (so ``AdaptiveAvgPool2d(1)`` outputs are excluded) or ``(B, N, D)`` tokens forming a
    grid: ``N = h*w`` or ``h*w + 1`` for the grid of the last 4-D map before it (a patch embedding),
    or, with no 4-D map before, ``N`` or ``N - 1`` factoring into a grid with the input's aspect
    ratio. A module output that is a tuple stands for its first tensor.

    Args:
        model: an ``nn.Module`` or callable mapping ``(B, C, H, W)`` images to ``(B, D)`` embeddings.
        x: ``(B, C, H, W)`` sample images (one pair is run).

    Returns:
        Dotted names (modules without a name, such as the model itself, are left out).

    Cost: one forward of one pair.
    """
    x, _ = check_pair(x, x, owner="list_feature_layers")
    xa, xb = _probe_pair(x)
    with pair_context(model, xa, xb, owner="list_feature_layers") as ctx:
        return _candidate_names(ctx)


# --------------------------------------------------------------------------------------------------
# Capture of activations and gradients


def _select_firings(outs: list[Tensor], n: int, target: _Target, owner: str) -> list[Tensor]:
    """The layer outputs that together cover the ``n = 2B`` images, in batch order."""
    if len(outs) == 1 or all(t.shape[0] == n for t in outs):
        # A module applied several times to the whole batch (a shared block): its last application.
        return [outs[-1]]
    if sum(int(t.shape[0]) for t in outs) == n and len({t.shape[1:] for t in outs}) == 1:
        # The model splits the batch and runs the layer on each part (e.g. once per view).
        return outs
    raise ValueError(
        f"`{owner}`: layer {target.name} ran {len(outs)} times with batch sizes "
        f"{[int(t.shape[0]) for t in outs]} on a batch of {n} images; cannot tell which outputs "
        f"belong to which image. Pass a layer that runs once per image."
    )


def _to_grid(
    a: Tensor, g: Tensor, target: _Target, size: tuple[int, int], owner: str
) -> tuple[Tensor, Tensor]:
    """Bring ``(2B, C, h, w)`` maps or ``(2B, N, D)`` tokens and their gradients to ``(2B, D, h, w)``."""
    if a.ndim == 4:
        return a, g
    n_tokens = int(a.shape[1])
    grid = target.grid
    if grid is None or grid[0] + grid[1] * grid[2] != n_tokens:
        grid = _infer_grid(n_tokens, size)
    if grid is None:
        raise ValueError(
            f"`{owner}`: layer {target.name} outputs tokens of shape {tuple(a.shape)}, but "
            f"{n_tokens} (or {n_tokens - 1} without a class token) does not form a patch grid "
            f"with the input's aspect ratio {size[0]}x{size[1]}. Pick a layer with a "
            f"(B, C, h, w) map or (B, N, D) patch tokens."
        )
    prefix, h, w = grid

    def reshape(t: Tensor) -> Tensor:
        return t[:, prefix:].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

    return reshape(a), reshape(g)


def _capture(ctx: PairContext, target: _Target) -> LayerCapture:
    """One forward of the ``2B`` batch with a hook on the layer, one ``autograd.grad`` of the sum of
    the pair similarities with respect to the layer output."""
    b = ctx.batch
    x = torch.cat([ctx.x1, ctx.x2]).requires_grad_(True)  # gradients even with frozen parameters
    outs: list[Tensor] = []

    def capture(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        found = first_tensor(output)
        if found is None:
            return None
        t, rebuild = found
        outs.append(t)
        # Later layers get a copy, so an in-place op after the layer (ReLU(inplace=True)) cannot
        # overwrite the captured activations.
        return rebuild(t.clone())

    with removable_hooks() as handles:
        handles.append(target.module.register_forward_hook(capture))
        z = _embed_views(ctx, x)
    if not outs:
        raise ValueError(
            f"`{ctx.owner}`: layer {target.name} did not run during the model's forward pass (or "
            f"returned no tensor), so it has no activations to explain. Pick a layer the forward "
            f"pass uses; `list_feature_layers(model, x)` lists them."
        )
    acts = _select_firings(outs, 2 * b, target, ctx.owner)
    if acts[0].ndim not in (3, 4) or sum(int(t.shape[0]) for t in acts) != 2 * b:
        raise ValueError(
            f"`{ctx.owner}`: layer {target.name} outputs shape {tuple(acts[0].shape)} for a batch "
            f"of {2 * b} images; expected a (B, C, h, w) feature map or (B, N, D) tokens with the "
            f"batch dimension first. `list_feature_layers(model, x)` lists the layers that qualify."
        )
    sim = ctx.similarity(z[:b], z[b:])
    if not sim.requires_grad or not all(t.requires_grad for t in acts):
        raise ValueError(
            f"`{ctx.owner}`: the similarity is not differentiable with respect to layer "
            f"{target.name}: the model detaches its output, runs under no_grad, or the layer does "
            f"not depend on the input."
        )
    grads = torch.autograd.grad(sim.sum(), acts, allow_unused=True)
    if any(g is None for g in grads):
        raise ValueError(
            f"`{ctx.owner}`: the embedding does not depend on layer {target.name}, so its gradient "
            f"is undefined. Pick a layer on the path from the input to the embedding."
        )
    a = torch.cat([t.detach() for t in acts]).float()
    g = torch.cat([gr.detach() for gr in grads if gr is not None]).float()
    a, g = _to_grid(a, g, target, ctx.size, ctx.owner)
    return LayerCapture(a[:b], a[b:], g[:b], g[b:], sim.detach().float(), target.name)


def capture_layer(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    layer: LayerSpec = "auto",
    similarity: Union[str, SimilarityFn] = "cosine",
) -> LayerCapture:
    """Activations ``A_i`` of ``layer`` and gradients ``G_i = d s / d A_i`` for a batch of pairs.

    The building block of :func:`gradcam` and :func:`interaction_cam`, exposed for custom CAM
    variants and for checks.

    Args:
        model: an ``nn.Module`` or callable mapping ``(B, C, H, W)`` images to ``(B, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        layer: see :func:`resolve_layer`.
        similarity: ``"cosine"`` (the paper's), ``"dot"``, ``"neg_l2"`` or a callable.

    Returns:
        :class:`LayerCapture` with detached ``(B, D, h, w)`` activations and gradients.

    Cost: one forward and one backward of the ``2B`` batch (plus layer detection for ``"auto"``,
    once per model and input shape).
    """
    with pair_context(model, x1, x2, similarity=similarity, owner="capture_layer") as ctx:
        return _capture(ctx, _resolve(ctx, layer))


# --------------------------------------------------------------------------------------------------
# Maps


def _gradcam_map(a: Tensor, g: Tensor) -> Tensor:
    """``(B, D, h, w), (B, D, h, w) -> (B, h, w)``: ``sum_k A[k] * ReLU(G[k])``."""
    return (a * g.clamp(min=0)).sum(dim=1)


def _pool(a: Tensor, reduction: str) -> Tensor:
    """``(B, D, h, w) -> (B, D)`` channel vector of one image (mean, max or attention pooling)."""
    flat = a.flatten(2)  # (B, D, P)
    if reduction == "mean":
        return flat.mean(dim=2)
    if reduction == "max":
        return flat.amax(dim=2)
    query = flat.mean(dim=2)  # (B, D)
    alpha = torch.einsum("bd,bdp->bp", query, flat).softmax(dim=1)  # no 1/sqrt(D), as the paper
    return torch.einsum("bp,bdp->bd", alpha, flat)


def _grad_interaction(g1: Tensor, g2: Tensor) -> tuple[Tensor, Tensor]:
    """Row and column maxima of ``M = G1^T G2`` (``G_i`` as ``P x D``): two ``(B, D)`` vectors.

    ``M`` is built in row blocks so at most ``_GRAD_INTERACT_BLOCK`` elements exist at once.
    """
    f1, f2t = g1.flatten(2), g2.flatten(2).transpose(1, 2)  # (B, D, P), (B, P, D)
    b, d, _ = f1.shape
    rows = max(1, _GRAD_INTERACT_BLOCK // max(1, b * d))
    row_max: list[Tensor] = []
    col_max = f1.new_full((b, d), -math.inf)
    for start in range(0, d, rows):
        block = torch.bmm(f1[:, start : start + rows], f2t)  # (B, r, D): M[k, l], k in the block
        row_max.append(block.amax(dim=2))
        col_max = torch.maximum(col_max, block.amax(dim=1))
    return torch.cat(row_max, dim=1), col_max


def _interaction_maps(
    cap: LayerCapture, reduction: str, grad_interact: bool
) -> tuple[Tensor, Tensor]:
    omega = (_pool(cap.a1, reduction) * _pool(cap.a2, reduction))[:, :, None, None]  # (B, D, 1, 1)
    if grad_interact:
        v1, v2 = _grad_interaction(cap.g1, cap.g2)
        t1, t2 = v1[:, :, None, None], v2[:, :, None, None]
    else:
        t1, t2 = cap.g1, cap.g2
    return _gradcam_map(cap.a1 * omega, t1), _gradcam_map(cap.a2 * omega, t2)


# --------------------------------------------------------------------------------------------------
# Public methods


def gradcam(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    layer: LayerSpec = "auto",
    similarity: Union[str, SimilarityFn] = "cosine",
) -> PairExplanation:
    """Grad-CAM adapted to a pair (the paper's baseline CAM).

    ``Map_i(h, w) = sum_k A_i[k, h, w] * ReLU(G_i[k, h, w])`` with ``G_i = d s / d A_i`` and
    ``s = similarity(f(x1), f(x2))``: an element-wise product of activations and positive
    gradients, not the classic spatially averaged channel weights. The low-resolution maps are
    bilinearly upsampled to the input size, clamped at 0 and scaled to max 1 (the paper has no final
    ReLU; with a ReLU-activated layer the maps are already ``>= 0``).

    Args:
        model: an ``nn.Module`` or callable mapping ``(B, C, H, W)`` images to ``(B, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images of the pairs.
        x2: ``(B, C, H, W)`` second images.
        layer: ``"auto"`` (default; the last spatial layer the similarity depends on, the last ResNet
            stage for a ResNet, as in the paper), a dotted name such as ``"layer4"``, or a module.
            See :func:`resolve_layer`. Token layers ``(B, N, D)`` are reshaped to a grid.
        similarity: ``"cosine"`` (default, the paper's), ``"dot"``, ``"neg_l2"`` or a callable.

    Returns:
        :class:`PairExplanation` with ``h1``, ``h2`` of shape ``(B, H, W)`` and ``sim`` ``(B,)``.

    Raises:
        ValueError: malformed images, an unknown or unusable layer (the message lists candidates).
        TypeError: ``layer`` of a wrong type.

    Cost: one forward and one backward of the ``2B`` batch; ``"auto"`` adds one forward and
    usually one partial backward of one pair, the first time for a model and input shape (the
    resolved layer is then cached for the life of the model object).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> e = gradcam(net, torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), layer="1")
        >>> tuple(e.h1.shape)
        (2, 32, 32)
    """
    with pair_context(model, x1, x2, similarity=similarity, owner="gradcam") as ctx:
        cap = _capture(ctx, _resolve(ctx, layer))
        return ctx.finish(_gradcam_map(cap.a1, cap.g1), _gradcam_map(cap.a2, cap.g2), cap.sim)


def interaction_cam(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    *,
    layer: LayerSpec = "auto",
    reduction: Reduction = "mean",
    grad_interact: bool = False,
    similarity: Union[str, SimilarityFn] = "cosine",
) -> PairExplanation:
    """Interaction-CAM: Grad-CAM on activations re-weighted by the channels active in both images.

    A joint channel weight ``omega = pool(A1) * pool(A2)`` (``(B, D)``, the same for both images)
    re-weights the activations, ``A~_i = A_i * omega``, and
    ``Map_i = sum_k A~_i[k] * ReLU(T_i[k])`` where the gradient term ``T_i`` is ``G_i``, or with
    ``grad_interact=True`` the row-wise (``i = 1``) and column-wise (``i = 2``) maxima of
    ``M = G1^T G2`` (``G_i`` flattened to ``(h*w, D)``, ``M`` is ``D x D``), broadcast over space.

    Args:
        model: an ``nn.Module`` or callable mapping ``(B, C, H, W)`` images to ``(B, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images of the pairs.
        x2: ``(B, C, H, W)`` second images.
        layer: ``"auto"`` (default), a dotted name or a module; see :func:`resolve_layer`.
        reduction: ``"mean"`` (default; global average pool), ``"max"`` (global max pool) or
            ``"attn"``: ``q = mean over positions of A``, ``alpha = softmax over positions of
            q . A[:, h, w]`` (no ``1/sqrt(D)``), ``pool = sum alpha * A``.
        grad_interact: use the paper's gradient interaction ("IntGradMax") instead of the spatial
            gradients. The notebook pairs it with ``"max"`` and ``"attn"``.
        similarity: ``"cosine"`` (default, the paper's), ``"dot"``, ``"neg_l2"`` or a callable.

    Returns:
        :class:`PairExplanation` with ``h1``, ``h2`` of shape ``(B, H, W)`` and ``sim`` ``(B,)``.

    Raises:
        ValueError: unknown ``reduction``, malformed images, or an unknown or unusable layer.
        TypeError: ``grad_interact`` not a bool or ``layer`` of a wrong type.

    Cost: as :func:`gradcam` (one forward and one backward of the ``2B`` batch); ``grad_interact``
    adds a ``(D x h*w) @ (h*w x D)`` product per pair, built in bounded blocks.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> x1, x2 = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
        >>> e = interaction_cam(net, x1, x2, reduction="max", grad_interact=True)
        >>> tuple(e.h2.shape)
        (2, 32, 32)
    """
    check_literal(reduction, Reduction, name="reduction", owner="interaction_cam")
    if not isinstance(grad_interact, bool):
        raise TypeError(
            f"`interaction_cam`: expected `grad_interact` to be a bool, but got {grad_interact!r}."
        )
    with pair_context(model, x1, x2, similarity=similarity, owner="interaction_cam") as ctx:
        cap = _capture(ctx, _resolve(ctx, layer))
        raw1, raw2 = _interaction_maps(cap, reduction, grad_interact)
        return ctx.finish(raw1, raw2, cap.sim)
