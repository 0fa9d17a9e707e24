"""String registry of the pairwise faithfulness metrics (keys used by ``evaluate``, the metric
classes, the callback and the CLI).

Each row names the family file that computes the key (``metrics/functional/<family>.py``, imported
on first use, so listing the metrics imports nothing heavy) and that family's options for the key.
:func:`~lightning_explain.metrics.evaluate` dispatches on these two fields alone, so a new metric
is a family file plus its row here (see "Adding a metric" in ``docs/metrics.md``).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lightning_explain.metrics.functional._common import MetricFamily

__all__ = [
    "DEFAULT_METRICS",
    "REGISTRY",
    "MetricInfo",
    "list_metrics",
    "metric_info",
    "resolve_metrics",
]

_FUNCTIONAL = "lightning_explain.metrics.functional."


@dataclass(frozen=True)
class MetricInfo:
    """Static facts about one metric key.

    Attributes:
        key: registry key, e.g. ``"insertion_simultaneous"``.
        family: ``"insertion"``, ``"deletion"``, ``"average_drop"``, ``"average_increase"`` or
            ``"max_sensitivity"`` (the ``kind`` option of the key).
        mode: ``"simultaneous"``, ``"conditional"`` or None (max-sensitivity).
        higher_is_better: direction of the score.
        cost: forward passes per pair, in words.
        summary: one line saying what the score measures.
        needs_method: whether ``evaluate`` needs ``method`` (re-explains noisy inputs).
        paper: whether the key is a metric of the paper (False for our corrected variant).
        module: the family file that computes the key, e.g.
            ``"lightning_explain.metrics.functional.insertion_deletion"`` (its ``FAMILY``).
        options: the family's options for the key, e.g. ``{"kind": "insertion", "mode":
            "simultaneous", "substrate": "blur", "corrected": False}`` (read-only).
    """

    key: str
    family: str
    mode: str | None
    higher_is_better: bool
    cost: str
    summary: str
    needs_method: bool = False
    paper: bool = True
    module: str = field(default="", kw_only=True)
    options: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), kw_only=True, compare=False
    )

    @property
    def family_name(self) -> str:
        """The family file's name, e.g. ``"insertion_deletion"``."""
        return self.module.rsplit(".", 1)[-1]

    def load(self) -> MetricFamily:
        """Import the family file and return its :class:`MetricFamily` (``FAMILY``)."""
        family = getattr(importlib.import_module(self.module), "FAMILY", None)
        if not isinstance(family, MetricFamily):
            raise TypeError(
                f"metric {self.key!r}: module {self.module!r} defines no MetricFamily `FAMILY`."
            )
        return family


def _row(
    key: str,
    family: str,
    options: Mapping[str, Any],
    *,
    higher_is_better: bool,
    cost: str,
    summary: str,
    needs_method: bool = False,
    paper: bool = True,
) -> MetricInfo:
    """A registry row: ``family`` names the family file, ``options`` its options for ``key``
    (``kind`` and ``mode`` fill :attr:`MetricInfo.family` and :attr:`MetricInfo.mode`)."""
    return MetricInfo(
        key,
        str(options["kind"]),
        options.get("mode"),
        higher_is_better,
        cost,
        summary,
        needs_method,
        paper,
        module=_FUNCTIONAL + family,
        options=MappingProxyType(dict(options)),
    )


_CURVE = (
    "2 * n_steps + 2 (n_steps per perturbed image; the 2 intact images, embedded once per "
    "evaluate call, are the unperturbed end of each curve)"
)
_AVERAGE = "4 forwards (2 intact, shared with the curves, + 2 masked), shared by all average_* keys"
_BOTH = "mean of both directions by default (`direction`)"


def _curve(kind: str, mode: str, substrate: str, corrected: bool = False) -> dict[str, Any]:
    return {"kind": kind, "mode": mode, "substrate": substrate, "corrected": corrected}


REGISTRY: dict[str, MetricInfo] = {
    m.key: m
    for m in (
        _row(
            "insertion_simultaneous",
            "insertion_deletion",
            _curve("insertion", "simultaneous", "blur"),
            higher_is_better=True,
            cost=_CURVE,
            summary="area under sim(f(x1_t), f(x2_t)) while both images are restored from blur, "
            "most salient pixels first",
        ),
        _row(
            "insertion_conditional",
            "insertion_deletion",
            _curve("insertion", "conditional", "blur"),
            higher_is_better=True,
            cost=f"{_CURVE}; shares its forwards with insertion_simultaneous",
            summary="area under sim(f(x_t), f(other)) while one image is restored from blur, the "
            f"other intact; {_BOTH}",
        ),
        _row(
            "deletion_simultaneous",
            "insertion_deletion",
            _curve("deletion", "simultaneous", "zero"),
            higher_is_better=False,
            cost=_CURVE,
            summary="area under sim(f(x1_t), f(x2_t)) while both images are zeroed, most salient "
            "pixels first (ends at 1: see deletion_simultaneous_corrected)",
        ),
        _row(
            "deletion_conditional",
            "insertion_deletion",
            _curve("deletion", "conditional", "zero"),
            higher_is_better=False,
            cost=f"{_CURVE}; shares its forwards with deletion_simultaneous",
            summary="area under sim(f(x_t), f(other)) while one image is zeroed, the other "
            f"intact; {_BOTH}",
        ),
        _row(
            "deletion_simultaneous_corrected",
            "insertion_deletion",
            _curve("deletion", "simultaneous", "zero", corrected=True),
            higher_is_better=False,
            cost=_CURVE,
            summary="simultaneous deletion towards each image's own blurred version, so the two "
            "fully deleted images are not identical (our correction)",
            paper=False,
        ),
        _row(
            "average_drop_simultaneous",
            "drop_increase",
            {"kind": "average_drop", "mode": "simultaneous"},
            higher_is_better=False,
            cost=_AVERAGE,
            summary="max(0, b - o) / b with o the similarity of the pair masked by min-max maps",
        ),
        _row(
            "average_drop_conditional",
            "drop_increase",
            {"kind": "average_drop", "mode": "conditional"},
            higher_is_better=False,
            cost=_AVERAGE,
            summary=f"max(0, b - o) / b with one image masked, the other intact; {_BOTH}",
        ),
        _row(
            "average_increase_simultaneous",
            "drop_increase",
            {"kind": "average_increase", "mode": "simultaneous"},
            higher_is_better=True,
            cost=_AVERAGE,
            summary="1[o > b] with o the similarity of the pair masked by min-max maps",
        ),
        _row(
            "average_increase_conditional",
            "drop_increase",
            {"kind": "average_increase", "mode": "conditional"},
            higher_is_better=True,
            cost=_AVERAGE,
            summary=f"1[o > b] with one image masked, the other intact; {_BOTH}",
        ),
        _row(
            "max_sensitivity",
            "sensitivity",
            {
                "kind": "max_sensitivity",
                "n_samples": 10,
                "radius": 0.2,
                "seed": 0,
                "explain_batch_size": None,
                "noise_at": "inputs",
            },
            higher_is_better=False,
            cost="n_samples + 1 explanations per pair (default 11)",
            summary="max over noise draws of the relative L2 change of the maps, mean of both "
            "images",
            needs_method=True,
        ),
    )
}
"""Every metric key and its row, in registry order (the order of ``evaluate``'s results)."""

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
    families = sorted({m.family for m in REGISTRY.values()})
    if family is not None and family not in families:
        raise ValueError(f"Expected `family` to be one of {families} or None, but got {family!r}.")
    return sorted(k for k, m in REGISTRY.items() if family is None or m.family == family)


def metric_info(key: str) -> MetricInfo:
    """Facts about one metric key, e.g. ``metric_info("deletion_conditional").higher_is_better``.

    Raises:
        TypeError: if ``key`` is not a string.
        ValueError: for an unknown key; the message lists the valid keys.
    """
    if not isinstance(key, str):
        raise TypeError(f"Expected a metric key (str), but got {type(key).__name__}.")
    try:
        return REGISTRY[key]
    except KeyError:
        close = difflib.get_close_matches(key, list(REGISTRY), n=1)
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
    return [k for k in REGISTRY if k in chosen]
