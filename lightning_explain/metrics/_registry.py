"""String registry of the pairwise faithfulness metrics (keys used by ``evaluate`` and the callback)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DEFAULT_METRICS", "MetricInfo", "list_metrics", "metric_info", "resolve_metrics"]


@dataclass(frozen=True)
class MetricInfo:
    """Static facts about one metric key.

    Attributes:
        key: registry key, e.g. ``"insertion_simultaneous"``.
        family: ``"insertion"``, ``"deletion"``, ``"average_drop"``, ``"average_increase"`` or
            ``"max_sensitivity"``.
        mode: ``"simultaneous"``, ``"conditional"`` or None (max-sensitivity).
        higher_is_better: direction of the score.
        cost: forward passes per pair, in words.
        summary: one line saying what the score measures.
        needs_method: whether ``evaluate`` needs ``method`` (re-explains noisy inputs).
        paper: whether the key is a metric of the paper (False for our corrected variant).
    """

    key: str
    family: str
    mode: str | None
    higher_is_better: bool
    cost: str
    summary: str
    needs_method: bool = False
    paper: bool = True


_CURVE = (
    "2 * n_steps + 2 (n_steps per perturbed image; the 2 intact images, embedded once per "
    "evaluate call, are the unperturbed end of each curve)"
)
_METRICS: dict[str, MetricInfo] = {
    m.key: m
    for m in (
        MetricInfo(
            "insertion_simultaneous",
            "insertion",
            "simultaneous",
            True,
            _CURVE,
            "area under sim(f(x1_t), f(x2_t)) while both images are restored from blur, "
            "most salient pixels first",
        ),
        MetricInfo(
            "insertion_conditional",
            "insertion",
            "conditional",
            True,
            f"{_CURVE}; shares its forwards with insertion_simultaneous",
            "area under sim(f(x_t), f(other)) while one image is restored from blur, the other "
            "intact; mean of both directions",
        ),
        MetricInfo(
            "deletion_simultaneous",
            "deletion",
            "simultaneous",
            False,
            _CURVE,
            "area under sim(f(x1_t), f(x2_t)) while both images are zeroed, most salient pixels "
            "first (ends at 1: see deletion_simultaneous_corrected)",
        ),
        MetricInfo(
            "deletion_conditional",
            "deletion",
            "conditional",
            False,
            f"{_CURVE}; shares its forwards with deletion_simultaneous",
            "area under sim(f(x_t), f(other)) while one image is zeroed, the other intact; mean "
            "of both directions",
        ),
        MetricInfo(
            "deletion_simultaneous_corrected",
            "deletion",
            "simultaneous",
            False,
            _CURVE,
            "simultaneous deletion towards each image's own blurred version, so the two fully "
            "deleted images are not identical (our correction)",
            paper=False,
        ),
        MetricInfo(
            "average_drop_simultaneous",
            "average_drop",
            "simultaneous",
            False,
            "4 forwards (2 intact, shared with the curves, + 2 masked), shared by all average_* keys",
            "max(0, b - o) / b with o the similarity of the pair masked by min-max maps",
        ),
        MetricInfo(
            "average_drop_conditional",
            "average_drop",
            "conditional",
            False,
            "4 forwards (2 intact, shared with the curves, + 2 masked), shared by all average_* keys",
            "max(0, b - o) / b with one image masked, the other intact; mean of both directions",
        ),
        MetricInfo(
            "average_increase_simultaneous",
            "average_increase",
            "simultaneous",
            True,
            "4 forwards (2 intact, shared with the curves, + 2 masked), shared by all average_* keys",
            "1[o > b] with o the similarity of the pair masked by min-max maps",
        ),
        MetricInfo(
            "average_increase_conditional",
            "average_increase",
            "conditional",
            True,
            "4 forwards (2 intact, shared with the curves, + 2 masked), shared by all average_* keys",
            "1[o > b] with one image masked, the other intact; mean of both directions",
        ),
        MetricInfo(
            "max_sensitivity",
            "max_sensitivity",
            None,
            False,
            "n_samples + 1 explanations per pair (default 11)",
            "max over noise draws of the relative L2 change of the maps, mean of both images",
            needs_method=True,
        ),
    )
}

DEFAULT_METRICS: tuple[str, ...] = (
    "insertion_simultaneous",
    "insertion_conditional",
    "deletion_simultaneous",
    "deletion_conditional",
    "average_drop_simultaneous",
    "average_drop_conditional",
    "average_increase_simultaneous",
    "average_increase_conditional",
)
"""What ``evaluate(metrics=None)`` computes (and the training callback logs by default): every
paper metric that needs no re-explanation. ``4 * n_steps + 4`` forwards per pair in
:func:`~lightning_explain.metrics.evaluate` (the intact images stand for the curves' unperturbed
ends)."""


def list_metrics(family: str | None = None) -> list[str]:
    """Metric keys accepted by :func:`lightning_explain.metrics.evaluate`, sorted; optionally only
    one ``family`` (``"insertion"``, ``"deletion"``, ``"average_drop"``, ``"average_increase"``,
    ``"max_sensitivity"``)."""
    families = sorted({m.family for m in _METRICS.values()})
    if family is not None and family not in families:
        raise ValueError(f"Expected `family` to be one of {families} or None, but got {family!r}.")
    return sorted(k for k, m in _METRICS.items() if family is None or m.family == family)


def metric_info(key: str) -> MetricInfo:
    """Facts about one metric key, e.g. ``metric_info("deletion_conditional").higher_is_better``.

    Raises:
        TypeError: if ``key`` is not a string.
        ValueError: for an unknown key; the message lists the valid keys.
    """
    if not isinstance(key, str):
        raise TypeError(f"Expected a metric key (str), but got {type(key).__name__}.")
    try:
        return _METRICS[key]
    except KeyError:
        close = difflib.get_close_matches(key, list(_METRICS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown metric {key!r}.{hint} Valid metrics: {', '.join(list_metrics())}."
        ) from None


def resolve_metrics(metrics: str | Iterable[str] | None, *, owner: str = "evaluate") -> list[str]:
    """The requested keys in registry order, without duplicates (``None``: :data:`DEFAULT_METRICS`).

    Raises:
        ValueError: for an unknown key (the message lists the valid keys) or an empty selection.
        TypeError: for something that is not a string or an iterable of strings.
    """
    if metrics is None:
        return list(DEFAULT_METRICS)
    names = [metrics] if isinstance(metrics, str) else metrics
    try:
        requested = list(names)
    except TypeError:
        raise TypeError(
            f"`{owner}`: expected `metrics` to be None, a metric key or a list of keys, but got "
            f"{type(metrics).__name__}."
        ) from None
    if not requested:
        raise ValueError(
            f"`{owner}`: expected at least one metric in `metrics`, but got an empty selection. "
            f"Valid metrics: {', '.join(list_metrics())}."
        )
    chosen = {metric_info(k).key for k in requested}
    return [k for k in _METRICS if k in chosen]
