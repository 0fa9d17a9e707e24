"""The live dashboard: the page of :mod:`lightning_explain.dashboard`, rewritten after every
evaluation of a training run.

:class:`LiveDashboard` accumulates one step per evaluation (encoded maps, per-pair scores and
curves, degenerate flags) and rewrites ``index.html`` atomically (a temporary file in the same
folder, then ``os.replace``), so a reader never sees a half-written page; the page reloads itself.
The training callback calls :func:`update_live_dashboard` on rank 0 (``dashboard_dir=``);
:func:`check_dashboard_dir` validates that argument at construction.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_explain.dashboard import (
    CheckpointInfo,
    DashboardData,
    MetricColumn,
    Pictures,
    Stats,
    write_dashboard,
)
from lightning_explain.dashboard_correspondence import (
    CorrespondenceRecord,
    restore_correspondence,
)
from lightning_explain.dashboard_media import MethodRecord, as_floats, base64_text, encode_image

if TYPE_CHECKING:
    from torch import Tensor

    from lightning_explain.data.probe import ProbeSet
    from lightning_explain.evaluation import ProbeEvaluation

__all__ = ["DASHBOARD_FILE", "LiveDashboard", "check_dashboard_dir", "update_live_dashboard"]

_OWNER = "dashboard"

# --------------------------------------------------------------------------------------------------
# Live


@dataclass(frozen=True)
class _Evaluation:
    info: CheckpointInfo
    methods: Mapping[str, MethodRecord]
    sim: tuple[float, ...]
    knn_accuracy: float | None
    correspondence: tuple[CorrespondenceRecord, ...] = ()


def _displayable(x: Tensor, mean: Stats, std: Stats) -> tuple[Tensor, Stats, Stats]:
    """As ``compare``: images of other channel counts than 1 or 3 show their first channel."""
    if x.shape[1] not in (1, 3):
        return (
            x[:, :1],
            None if mean is None else list(mean)[:1],
            None if std is None else list(std)[:1],
        )
    return x, mean, std


def _display_rgb(x: Tensor, mean: Stats, std: Stats) -> Tensor:
    from lightning_explain.render import to_rgb

    return to_rgb(*_displayable(x, mean, std))


class LiveDashboard:
    """A dashboard of one training run, rewritten after every evaluation.

    It keeps what the page needs of each evaluation, encoded (maps as 8-bit grey WebP, probe
    images as WebP, scores and curves as floats; no tensor), at most ``max_evaluations`` of them,
    and rewrites ``path`` atomically (temporary file in the same folder, then :func:`os.replace`)
    on every :meth:`add`, so that a browser or another process never reads a half-written page.
    The page offers to reload itself every ``refresh_seconds`` and keeps its tab, pair, slider
    and filters across reloads.

    Args:
        path: the HTML file to (re)write.
        probe: the probe set explained at every evaluation (its images are encoded once); or
            give ``pairs``.
        pairs: the encoded images of the pairs (see :func:`encode_image`), instead of ``probe``.
        mean: normalisation means to undo when showing the probe images. Default: the probe
            set's.
        std: normalisation standard deviations to undo. Default: the probe set's.
        metrics: metric columns in display order (keys get their direction from
            :func:`lightning_explain.metrics.metric_info`). Default: those of the first
            evaluation.
        title: page title.
        info: ``(label, value)`` lines for the Run tab.
        knn_info: one line describing the kNN probe.
        max_evaluations: how many evaluations are kept; beyond it the interior evaluation whose
            neighbours are closest in global step is dropped, so the kept ones stay spread over
            the run (the first and the latest are always kept). Default 50.
        refresh_seconds: the page's reload period. Default 30.

    Raises:
        ValueError: for a bad ``max_evaluations`` or neither/both of ``probe`` and ``pairs``.

    Example:
        >>> import tempfile, torch
        >>> folder = tempfile.mkdtemp()
        >>> live = LiveDashboard(f"{folder}/live.html", pairs=[(encode_image(np.zeros((4, 4))),) * 2])
        >>> record = MethodRecord.from_tensors(torch.rand(1, 4, 4), torch.rand(1, 4, 4),
        ...                                    scores={"insertion_simultaneous": [0.5]})
        >>> path = live.add(epoch=0, global_step=10, methods={"gradcam": record}, sim=[0.9])
        >>> len(live), path.read_text(encoding="utf-8").rstrip().endswith("</html>")
        (1, True)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        probe: ProbeSet | None = None,
        *,
        pairs: Pictures | None = None,
        mean: Stats = None,
        std: Stats = None,
        metrics: Sequence[str | MetricColumn] | None = None,
        title: str = "lightning-explain: live",
        info: Sequence[tuple[str, str]] = (),
        knn_info: str = "",
        max_evaluations: int = 50,
        refresh_seconds: float | None = 30.0,
    ) -> None:
        if (probe is None) == (pairs is None):
            raise ValueError(
                f"`{_OWNER}.LiveDashboard`: pass either `probe` (a ProbeSet) or `pairs` (encoded "
                f"images), exactly one of them."
            )
        if isinstance(max_evaluations, bool) or not isinstance(max_evaluations, int):
            raise ValueError(
                f"`{_OWNER}.LiveDashboard`: expected `max_evaluations` to be an int >= 2, but got "
                f"{max_evaluations!r}."
            )
        if max_evaluations < 2:
            raise ValueError(
                f"`{_OWNER}.LiveDashboard`: expected `max_evaluations` >= 2 (the first and the "
                f"latest evaluation are always kept), but got {max_evaluations}."
            )
        self.path = Path(path)
        self.title = title
        self.info = list(info)
        self.knn_info = knn_info
        self.max_evaluations = max_evaluations
        self.refresh_seconds = refresh_seconds
        self._metrics = None if metrics is None else [_column(m) for m in metrics]
        self._methods: list[str] = []
        self._evaluations: list[_Evaluation] = []
        self._pairs: list[tuple[bytes, bytes]] = []
        self._probe: ProbeSet | None = None
        self._stats: tuple[Stats, Stats] = (None, None)
        if probe is not None:
            self.set_probe(probe, mean=mean, std=std)
        else:
            self._pairs = [(bytes(a), bytes(b)) for a, b in pairs or ()]

    def __len__(self) -> int:
        return len(self._evaluations)

    @property
    def probe(self) -> ProbeSet | None:
        """The probe set whose pairs are shown (``None`` when built from ``pairs``)."""
        return self._probe

    def set_probe(self, probe: ProbeSet, *, mean: Stats = None, std: Stats = None) -> None:
        """Use another probe set; forgets the evaluations (their pairs were other pairs).

        Args:
            probe: the new probe set.
            mean: normalisation means to undo. Default: the probe set's.
            std: normalisation standard deviations to undo. Default: the probe set's.
        """
        mean = probe.mean if mean is None else mean
        std = probe.std if std is None else std
        rgb1 = _display_rgb(probe.x1, mean, std).cpu()
        rgb2 = _display_rgb(probe.x2, mean, std).cpu()
        self._pairs = [(encode_image(a), encode_image(b)) for a, b in zip(rgb1, rgb2)]
        self._probe = probe
        self._stats = (mean, std)
        self._evaluations.clear()

    def add(
        self,
        *,
        epoch: int | None,
        global_step: int | None,
        methods: Mapping[str, MethodRecord],
        sim: Sequence[float] | Tensor | None = None,
        knn_accuracy: float | None = None,
        name: str | None = None,
        write: bool = True,
        correspondence: Sequence[CorrespondenceRecord] = (),
    ) -> Path:
        """Add one evaluation and rewrite the page.

        Args:
            epoch: the training epoch.
            global_step: the trainer's global step.
            methods: method label -> its :class:`MethodRecord` (see
                :meth:`MethodRecord.from_tensors`), with one entry per probe pair.
            sim: per pair, the similarity of the intact pair.
            knn_accuracy: the kNN accuracy of this evaluation, if measured.
            name: the evaluation's label. Default ``"epoch <e> · step <s>"``.
            write: rewrite the page now. Default ``True``.
            correspondence: the renderings and scores of the correspondence methods (see
                :meth:`CorrespondenceRecord.from_evaluation`; their ``checkpoint`` is set to
                this evaluation's index), for the Correspondence tab. Default: none.

        Returns:
            The page's path.

        Raises:
            ValueError: if a record does not have one entry per probe pair.
        """
        n = len(self._pairs)
        for label, record in methods.items():
            lengths = [len(record.maps), len(record.degenerate)] if record.maps else []
            lengths += [len(v) for v in record.scores.values()]
            lengths += [len(v) for v in record.curves.values()]
            if any(length != n for length in lengths):
                raise ValueError(
                    f"`{_OWNER}.LiveDashboard.add`: method {label!r} has results for "
                    f"{sorted(set(lengths))} pairs, but the probe set has {n} pairs."
                )
        for entry in correspondence:
            counts = {len(entry.matches), *(len(v) for v in entry.scores.values())} - {0}
            if counts - {n}:
                raise ValueError(
                    f"`{_OWNER}.LiveDashboard.add`: correspondence {entry.method!r} has results "
                    f"for {sorted(counts)} pairs, but the probe set has {n} pairs."
                )
        sims = tuple(as_floats(sim)) if sim is not None else ()
        if sims and len(sims) != n:
            raise ValueError(
                f"`{_OWNER}.LiveDashboard.add`: expected {n} similarities, but got {len(sims)}."
            )
        label = name or " · ".join(
            part
            for part in (
                None if epoch is None else f"epoch {epoch}",
                None if global_step is None else f"step {global_step}",
            )
            if part
        )
        info = CheckpointInfo(label or f"#{len(self._evaluations)}", "", epoch, global_step)
        for method in methods:
            if method not in self._methods:
                self._methods.append(method)
        self._evaluations.append(
            _Evaluation(
                info,
                dict(methods),
                sims,
                None if knn_accuracy is None else float(knn_accuracy),
                tuple(correspondence),
            )
        )
        self._thin()
        return self.write() if write else self.path

    def add_evaluation(
        self,
        evaluation: ProbeEvaluation,
        *,
        epoch: int | None,
        global_step: int | None,
        name: str | None = None,
        write: bool = True,
    ) -> Path:
        """Add one :class:`lightning_explain.evaluation.ProbeEvaluation` and rewrite the page.

        Every method that produced an explanation enters with its maps, per-pair scores and
        curves; the pair similarities and the kNN accuracy come along, and the correspondence
        methods (``interactions``) with their match renderings (made from the dashboard's probe
        set; none for a dashboard built from ``pairs``) and geometry scores.

        Args:
            evaluation: what :func:`lightning_explain.evaluation.evaluate_probe` returned for the
                probe set of this dashboard (the pairs of ``probe``, in order).
            epoch: the training epoch.
            global_step: the trainer's global step.
            name: the evaluation's label. Default ``"epoch <e> · step <s>"``.
            write: rewrite the page now. Default ``True``.

        Returns:
            The page's path.
        """
        records = {
            m.label: MethodRecord.from_evaluation(m)
            for m in evaluation.methods
            if m.explanation is not None
        }
        correspondence: list[CorrespondenceRecord] = []
        if self._probe is not None and evaluation.interactions:
            from lightning_explain.publish import MIN_TILE

            mean, std = self._stats
            x1, mean1, std1 = _displayable(self._probe.x1, mean, std)
            x2, _, _ = _displayable(self._probe.x2, mean, std)
            correspondence = [
                CorrespondenceRecord.from_evaluation(
                    0, r, x1, x2, mean=mean1, std=std1, min_tile=MIN_TILE
                )
                for r in evaluation.interactions
            ]
        return self.add(
            epoch=epoch,
            global_step=global_step,
            methods=records,
            sim=evaluation.sim,
            knn_accuracy=evaluation.knn_accuracy,
            name=name,
            write=write,
            correspondence=correspondence,
        )

    def resume(self, *, before_step: int | None = None) -> int:
        """Take back the evaluations of the page already at :attr:`path` (a resumed run's).

        Only a live page of the same probe pairs (the same encoded images) is taken back, and of
        it only the evaluations before ``before_step`` (those after the checkpoint the run
        resumes from are computed again). What the page keeps is what it shows: maps, per-pair
        scores (6 significant digits), curves (16-bit levels), similarities, kNN accuracies.
        A missing, unreadable or other page is left alone (the next write replaces it).

        Args:
            before_step: keep the evaluations whose global step is below it. Default: all.

        Returns:
            How many evaluations were taken back.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
            start = text.index('<script type="application/json" id="dashboard-data">')
            start = text.index(">", start) + 1
            payload = json.loads(text[start : text.index("</script>", start)])
        except (OSError, ValueError):
            return 0
        if (
            not isinstance(payload, dict)
            or payload.get("v") != 1
            or not payload.get("live")
            or payload.get("img") != [[base64_text(a), base64_text(b)] for a, b in self._pairs]
        ):
            return 0
        try:
            corr = restore_correspondence(text)
            restored = list(_restore(payload, before_step, corr))
        except (KeyError, IndexError, TypeError, ValueError):
            return 0
        if self._metrics is None:
            self._metrics = [MetricColumn(m["k"], m["h"]) for m in payload["metrics"]]
        for evaluation in restored:
            self._evaluations.append(evaluation)
            for method in evaluation.methods:
                if method not in self._methods:
                    self._methods.append(method)
        self._thin()
        return len(restored)

    def _thin(self) -> None:
        evals = self._evaluations
        while len(evals) > self.max_evaluations:

            def gap(k: int) -> tuple[float, int]:
                a, b = evals[k - 1].info, evals[k + 1].info
                sa = a.global_step if a.global_step is not None else k - 1
                sb = b.global_step if b.global_step is not None else k + 1
                return float(sb - sa), k

            del evals[min(range(1, len(evals) - 1), key=gap)]

    def data(self) -> DashboardData:
        """The :class:`DashboardData` of the evaluations kept so far.

        Raises:
            ValueError: before the first evaluation.
        """
        if not self._evaluations:
            raise ValueError(f"`{_OWNER}.LiveDashboard`: no evaluation was added yet.")
        evals = self._evaluations
        columns = self._metrics
        if columns is None:
            keys = list(
                dict.fromkeys(k for e in evals for r in e.methods.values() for k in r.scores)
            )
            columns = [_column(k) for k in keys]
        methods = list(self._methods)
        records = {(i, m): r for i, e in enumerate(evals) for m, r in e.methods.items()}
        n = len(self._pairs)
        return DashboardData(
            checkpoints=[e.info for e in evals],
            methods=methods,
            metrics=columns,
            scores={key: r.mean_scores() for key, r in records.items()},
            pairs=list(self._pairs),
            similarity={i: list(e.sim) for i, e in enumerate(evals) if e.sim},
            curves={key: r.mean_curves() for key, r in records.items() if r.curves},
            one_run=True,
            title=self.title,
            info=self.info,
            knn_accuracy={
                i: e.knn_accuracy for i, e in enumerate(evals) if e.knn_accuracy is not None
            },
            knn_info=self.knn_info,
            maps={key: list(r.maps) for key, r in records.items() if r.maps and n},
            pair_scores={key: dict(r.scores) for key, r in records.items() if r.scores and n},
            pair_curves={
                key: {k: list(v) for k, v in r.curves.items()}
                for key, r in records.items()
                if r.curves and n
            },
            degenerate={key: list(r.degenerate) for key, r in records.items() if r.maps and n},
            correspondence=[
                replace(c, checkpoint=i) for i, e in enumerate(evals) for c in e.correspondence
            ],
            refresh_seconds=self.refresh_seconds,
            updated=datetime.datetime.now().isoformat(timespec="seconds"),
        )

    def write(self) -> Path:
        """Rewrite the page atomically now (a no-op before the first evaluation).

        Returns:
            The page's path.
        """
        if not self._evaluations:
            return self.path
        # No static matplotlib picture: the page is rewritten at every evaluation.
        return write_dashboard(self.data(), self.path, static_scatter=False)


def _unpack_curves(block: Mapping[str, Any]) -> tuple[tuple[float, ...], ...]:
    """The rows :func:`_pack_curves` packed (NaN where not finite)."""
    levels = np.frombuffer(base64.b64decode(block["q"]), dtype="<u2").reshape(-1, int(block["n"]))
    lo, hi = float(block["lo"]), float(block["hi"])
    values = np.where(levels == 65535, np.nan, lo + levels * ((hi - lo) / 65534))
    return tuple(tuple(float(v) for v in row) for row in values)


def _restore(
    payload: Mapping[str, Any],
    before_step: int | None,
    correspondence: Mapping[int, Sequence[CorrespondenceRecord]] | None = None,
) -> Iterable[_Evaluation]:
    """The evaluations of a live page's payload (see :func:`_payload`), in its order, with the
    page's correspondence records (by the evaluation's index on the page)."""
    keys = [m["k"] for m in payload["metrics"]]
    curve_keys = list(payload["curveKeys"])
    nan = math.nan
    for i, ckpt in enumerate(payload["ckpts"]):
        step = ckpt["s"]
        if before_step is not None and (step is None or step >= before_step):
            continue
        methods: dict[str, MethodRecord] = {}
        for j, method in enumerate(payload["methods"]):
            maps = payload["maps"][i][j]
            scores = payload["pairScores"][i][j]
            curves = payload["pairCurves"][i][j]
            flags = payload["deg"][i][j]
            if maps is None and scores is None and curves is None:
                continue
            methods[method] = MethodRecord(
                maps=tuple((base64.b64decode(a), base64.b64decode(b)) for a, b in (maps or ())),
                scores={
                    k: tuple(nan if v is None else float(v) for v in row)
                    for k, row in zip(keys, scores or ())
                    if row is not None
                },
                curves={
                    k: _unpack_curves(block)
                    for k, block in zip(curve_keys, curves or ())
                    if block is not None
                },
                degenerate=tuple(
                    (flags[2 * p] == "1", flags[2 * p + 1] == "1") for p in range(len(flags) // 2)
                )
                if flags
                else (),
            )
        sim = payload["sim"][i]
        knn = payload["knn"][i]
        yield _Evaluation(
            CheckpointInfo(str(ckpt["n"]), "", ckpt["e"], step),
            methods,
            tuple(nan if v is None else float(v) for v in sim or ()),
            None if knn is None else float(knn),
            tuple((correspondence or {}).get(i, ())),
        )


def _column(metric: str | MetricColumn) -> MetricColumn:
    if isinstance(metric, MetricColumn):
        return metric
    from lightning_explain.metrics import metric_info

    try:
        return MetricColumn(metric, metric_info(metric).higher_is_better)
    except ValueError:
        return MetricColumn(metric, None)


DASHBOARD_FILE = "index.html"
"""The page's file name inside ``dashboard_dir`` (see :func:`update_live_dashboard`)."""


def check_dashboard_dir(
    value: str | os.PathLike[str] | None, *, owner: str = _OWNER
) -> Path | None:
    """Validate a ``dashboard_dir`` argument: ``None``, or a folder path (created when written).

    Args:
        value: ``None`` (no live dashboard) or a ``str`` / :class:`os.PathLike` folder path.
        owner: the name to put in error messages.

    Returns:
        The folder as a :class:`~pathlib.Path`, or ``None``.

    Raises:
        TypeError: for another type.
        ValueError: for an empty path, or a path that is an existing file.

    Example:
        >>> check_dashboard_dir("outputs/live").name
        'live'
        >>> check_dashboard_dir(None) is None
        True
    """
    if value is None:
        return None
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"`{owner}`: expected `dashboard_dir` to be a folder path (str or os.PathLike) or "
            f"None, but got an object of type {type(value).__name__}."
        )
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"`{owner}`: expected `dashboard_dir` to be a non-empty folder path, but got {value!r}."
        )
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"`{owner}`: `dashboard_dir` {text!r} is an existing file; give a folder (the "
            f"dashboard is written to <dashboard_dir>/{DASHBOARD_FILE})."
        )
    return folder


def update_live_dashboard(
    live: LiveDashboard | None,
    folder: str | os.PathLike[str],
    probe: ProbeSet,
    evaluation: ProbeEvaluation,
    *,
    epoch: int,
    global_step: int,
    mean: Stats = None,
    std: Stats = None,
    info: Sequence[tuple[str, str]] = (),
) -> LiveDashboard:
    """Add one evaluation of a training run to its live dashboard, ``<folder>/index.html``.

    What :class:`lightning_explain.PairExplanationCallback` calls on rank 0 after every
    evaluation with ``dashboard_dir=folder``. The first call (``live`` is ``None``) makes the
    :class:`LiveDashboard`; a probe set other than the dashboard's (a new draw) starts it anew.
    The page is rewritten atomically.

    Args:
        live: what the previous call returned, or ``None``.
        folder: the dashboard's folder (created if missing).
        probe: the probe set that was evaluated.
        evaluation: its evaluation (every pair, in the probe set's order).
        epoch: the trainer's epoch.
        global_step: the trainer's global step.
        mean: normalisation means to undo when showing the probe images. Default: the probe
            set's.
        std: normalisation standard deviations to undo. Default: the probe set's.
        info: ``(label, value)`` lines for the Run tab (replace the previous ones).

    Returns:
        The live dashboard, to pass to the next call.

    A page already in ``folder`` (a resumed run's) is continued when it shows the same probe
    images: its evaluations before ``global_step`` are kept (see :meth:`LiveDashboard.resume`).
    """
    path = Path(folder) / DASHBOARD_FILE
    if live is None or live.path != path:
        live = LiveDashboard(path, probe, mean=mean, std=std)
        live.resume(before_step=global_step)
    elif live.probe is not probe:
        live.set_probe(probe, mean=mean, std=std)
    live.info = list(info)
    live.add_evaluation(evaluation, epoch=epoch, global_step=global_step)
    return live
