"""Correspondence explanations in ``lightning-explain compare`` and ``report``.

``--interactions NAME[,NAME...]`` selects methods of :mod:`lightning_explain.correspondence`
(validated before any checkpoint is loaded; an unknown name is an error listing the valid ones)
and ``--interaction-option NAME=VALUE`` passes options to every selected one that takes them, as
``--option`` does for the heatmap methods. The engine
(:func:`lightning_explain.evaluation.evaluate_probe`) computes them; this module turns its
results into what the commands write: the dashboard's Correspondence tab
(:class:`lightning_explain.dashboard_correspondence.CorrespondenceRecord`) and the
correspondence table (:class:`lightning_explain.report.CorrespondenceTable`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_explain.cli._common import CLIError, comma_list, parse_options, spread_options
from lightning_explain.dashboard_correspondence import CorrespondenceRecord
from lightning_explain.entries import MethodSpec, parse_interactions

if TYPE_CHECKING:
    from torch import Tensor

    from lightning_explain.evaluation import InteractionEvaluation
    from lightning_explain.report import CorrespondenceTable

__all__ = [
    "correspondence_records",
    "correspondence_table",
    "interaction_specs",
    "write_correspondence",
]


def interaction_specs(
    names: Sequence[str] | None, option_items: Sequence[str], *, streaming: bool = False
) -> list[MethodSpec]:
    """The interaction entries of ``--interactions`` with the ``--interaction-option`` values
    each method takes.

    Args:
        names: the values of ``--interactions`` (space- or comma-separated), or ``None``.
        option_items: the ``--interaction-option`` items (``NAME=VALUE``).
        streaming: whether ``report --pairs-from`` asked for them (refused: the streamed report
            scores heatmap methods only).

    Returns:
        One :class:`~lightning_explain.evaluation.MethodSpec` per method, in order (none without
        ``--interactions``).

    Raises:
        CLIError: for an unknown method (the message lists the valid names), an option that no
            selected method takes, options without methods, or ``--pairs-from``.
    """
    from lightning_explain._checks import keyword_options
    from lightning_explain.correspondence import (
        get_interaction_method,
        interaction_method_info,
        list_interaction_methods,
    )

    try:
        options: dict[str, Any] = parse_options(option_items)
    except CLIError as err:
        raise CLIError(str(err).replace("--option", "--interaction-option")) from None
    methods = list(dict.fromkeys(comma_list(names or [])))
    if not methods:
        if options:
            raise CLIError(
                f"--interaction-option {', '.join(sorted(options))}: no --interactions method "
                f"was selected. Add --interactions NAME (one of "
                f"{', '.join(list_interaction_methods())}) or drop the option."
            )
        return []
    if streaming:
        raise CLIError(
            "--interactions cannot be combined with --pairs-from: the streamed report scores "
            "the heatmap methods only. Drop --pairs-from to report the correspondences of the "
            "probe set (--probe, or the one stored in the checkpoint), or drop --interactions."
        )
    for name in methods:
        try:
            interaction_method_info(name)
        except ValueError as err:
            message = str(err).removeprefix("`explain_interactions`: ")
            raise CLIError(f"--interactions: {message}") from err

    def accepted(name: str) -> list[str]:
        return list(keyword_options(get_interaction_method(name)))

    entries, unused = spread_options(methods, options, accepted)
    if unused:
        offered = [f"{name}: {', '.join(accepted(name))}" for name in methods]
        raise CLIError(
            f"--interaction-option {', '.join(unused)}: no selected interaction method "
            f"({', '.join(methods)}) takes {'this option' if len(unused) == 1 else 'these options'}."
            f" Their options: {'; '.join(offered)}."
        )
    try:
        return parse_interactions(entries, owner="--interaction-option")
    except (TypeError, ValueError) as err:
        raise CLIError(str(err)) from err


def correspondence_records(
    index: int,
    interactions: Sequence[InteractionEvaluation],
    x1: Tensor,
    x2: Tensor,
    *,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    min_tile: int,
) -> list[CorrespondenceRecord]:
    """The dashboard records of one checkpoint's correspondence methods.

    Args:
        index: the checkpoint's index in the dashboard.
        interactions: the engine's results
            (:attr:`lightning_explain.evaluation.ProbeEvaluation.interactions`).
        x1: ``(B, C, H, W)`` displayable first images (``C`` = 1 or 3).
        x2: ``(B, C, H, W)`` displayable second images.
        mean: normalisation means to undo.
        std: normalisation standard deviations to undo.
        min_tile: smallest side of a view in the renderings, in pixels.

    Returns:
        One :class:`CorrespondenceRecord` per method, in order.
    """
    return [
        CorrespondenceRecord.from_evaluation(
            index, r, x1, x2, mean=mean, std=std, min_tile=min_tile
        )
        for r in interactions
    ]


def correspondence_table(
    names: Sequence[str],
    scores: Sequence[Mapping[str, Mapping[str, float]]],
    pairs: int,
    *,
    title: str | None = None,
    notes: Sequence[str] = (),
) -> CorrespondenceTable:
    """The correspondence table of ``report`` and ``compare``: a row per checkpoint x method.

    Args:
        names: the checkpoint names.
        scores: per checkpoint, method label -> its mean geometry scores (``accuracy``,
            ``error_px``; empty without geometry).
        pairs: how many probe pairs were explained.
        title: the heading. Default: the table's.
        notes: lines under the heading.

    Returns:
        The :class:`lightning_explain.report.CorrespondenceTable`, grouped by method.
    """
    from lightning_explain.report import CorrespondenceRow, CorrespondenceTable

    methods = list(dict.fromkeys(m for per in scores for m in per))
    rows = [
        CorrespondenceRow(
            name,
            method,
            pairs,
            per[method].get("accuracy"),
            per[method].get("error_px"),
        )
        for method in methods
        for name, per in zip(names, scores)
        if method in per
    ]
    if title is None:
        return CorrespondenceTable(rows, notes=list(notes))
    return CorrespondenceTable(rows, title=title, notes=list(notes))


def write_correspondence(
    out: Path,
    names: Sequence[str],
    scores: Sequence[Mapping[str, Mapping[str, float]]],
    pairs: int,
    title: str | None = None,
    notes: Sequence[str] = (),
) -> tuple[dict[str, Path], str]:
    """Write ``<out>/correspondence.{md,csv,html}`` (see :func:`correspondence_table`).

    Returns:
        The paths written (``{"markdown": ..., "csv": ..., "html": ...}``) and the Markdown text.
    """
    from lightning_explain.report import correspondence_markdown, write_correspondence_report

    table = correspondence_table(names, scores, pairs, title=title, notes=notes)
    return write_correspondence_report(table, out), correspondence_markdown(table)
