"""Insertion and deletion for image pairs (after Petsiuk et al., RISE, BMVC 2018), adapted to pairs
by Sammani et al., "Visualizing and Understanding Contrastive Learning" (IEEE TIP; arXiv 2206.09753).

Pixels are ranked by their own image's heatmap (descending). Each of ``n_steps`` steps moves the
next ``ceil(H*W / n_steps)`` pixels (all channels) from a start image to a finish image, and the
curve records the pair similarity after each step. The score is the trapezoid area under that
curve with the x-axis scaled to [0, 1].

The maths of the family, for :func:`insertion`, :func:`deletion`, the
:class:`~lightning_explain.metrics.Insertion` / :class:`~lightning_explain.metrics.Deletion`
classes and :func:`~lightning_explain.metrics.evaluate` alike:

* :func:`_insertion_deletion_update` builds one perturbation track per distinct
  ``(kind, substrate, image)`` that the requested metrics need, and every requested curve
  (simultaneous: track of ``x1`` against track of ``x2``; conditional: each perturbed side
  against the other image's intact embedding) in ONE :func:`perturbation_curves` call.
* :func:`_insertion_deletion_compute` picks one metric's curve (the mean curve of both sides for
  a conditional metric with ``direction="both"``) and takes its area.

Options of a metric (registry rows, :data:`FAMILY` ``.check``): ``kind`` (``"insertion"`` or
``"deletion"``), ``mode`` (:data:`Mode`), ``substrate`` (:data:`Substrate`) and ``corrected``
(deletion towards each image's own blur; simultaneous deletion only).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, overload

import torch
from torch import Tensor

from lightning_explain._checks import check_bool, check_literal, check_positive_int
from lightning_explain._core import Model
from lightning_explain.metrics.functional._common import (
    Comparison,
    Direction,
    MapInputs,
    MetricFamily,
    Mode,
    Substrate,
    Ties,
    Track,
    auc,
    check_direction,
    check_mode,
    check_second_map,
    check_substrate,
    check_ties,
    make_substrate,
    mean_of_sides,
    perturbation_curves,
    perturbed_sides,
    pixel_ranks,
    score_maps,
)
from lightning_explain.similarity import SimilarityFn

__all__ = ["FAMILY", "CurveState", "Kind", "deletion", "insertion"]

Kind = Literal["insertion", "deletion"]
"""``"insertion"``: pixels go from the substrate to the image; ``"deletion"``: the reverse."""

_OPTIONS = ("kind", "mode", "substrate", "corrected")
_TrackKey = tuple[str, str, int]  # (kind, substrate label, image 1 or 2)
_CurveKey = tuple[str, str, str]  # (kind, substrate label, "pair" | "x1" | "x2")
_PERTURBED: dict[str, tuple[int, ...]] = {"pair": (1, 2), "x1": (1,), "x2": (2,)}


@dataclass(frozen=True)
class CurveState:
    """What :func:`_insertion_deletion_update` computed: every requested ``(B, n_steps + 1)``
    curve, keyed by ``(kind, substrate label, comparison)`` with comparison ``"pair"``
    (simultaneous), ``"x1"`` or ``"x2"`` (conditional, that image perturbed), and the direction
    the conditional metrics are scored in."""

    curves: dict[_CurveKey, Tensor]
    direction: Direction


def _insertion_deletion_check(options: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Validate one metric's options; return them complete (``corrected`` defaults to False)."""
    unknown = sorted(set(options) - set(_OPTIONS))
    missing = [k for k in _OPTIONS[:3] if k not in options]
    if unknown or missing:
        raise TypeError(
            f"`{owner}`: insertion/deletion options are {list(_OPTIONS)}; got unknown {unknown} "
            f"and missing {missing}."
        )
    kind: Kind = check_literal(options["kind"], Kind, name="kind", owner=owner)
    mode = check_mode(options["mode"], owner=owner)
    substrate = check_substrate(options["substrate"], owner=owner)
    corrected = check_bool(options.get("corrected", False), name="corrected", owner=owner)
    if corrected:
        if kind != "deletion":
            raise ValueError(f"`{owner}`: `corrected=True` applies to deletion only.")
        if mode != "simultaneous":
            raise ValueError(
                f"`{owner}`: `corrected=True` only applies to mode='simultaneous' (conditional "
                "deletion keeps one image intact and has no identical-endpoint artifact), but got "
                f"mode={mode!r}. Pass `substrate='blur'` for blur deletion in conditional mode."
            )
        if substrate not in ("zero", "blur"):
            raise ValueError(
                f"`{owner}`: `corrected=True` deletes towards each image's own blurred version; "
                f"do not combine it with `substrate={substrate!r}`."
            )
    return {"kind": kind, "mode": mode, "substrate": substrate, "corrected": corrected}


def _substrate(options: Mapping[str, Any]) -> Substrate:
    """The substrate a metric's tracks use: corrected deletion deletes towards the blur."""
    substrate: Substrate = "blur" if options.get("corrected", False) else options["substrate"]
    return substrate


def _label(substrate: Substrate) -> str:
    """A sortable name of a substrate (tracks are ordered by it, which fixes the batches)."""
    return substrate if isinstance(substrate, str) else repr(float(substrate))


def _comparisons(options: Mapping[str, Any], direction: Direction) -> list[_CurveKey]:
    kind, label = str(options["kind"]), _label(_substrate(options))
    if options["mode"] == "simultaneous":
        return [(kind, label, "pair")]
    return [(kind, label, side) for side in perturbed_sides(direction)]


def _insertion_deletion_update(
    inputs: MapInputs, requests: Sequence[Mapping[str, Any]]
) -> CurveState:
    """Every curve the requested insertion/deletion metrics need, in one chunked engine call.

    Identical tracks are built once: simultaneous and conditional metrics of one kind and
    substrate share theirs, and so do both directions of a conditional metric. Tracks are ordered
    by ``(kind, substrate label, image)``. The intact embeddings ``inputs.intact`` are the
    condition of the conditional curves and the unperturbed end of every curve (the last
    insertion step, the first deletion step), which is therefore not embedded again.

    Args:
        inputs: the open pair context, ``(B, H, W)`` maps, intact ``(B, D)`` embeddings,
            ``n_steps``, ``batch_size`` and the direction of the conditional metrics.
        requests: the options of each requested metric (checked, see :data:`FAMILY`).

    Returns:
        The :class:`CurveState`. Cost: ``B * n_steps`` forwards per distinct track.
    """
    ctx = inputs.ctx
    wanted = sorted({key for o in requests for key in _comparisons(o, inputs.direction)})
    substrates = {
        label: _substrate(o) for o in requests for _, label, _ in _comparisons(o, inputs.direction)
    }
    images = {1: ctx.x1, 2: ctx.x2}
    known = dict(zip((1, 2), inputs.intact))
    keys = sorted({(k, lab, i) for k, lab, which in wanted for i in _PERTURBED[which]})
    maps: dict[int, Tensor] = {}
    for kind, _, image in keys:
        h = inputs.map1 if image == 1 else inputs.map2
        if h is None:
            raise ValueError(f"`{ctx.owner}`: {kind} perturbs x{image}, so it needs `h{image}`.")
        maps[image] = h
    ranks = _rowwise(functools.partial(pixel_ranks, ties=inputs.ties), maps)
    # Each substrate once per image, both images in one call (e.g. one blur of 2B images).
    substrate_of = {
        label: _rowwise(
            functools.partial(make_substrate, substrate=spec),
            {i: images[i] for _, lab, i in keys if lab == label},
        )
        for label, spec in substrates.items()
    }
    tracks: list[Track] = []
    index: dict[_TrackKey, int] = {}
    for key in keys:
        kind, label, image = key
        x, substrate = images[image], substrate_of[label][image]
        # Insertion: substrate -> image, its intact end is the finish; deletion: the reverse.
        if kind == "insertion":
            track = Track(substrate, x, ranks[image], intact=("finish", known[image]))
        else:
            track = Track(x, substrate, ranks[image], intact=("start", known[image]))
        index[key] = len(tracks)
        tracks.append(track)
    comparisons = []
    for kind, label, which in wanted:
        perturbed = [index[(kind, label, i)] for i in _PERTURBED[which]]
        if len(perturbed) == 2:  # simultaneous: track of x1 against track of x2
            comparisons.append(Comparison(track=perturbed[0], other=perturbed[1]))
        else:  # conditional: the perturbed image against the other one's intact embedding
            other = 3 - _PERTURBED[which][0]
            comparisons.append(Comparison(track=perturbed[0], condition=known[other]))
    curves = perturbation_curves(
        ctx, tracks, comparisons, n_steps=inputs.n_steps, batch_size=inputs.batch_size
    )
    return CurveState(curves=dict(zip(wanted, curves)), direction=inputs.direction)


def _rowwise(fn: Callable[[Tensor], Tensor], tensors: Mapping[int, Tensor]) -> dict[int, Tensor]:
    """``{i: fn(t)}`` for every ``i, t`` of ``tensors``, in one call of the row-wise ``fn`` on
    their concatenation (one kernel launch and one set-up for both images of a pair)."""
    parts = list(tensors.values())
    out = fn(parts[0] if len(parts) == 1 else torch.cat(parts))
    return dict(zip(tensors, torch.split(out, [len(t) for t in parts])))


def _insertion_deletion_compute(
    state: CurveState, options: Mapping[str, Any]
) -> tuple[Tensor, Tensor]:
    """One metric's ``(B,)`` scores and ``(B, n_steps + 1)`` curve from the computed curves.

    Simultaneous: the curve of the pair. Conditional: the curve of the perturbed side, or with
    ``direction="both"`` the mean curve ``0.5 * (x1 side + x2 side)`` (its area is the mean of the
    two areas). Score: the normalised trapezoid area :func:`auc`,
    ``(sum_t s_t - s_0 / 2 - s_T / 2) / T``.
    """
    parts = [state.curves[key] for key in _comparisons(options, state.direction)]
    curve = mean_of_sides(parts).clone()  # an ordinary tensor, usable in the caller's autograd
    return auc(curve), curve


FAMILY = MetricFamily(
    name="insertion_deletion",
    inputs="maps",
    check=_insertion_deletion_check,
    update=_insertion_deletion_update,
    compute=_insertion_deletion_compute,
)
"""The insertion/deletion family (registry keys ``insertion_*``, ``deletion_*``)."""


def _score(
    kind: Kind,
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None,
    *,
    mode: object,
    direction: object,
    n_steps: object,
    substrate: object,
    corrected: object,
    similarity: Union[str, SimilarityFn],
    batch_size: int | None,
    ties: object,
) -> tuple[Tensor, Tensor]:
    """Check the arguments of :func:`insertion` / :func:`deletion` and run the family."""
    owner = kind
    options = _insertion_deletion_check(
        {"kind": kind, "mode": mode, "substrate": substrate, "corrected": corrected}, owner
    )
    checked_direction = check_direction(direction, owner=owner)
    steps = check_positive_int(n_steps, name="n_steps", owner=owner)
    check_second_map(h2, mode=options["mode"], direction=checked_direction, owner=owner)
    ((scores, curve),) = score_maps(
        model,
        x1,
        x2,
        h1,
        h2,
        [(FAMILY, options)],
        similarity=similarity,
        n_steps=steps,
        batch_size=batch_size,
        direction=checked_direction,
        ties=check_ties(ties, owner=owner),
        owner=owner,
    )
    if curve is None:  # pragma: no cover - the family returns curves when asked for them
        raise RuntimeError(f"`{owner}`: the insertion/deletion family returned no curves.")
    return scores, curve


@overload
def insertion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = ...,
    *,
    mode: Mode = ...,
    direction: Direction = ...,
    n_steps: int = ...,
    substrate: Substrate = ...,
    similarity: Union[str, SimilarityFn] = ...,
    batch_size: int | None = ...,
    ties: Ties = ...,
    return_curve: Literal[False] = ...,
) -> Tensor: ...
@overload
def insertion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = ...,
    *,
    mode: Mode = ...,
    direction: Direction = ...,
    n_steps: int = ...,
    substrate: Substrate = ...,
    similarity: Union[str, SimilarityFn] = ...,
    batch_size: int | None = ...,
    ties: Ties = ...,
    return_curve: Literal[True],
) -> tuple[Tensor, Tensor]: ...
def insertion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = None,
    *,
    mode: Mode = "simultaneous",
    direction: Direction = "both",
    n_steps: int = 224,
    substrate: Substrate = "blur",
    similarity: Union[str, SimilarityFn] = "cosine",
    batch_size: int | None = None,
    ties: Ties = "raster",
    return_curve: bool = False,
) -> Union[Tensor, tuple[Tensor, Tensor]]:
    """Insertion score of each pair: how fast the similarity recovers when the most salient pixels
    are restored first (higher is better).

    Start: the substrate image (default: the blurred image, Gaussian k=11, sigma=5). Each step
    restores the next ``ceil(H*W / n_steps)`` original pixels of highest saliency (ranked by the
    image's own map, descending; ties in raster order, or as the
    authors' code with ``ties="paper"``). After ``n_steps`` steps the image is intact.

    * ``mode="simultaneous"`` (the paper's SI): both images are restored at each step, each by
      its own map; curve ``s_t = sim(f(x1_t), f(x2_t))``. ``direction`` is ignored.
    * ``mode="conditional"`` (CI): one image is restored by its map while the other stays intact.
      ``direction="x1"``: ``s_t = sim(f(x1_t), f(x2))``; ``"x2"``: ``s_t = sim(f(x2_t), f(x1))``;
      ``"both"`` (default): the mean curve of the two, so the score is the mean of both
      directions and does not change when the pair is swapped. The paper's code scores whichever
      image it is given; averaging makes the conditional score symmetric in the pair, as the
      simultaneous one is. This is also what :func:`~lightning_explain.metrics.evaluate` and
      :class:`~lightning_explain.metrics.Insertion` compute.

    Score: ``(sum_t s_t - s_0 / 2 - s_T / 2) / T`` with ``T = n_steps`` (the trapezoid area over
    x in [0, 1]).

    Args:
        model: ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        h1: ``(B, h, w)`` map of ``x1`` (``h <= H``, ``w <= W``; lower resolutions, e.g. a 7x7
            CAM, are upsampled bilinearly first).
        h2: ``(B, h, w)`` map of ``x2``; required unless ``mode="conditional"`` with
            ``direction="x1"``.
        mode: ``"simultaneous"`` (default) or ``"conditional"``.
        direction: conditional mode only: ``"both"`` (default, the mean of both directions),
            ``"x1"`` (only ``x1`` restored, ``x2`` intact) or ``"x2"`` (only ``x2`` restored).
        n_steps: number of steps ``T`` (default 224, the paper's value at 224 px); the curve has
            ``T + 1`` points.
        substrate: start image: ``"blur"`` (default), ``"zero"``, ``"mean"`` (per-channel mean)
            or a constant.
        similarity: ``"cosine"`` (default, the paper's), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass. Default None: chosen from the device's memory
            (CPU: a 256 MiB activation budget, at most 256 images: 256 at 32 px, 6 at 224 px;
            CUDA: a quarter of the free memory, at most 1024).
        ties: order of pixels of equal saliency: ``"raster"`` (default, raster order) or
            ``"paper"`` (the authors' ``torch.flip(torch.argsort(h))``; see
            :data:`~lightning_explain.metrics.functional._common.Ties`).
        return_curve: also return the ``(B, n_steps + 1)`` curve (``direction="both"``: the mean
            curve of the two directions).

    Returns:
        ``(B,)`` scores, or ``(scores, curve)`` with ``return_curve=True``.

    Cost:
        2 forwards per pair for the intact images (the condition, and the unperturbed end of the
        curve), plus ``n_steps`` per perturbed image: ``2 * n_steps + 2`` per pair in simultaneous
        mode and in conditional mode with ``direction="both"``, ``n_steps + 2`` with ``"x1"`` or
        ``"x2"``; all in chunked batches of ``batch_size`` images under ``torch.inference_mode``.

    Raises:
        ValueError: malformed images or maps (shape mismatch, NaN), unknown ``mode``,
            ``direction`` or ``substrate``, ``n_steps < 1``, missing ``h2`` (simultaneous mode,
            or conditional mode with ``direction="both"`` or ``"x2"``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_explain.metrics import insertion
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> x1, x2 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> h1, h2 = torch.rand(2, 16, 16), torch.rand(2, 16, 16)
        >>> scores, curve = insertion(net, x1, x2, h1, h2, n_steps=8, return_curve=True)
        >>> tuple(scores.shape), tuple(curve.shape)
        ((2,), (2, 9))
        >>> both = insertion(net, x1, x2, h1, h2, mode="conditional", n_steps=8)
        >>> one = insertion(net, x1, x2, h1, h2, mode="conditional", direction="x1", n_steps=8)
        >>> other = insertion(net, x1, x2, h1, h2, mode="conditional", direction="x2", n_steps=8)
        >>> torch.allclose(both, (one + other) / 2, atol=1e-6)
        True
    """
    scores, curve = _score(
        "insertion",
        model,
        x1,
        x2,
        h1,
        h2,
        mode=mode,
        direction=direction,
        n_steps=n_steps,
        substrate=substrate,
        corrected=False,
        similarity=similarity,
        batch_size=batch_size,
        ties=ties,
    )
    return (scores, curve) if return_curve else scores


@overload
def deletion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = ...,
    *,
    mode: Mode = ...,
    direction: Direction = ...,
    n_steps: int = ...,
    substrate: Substrate = ...,
    corrected: bool = ...,
    similarity: Union[str, SimilarityFn] = ...,
    batch_size: int | None = ...,
    ties: Ties = ...,
    return_curve: Literal[False] = ...,
) -> Tensor: ...
@overload
def deletion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = ...,
    *,
    mode: Mode = ...,
    direction: Direction = ...,
    n_steps: int = ...,
    substrate: Substrate = ...,
    corrected: bool = ...,
    similarity: Union[str, SimilarityFn] = ...,
    batch_size: int | None = ...,
    ties: Ties = ...,
    return_curve: Literal[True],
) -> tuple[Tensor, Tensor]: ...
def deletion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = None,
    *,
    mode: Mode = "simultaneous",
    direction: Direction = "both",
    n_steps: int = 224,
    substrate: Substrate = "zero",
    corrected: bool = False,
    similarity: Union[str, SimilarityFn] = "cosine",
    batch_size: int | None = None,
    ties: Ties = "raster",
    return_curve: bool = False,
) -> Union[Tensor, tuple[Tensor, Tensor]]:
    """Deletion score of each pair: how fast the similarity falls when the most salient pixels are
    removed first (lower is better).

    Start: the image. Each step overwrites the next ``ceil(H*W / n_steps)`` most salient pixels
    (ranked by the image's own map, descending; ties in raster order) with the substrate
    (default ``"zero"``, the paper's: black for [0, 1] inputs, the dataset mean for normalised
    inputs). Modes, ``direction`` (default ``"both"``: the mean of both conditional directions,
    symmetric in the pair), curve and score as in :func:`insertion`.

    **Simultaneous-deletion artifact.** With a shared substrate the two fully deleted images are
    identical, so the simultaneous curve ends at similarity 1 (cosine) whatever the maps; the
    rising tail inflates the scores and rewards maps that make both images reach the substrate
    early. ``corrected=True`` (registry key ``deletion_simultaneous_corrected``; simultaneous mode
    only) deletes each image towards *its own* blurred version (k=11, sigma=5) instead: the
    endpoints stay two different images, the final similarity is ``sim(f(blur(x1)), f(blur(x2)))``
    (the start of simultaneous insertion), and the deleted pixels stay in the image distribution.
    Subtracting the endpoint similarity alone would not help: it does not depend on the maps, so
    it shifts every method's score by the same amount per pair. This variant is our addition, not
    the paper's.

    Args:
        model: ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        h1: ``(B, h, w)`` map of ``x1`` (upsampled bilinearly if smaller than the image).
        h2: ``(B, h, w)`` map of ``x2``; required unless ``mode="conditional"`` with
            ``direction="x1"``.
        mode: ``"simultaneous"`` (default) or ``"conditional"``.
        direction: conditional mode only: ``"both"`` (default), ``"x1"`` or ``"x2"`` (see
            :func:`insertion`).
        n_steps: number of steps (default 224).
        substrate: the value deleted pixels take: ``"zero"`` (default), ``"blur"``, ``"mean"`` or a
            constant.
        corrected: delete towards each image's own blurred version (see above). Default False.
        similarity: ``"cosine"`` (default), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass (default as in :func:`insertion`).
        ties: order of pixels of equal saliency (see :func:`insertion`).
        return_curve: also return the ``(B, n_steps + 1)`` curve.

    Returns:
        ``(B,)`` scores, or ``(scores, curve)`` with ``return_curve=True``.

    Cost:
        As :func:`insertion`: 2 intact forwards per pair plus ``n_steps`` per perturbed image.

    Raises:
        ValueError: as :func:`insertion`; also ``corrected=True`` with conditional mode or with a
            substrate other than the default.
    """
    scores, curve = _score(
        "deletion",
        model,
        x1,
        x2,
        h1,
        h2,
        mode=mode,
        direction=direction,
        n_steps=n_steps,
        substrate=substrate,
        corrected=corrected,
        similarity=similarity,
        batch_size=batch_size,
        ties=ties,
    )
    return (scores, curve) if return_curve else scores
