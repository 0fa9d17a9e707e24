"""``evaluate``: every requested pairwise faithfulness metric in shared, chunked forward passes.

Dispatch is generic: each key's registry row names its family file and the family's options;
the keys are grouped by family, and each family's ``update`` runs once over all of its keys (so
the insertion/deletion keys share one chunked perturbation pass and the average_* keys one masked
pass) before its ``compute`` scores every key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, Union, overload

from torch import Tensor

from lightning_explain._checks import check_positive_int
from lightning_explain._core import Model
from lightning_explain.explanation import PairExplanation
from lightning_explain.methods import method_info
from lightning_explain.metrics._registry import metric_info, resolve_metrics
from lightning_explain.metrics.functional._common import (
    Direction,
    PairInputs,
    Request,
    Scored,
    Ties,
    check_direction,
    score_maps,
    score_pairs,
    unpack_explanation,
)
from lightning_explain.similarity import SimilarityFn

__all__ = ["evaluate"]


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
    direction: Direction = ...,
    batch_size: int | None = ...,
    method: str | None = ...,
    method_options: Mapping[str, Any] | None = ...,
    intact: tuple[Tensor, Tensor] | None = ...,
    ties: Ties = ...,
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
    direction: Direction = ...,
    batch_size: int | None = ...,
    method: str | None = ...,
    method_options: Mapping[str, Any] | None = ...,
    intact: tuple[Tensor, Tensor] | None = ...,
    ties: Ties = ...,
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
    direction: Direction = "both",
    batch_size: int | None = None,
    method: str | None = None,
    method_options: Mapping[str, Any] | None = None,
    intact: tuple[Tensor, Tensor] | None = None,
    ties: Ties = "raster",
    return_curves: bool = False,
) -> Union[dict[str, Tensor], tuple[dict[str, Tensor], dict[str, Tensor]]]:
    """Score an explanation of a batch of pairs with several faithfulness metrics at once.

    Each key's registry row names its family and the family's options; the keys are grouped by
    family and each family runs its forwards once for all of its keys. All requested
    insertion/deletion curves are built from one rank tensor per map and go through one chunked
    perturbation pass: the conditional keys reuse the perturbed images of the simultaneous keys,
    both directions of a conditional key share the pass, and the intact images are embedded once
    (or not at all, given ``intact``) and stand for the unperturbed end of every curve. All
    average_* keys share one masked forward set. Keys (see :func:`list_metrics` and
    ``metric_info(key).higher_is_better``):

    * ``insertion_simultaneous`` (higher is better), ``insertion_conditional`` (higher);
    * ``deletion_simultaneous`` (lower), ``deletion_conditional`` (lower),
      ``deletion_simultaneous_corrected`` (lower; our variant without the identical-endpoint
      artifact, see :func:`deletion`);
    * ``average_drop_simultaneous`` / ``_conditional`` (lower), ``average_increase_simultaneous``
      / ``_conditional`` (higher);
    * ``max_sensitivity`` (lower; needs ``method``).

    ``direction`` says which image the conditional keys perturb. The default ``"both"`` scores
    the mean of both directions, ``x1`` perturbed by ``h1`` with ``x2`` intact and ``x2``
    perturbed by ``h2`` with ``x1`` intact, so a conditional score does not change when the pair
    is swapped (the paper's code scores whichever image it is given); ``"x1"`` / ``"x2"`` perturb
    only that image (``x1`` skips the ``x2`` tracks, and vice versa). Simultaneous keys perturb
    both images and ignore it. Insertion starts from the blurred image (k=11, sigma=5); deletion
    writes zeros. The functions :func:`insertion`, :func:`deletion`, :func:`average_drop`,
    :func:`average_increase` and :func:`max_sensitivity` compute the same scores (the same
    maths, through the same family helpers) and take more options.

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
        direction: which image the conditional keys perturb: ``"both"`` (default, the mean of the
            two directions), ``"x1"`` or ``"x2"``. Ignored by the simultaneous keys.
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
        ties: insertion/deletion order of equal-saliency pixels: ``"raster"`` (default) or
            ``"paper"`` (the authors' ``torch.flip(torch.argsort(h))``, see :func:`insertion`).
        return_curves: also return the ``(B, n_steps + 1)`` curve of each insertion/deletion key
            (conditional keys with ``direction="both"``: the mean curve of both directions).

    Returns:
        ``{key: (B,) scores}``, or ``(scores, curves)`` with ``return_curves=True``.

    Cost (forwards per pair):
        ``2 * n_steps`` for all insertion keys together (the last step is the intact image),
        the same for the two deletion keys and again for the corrected deletion; 2 for the intact
        images (0 given ``intact``); 2 for the masked images of all average_* keys;
        ``n_samples + 1 = 11`` explanations for max-sensitivity. The default set:
        ``4 * n_steps + 4`` (900 at ``n_steps=224``; ``4 * n_steps + 2`` given ``intact``), for
        every ``direction``. Conditional keys alone with ``direction="x1"`` or ``"x2"`` walk
        one image: ``n_steps`` per curve family and 1 masked forward.

    Raises:
        ValueError: unknown metric (the message lists the valid keys), ``max_sensitivity`` without
            ``method``, malformed images or maps (shape mismatch, NaN), ``n_steps < 1``, unknown
            ``direction``.

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
    direction = check_direction(direction, owner=owner)
    rows = [metric_info(k) for k in keys]
    needing = [r.key for r in rows if r.needs_method]
    if needing and method is None:
        listed = ", ".join(repr(k) for k in needing)
        raise ValueError(
            f"`{owner}`: {listed} re-explain{'s' if len(needing) == 1 else ''} noisy copies of "
            f"the pairs, so {'it needs' if len(needing) == 1 else 'they need'} the explanation "
            "method: pass `method=` (and "
            "`method_options=` if the explanation used non-default options), or leave "
            f"{listed} out of `metrics`."
        )
    if method_options is not None and not isinstance(method_options, Mapping):
        raise TypeError(
            f"`{owner}`: expected `method_options` to be a mapping or None, but got "
            f"{type(method_options).__name__}."
        )
    requests: dict[str, list[tuple[str, Request]]] = {"maps": [], "pairs": []}
    for row in rows:
        family = row.load()
        requests[family.inputs].append((row.key, (family, row.options)))
    results: dict[str, Scored] = {}
    if requests["maps"]:
        if explanation is None:
            raise ValueError(
                f"`{owner}`: metrics {[k for k, _ in requests['maps']]} score the maps, so "
                "`explanation` is required (a PairExplanation or (h1, h2)), but got None."
            )
        h1, h2 = unpack_explanation(explanation, owner=owner)
        scored = score_maps(
            model,
            x1,
            x2,
            h1,
            h2,
            [r for _, r in requests["maps"]],
            similarity=similarity,
            n_steps=n_steps,
            batch_size=batch_size,
            direction=direction,
            intact=intact,
            ties=ties,
            owner=owner,
        )
        results.update(zip([k for k, _ in requests["maps"]], scored))
    if requests["pairs"]:
        inputs = PairInputs(
            model=model,
            x1=x1,
            x2=x2,
            method=method,
            method_options=_method_options(method, method_options, similarity),
            owner=owner,
        )
        scored = score_pairs(inputs, [r for _, r in requests["pairs"]])
        results.update(zip([k for k, _ in requests["pairs"]], scored))
    scores = {k: results[k][0] for k in keys}
    if return_curves:
        curves = {k: curve for k in keys if (curve := results[k][1]) is not None}
        return scores, curves
    return scores


def _method_options(
    method: object, options: Mapping[str, Any] | None, similarity: Union[str, SimilarityFn]
) -> dict[str, Any]:
    """The options of every ``explain`` call: ``method_options``, with ``evaluate``'s
    ``similarity`` for methods that take one (unless the options set it)."""
    merged = dict(options or {})
    if isinstance(method, str) and "similarity" in method_info(method).defaults():
        merged.setdefault("similarity", similarity)
    return merged
