"""From a computed evaluation to what trackers show: pair grids with captions, curve figures,
per-pair tables, and the correlation table and scatter plot.

The evaluation engine (:func:`lightning_explain.evaluation.evaluate_probe`) computes; this module
renders and hands the pictures to :mod:`lightning_explain.sinks`. Each method is rendered just
before it is logged and its figure is released right after, so at most one figure exists at a
time, and nothing is drawn when there is no sink.

Logged keys (``<prefix>`` is ``explain`` in the callback):

* ``<prefix>/<label>/pairs``: image, rows x1 / heatmap 1 / x2 / heatmap 2 per pair, captioned
  with each pair's similarity and scores;
* ``<prefix>/<label>/curves``: figure, the insertion/deletion curves (mean and band);
* ``<prefix>/<label>/scores``: table, the per-pair scores;
* ``<prefix>_corr/table`` and ``<prefix>_corr/scatter``: the correlations of the scores with the
  kNN accuracy (see :mod:`lightning_explain.downstream`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor

from lightning_explain.correspondence import match_grid
from lightning_explain.data.probe import ProbeSet
from lightning_explain.downstream import (
    Correlation,
    DownstreamPoint,
    ScoreHistory,
    correlation_figure,
)
from lightning_explain.evaluation import InteractionEvaluation, MethodEvaluation, ProbeEvaluation
from lightning_explain.render import curves_figure, pair_grid
from lightning_explain.sinks.base import ExplanationSink, release_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MIN_TILE",
    "RenderedMethod",
    "build_sinks",
    "caption",
    "check_rendering",
    "match_caption",
    "publish",
    "publish_correlations",
    "render_method",
]

MIN_TILE = 96
"""Smallest tile side of the logged pair grids: 32 px probes are enlarged 3x to stay legible."""

_ABBREVIATIONS = (
    ("average_increase", "AI"),
    ("average_drop", "AD"),
    ("max_sensitivity", "MS"),
    ("insertion", "ins"),
    ("deletion", "del"),
    ("simultaneous", "S"),
    ("conditional", "C"),
    ("corrected", "corr"),
)


def short_key(key: str) -> str:
    """A metric key abbreviated for captions, e.g. ``insertion_simultaneous`` -> ``ins_S``."""
    for long, short in _ABBREVIATIONS:
        key = key.replace(long, short)
    return key


def caption(
    method: MethodEvaluation,
    sim: Tensor | None,
    indices: Sequence[int],
    *,
    epoch: int | None = None,
    step: int | None = None,
) -> str:
    """The caption of a pair grid: the label (epoch, step), then one line per pair with its
    dataset index, similarity and scores."""
    head = method.label
    if epoch is not None:
        head += f" | epoch {epoch}"
    if step is not None:
        head += f" | step {step}"
    lines = [head + " | rows: x1, heatmap 1, x2, heatmap 2"]
    flags = method.degenerate()
    for i in range(len(indices)):
        parts = [f"pair {i} (item {indices[i]})"]
        if sim is not None:
            parts.append(f"sim {float(sim[i]):.3f}")
        parts += [f"{short_key(k)} {float(v[i]):.3f}" for k, v in method.scores.items()]
        if i < len(flags) and bool(flags[i].any()):
            sides = " and ".join(f"h{j + 1}" for j in range(2) if bool(flags[i, j]))
            parts.append(f"{sides} degenerate (all zero or constant: crossed out)")
        lines.append(", ".join(parts))
    return "\n".join(lines)


@dataclass
class RenderedMethod:
    """What one method's explanation looks like in a tracker.

    Attributes:
        label: the method label.
        grid: ``(3, H, W)`` uint8 pair grid (see :func:`lightning_explain.render.pair_grid`).
        caption: the grid's caption.
        curves: insertion/deletion key -> ``(B, T + 1)`` per-pair curves (empty without curves).
        title: the curves' title.
    """

    label: str
    grid: Tensor
    caption: str
    curves: Mapping[str, Tensor] = field(default_factory=dict)
    title: str = ""
    _figure: Figure | None = field(default=None, repr=False)

    def figure(self) -> Figure:
        """The curves figure, drawn on the first call (only a sink that shows figures asks for
        it) and shared by later calls. Release it with :meth:`release`.

        Raises:
            ValueError: without curves.
        """
        if not self.curves:
            raise ValueError(f"method {self.label!r} has no insertion/deletion curves to draw")
        if self._figure is None:
            self._figure = curves_figure(dict(self.curves), title=self.title)
        return self._figure

    def release(self) -> None:
        """Free the curves figure, if one was drawn."""
        if self._figure is not None:
            release_figure(self._figure)
            self._figure = None


def render_method(
    probe: ProbeSet,
    method: MethodEvaluation,
    sim: Tensor | None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    epoch: int | None = None,
    step: int | None = None,
    min_tile: int = MIN_TILE,
) -> RenderedMethod:
    """Render one method's explanation of the probe pairs.

    Raises:
        ValueError: if the method has no explanation, or ``mean``/``std`` do not fit the images.
    """
    if method.explanation is None:
        raise ValueError(f"method {method.label!r} has no explanation to render")
    e = method.explanation
    marks = method.degenerate()
    grid = pair_grid(
        probe.x1,
        probe.x2,
        e.h1,
        e.h2,
        mean=mean,
        std=std,
        min_tile=min_tile,
        marks=marks if bool(marks.any()) else None,
    )
    text = caption(method, sim, probe.indices, epoch=epoch, step=step)
    title = method.label + (f", epoch {epoch}" if epoch is not None else "")
    return RenderedMethod(method.label, grid, text, dict(method.curves), title)


def match_caption(
    interaction: InteractionEvaluation, *, epoch: int | None = None, step: int | None = None
) -> str:
    """The caption of a correspondence rendering: the method, when, and (with geometry) the
    share of view-2 positions matched within one cell of the true location and the mean error."""
    when = ", ".join(
        part
        for part in (
            None if epoch is None else f"epoch {epoch}",
            None if step is None else f"step {step}",
        )
        if part
    )
    text = f"{interaction.label}: top matches of each pair (view 1 left, view 2 right)"
    if when:
        text += f", {when}"
    scores = interaction.mean_scores()
    if "accuracy" in scores:
        text += (
            f"; within one cell of the true match: {scores['accuracy']:.0%}, mean error "
            f"{scores.get('error_px', float('nan')):.1f} px"
        )
    return text


def check_rendering(
    probe: ProbeSet,
    evaluation: ProbeEvaluation,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[str, Exception] | None:
    """Render every method once (nothing is logged): ``(label, error)`` of the first failure, or
    ``None``. The training callback's dry run uses it to catch bad ``mean``/``std`` early."""
    for method in evaluation.methods:
        rendered = None
        try:
            rendered = render_method(probe, method, evaluation.sim, mean=mean, std=std)
            if rendered.curves:
                rendered.figure()
        except Exception as err:
            return method.label, err
        finally:
            if rendered is not None:
                rendered.release()
    for interaction in evaluation.interactions:
        try:
            match_grid(probe.x1, probe.x2, interaction.interaction, mean=mean, std=std)
        except Exception as err:
            return interaction.label, err
    return None


def publish(
    sinks: Sequence[ExplanationSink],
    evaluation: ProbeEvaluation,
    probe: ProbeSet,
    *,
    step: int,
    epoch: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    prefix: str = "explain",
    on_error: Any = None,
) -> int:
    """Render every method of ``evaluation`` and log grid, curves and table to every sink.

    Curves go to :meth:`ExplanationSink.log_curves` as data; their figure is drawn only when a
    sink asks for it (the built-in W&B sink logs the data as a native chart and draws nothing),
    once per method, shared by every sink.

    Args:
        sinks: where to log (nothing is rendered without sinks).
        evaluation: the computed evaluation.
        probe: the pairs it explains (images and dataset indices).
        step: the step of every ``log_*`` call.
        epoch: passed to :meth:`ExplanationSink.set_context` and shown in captions.
        mean: normalisation mean to undo in the rendered images.
        std: normalisation std to undo.
        prefix: the first part of every key.
        on_error: ``f(what, error)`` called for a failing render or sink call (then the next one
            goes on); ``None``: raise.

    Returns:
        The number of failures handed to ``on_error``.
    """
    if not sinks:
        return 0
    failures = 0

    def guarded(what: str, fn: Any, *args: Any) -> Any:
        nonlocal failures
        try:
            return fn(*args)
        except Exception as err:
            if on_error is None:
                raise
            failures += 1
            on_error(what, err)
            return None

    for sink in sinks:
        guarded(f"{sink!r}.set_context", lambda s=sink: s.set_context(epoch=epoch))
    for method in evaluation.methods:
        rendered: RenderedMethod | None = guarded(
            f"rendering method {method.label!r}",
            lambda m=method: render_method(
                probe, m, evaluation.sim, mean=mean, std=std, epoch=epoch, step=step
            ),
        )
        if rendered is None:
            continue
        try:
            key = f"{prefix}/{method.label}"
            columns, rows = evaluation.table(method.label, probe.indices)
            for sink in sinks:
                guarded(
                    f"{sink!r}: {key}/pairs",
                    sink.log_image,
                    f"{key}/pairs",
                    rendered.grid,
                    step,
                    rendered.caption,
                )
                if rendered.curves:
                    guarded(
                        f"{sink!r}: {key}/curves",
                        lambda s=sink, r=rendered, k=f"{key}/curves": s.log_curves(
                            k, r.curves, step, draw=r.figure
                        ),
                    )
                if method.scores:
                    guarded(
                        f"{sink!r}: {key}/scores",
                        sink.log_table,
                        f"{key}/scores",
                        columns,
                        rows,
                        step,
                    )
        finally:
            rendered.release()
    for interaction in evaluation.interactions:
        key = f"{prefix}/correspondence/{interaction.label}/matches"
        image = guarded(
            f"rendering correspondence {interaction.label!r}",
            lambda r=interaction: match_grid(
                probe.x1, probe.x2, r.interaction, mean=mean, std=std, min_tile=MIN_TILE
            ),
        )
        if image is None:
            continue
        text = match_caption(interaction, epoch=epoch, step=step)
        for sink in sinks:
            guarded(f"{sink!r}: {key}", sink.log_image, key, image, step, text)
    for sink in sinks:
        guarded(f"{sink!r}.flush", sink.flush)
    return failures


def publish_correlations(
    sinks: Sequence[ExplanationSink],
    points: Sequence[DownstreamPoint],
    correlations: Sequence[Correlation],
    *,
    step: int,
    methods: Sequence[str],
    prefix: str = "explain",
) -> None:
    """Log the correlation table and the score-vs-accuracy scatter figure to every sink."""
    if not sinks or not correlations:
        return
    directions = {True: "higher is better", False: "lower is better"}
    columns = ["method", "metric", "direction", "n", "spearman", "pearson"]
    rows: list[list[object]] = [
        [
            c.method,
            c.metric,
            "" if c.higher_is_better is None else directions[c.higher_is_better],
            c.n,
            c.spearman,
            c.pearson,
        ]
        for c in correlations
    ]
    figure = correlation_figure(
        points,
        correlations,
        methods=list(methods),
        title=f"explanation scores vs kNN accuracy over {len(points)} evaluations",
    )
    try:
        for sink in sinks:
            sink.log_table(f"{prefix}_corr/table", columns, rows, step)
            sink.log_figure(f"{prefix}_corr/scatter", figure, step)
    finally:
        release_figure(figure)


def publish_evaluation(
    loggers: Sequence[Any],
    sinks: Sequence[ExplanationSink],
    evaluation: ProbeEvaluation,
    probe: ProbeSet,
    scalars: Mapping[str, float],
    *,
    history: ScoreHistory | None,
    labels: Sequence[str] | None = None,
    step: int,
    epoch: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    prefix: str = "explain",
    on_error: Any = None,
) -> None:
    """Everything one evaluation logs: ``scalars`` to every Lightning logger (``log_metrics``),
    then :func:`publish` to the sinks, then the correlations of ``history`` if it has any
    (``labels``: the methods in the correlation table; default: those evaluated).

    Every logger and sink call is guarded: a failure goes to ``on_error(what, error)`` (``None``:
    raise) and the next call goes on.
    """

    def guarded(what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as err:
            if on_error is None:
                raise
            on_error(what, err)

    for logger in loggers:
        guarded(
            f"{type(logger).__name__}.log_metrics", logger.log_metrics, dict(scalars), step=step
        )
    publish(
        sinks,
        evaluation,
        probe,
        step=step,
        epoch=epoch,
        mean=mean,
        std=std,
        prefix=prefix,
        on_error=on_error,
    )
    if history is not None and history.correlations and sinks:
        guarded(
            "the correlation table",
            publish_correlations,
            sinks,
            history.points(),
            history.correlations,
            step=step,
            methods=list(labels) if labels is not None else [m.label for m in evaluation.methods],
            prefix=prefix,
        )


def scalar_charts(
    labels: Sequence[str],
    metric_keys: Sequence[str],
    *,
    knn: bool = False,
    correlations: bool = False,
    prefix: str = "explain",
) -> tuple[dict[str, list[str]], dict[str, bool | None]]:
    """The chart layout of the callback's scalars: one chart per method x metric family (e.g.
    ``"gradcam: insertion"`` with the simultaneous and conditional insertion scores), then the
    probe's own scalars, then (with ``correlations``) one chart of Spearman correlations per
    method; and the direction of every key. Given to :meth:`ExplanationSink.define_scalars`.

    Example:
        >>> charts, _ = scalar_charts(["gradcam"], ["insertion_simultaneous", "deletion_conditional"])
        >>> list(charts)
        ['gradcam: insertion', 'gradcam: deletion', 'probe set']
    """
    from lightning_explain.metrics import metric_info

    charts: dict[str, list[str]] = {}
    better: dict[str, bool | None] = {}
    for label in labels:
        for key in metric_keys:
            info = metric_info(key)
            name = f"{prefix}/{label}/{key}"
            charts.setdefault(f"{label}: {info.family.replace('_', ' ')}", []).append(name)
            better[name] = info.higher_is_better
    probe = [f"{prefix}/sim", f"{prefix}/errors"] + ([f"{prefix}/knn_accuracy"] if knn else [])
    charts["probe set"] = probe
    better.update(
        {f"{prefix}/sim": None, f"{prefix}/errors": False, f"{prefix}/knn_accuracy": True}
    )
    if knn and correlations:
        for label in labels:
            keys = [f"{prefix}_corr/{label}/{k}/spearman" for k in metric_keys]
            charts[f"{label}: Spearman correlation with the kNN accuracy"] = keys
            better.update(dict.fromkeys(keys))
    return charts, {k: better[k] for keys in charts.values() for k in keys}


def build_sinks(
    loggers: Sequence[Any],
    fallback_dir: str,
    labels: Sequence[str],
    metric_keys: Sequence[str],
    *,
    knn: bool = False,
    correlations: bool = False,
    warn: Any = None,
) -> list[ExplanationSink]:
    """One sink per logger (:func:`lightning_explain.sinks.sinks_for`), each told the chart layout
    of :func:`scalar_charts` once; a sink whose layout call fails is kept (``warn(text)`` is told)."""
    from lightning_explain.sinks import sinks_for

    sinks = sinks_for(loggers, fallback_dir=fallback_dir)
    charts, better = scalar_charts(labels, metric_keys, knn=knn, correlations=correlations)
    for sink in sinks:
        try:
            sink.define_scalars(charts, better)
        except Exception as err:  # a layout is a nicety; never lose the run for it
            if warn is not None:
                warn(f"{sink!r}.define_scalars failed: {type(err).__name__}: {err}")
    return sinks
