"""Downstream quality next to the explanations: online kNN accuracy and its correlation with scores.

Explanation scores (insertion, deletion, average drop, ...) say how faithful a heatmap is to the
model; they do not say whether the model is any good. This module measures the model's downstream
quality with the cheapest standard probe of self-supervised learning, a weighted cosine kNN
classifier on the embeddings (Wu et al. [1], as ``lightly.utils.benchmarking.knn_predict``), and
relates it to the explanation scores with Spearman and Pearson correlations over the evaluations of
a run or over checkpoints.

* :class:`KNNSet`: a small, fixed, labelled image set: ``bank`` images with labels from the
  training set and ``queries`` with labels from the validation set, drawn once with a seed by
  :func:`draw_knn_set` and stored with the probe set (``ProbeSet.knn``), so that every evaluation,
  a resumed run and ``lightning-explain compare`` classify the same images.
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
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_explain.probe import (
    _as_single_view,
    _describe,
    _is_pil,
    _is_view,
    _transform_disabled,
    _transform_holder,
    seeded_global_rng,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "KNN_FORMAT",
    "Correlation",
    "DownstreamPoint",
    "KNNSet",
    "correlate",
    "correlation_figure",
    "correlation_table",
    "draw_knn_set",
    "embed_images",
    "evaluate_knn",
    "knn_accuracy",
    "knn_predict",
]

KNN_FORMAT = "lightning-explain-knn"
_KNN_VERSION = 1
_OWNER = "draw_knn_set"
DEFAULT_CHUNK = 256


# --------------------------------------------------------------------------------------------------
# The weighted kNN vote


def _check_knn_args(k: object, t: object, owner: str) -> tuple[int, float]:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`{owner}`: expected `knn_k` to be a positive int, but got {k!r}.")
    if (
        isinstance(t, bool)
        or not isinstance(t, (int, float))
        or not math.isfinite(float(t))
        or float(t) <= 0
    ):
        raise ValueError(
            f"`{owner}`: expected the temperature `knn_t` to be a finite number > 0, but got {t!r}."
        )
    return int(k), float(t)


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


# --------------------------------------------------------------------------------------------------
# The labelled image set


def _half_if_lossless(x: Tensor) -> Tensor:
    half = x.half()
    return half if torch.equal(half.float(), x) else x


@dataclass(frozen=True)
class KNNSet:
    """A fixed labelled image set for the online kNN probe: a bank and queries.

    Images are float tensors on the CPU; :func:`draw_knn_set` rounds them to float16 precision
    (when they fit float16's range) so that they are stored at half size in checkpoints and probe
    files and the stored images are exactly the ones embedded.

    Attributes:
        bank: ``(N, C, H, W)`` bank images (the kNN "training set").
        bank_labels: ``(N,)`` int64 labels.
        queries: ``(M, C, H, W)`` query images (the images classified).
        query_labels: ``(M,)`` int64 labels.
        num_classes: number of classes (labels are in ``[0, num_classes)``).
        seed: the seed the set was drawn with.
        bank_source: where the bank came from (``"train"``).
        query_source: where the queries came from (``"val"``, or ``"train"`` for a disjoint split).
        bank_indices: dataset indices of the bank images (empty when unknown).
        query_indices: dataset indices of the query images (empty when unknown).
        k: the neighbour count the set was recorded with (``compare`` uses it by default).
        temperature: the temperature recorded with the set.
        embedding: the embedding spec recorded with the set (``""``: unknown or a callable).
        config_hash: hash of the settings that drew the set (the callback validates it on resume).
    """

    bank: Tensor
    bank_labels: Tensor
    queries: Tensor
    query_labels: Tensor
    num_classes: int
    seed: int = 0
    bank_source: str = "train"
    query_source: str = "val"
    bank_indices: tuple[int, ...] = ()
    query_indices: tuple[int, ...] = ()
    k: int = 200
    temperature: float = 0.1
    embedding: str = ""
    config_hash: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, labels in (("bank", "bank_labels"), ("queries", "query_labels")):
            x, y = getattr(self, name), getattr(self, labels)
            if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 4 or not len(x):
                raise ValueError(
                    f"`KNNSet`: expected `{name}` to be a non-empty float tensor of shape "
                    f"(N, C, H, W), but got {_describe(x)}."
                )
            if not isinstance(y, Tensor) or y.dtype != torch.long or y.shape != (x.shape[0],):
                raise ValueError(
                    f"`KNNSet`: expected `{labels}` to be an int64 tensor of shape "
                    f"({x.shape[0]},), but got {_describe(y)}."
                )
        if self.bank.shape[1:] != self.queries.shape[1:]:
            raise ValueError(
                f"`KNNSet`: expected bank and query images of one shape, but got "
                f"{tuple(self.bank.shape[1:])} and {tuple(self.queries.shape[1:])}."
            )
        every = torch.cat([self.bank_labels, self.query_labels])
        if int(every.min()) < 0 or int(every.max()) >= int(self.num_classes):
            raise ValueError(
                f"`KNNSet`: expected labels in [0, {self.num_classes}), but got labels from "
                f"{int(every.min())} to {int(every.max())}."
            )

    @property
    def nbytes(self) -> int:
        """Bytes the images take when stored (float16 where lossless)."""
        return sum(
            _half_if_lossless(x).element_size() * x.numel() for x in (self.bank, self.queries)
        )

    def subset(self, n_bank: int, n_queries: int) -> KNNSet:
        """The first ``n_bank`` bank images and ``n_queries`` queries (the callback's dry run)."""
        return replace(
            self,
            bank=self.bank[:n_bank],
            bank_labels=self.bank_labels[:n_bank],
            queries=self.queries[:n_queries],
            query_labels=self.query_labels[:n_queries],
            bank_indices=self.bank_indices[:n_bank],
            query_indices=self.query_indices[:n_queries],
        )

    def to_dict(self) -> dict[str, Any]:
        """Tensors, strings and numbers only (loadable with ``weights_only=True``); images are
        stored as float16 when that is lossless."""
        return {
            "format": KNN_FORMAT,
            "version": _KNN_VERSION,
            "bank": _half_if_lossless(self.bank.detach().cpu().contiguous()),
            "bank_labels": self.bank_labels.detach().cpu().long(),
            "queries": _half_if_lossless(self.queries.detach().cpu().contiguous()),
            "query_labels": self.query_labels.detach().cpu().long(),
            "num_classes": int(self.num_classes),
            "seed": int(self.seed),
            "bank_source": str(self.bank_source),
            "query_source": str(self.query_source),
            "bank_indices": torch.tensor(self.bank_indices, dtype=torch.long),
            "query_indices": torch.tensor(self.query_indices, dtype=torch.long),
            "k": int(self.k),
            "temperature": float(self.temperature),
            "embedding": str(self.embedding),
            "config_hash": str(self.config_hash),
            "extra": {str(k): str(v) for k, v in self.extra.items()},
        }

    @classmethod
    def from_dict(cls, data: object, *, origin: str = "state") -> KNNSet:
        """Rebuild a kNN set from :meth:`to_dict` output.

        Raises:
            ValueError: if ``data`` is not a kNN-set dict (``origin`` names where it came from).
        """
        if not isinstance(data, Mapping) or data.get("format") != KNN_FORMAT:
            raise ValueError(
                f"`KNNSet`: {origin} does not hold a lightning-explain kNN set (expected a dict "
                f"with format {KNN_FORMAT!r})."
            )
        if int(data.get("version", 0)) > _KNN_VERSION:
            raise ValueError(
                f"`KNNSet`: {origin} was written by a newer lightning-explain (kNN format version "
                f"{data['version']}, this version reads <= {_KNN_VERSION}). Upgrade."
            )
        try:
            return cls(
                bank=data["bank"].float(),
                bank_labels=data["bank_labels"].long(),
                queries=data["queries"].float(),
                query_labels=data["query_labels"].long(),
                num_classes=int(data["num_classes"]),
                seed=int(data["seed"]),
                bank_source=str(data.get("bank_source", "train")),
                query_source=str(data.get("query_source", "val")),
                bank_indices=tuple(
                    int(i) for i in data.get("bank_indices", torch.empty(0)).tolist()
                ),
                query_indices=tuple(
                    int(i) for i in data.get("query_indices", torch.empty(0)).tolist()
                ),
                k=int(data.get("k", 200)),
                temperature=float(data.get("temperature", 0.1)),
                embedding=str(data.get("embedding", "")),
                config_hash=str(data.get("config_hash", "")),
                extra={str(k): str(v) for k, v in dict(data.get("extra", {})).items()},
            )
        except (KeyError, AttributeError, TypeError) as err:
            raise ValueError(f"`KNNSet`: {origin} holds a malformed kNN set: {err!r}.") from err


def _label(item: object, *, index: int, role: str) -> int:
    label = item[1] if isinstance(item, (list, tuple)) and len(item) >= 2 else None
    value: int | None = None
    if isinstance(label, Tensor) and label.numel() == 1 and not label.is_floating_point():
        value = int(label.item())
    elif isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        value = int(label)
    if value is None or value < 0:
        raise ValueError(
            f"`{_OWNER}`: the kNN {role} needs labelled items (x, label, ...) with a non-negative "
            f"integer label, but item {index} is {_describe(item)}"
            + (f" with label {label!r}" if value is not None else "")
            + ". Use a labelled dataset (e.g. torchvision datasets, lightly's LightlyDataset) or "
            "switch the kNN probe off (knn_k=None)."
        )
    return value


def _image(x: object, *, index: int, role: str) -> Tensor:
    x = _as_single_view(x)
    if not _is_view(x):
        hint = " End the transform with `ToTensor()`." if _is_pil(x) else ""
        raise ValueError(
            f"`{_OWNER}`: the kNN {role} image of item {index} must be a (C, H, W) float tensor "
            f"(or a list of such views, of which the first is used), but it is {_describe(x)}."
            f"{hint}"
        )
    return cast(Tensor, x).detach().float().cpu()


def _read(
    dataset: Any,
    indices: Sequence[int],
    *,
    seed: int,
    clean_transform: Callable[[Any], Any] | None,
    role: str,
) -> tuple[Tensor, Tensor]:
    """Images and labels of ``indices``: the clean transform of the raw image, or the dataset's
    (first) view, with the global RNGs seeded from ``seed`` and restored."""
    images: list[Tensor] = []
    labels: list[int] = []
    with seeded_global_rng(int(seed)):
        if clean_transform is not None:
            holder = _transform_holder(dataset)
            if holder is None:
                raise ValueError(
                    f"`{_OWNER}`: `clean_transform` is applied to raw images, which are read by "
                    f"switching the dataset's transform off, but {type(dataset).__name__} has no "
                    f"`transform` attribute. Drop `clean_transform` to embed the dataset's own "
                    f"(first) view."
                )
            with _transform_disabled(holder):
                for i in indices:
                    item = dataset[i]
                    labels.append(_label(item, index=i, role=role))
                    raw = item[0] if isinstance(item, (list, tuple)) else item
                    images.append(_image(clean_transform(raw), index=i, role=role))
        else:
            for i in indices:
                item = dataset[i]
                labels.append(_label(item, index=i, role=role))
                images.append(_image(cast(Sequence[Any], item)[0], index=i, role=role))
    try:
        x = torch.stack(images)
    except RuntimeError as err:
        shapes = sorted({tuple(v.shape) for v in images})
        raise ValueError(
            f"`{_OWNER}`: the kNN {role} images have different shapes {shapes}; the dataset's "
            f"transform must produce images of one size."
        ) from err
    rounded = x.half().float()
    if bool(torch.isfinite(rounded).all()):
        x = rounded  # stored as float16: the embedded images are exactly the stored ones
    return x, torch.tensor(labels, dtype=torch.long)


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{_OWNER}`: expected `{name}` to be a positive int, but got {value!r}.")
    return value


def draw_knn_set(
    bank_dataset: Any,
    query_dataset: Any = None,
    *,
    n_bank: int = 512,
    n_queries: int = 256,
    seed: int = 0,
    clean_transform: Callable[[Any], Any] | None = None,
    bank_source: str = "train",
    query_source: str = "val",
    k: int = 200,
    temperature: float = 0.1,
    embedding: str = "",
    config_hash: str = "",
) -> KNNSet:
    """Draw a capped, seeded, labelled kNN set, reproducibly and without side effects.

    The bank is ``n_bank`` items of ``bank_dataset`` (the training set) and the queries
    ``n_queries`` items of ``query_dataset`` (the validation set). Without a query dataset (or
    when it is the bank dataset), the queries are drawn from ``bank_dataset`` too, disjoint from
    the bank: at most half of it becomes queries.

    Items are ``(x, label, ...)``; ``x`` is a ``(C, H, W)`` tensor or a list of views (two-view
    datasets), of which the first is used. With ``clean_transform`` the dataset's transform is
    switched off and ``clean_transform(raw)`` is embedded instead (a deterministic view). Indices
    come from a private generator seeded with ``seed``; the dataset's transforms run with the global
    torch, NumPy and Python RNGs seeded from ``seed`` and restored afterwards.

    Args:
        bank_dataset: map-style labelled dataset for the bank.
        query_dataset: map-style labelled dataset for the queries, or ``None``.
        n_bank: bank size cap. Default 512.
        n_queries: query count cap. Default 256.
        seed: seed of the index draw and of the transforms. Default 0.
        clean_transform: raw image -> ``(C, H, W)`` tensor, or ``None`` (the dataset's view).
        bank_source: label stored with the set. Default ``"train"``.
        query_source: label stored with the set (``bank_source`` when the queries come from the
            bank dataset). Default ``"val"``.
        k: neighbour count recorded with the set. Default 200.
        temperature: temperature recorded with the set. Default 0.1.
        embedding: embedding spec recorded with the set. Default ``""``.
        config_hash: stored with the set.

    Returns:
        A :class:`KNNSet` with ``min(n_bank, len)`` bank images and ``min(n_queries, len)`` queries.

    Raises:
        TypeError: for datasets without ``len``/``__getitem__``.
        ValueError: for unlabelled items, images that are not ``(C, H, W)`` float tensors, a
            dataset too small to split, or bad counts.
    """
    n_bank = _check_count(n_bank, "n_bank")
    n_queries = _check_count(n_queries, "n_queries")
    for name, ds in (("bank_dataset", bank_dataset), ("query_dataset", query_dataset)):
        if ds is not None and not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
            raise TypeError(
                f"`{_OWNER}`: the kNN set is read by index and needs a map-style dataset "
                f"(`__len__` and `__getitem__`), but `{name}` is {type(ds).__name__}."
            )
    g = torch.Generator().manual_seed(int(seed))
    size = len(bank_dataset)
    if query_dataset is None or query_dataset is bank_dataset:
        if size < 2:
            raise ValueError(
                f"`{_OWNER}`: the {bank_source} set has {size} item(s); the kNN probe needs at "
                f"least 2 to split into a bank and queries."
            )
        order = [int(i) for i in torch.randperm(size, generator=g).tolist()]
        n_q = min(n_queries, size // 2)
        query_indices = order[:n_q]
        bank_indices = order[n_q : n_q + n_bank]
        query_dataset, query_source = bank_dataset, bank_source
    else:
        if size == 0 or len(query_dataset) == 0:
            raise ValueError(f"`{_OWNER}`: a kNN dataset is empty (bank {size} items).")
        bank_indices = [int(i) for i in torch.randperm(size, generator=g)[:n_bank].tolist()]
        query_indices = [
            int(i) for i in torch.randperm(len(query_dataset), generator=g)[:n_queries].tolist()
        ]
    bank, bank_labels = _read(
        bank_dataset, bank_indices, seed=seed, clean_transform=clean_transform, role="bank"
    )
    queries, query_labels = _read(
        query_dataset, query_indices, seed=seed, clean_transform=clean_transform, role="query"
    )
    if bank.shape[1:] != queries.shape[1:]:
        raise ValueError(
            f"`{_OWNER}`: the kNN bank images are {tuple(bank.shape[1:])} but the queries are "
            f"{tuple(queries.shape[1:])}; the training and validation transforms must produce "
            f"images of one size."
        )
    num_classes = int(torch.cat([bank_labels, query_labels]).max()) + 1
    return KNNSet(
        bank=bank,
        bank_labels=bank_labels,
        queries=queries,
        query_labels=query_labels,
        num_classes=num_classes,
        seed=int(seed),
        bank_source=bank_source,
        query_source=query_source,
        bank_indices=tuple(bank_indices),
        query_indices=tuple(query_indices),
        k=int(k),
        temperature=float(temperature),
        embedding=str(embedding),
        config_hash=config_hash,
    )


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
