"""``evaluate``: every requested pairwise faithfulness metric in shared, chunked forward passes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, Union, overload

import torch
from torch import Tensor

from lightning_explain._core import (
    Model,
    PairContext,
    check_embedding,
    check_positive_int,
    pair_context,
)
from lightning_explain.explanation import PairExplanation
from lightning_explain.methods import method_info
from lightning_explain.metrics._registry import resolve_metrics
from lightning_explain.metrics.functional._common import (
    Comparison,
    Track,
    auc,
    blur,
    perturbation_curves,
    pixel_ranks,
    prepare_map,
    relative_drop,
    resolve_batch_size,
    unpack_explanation,
)
from lightning_explain.metrics.functional.drop_increase import masked_similarities
from lightning_explain.metrics.functional.sensitivity import run_max_sensitivity
from lightning_explain.similarity import SimilarityFn

__all__ = ["evaluate"]

_CURVE_FAMILIES = {
    # key -> (track group, mode)
    "insertion_simultaneous": ("insertion", "simultaneous"),
    "insertion_conditional": ("insertion", "conditional"),
    "deletion_simultaneous": ("deletion", "simultaneous"),
    "deletion_conditional": ("deletion", "conditional"),
    "deletion_simultaneous_corrected": ("corrected", "simultaneous"),
}


@overload
def evaluate(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    explanation: Union[PairExplanation, tuple[Tensor, Tensor], None],
    metrics: Union[str, Iterable[str], None] = ...,
    *,
    similarity: Union[str, SimilarityFn] = ...,
    n_steps: int = ...,
    batch_size: int | None = ...,
    method: str | None = ...,
    method_options: Mapping[str, Any] | None = ...,
    intact: tuple[Tensor, Tensor] | None = ...,
    return_curves: Literal[False] = ...,
) -> dict[str, Tensor]: ...
@overload
def evaluate(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    explanation: Union[PairExplanation, tuple[Tensor, Tensor], None],
    metrics: Union[str, Iterable[str], None] = ...,
    *,
    similarity: Union[str, SimilarityFn] = ...,
    n_steps: int = ...,
    batch_size: int | None = ...,
    method: str | None = ...,
    method_options: Mapping[str, Any] | None = ...,
    intact: tuple[Tensor, Tensor] | None = ...,
    return_curves: Literal[True],
) -> tuple[dict[str, Tensor], dict[str, Tensor]]: ...
def evaluate(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    explanation: Union[PairExplanation, tuple[Tensor, Tensor], None],
    metrics: Union[str, Iterable[str], None] = None,
    *,
    similarity: Union[str, SimilarityFn] = "cosine",
    n_steps: int = 224,
    batch_size: int | None = None,
    method: str | None = None,
    method_options: Mapping[str, Any] | None = None,
    intact: tuple[Tensor, Tensor] | None = None,
    return_curves: bool = False,
) -> Union[dict[str, Tensor], tuple[dict[str, Tensor], dict[str, Tensor]]]:
    """Score an explanation of a batch of pairs with several faithfulness metrics at once.

    All requested insertion/deletion curves of both images are built from one rank tensor per
    map and go through the same chunked forward passes: the conditional keys reuse the perturbed
    images of the simultaneous keys, both directions of a conditional key share one pass, and
    the intact images are embedded once (or not at all, given ``intact``) and stand for the
    unperturbed end of every curve. Keys (see :func:`list_metrics` and
    ``metric_info(key).higher_is_better``):

    * ``insertion_simultaneous`` (higher is better), ``insertion_conditional`` (higher);
    * ``deletion_simultaneous`` (lower), ``deletion_conditional`` (lower),
      ``deletion_simultaneous_corrected`` (lower; our variant without the identical-endpoint
      artifact, see :func:`deletion`);
    * ``average_drop_simultaneous`` / ``_conditional`` (lower), ``average_increase_simultaneous``
      / ``_conditional`` (higher);
    * ``max_sensitivity`` (lower; needs ``method``).

    A conditional score is the mean of both directions: ``x1`` perturbed by ``h1`` with ``x2``
    intact, and ``x2`` perturbed by ``h2`` with ``x1`` intact. Insertion starts from the blurred
    image (k=11, sigma=5); deletion writes zeros. Functional forms with more options:
    :func:`insertion`, :func:`deletion`, :func:`average_drop`, :func:`average_increase`,
    :func:`max_sensitivity`.

    Args:
        model: ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        explanation: a :class:`PairExplanation` or ``(h1, h2)`` with ``(B, h, w)`` maps (smaller
            maps are upsampled bilinearly). May be None when only ``max_sensitivity`` is asked.
        metrics: a key, a list of keys, or None for the default set
            (:data:`DEFAULT_METRICS`: insertion and deletion in both modes, average drop and
            increase in both modes; no max-sensitivity and no corrected deletion).
        similarity: ``"cosine"`` (default, the paper's), ``"dot"``, ``"neg_l2"`` or a callable.
        n_steps: insertion/deletion steps (default 224, the paper's value at 224 px).
        batch_size: images per forward pass. Default None: chosen from the device's memory (CPU:
            a 256 MiB activation budget, at most 256 images: 256 at 32 px, 6 at 224 px; CUDA: a
            quarter of the free memory, at most 1024).
        method: the explanation method, required for ``max_sensitivity``.
        method_options: the options the explanation was computed with (passed to every
            ``explain`` call of ``max_sensitivity``; a ``seed`` here is the method's seed, the
            noise seed is 0; ``similarity`` defaults to this call's ``similarity``).
        intact: the ``(B, D)`` embeddings ``(z1, z2)`` of the unperturbed ``x1`` and ``x2``, if
            the caller has them (e.g. from :func:`lightning_explain.explain`'s forward pass): they
            are then not computed again. They must come from the same ``model`` in eval mode.
        return_curves: also return the ``(B, n_steps + 1)`` curve of each insertion/deletion key
            (conditional keys: the mean curve of both directions).

    Returns:
        ``{key: (B,) scores}``, or ``(scores, curves)`` with ``return_curves=True``.

    Cost (forwards per pair):
        ``2 * n_steps`` for all insertion keys together (the last step is the intact image),
        the same for the two deletion keys and again for the corrected deletion; 2 for the intact
        images (0 given ``intact``); 2 for the masked images of all average_* keys;
        ``n_samples + 1 = 11`` explanations for max-sensitivity. The default set:
        ``4 * n_steps + 4`` (900 at ``n_steps=224``; ``4 * n_steps + 2`` given ``intact``).

    Raises:
        ValueError: unknown metric (the message lists the valid keys), ``max_sensitivity`` without
            ``method``, malformed images or maps (shape mismatch, NaN), ``n_steps < 1``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_explain.metrics import evaluate
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> x1, x2 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> maps = (torch.rand(2, 16, 16), torch.rand(2, 16, 16))
        >>> scores = evaluate(net, x1, x2, maps, ["insertion_conditional"], n_steps=8)
        >>> tuple(scores["insertion_conditional"].shape)
        (2,)
    """
    owner = "evaluate"
    keys = resolve_metrics(metrics, owner=owner)
    n_steps = check_positive_int(n_steps, name="n_steps", owner=owner)
    if "max_sensitivity" in keys and method is None:
        raise ValueError(
            "`evaluate`: 'max_sensitivity' re-explains noisy copies of the pairs, so it needs the "
            "explanation method: pass `method=` (and `method_options=` if the explanation used "
            "non-default options), or leave 'max_sensitivity' out of `metrics`."
        )
    if method_options is not None and not isinstance(method_options, Mapping):
        raise TypeError(
            f"`{owner}`: expected `method_options` to be a mapping or None, but got "
            f"{type(method_options).__name__}."
        )
    map_keys = [k for k in keys if k != "max_sensitivity"]
    scores: dict[str, Tensor] = {}
    curves: dict[str, Tensor] = {}
    if map_keys:
        if explanation is None:
            raise ValueError(
                f"`{owner}`: metrics {map_keys} score the maps, so `explanation` is required "
                "(a PairExplanation or (h1, h2)), but got None."
            )
        h1, h2 = unpack_explanation(explanation, owner=owner)
        with pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx:
            chunk = resolve_batch_size(batch_size, ctx)
            map1 = prepare_map(h1, ctx.x1, name="h1", owner=owner)
            map2 = prepare_map(h2, ctx.x2, name="h2", owner=owner)
            known = None if intact is None else _check_intact(intact, ctx)
            _scores, _curves = _map_metrics(ctx, map_keys, map1, map2, n_steps, chunk, known)
        scores.update(_scores)
        curves.update(_curves)
    if "max_sensitivity" in keys:
        options = dict(method_options or {})
        if isinstance(method, str) and "similarity" in method_info(method).defaults():
            options.setdefault("similarity", similarity)
        scores["max_sensitivity"] = run_max_sensitivity(model, x1, x2, method, options, owner=owner)
    ordered = {k: scores[k] for k in keys}
    if return_curves:
        return ordered, {k: curves[k] for k in keys if k in curves}
    return ordered


def _check_intact(intact: object, ctx: PairContext) -> tuple[Tensor, Tensor]:
    """Validate the ``intact=(z1, z2)`` embeddings of ``evaluate``."""
    if not isinstance(intact, (tuple, list)) or len(intact) != 2:
        raise TypeError(
            "`evaluate`: expected `intact` to be a tuple (z1, z2) of (B, D) embeddings of the "
            f"unperturbed images, or None, but got {type(intact).__name__}."
        )
    checked: list[Tensor] = []
    for name, z, x in (("z1", intact[0], ctx.x1), ("z2", intact[1], ctx.x2)):
        if not isinstance(z, Tensor) or not z.is_floating_point():
            raise TypeError(
                f"`evaluate`: expected `intact[{len(checked)}]` ({name}) to be a float tensor, "
                f"but got {z.dtype if isinstance(z, Tensor) else type(z).__name__}."
            )
        checked.append(
            check_embedding(z.detach().to(ctx.device, torch.float32), x, owner="evaluate")
        )
    if checked[0].shape != checked[1].shape:
        raise ValueError(
            f"`evaluate`: expected `intact` embeddings of one shape (B, D), but got "
            f"{tuple(checked[0].shape)} and {tuple(checked[1].shape)}."
        )
    return checked[0], checked[1]


def _map_metrics(
    ctx: PairContext,
    keys: list[str],
    map1: Tensor,
    map2: Tensor,
    n_steps: int,
    chunk: int,
    known: tuple[Tensor, Tensor] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Scores and curves of every key except max_sensitivity inside an open pair context."""
    scores: dict[str, Tensor] = {}
    curves: dict[str, Tensor] = {}
    groups = sorted({_CURVE_FAMILIES[k][0] for k in keys if k in _CURVE_FAMILIES})
    needs_avg = any(k.startswith("average_") for k in keys)

    # The intact images, embedded once (unless given): the condition of every conditional curve,
    # the unperturbed end of every curve, and the base of the average_* keys.
    if known is None:
        intact = ctx.embed_chunked(torch.cat([ctx.x1, ctx.x2]), chunk)
        known = (intact[: ctx.batch], intact[ctx.batch :])
    z1, z2 = known
    sims: dict[str, Tensor] = {}
    if needs_avg:
        sims = masked_similarities(ctx, map1, map2, batch_size=chunk, intact=(z1, z2))

    if groups:
        rank1, rank2 = pixel_ranks(map1), pixel_ranks(map2)
        tracks: list[Track] = []
        comparisons: list[Comparison] = []
        owners: list[tuple[str, int]] = []  # (group, which): which 0 = simultaneous, 1/2 = cond
        for group in groups:
            end: Literal["start", "finish"] = "finish" if group == "insertion" else "start"
            first = len(tracks)
            for x, rank, z in ((ctx.x1, rank1, z1), (ctx.x2, rank2, z2)):
                if group == "insertion":
                    start, finish = blur(x), x
                elif group == "deletion":
                    start, finish = x, torch.zeros_like(x)
                else:
                    start, finish = x, blur(x)
                tracks.append(Track(start=start, finish=finish, rank=rank, intact=(end, z)))
            wanted = {mode for k, (g, mode) in _CURVE_FAMILIES.items() if g == group and k in keys}
            if "simultaneous" in wanted:
                comparisons.append(Comparison(track=first, other=first + 1))
                owners.append((group, 0))
            if "conditional" in wanted:
                comparisons.append(Comparison(track=first, condition=z2))
                owners.append((group, 1))
                comparisons.append(Comparison(track=first + 1, condition=z1))
                owners.append((group, 2))
        raw = perturbation_curves(ctx, tracks, comparisons, n_steps=n_steps, batch_size=chunk)
        found = dict(zip(owners, raw))
        for key in keys:
            if key not in _CURVE_FAMILIES:
                continue
            group, mode = _CURVE_FAMILIES[key]
            if mode == "simultaneous":
                curve = found[(group, 0)].clone()
            else:
                curve = (0.5 * (found[(group, 1)] + found[(group, 2)])).clone()
            curves[key] = curve
            scores[key] = auc(curve)

    if needs_avg:
        base = sims["base"]
        for key in keys:
            if key == "average_drop_simultaneous":
                scores[key] = relative_drop(base, sims["both"])
            elif key == "average_drop_conditional":
                scores[key] = 0.5 * (
                    relative_drop(base, sims["masked1"]) + relative_drop(base, sims["masked2"])
                )
            elif key == "average_increase_simultaneous":
                scores[key] = (sims["both"] > base).to(base.dtype)
            elif key == "average_increase_conditional":
                scores[key] = 0.5 * (
                    (sims["masked1"] > base).to(base.dtype)
                    + (sims["masked2"] > base).to(base.dtype)
                )
    return scores, curves
