"""Average Drop and Average Increase for image pairs (after Chattopadhay et al., Grad-CAM++,
WACV 2018), adapted to pairs by Sammani et al., "Visualizing and Understanding Contrastive
Learning" (IEEE TIP; arXiv 2206.09753).

Each image is masked by its own min-max-normalised map, ``x' = minmax(h) * x``, and the similarity
of the masked pair ``o`` is compared with the intact similarity ``b``.

The maths of the family, for :func:`average_drop`, :func:`average_increase`, the
:class:`~lightning_explain.metrics.AverageDrop` / :class:`~lightning_explain.metrics.AverageIncrease`
classes and :func:`~lightning_explain.metrics.evaluate` alike:

* :func:`_drop_increase_update` embeds the masked images that the requested metrics need in one
  chunked pass and returns the similarities ``b`` and ``o`` (every ``average_*`` metric of an
  ``evaluate`` call shares them).
* :func:`_drop_increase_compute` applies one metric's term (drop or increase) to them.

Options of a metric: ``kind`` (``"average_drop"`` or ``"average_increase"``) and ``mode``
(:data:`Mode`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
from torch import Tensor

from lightning_explain._checks import check_literal
from lightning_explain._core import Model
from lightning_explain.metrics.functional._common import (
    Direction,
    MapInputs,
    MetricFamily,
    Mode,
    check_direction,
    check_mode,
    check_second_map,
    mean_of_sides,
    minmax_mask,
    perturbed_sides,
    relative_drop,
    score_maps,
    similarity,
)
from lightning_explain.similarity import SimilarityFn

__all__ = ["FAMILY", "DropState", "Kind", "average_drop", "average_increase"]

Kind = Literal["average_drop", "average_increase"]
"""``"average_drop"``: the relative drop ``max(0, b - o) / b``; ``"average_increase"``:
``1[o > b]``."""

_OPTIONS = ("kind", "mode")


@dataclass(frozen=True)
class DropState:
    """What :func:`_drop_increase_update` computed, each ``(B,)``: ``base = sim(f(x1), f(x2))``
    and ``masked`` keyed by comparison: ``"pair"``: ``sim(f(x1'), f(x2'))``; ``"x1"``:
    ``sim(f(x1'), f(x2))``; ``"x2"``: ``sim(f(x1), f(x2'))`` (those requested), and the direction
    the conditional metrics are scored in."""

    base: Tensor
    masked: dict[str, Tensor]
    direction: Direction


def _increase(base: Tensor, out: Tensor) -> Tensor:
    """Average-Increase term per pair: ``1[o > b]``."""
    return (out > base).to(base.dtype)


_TERMS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "average_drop": relative_drop,
    "average_increase": _increase,
}


def _drop_increase_check(options: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Validate one metric's options; return them complete."""
    if set(options) != set(_OPTIONS):
        raise TypeError(
            f"`{owner}`: average drop/increase options are {list(_OPTIONS)}, but got "
            f"{sorted(options)}."
        )
    kind: Kind = check_literal(options["kind"], Kind, name="kind", owner=owner)
    return {"kind": kind, "mode": check_mode(options["mode"], owner=owner)}


def _comparisons(options: Mapping[str, Any], direction: Direction) -> list[str]:
    if options["mode"] == "simultaneous":
        return ["pair"]
    return list(perturbed_sides(direction))


def _drop_increase_update(inputs: MapInputs, requests: Sequence[Mapping[str, Any]]) -> DropState:
    """Embed the masked images ``x' = minmax(h) * x`` the requests need, in one chunked pass.

    Args:
        inputs: the open pair context, ``(B, H, W)`` maps, the intact ``(B, D)`` embeddings
            (the base ``b``), ``batch_size`` and the direction of the conditional metrics.
        requests: the options of each requested metric.

    Returns:
        The :class:`DropState`. Cost: one forward per masked image and pair (at most 2).
    """
    ctx, (z1, z2) = inputs.ctx, inputs.intact
    wanted = {c for o in requests for c in _comparisons(o, inputs.direction)}
    sides = [i for i, side in ((1, "x1"), (2, "x2")) if side in wanted or "pair" in wanted]
    maps = {1: inputs.map1, 2: inputs.map2}
    images = {1: ctx.x1, 2: ctx.x2}
    masked_images = []
    for i in sides:
        h = maps[i]
        if h is None:
            raise ValueError(f"`{ctx.owner}`: masking x{i} needs `h{i}`.")
        masked_images.append(minmax_mask(h).unsqueeze(1) * images[i])
    with torch.inference_mode():
        z = dict(
            zip(
                sides,
                torch.split(
                    ctx.embed_chunked(torch.cat(masked_images), inputs.batch_size), ctx.batch
                ),
            )
        )
        base = similarity(ctx, z1, z2)
        pairs = {"pair": (1, 2), "x1": (1, None), "x2": (None, 2)}
        masked = {}
        for which in sorted(wanted):
            a, b = pairs[which]
            za = z1 if a is None else z[a]
            zb = z2 if b is None else z[b]
            masked[which] = similarity(ctx, za, zb)
    return DropState(
        base=base.clone(),
        masked={k: v.clone() for k, v in masked.items()},
        direction=inputs.direction,
    )


def _drop_increase_compute(state: DropState, options: Mapping[str, Any]) -> tuple[Tensor, None]:
    """One metric's ``(B,)`` scores: its term of ``b`` and ``o``; with ``direction="both"`` the
    mean ``0.5 * (term(b, o_x1) + term(b, o_x2))`` of the two conditional directions."""
    term = _TERMS[options["kind"]]
    values = [term(state.base, state.masked[c]) for c in _comparisons(options, state.direction)]
    return mean_of_sides(values), None


FAMILY = MetricFamily(
    name="drop_increase",
    inputs="maps",
    check=_drop_increase_check,
    update=_drop_increase_update,
    compute=_drop_increase_compute,
)
"""The average drop/increase family (registry keys ``average_drop_*``, ``average_increase_*``)."""


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
    similarity: Union[str, SimilarityFn],
    batch_size: int | None,
) -> Tensor:
    """Check the arguments of :func:`average_drop` / :func:`average_increase` and run the family."""
    owner = kind
    options = _drop_increase_check({"kind": kind, "mode": mode}, owner)
    checked_direction = check_direction(direction, owner=owner)
    check_second_map(h2, mode=options["mode"], direction=checked_direction, owner=owner)
    ((scores, _),) = score_maps(
        model,
        x1,
        x2,
        h1,
        h2,
        [(FAMILY, options)],
        similarity=similarity,
        n_steps=1,
        batch_size=batch_size,
        direction=checked_direction,
        owner=owner,
    )
    return scores


def average_drop(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = None,
    *,
    mode: Mode = "simultaneous",
    direction: Direction = "both",
    similarity: Union[str, SimilarityFn] = "cosine",
    batch_size: int | None = None,
) -> Tensor:
    """Relative similarity drop when each image keeps only what its map marks (lower is better).

    ``x' = minmax(h) * x`` (a constant map becomes an all-zero mask: it marks nothing). With
    ``b = sim(f(x1), f(x2))`` and ``o`` the similarity with the masked image(s):

    * ``mode="simultaneous"`` (SAD): ``o = sim(f(x1'), f(x2'))``; ``direction`` is ignored.
    * ``mode="conditional"`` (CAD): one image masked, the other intact. ``direction="x1"``:
      ``o = sim(f(x1'), f(x2))``; ``"x2"``: ``o = sim(f(x1), f(x2'))``; ``"both"`` (default): the
      mean of the two scores, symmetric under swapping the pair (the paper's code scores whichever
      image it is given; :func:`~lightning_explain.metrics.evaluate` computes the same).

    Score per pair: ``max(0, b - o) / b`` (the paper's) when ``b > 0``. Our extension for
    ``b <= 0``, where the paper's ratio flips sign or divides by zero: ``max(0, b - o) / |b|``
    (e.g. a relative growth of the distance for ``similarity="neg_l2"``), and ``1[o < b]`` when
    ``b == 0``. The dataset value is the mean over pairs (a fraction, not a percentage).

    Args:
        model: ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        h1: ``(B, h, w)`` map of ``x1`` (upsampled bilinearly if smaller than the image).
        h2: ``(B, h, w)`` map of ``x2``; required unless ``mode="conditional"`` with
            ``direction="x1"``.
        mode: ``"simultaneous"`` (default) or ``"conditional"``.
        direction: conditional mode only: ``"both"`` (default, the mean of both directions),
            ``"x1"`` (only ``x1`` masked) or ``"x2"`` (only ``x2`` masked).
        similarity: ``"cosine"`` (default), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass (default None: chosen from the device's memory, as
            in :func:`lightning_explain.metrics.insertion`).

    Returns:
        ``(B,)`` drops (``>= 0``; may exceed 1 when ``o < 0 < b``).

    Cost:
        2 intact forwards per pair plus one per masked image: 4 in simultaneous mode and with
        ``direction="both"``, 3 with ``"x1"`` or ``"x2"``.

    Raises:
        ValueError: malformed images or maps, unknown ``mode`` or ``direction``, missing ``h2``
            (simultaneous mode, or conditional mode with ``direction="both"`` or ``"x2"``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_explain.metrics import average_drop
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> x1, x2 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> h1 = torch.rand(2, 16, 16)
        >>> average_drop(net, x1, x2, h1, mode="conditional", direction="x1").shape
        torch.Size([2])
    """
    return _score(
        "average_drop",
        model,
        x1,
        x2,
        h1,
        h2,
        mode=mode,
        direction=direction,
        similarity=similarity,
        batch_size=batch_size,
    )


def average_increase(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = None,
    *,
    mode: Mode = "simultaneous",
    direction: Direction = "both",
    similarity: Union[str, SimilarityFn] = "cosine",
    batch_size: int | None = None,
) -> Tensor:
    """Whether masking by the maps increases the similarity: ``1[o > b]`` (higher is better).

    Masked images, ``b``, ``o``, modes and ``direction`` (default ``"both"``: the mean of the two
    conditional indicators, so a pair scores 0, 0.5 or 1) as in :func:`average_drop` (the paper's
    SIC / CID). The indicator is well defined for any sign of ``b``.

    Args:
        model: ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        h1: ``(B, h, w)`` map of ``x1``.
        h2: ``(B, h, w)`` map of ``x2``; required unless ``mode="conditional"`` with
            ``direction="x1"``.
        mode: ``"simultaneous"`` (default) or ``"conditional"``.
        direction: conditional mode only: ``"both"`` (default), ``"x1"`` or ``"x2"``.
        similarity: ``"cosine"`` (default), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass.

    Returns:
        ``(B,)`` values in ``{0, 1}`` (``{0, 0.5, 1}`` with ``direction="both"``).

    Cost:
        As :func:`average_drop`.
    """
    return _score(
        "average_increase",
        model,
        x1,
        x2,
        h1,
        h2,
        mode=mode,
        direction=direction,
        similarity=similarity,
        batch_size=batch_size,
    )
