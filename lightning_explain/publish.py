"""From a computed evaluation to what trackers show: pair grids with captions, curve figures,
per-pair tables, and the correlation table and scatter plot.

The evaluation engine (:func:`lightning_explain.evaluation.evaluate_probe`) computes; this module
renders and hands the pictures to :mod:`lightning_explain.sinks`. Each method is rendered just
before it is logged and its figure is released right after, so at most one figure exists at a
time, and nothing is drawn when there is no sink.

Under DDP the pictures are drawn on every rank: :func:`plan_rendering` shares them out,
:func:`render_jobs` draws one rank's share (grids, captions, curves rasterised at each sink's
dpi, and already encoded for the sinks that store PNG files, see :func:`picture_formats`), and
:func:`publish` on rank 0 logs the drawn pictures (``drawn=``) as it would have logged its own
drawings, pixel for pixel (a sink with a :class:`~lightning_explain.sinks.base.PngEncoder` gets
the encoded bytes, so rank 0 only writes them).

Logged keys (``<prefix>`` is ``explain`` in the callback):

* ``<prefix>/<label>/pairs``: image, rows x1 / heatmap 1 / x2 / heatmap 2 per pair, captioned
  with each pair's similarity and scores;
* ``<prefix>/<label>/curves``: figure, the insertion/deletion curves (mean and band);
* ``<prefix>/<label>/scores``: table, the per-pair scores;
* ``<prefix>_corr/table`` and ``<prefix>_corr/scatter``: the correlations of the scores with the
  kNN accuracy (see :mod:`lightning_explain.downstream`).
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

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
from lightning_explain.render import curves_figure, figure_to_image, pair_grid, picture_figure
from lightning_explain.sinks.base import ExplanationSink, PngEncoder, release_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MIN_TILE",
    "PictureFormats",
    "RenderJob",
    "RenderedMethod",
    "RenderedPicture",
    "build_sinks",
    "caption",
    "check_rendering",
    "evaluation_for",
    "figure_dpis",
    "match_caption",
    "picture_formats",
    "picture_key",
    "plan_rendering",
    "publish",
    "publish_correlations",
    "render_jobs",
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
        grid: ``(3, H, W)`` uint8 pair grid (see :func:`lightning_explain.render.pair_grid`);
            ``None`` when it was drawn on another rank and only its PNG files travelled.
        caption: the grid's caption.
        curves: insertion/deletion key -> ``(B, T + 1)`` per-pair curves (empty without curves).
        title: the curves' title.
    """

    label: str
    grid: Tensor | None
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
    return RenderedMethod(method.label, grid, text, dict(method.curves), _title(method, epoch))


def _title(method: MethodEvaluation, epoch: int | None) -> str:
    """The title of a method's curves figure."""
    return method.label + (f", epoch {epoch}" if epoch is not None else "")


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


# --------------------------------------------------------------------------------------------------
# Pictures drawn on several ranks

_COST = {"curves": 4.0, "pairs": 1.0, "matches": 1.0}
"""Weights that balance the ranks' shares in :func:`plan_rendering`: a curves figure (text,
ticks, legend) takes several times as long to draw as a pair grid."""


@dataclass(frozen=True)
class RenderJob:
    """One picture of an evaluation that any rank can draw: a method's pair grid (``"pairs"``),
    its curves figure (``"curves"``) or a correspondence method's match grid (``"matches"``)."""

    kind: Literal["pairs", "curves", "matches"]
    label: str


@dataclass(frozen=True)
class RenderedPicture:
    """A drawn :class:`RenderJob`, ready to travel to rank 0 (CPU tensors and text).

    Attributes:
        job: what was drawn.
        image: ``(3, H, W)`` uint8 grid of ``"pairs"`` and ``"matches"`` jobs.
        caption: the grid's caption.
        pictures: for ``"curves"``: dpi -> ``(3, H, W)`` uint8 picture of the curves figure drawn
            at that dpi (:attr:`PictureFormats.dpis`).
        png: ``(dpi, encoder)`` -> the PNG file of the picture for the sinks with that
            :attr:`~lightning_explain.sinks.ExplanationSink.png_encoder`
            (:attr:`PictureFormats.encoders`): ``dpi`` is ``None`` for grids (``image`` is then
            left out unless a sink takes pixels) and the figure's dpi for ``"curves"``.
        error: ``"<Type>: <message>"`` when drawing failed (then nothing else is set).
    """

    job: RenderJob
    image: Tensor | None = None
    caption: str = ""
    pictures: Mapping[float, Tensor] = field(default_factory=dict)
    png: Mapping[tuple[float | None, PngEncoder], bytes] = field(default_factory=dict)
    error: str | None = None


def picture_key(prefix: str, job: RenderJob) -> str:
    """The key :func:`publish` logs the picture of ``job`` under."""
    if job.kind == "matches":
        return f"{prefix}/correspondence/{job.label}/matches"
    return f"{prefix}/{job.label}/{job.kind}"


@dataclass(frozen=True)
class PictureFormats:
    """What the sinks of an evaluation take, so that the ranks that draw its pictures make
    exactly that (see :func:`picture_formats`).

    Attributes:
        pixels: whether a sink takes the grids as pixels (one without a ``png_encoder``).
        dpis: the resolutions of the curves pictures for the sinks that take figures
            (:func:`figure_dpis` of the sinks without a ``png_encoder``).
        encoders: the distinct ``png_encoder`` of the sinks that store PNG files.
        curve_encoders: ``(dpi, encoder)`` of those that draw curves, at their figure dpi.
        prefix: the first part of every key (the PNG files hold their key).
    """

    pixels: bool = True
    dpis: tuple[float, ...] = ()
    encoders: tuple[PngEncoder, ...] = ()
    curve_encoders: tuple[tuple[float, PngEncoder], ...] = ()
    prefix: str = "explain"

    @property
    def curves(self) -> bool:
        """Whether a sink draws curves (then :func:`plan_rendering` plans their figures)."""
        return bool(self.dpis or self.curve_encoders)


def picture_formats(sinks: Sequence[ExplanationSink], *, prefix: str = "explain") -> PictureFormats:
    """The :class:`PictureFormats` that :func:`publish` logs to ``sinks`` with ``prefix``."""
    pixel_sinks = [s for s in sinks if s.png_encoder is None]
    encoders: list[PngEncoder] = []
    curve_encoders: list[tuple[float, PngEncoder]] = []
    for sink in sinks:
        encoder = sink.png_encoder
        if encoder is None:
            continue
        if encoder not in encoders:
            encoders.append(encoder)
        if sink.draws_curves and (_sink_dpi(sink), encoder) not in curve_encoders:
            curve_encoders.append((_sink_dpi(sink), encoder))
    return PictureFormats(
        pixels=bool(pixel_sinks),
        dpis=figure_dpis(pixel_sinks),
        encoders=tuple(encoders),
        curve_encoders=tuple(curve_encoders),
        prefix=prefix,
    )


def _sink_dpi(sink: ExplanationSink) -> float:
    """The dpi ``sink`` rasterises figures at, ``None`` resolved to matplotlib's ``figure.dpi``."""
    import matplotlib

    dpi = sink.figure_dpi
    return float(matplotlib.rcParams["figure.dpi"] if dpi is None else dpi)


def figure_dpis(sinks: Sequence[ExplanationSink]) -> tuple[float, ...]:
    """The distinct resolutions at which the sinks that draw curves
    (:attr:`ExplanationSink.draws_curves`) rasterise figures (:attr:`ExplanationSink.figure_dpi`);
    empty when none draws curves."""
    out: list[float] = []
    for sink in sinks:
        if sink.draws_curves and _sink_dpi(sink) not in out:
            out.append(_sink_dpi(sink))
    return tuple(out)


def plan_rendering(
    evaluation: ProbeEvaluation, *, curves: bool, world_size: int
) -> list[list[RenderJob]]:
    """Share the pictures that :func:`publish` logs for ``evaluation`` among ``world_size``
    ranks: one list of jobs per rank. Jobs go heaviest kind first (a curves figure weighs more
    than a grid) to the rank with the least work so far (ties: the lowest rank), entry order
    within a kind.

    Args:
        evaluation: the whole evaluation (every rank's pairs).
        curves: whether any sink draws curves (:func:`figure_dpis` is not empty); without, no
            curves figure is drawn.
        world_size: the number of ranks.
    """
    jobs = []
    for method in evaluation.methods:
        if method.explanation is not None:
            jobs.append(RenderJob("pairs", method.label))
            if curves and method.curves:
                jobs.append(RenderJob("curves", method.label))
    jobs += [RenderJob("matches", r.label) for r in evaluation.interactions]
    shares: list[list[RenderJob]] = [[] for _ in range(max(1, world_size))]
    load = [(0.0, rank) for rank in range(len(shares))]
    for job in sorted(jobs, key=lambda j: -_COST[j.kind]):
        work, rank = heapq.heappop(load)
        shares[rank].append(job)
        heapq.heappush(load, (work + _COST[job.kind], rank))
    return shares


def evaluation_for(evaluation: ProbeEvaluation, jobs: Sequence[RenderJob]) -> ProbeEvaluation:
    """What a rank needs to draw ``jobs``: ``evaluation`` with only their methods and
    correspondence entries (and no failures), so that only those travel to it."""
    labels = {job.label for job in jobs}
    return dataclasses.replace(
        evaluation,
        methods=tuple(m for m in evaluation.methods if m.label in labels),
        interactions=tuple(r for r in evaluation.interactions if r.label in labels),
        failures=(),
    )


def render_jobs(
    probe: ProbeSet,
    evaluation: ProbeEvaluation,
    jobs: Sequence[RenderJob],
    *,
    dpis: Sequence[float] = (),
    formats: PictureFormats | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    epoch: int | None = None,
    step: int | None = None,
) -> list[RenderedPicture]:
    """Draw ``jobs`` (a share of :func:`plan_rendering`) as :func:`publish` would: the same
    grids, captions and curves figures, the latter rasterised at each of ``dpis``, or in the
    ``formats`` of the sinks (:func:`picture_formats`; then ``dpis`` is ignored): pixels for the
    sinks that take them, PNG files for those with a ``png_encoder``. Never raises: a failing
    job gives a picture with ``error`` set and the next one goes on, so that every rank reaches
    the collective that follows."""
    wanted = formats if formats is not None else PictureFormats(dpis=tuple(dpis))
    out = []
    for job in jobs:
        try:
            out.append(_render_job(probe, evaluation, job, wanted, mean, std, epoch, step))
        except Exception as err:
            out.append(RenderedPicture(job, error=f"{type(err).__name__}: {err}"))
    return out


def _render_job(
    probe: ProbeSet,
    evaluation: ProbeEvaluation,
    job: RenderJob,
    formats: PictureFormats,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    epoch: int | None,
    step: int | None,
) -> RenderedPicture:
    key, at = picture_key(formats.prefix, job), int(step or 0)
    if job.kind == "curves":
        method = evaluation[job.label]
        figure = curves_figure(dict(method.curves), title=_title(method, epoch))
        try:
            dpis = {*formats.dpis, *(dpi for dpi, _ in formats.curve_encoders)}
            drawn = {dpi: figure_to_image(figure, dpi=dpi) for dpi in dpis}
        finally:
            release_figure(figure)
        return RenderedPicture(
            job,
            pictures={dpi: drawn[dpi] for dpi in formats.dpis},
            png={(d, e): e.encode(key, drawn[d], at) for d, e in formats.curve_encoders},
        )
    if job.kind == "matches":
        found = [r for r in evaluation.interactions if r.label == job.label]
        if not found:
            raise KeyError(f"no correspondence entry {job.label!r} in the evaluation")
        image: Tensor | None = match_grid(
            probe.x1, probe.x2, found[0].interaction, mean=mean, std=std, min_tile=MIN_TILE
        )
        text = match_caption(found[0], epoch=epoch, step=step)
    else:
        rendered = render_method(
            probe, evaluation[job.label], evaluation.sim, mean=mean, std=std, epoch=epoch, step=step
        )
        image, text = rendered.grid, rendered.caption
    if image is None:  # pragma: no cover - render_method always draws a grid
        raise RuntimeError(f"no picture was drawn for {key!r}")
    return RenderedPicture(
        job,
        image if formats.pixels else None,
        text,
        png={(None, e): e.encode(key, image, at, text) for e in formats.encoders},
    )


# --------------------------------------------------------------------------------------------------
# Logging


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
    drawn: Sequence[RenderedPicture] = (),
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
        drawn: pictures already drawn (on other ranks, by :func:`render_jobs` with the same
            ``mean``, ``std``, ``epoch`` and ``step``): they are logged instead of drawing them
            again, a curves picture to each sink whose :attr:`~ExplanationSink.figure_dpi` it was
            drawn at (as a :func:`~lightning_explain.render.picture_figure`). What is not among
            them is drawn here.

    Returns:
        The number of failures handed to ``on_error``.
    """
    if not sinks:
        return 0
    failures = 0
    done = {picture.job: picture for picture in drawn}

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

    def drawn_ok(job: RenderJob, what: str) -> RenderedPicture | None:
        """The picture of ``job`` drawn elsewhere; a failure there is reported here."""
        picture = done.get(job)
        if picture is not None and picture.error is not None:
            guarded(what, _raise, picture.error)
        return picture

    for sink in sinks:
        guarded(f"{sink!r}.set_context", lambda s=sink: s.set_context(epoch=epoch))
    for method in evaluation.methods:
        what = f"rendering method {method.label!r}"
        pairs = drawn_ok(RenderJob("pairs", method.label), what)
        rendered: RenderedMethod | None
        if pairs is None:
            rendered = guarded(
                what,
                lambda m=method: render_method(
                    probe, m, evaluation.sim, mean=mean, std=std, epoch=epoch, step=step
                ),
            )
        elif pairs.error is None:
            title = _title(method, epoch)
            rendered = RenderedMethod(
                method.label, pairs.image, pairs.caption, method.curves, title
            )
        else:
            rendered = None
        if rendered is None:
            continue
        what = f"rendering the curves of method {method.label!r}"
        curves = _Curves(rendered, drawn_ok(RenderJob("curves", method.label), what))
        try:
            key = f"{prefix}/{method.label}"
            columns, rows = evaluation.table(method.label, probe.indices)
            for sink in sinks:
                guarded(
                    f"{sink!r}: {key}/pairs",
                    _log_picture,
                    sink,
                    f"{key}/pairs",
                    rendered.grid,
                    pairs,
                    step,
                    rendered.caption,
                )
                if rendered.curves and not (curves.failed and sink.draws_curves):
                    guarded(f"{sink!r}: {key}/curves", curves.log, sink, f"{key}/curves", step)
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
            curves.release()
    for interaction in evaluation.interactions:
        key = f"{prefix}/correspondence/{interaction.label}/matches"
        what = f"rendering correspondence {interaction.label!r}"
        matches = drawn_ok(RenderJob("matches", interaction.label), what)
        if matches is not None:
            if matches.error is not None:
                continue
            image, text = matches.image, matches.caption
        else:
            image = guarded(
                what,
                lambda r=interaction: match_grid(
                    probe.x1, probe.x2, r.interaction, mean=mean, std=std, min_tile=MIN_TILE
                ),
            )
            text = match_caption(interaction, epoch=epoch, step=step)
        if image is None and matches is None:
            continue
        for sink in sinks:
            guarded(f"{sink!r}: {key}", _log_picture, sink, key, image, matches, step, text)
    for sink in sinks:
        guarded(f"{sink!r}.flush", sink.flush)
    return failures


@dataclass
class _Curves:
    """Where the curves figure of one method comes from, per sink: the picture drawn on another
    rank at the sink's dpi, shown by a :func:`~lightning_explain.render.picture_figure` (one per
    dpi), or else the method's own figure, drawn on the first call."""

    rendered: RenderedMethod
    drawn: RenderedPicture | None
    figures: dict[float, Figure] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Whether drawing the figure failed on another rank (reported there: not drawn again)."""
        return self.drawn is not None and self.drawn.error is not None

    def log(self, sink: ExplanationSink, key: str, step: int) -> None:
        """Log the curves to ``sink``: as the PNG file drawn for it on another rank, or else
        through :meth:`ExplanationSink.log_curves` (drawing the figure if it asks for one)."""
        encoder = sink.png_encoder
        png = None
        if encoder is not None and self.drawn is not None:
            png = self.drawn.png.get((_sink_dpi(sink), encoder))
        if png is not None:
            sink.log_png_curves(key, self.rendered.curves, png, step)
        else:
            sink.log_curves(key, self.rendered.curves, step, draw=self.draw_for(sink))

    def draw_for(self, sink: ExplanationSink) -> Callable[[], Figure]:
        """The ``draw`` argument of ``sink.log_curves``: nothing is drawn until it is called."""
        dpi = _sink_dpi(sink)
        if self.drawn is None or dpi not in self.drawn.pictures:
            return self.rendered.figure
        return functools.partial(self._picture, dpi)

    def _picture(self, dpi: float) -> Figure:
        if dpi not in self.figures:
            pictures = self.drawn.pictures if self.drawn is not None else {}
            self.figures[dpi] = picture_figure(pictures[dpi], dpi=dpi)
        return self.figures[dpi]

    def release(self) -> None:
        """Free every figure drawn for the sinks."""
        self.rendered.release()
        for figure in self.figures.values():
            release_figure(figure)
        self.figures.clear()


def _log_picture(
    sink: ExplanationSink,
    key: str,
    image: Tensor | None,
    drawn: RenderedPicture | None,
    step: int,
    caption: str,
) -> None:
    """Log a grid to ``sink``: the PNG file drawn for its ``png_encoder`` on another rank, or
    else the pixels."""
    encoder = sink.png_encoder
    png = drawn.png.get((None, encoder)) if drawn is not None and encoder is not None else None
    if png is not None:
        sink.log_png(key, png, step, caption)
    elif image is not None:
        sink.log_image(key, image, step, caption)
    else:
        raise RuntimeError(
            f"the picture {key!r} was drawn on another rank without the format this sink takes"
        )


def _raise(message: str) -> None:
    """Report a failure of another rank as a ``RuntimeError`` with its message."""
    raise RuntimeError(message)


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
    drawn: Sequence[RenderedPicture] = (),
) -> None:
    """Everything one evaluation logs: ``scalars`` to every Lightning logger (``log_metrics``),
    then :func:`publish` to the sinks (``drawn``: pictures drawn on other ranks), then the
    correlations of ``history`` if it has any (``labels``: the methods in the correlation table;
    default: those evaluated).

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
        drawn=drawn,
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
