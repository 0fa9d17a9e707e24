"""Downstream quality next to the explanations: online kNN accuracy and its correlation with scores.

Explanation scores (insertion, deletion, average drop, ...) say how faithful a heatmap is to the
model; they do not say whether the model is any good. This module measures the model's downstream
quality with the cheapest standard probe of self-supervised learning, a weighted cosine kNN
classifier on the embeddings (Wu et al. [1], as ``lightly.utils.benchmarking.knn_predict``), and
relates it to the explanation scores with Spearman and Pearson correlations over the evaluations of
a run or over checkpoints.

* The images come from a :class:`lightning_explain.data.KNNSet` (a fixed, labelled bank and
  query set stored with the probe set; see :mod:`lightning_explain.data`).
* :func:`knn_predict`: the weighted vote of lightly's ``knn_predict`` (same signature and result),
  implemented here in torch so that lightly stays optional.
* :func:`knn_accuracy` / :func:`evaluate_knn`: top-1 accuracy of the queries against the bank.
* :func:`correlate` / :func:`correlation_table` / :func:`correlation_figure`: the correlation of
  each method x metric score with the accuracy across evaluations, as numbers and as a scatter plot.

References:
    [0] Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive Learning",
    IEEE TIP, arXiv 2206.09753 (the explanation scores).
    [1] Wu, Xiong, Yu & Lin, "Unsupervised Feature Learning via Non-Parametric Instance
    Discrimination", CVPR 2018, arXiv 1805.01978 (the weighted kNN classifier, k=200, t=0.1).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_explain._checks import check_positive_int, check_real
from lightning_explain.data.knn import KNNSet

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Correlation",
    "DownstreamPoint",
    "ScoreHistory",
    "correlate",
    "correlation_figure",
    "correlation_table",
    "embed_images",
    "evaluate_knn",
    "knn_accuracy",
    "knn_predict",
]

DEFAULT_CHUNK = 256


# --------------------------------------------------------------------------------------------------
# The weighted kNN vote


def _check_knn_args(k: object, t: object, owner: str) -> tuple[int, float]:
    k = check_positive_int(k, name="knn_k", owner=owner)
    t = check_real(t, name="knn_t", owner=owner, minimum=0.0, exclusive_minimum=True)
    return k, t


def knn_predict(
    feature: Tensor,
    feature_bank: Tensor,
    feature_labels: Tensor,
    num_classes: int,
    knn_k: int = 200,
    knn_t: float = 0.1,
) -> Tensor:
    """Weighted kNN class ranking of ``feature`` against a feature bank, as lightly's ``knn_predict``.

    Each query takes its ``knn_k`` most similar bank entries (similarity ``feature @ feature_bank``:
    cosine when both are L2-normalised), weights each by ``exp(sim / knn_t)`` and sums the weights
    per class; classes are returned by decreasing score. The formula and the arguments are those
    of ``lightly.utils.benchmarking.knn_predict`` (Wu et al., 2018); the class scores are summed
    with ``scatter_add`` (``(B, C)`` memory instead of lightly's ``(B, K, C)`` one-hot product).

    Args:
        feature: ``(B, D)`` query features (normalise them for cosine similarity).
        feature_bank: ``(D, N)`` bank features (note: transposed, as in lightly).
        feature_labels: ``(N,)`` integer labels of the bank, in ``[0, num_classes)``.
        num_classes: number of classes ``C``.
        knn_k: neighbours per query, ``1 <= knn_k <= N``. Default 200.
        knn_t: temperature of the weights. Default 0.1.

    Returns:
        ``(B, C)`` class indices sorted by decreasing score; ``[:, 0]`` is the prediction.

    Raises:
        ValueError: for shapes that do not fit, ``knn_k > N``, or a non-positive ``knn_t``.
    """
    k, t = _check_knn_args(knn_k, knn_t, "knn_predict")
    if feature.ndim != 2 or feature_bank.ndim != 2 or feature.shape[1] != feature_bank.shape[0]:
        raise ValueError(
            f"`knn_predict`: expected `feature` (B, D) and `feature_bank` (D, N) with the same D, "
            f"but got shapes {tuple(feature.shape)} and {tuple(feature_bank.shape)}."
        )
    n = int(feature_bank.shape[1])
    if feature_labels.shape != (n,):
        raise ValueError(
            f"`knn_predict`: expected `feature_labels` of shape ({n},) (one per bank column), but "
            f"got {tuple(feature_labels.shape)}."
        )
    if k > n:
        raise ValueError(f"`knn_predict`: `knn_k={k}` exceeds the bank size {n}; use knn_k <= {n}.")
    sim = feature @ feature_bank  # (B, N)
    weight, index = sim.topk(k=k, dim=-1)  # (B, K)
    labels = feature_labels.to(index.device).expand(feature.shape[0], -1).gather(-1, index)
    weight = (weight / t).exp()
    scores = torch.zeros(
        feature.shape[0], int(num_classes), device=weight.device, dtype=weight.dtype
    )
    scores.scatter_add_(1, labels, weight)
    return scores.argsort(dim=-1, descending=True)


def knn_accuracy(
    z_queries: Tensor,
    query_labels: Tensor,
    z_bank: Tensor,
    bank_labels: Tensor,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Top-1 accuracy of the weighted cosine kNN classifier (see :func:`knn_predict`).

    Both embeddings are L2-normalised first (cosine similarity). ``k`` is capped at the bank size.

    Args:
        z_queries: ``(M, D)`` query embeddings.
        query_labels: ``(M,)`` their labels.
        z_bank: ``(N, D)`` bank embeddings.
        bank_labels: ``(N,)`` their labels.
        num_classes: number of classes.
        k: neighbours. Default 200 (lightly's).
        temperature: weight temperature. Default 0.1 (lightly's).

    Returns:
        The fraction of queries whose top-ranked class is their label, in ``[0, 1]``.
    """
    k, temperature = _check_knn_args(k, temperature, "knn_accuracy")
    bank = F.normalize(z_bank.float(), dim=1)
    queries = F.normalize(z_queries.float(), dim=1)
    labels = bank_labels.to(bank.device, torch.long)
    k = min(k, int(bank.shape[0]))
    correct = 0
    for start in range(0, int(queries.shape[0]), 1024):  # bounded (B, N) similarity matrix
        chunk = queries[start : start + 1024]
        pred = knn_predict(chunk, bank.t(), labels, num_classes, k, temperature)[:, 0]
        truth = query_labels[start : start + 1024].to(pred.device, torch.long)
        correct += int((pred == truth).sum())
    return correct / max(1, int(queries.shape[0]))


def embed_images(
    embed: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    device: torch.device | str | None = None,
    batch_size: int = DEFAULT_CHUNK,
) -> Tensor:
    """Embed images in chunks under ``torch.inference_mode`` (no autograd graph, no state changes).

    The caller is responsible for eval mode (BatchNorm statistics are only updated in train mode).

    Args:
        embed: ``(B, C, H, W) -> (B, D)``.
        x: ``(N, C, H, W)`` images (any device; chunks are moved to ``device``).
        device: where to run. Default: ``x``'s device.
        batch_size: images per forward pass. Default 256.

    Returns:
        ``(N, D)`` float32 embeddings on ``device``.

    Raises:
        ValueError: if ``embed`` does not return a finite ``(B, D)`` tensor.
    """
    target = x.device if device is None else torch.device(device)
    out: list[Tensor] = []
    with torch.inference_mode():
        for start in range(0, int(x.shape[0]), max(1, int(batch_size))):
            chunk = x[start : start + batch_size].to(target)
            z = embed(chunk)
            if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[0] != chunk.shape[0]:
                got = f"shape {tuple(z.shape)}" if isinstance(z, Tensor) else type(z).__name__
                raise ValueError(
                    f"`embed_images`: the embedding returned {got} for {chunk.shape[0]} images; "
                    f"expected ({chunk.shape[0]}, D)."
                )
            z = z.float()
            if not bool(torch.isfinite(z).all()):
                raise ValueError(
                    "`embed_images`: the embedding returned non-finite values (NaN or inf)."
                )
            out.append(z)
    if not out:
        raise ValueError("`embed_images`: expected at least one image, got none.")
    return torch.cat(out)


def evaluate_knn(
    embed: Callable[[Tensor], Tensor],
    knn: KNNSet,
    *,
    k: int | None = None,
    temperature: float | None = None,
    device: torch.device | str | None = None,
    batch_size: int | None = None,
) -> float:
    """kNN top-1 accuracy of an embedding on a :class:`KNNSet`.

    Cost: ``len(knn.bank) + len(knn.queries)`` image forwards under ``torch.inference_mode``
    (no backward). The caller keeps the model in eval mode.

    Args:
        embed: ``(B, C, H, W) -> (B, D)``.
        knn: the labelled set.
        k: neighbours, capped at the bank size. Default: ``knn.k``.
        temperature: weight temperature. Default: ``knn.temperature``.
        device: where to embed. Default: the CPU.
        batch_size: images per forward pass. Default None: chosen from the device's memory
            (:func:`lightning_explain._perf.auto_batch_size`; 256 for small images on a CPU).

    Returns:
        The accuracy in ``[0, 1]``.
    """
    from lightning_explain._perf import auto_batch_size

    target = torch.device("cpu") if device is None else torch.device(device)
    chunk = (
        auto_batch_size(target, tuple(knn.bank.shape[1:]))
        if batch_size is None
        else int(batch_size)
    )
    z_bank = embed_images(embed, knn.bank, device=device, batch_size=chunk)
    z_queries = embed_images(embed, knn.queries, device=device, batch_size=chunk)
    return knn_accuracy(
        z_queries,
        knn.query_labels,
        z_bank,
        knn.bank_labels,
        num_classes=knn.num_classes,
        k=knn.k if k is None else k,
        temperature=knn.temperature if temperature is None else temperature,
    )


# --------------------------------------------------------------------------------------------------
# Correlation with the explanation scores


def _is_constant(x: Tensor) -> bool:
    return bool(x.max() == x.min())


def correlate(x: Sequence[float], y: Sequence[float]) -> tuple[int, float, float]:
    """Spearman and Pearson correlation of two series, with ``torchmetrics``.

    Pairs where either value is not finite are dropped. The correlation is undefined, and returned
    as NaN, with fewer than 3 remaining pairs or when either series is constant (torchmetrics
    would return 0 for Spearman there).

    Args:
        x: the first series (e.g. an explanation score per evaluation).
        y: the second series (e.g. the kNN accuracy per evaluation), of the same length.

    Returns:
        ``(n, spearman, pearson)``: the number of pairs used and the two coefficients.

    Raises:
        ValueError: if the series differ in length.
    """
    from torchmetrics.functional import pearson_corrcoef, spearman_corrcoef

    if len(x) != len(y):
        raise ValueError(
            f"`correlate`: expected two series of one length, but got {len(x)} and {len(y)}."
        )
    a = torch.tensor([float(v) for v in x], dtype=torch.float64)
    b = torch.tensor([float(v) for v in y], dtype=torch.float64)
    keep = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[keep], b[keep]
    n = int(a.numel())
    if n < 3 or _is_constant(a) or _is_constant(b):
        return n, math.nan, math.nan
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*variance of predictions or target.*")
        spearman = float(spearman_corrcoef(a, b))
        pearson = float(pearson_corrcoef(a, b))
    return n, spearman, pearson


@dataclass(frozen=True)
class DownstreamPoint:
    """One evaluation (or checkpoint): its mean explanation scores and its downstream accuracy.

    Attributes:
        scores: ``method -> {metric key: mean score}``.
        accuracy: the kNN accuracy (NaN when unknown).
        label: a short name shown next to the point in scatter plots (``"e3"``, a file name).
    """

    scores: Mapping[str, Mapping[str, float]]
    accuracy: float
    label: str = ""


@dataclass(frozen=True)
class Correlation:
    """The correlation of one method x metric score with the downstream accuracy.

    Attributes:
        method: the method (label).
        metric: the metric key.
        n: number of points with both values finite.
        spearman: Spearman's rank correlation (NaN when undefined: ``n < 3`` or a constant series).
        pearson: Pearson's linear correlation (NaN when undefined).
        higher_is_better: the metric's direction (``None`` if unknown). With ``True`` a positive
            correlation means "more faithful explanations go with higher accuracy"; with ``False``
            (deletion, average drop) a negative one does.
    """

    method: str
    metric: str
    n: int
    spearman: float
    pearson: float
    higher_is_better: bool | None = None


def _direction(metric: str) -> bool | None:
    from lightning_explain.metrics import metric_info

    try:
        return metric_info(metric).higher_is_better
    except ValueError:
        return None


def correlation_table(
    points: Sequence[DownstreamPoint],
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> list[Correlation]:
    """Correlate every method x metric score with the accuracy across ``points``.

    Args:
        points: one per evaluation or checkpoint.
        methods: methods in table order. Default: in order of first appearance.
        metrics: metric keys in table order. Default: in order of first appearance.

    Returns:
        One :class:`Correlation` per (method, metric), methods outer, metrics inner.
    """
    if methods is None:
        methods = list(dict.fromkeys(m for p in points for m in p.scores))
    if metrics is None:
        metrics = list(dict.fromkeys(k for p in points for s in p.scores.values() for k in s))
    accuracy = [float(p.accuracy) for p in points]
    table: list[Correlation] = []
    for method in methods:
        for metric in metrics:
            series = [float(p.scores.get(method, {}).get(metric, math.nan)) for p in points]
            n, spearman, pearson = correlate(series, accuracy)
            table.append(Correlation(method, metric, n, spearman, pearson, _direction(metric)))
    return table


class ScoreHistory:
    """Mean explanation scores and kNN accuracy per evaluation of a run, and their correlations.

    The training callback records one entry per evaluation that has a kNN accuracy; from the
    third entry on, :meth:`record` returns the Spearman and Pearson correlation of every
    ``<label>/<metric>`` score with the accuracy over the entries so far. The entries are plain
    numbers and strings (kept in the callback's checkpoint state).
    """

    MIN_POINTS = 3
    """Entries needed before correlations are reported."""

    def __init__(self, entries: Sequence[Mapping[str, Any]] = ()) -> None:
        self.entries: list[dict[str, Any]] = [self._entry(e) for e in entries]
        self.correlations: list[Correlation] = []

    @staticmethod
    def _entry(entry: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "step": int(entry.get("step", -1)),
            "epoch": int(entry.get("epoch", -1)),
            "knn_accuracy": float(entry.get("knn_accuracy", math.nan)),
            "scores": {str(k): float(v) for k, v in dict(entry.get("scores") or {}).items()},
        }

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        """Forget every entry (scores on other pairs or another kNN set are not comparable)."""
        self.entries.clear()
        self.correlations = []

    def state(self) -> list[dict[str, Any]]:
        """A copy of the entries, for a checkpoint."""
        return [dict(e, scores=dict(e["scores"])) for e in self.entries]

    def record(
        self,
        scalars: Mapping[str, float],
        *,
        step: int,
        epoch: int,
        labels: Sequence[str],
        prefix: str = "explain",
    ) -> dict[str, float]:
        """Record one evaluation's ``<prefix>/<label>/<metric>`` scalars and its
        ``<prefix>/knn_accuracy``; return the correlation scalars
        ``<prefix>_corr/<label>/<metric>/{spearman,pearson}`` once :attr:`MIN_POINTS` entries
        exist (nothing without a kNN accuracy)."""
        self.correlations = []
        accuracy = scalars.get(f"{prefix}/knn_accuracy")
        if accuracy is None:
            return {}
        scores: dict[str, float] = {}
        for key, value in scalars.items():
            parts = key.split("/")
            if (
                len(parts) == 3
                and parts[0] == prefix
                and parts[1] in labels
                and parts[2] != "degenerate_maps"
            ):
                scores[f"{parts[1]}/{parts[2]}"] = float(value)
        self.entries.append(
            {"step": step, "epoch": epoch, "knn_accuracy": float(accuracy), "scores": scores}
        )
        if len(self.entries) < self.MIN_POINTS:
            return {}
        self.correlations = correlation_table(self.points(), methods=list(labels))
        out: dict[str, float] = {}
        for c in self.correlations:
            out[f"{prefix}_corr/{c.method}/{c.metric}/spearman"] = c.spearman
            out[f"{prefix}_corr/{c.method}/{c.metric}/pearson"] = c.pearson
        return out

    def points(self) -> list[DownstreamPoint]:
        """The entries as :class:`DownstreamPoint` (label ``"e<epoch>"``), oldest first."""
        points: list[DownstreamPoint] = []
        for entry in self.entries:
            nested: dict[str, dict[str, float]] = {}
            for key, value in entry["scores"].items():
                label, _, metric = key.partition("/")
                nested.setdefault(label, {})[metric] = float(value)
            points.append(
                DownstreamPoint(nested, float(entry["knn_accuracy"]), f"e{entry['epoch']}")
            )
        return points


def _fmt(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.2f}"


def correlation_figure(
    points: Sequence[DownstreamPoint],
    correlations: Sequence[Correlation] | None = None,
    *,
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    accuracy_label: str = "kNN accuracy",
    title: str | None = None,
) -> Figure:
    """Scatter plots of the accuracy against each metric: one panel per metric, one colour per method.

    Points of one method are joined in the given order (training order) by a thin line and labelled
    with ``point.label``; the legend gives each method's Spearman and Pearson coefficients.

    Args:
        points: one per evaluation or checkpoint.
        correlations: from :func:`correlation_table`; computed when ``None``.
        methods: methods to draw. Default: all.
        metrics: metric panels. Default: all.
        accuracy_label: the y-axis label. Default ``"kNN accuracy"``.
        title: the figure title. Default: none.

    Returns:
        A matplotlib ``Figure`` (Agg canvas, not managed by pyplot).
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if correlations is None:
        correlations = correlation_table(points, methods, metrics)
    if methods is None:
        methods = list(dict.fromkeys(c.method for c in correlations))
    if metrics is None:
        metrics = list(dict.fromkeys(c.metric for c in correlations))
    found = {(c.method, c.metric): c for c in correlations}
    colors = list(matplotlib.colormaps["tab10"].colors)  # type: ignore[attr-defined]
    n_panels = max(1, len(metrics))
    cols = min(4, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(3.6 * cols, 3.1 * rows + (0.4 if title else 0.0)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    ys = [float(p.accuracy) for p in points]
    for a, ax in enumerate(axes.flat):
        if a >= len(metrics):
            ax.set_visible(False)
            continue
        metric = metrics[a]
        arrow = {True: " ↑", False: " ↓"}.get(_direction(metric), "")  # type: ignore[arg-type]
        for j, method in enumerate(methods):
            xs = [float(p.scores.get(method, {}).get(metric, math.nan)) for p in points]
            keep = [i for i in range(len(points)) if math.isfinite(xs[i]) and math.isfinite(ys[i])]
            if not keep:
                continue
            c = found.get((method, metric))
            rho = "" if c is None else f" (rho {_fmt(c.spearman)}, r {_fmt(c.pearson)})"
            color = colors[j % len(colors)]
            ax.plot(
                [xs[i] for i in keep],
                [ys[i] for i in keep],
                color=color,
                marker="o",
                markersize=4,
                linewidth=0.8,
                alpha=0.9,
                label=f"{method}{rho}",
            )
            if len(keep) <= 12:
                for i in keep:
                    if points[i].label:
                        ax.annotate(
                            points[i].label,
                            (xs[i], ys[i]),
                            textcoords="offset points",
                            xytext=(3, 3),
                            fontsize="xx-small",
                            color=color,
                        )
        ax.set_title(metric + arrow, fontsize="medium")
        ax.set_xlabel("score (mean over pairs)")
        ax.set_ylabel(accuracy_label)
        ax.ticklabel_format(axis="both", useOffset=False)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="xx-small")
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig
