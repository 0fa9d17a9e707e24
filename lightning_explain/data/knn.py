"""The kNN set: a small, fixed, labelled image set for the online kNN probe.

``bank`` images with labels from the training set and ``queries`` with labels from the validation
set, drawn once with a seed by :func:`draw_knn_set` and stored with the probe set
(:attr:`lightning_explain.data.ProbeSet.knn`), so that every evaluation, a resumed run and
``lightning-explain compare`` classify the same images. The classifier itself lives in
:mod:`lightning_explain.downstream`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from lightning_explain._checks import check_positive_int, describe
from lightning_explain._guard import seeded_global_rng
from lightning_explain.data._items import (
    as_single_view,
    is_integer_image,
    is_pil,
    is_view,
    transform_disabled,
    transform_holder,
)

__all__ = ["KNN_FORMAT", "KNNSet", "draw_knn_set"]

KNN_FORMAT = "lightning-explain-knn"
_KNN_VERSION = 1
_OWNER = "draw_knn_set"


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
                    f"(N, C, H, W), but got {describe(x)}."
                )
            if not isinstance(y, Tensor) or y.dtype != torch.long or y.shape != (x.shape[0],):
                raise ValueError(
                    f"`KNNSet`: expected `{labels}` to be an int64 tensor of shape "
                    f"({x.shape[0]},), but got {describe(y)}."
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
        for name in ("bank", "queries"):
            x = data.get(name)
            if not isinstance(x, Tensor) or not x.is_floating_point():
                raise ValueError(
                    f"`KNNSet`: {origin} stores `{name}` as {describe(x)}; expected a float tensor "
                    f"of shape (N, C, H, W) in the model's input space."
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
            f"integer label, but item {index} is {describe(item)}"
            + (f" with label {label!r}" if value is not None else "")
            + ". Use a labelled dataset (e.g. torchvision datasets, lightly's LightlyDataset) or "
            "switch the kNN probe off (knn=None)."
        )
    return value


def _image(x: object, *, index: int, role: str) -> Tensor:
    x = as_single_view(x)
    if not is_view(x):
        hint = " End the transform with `ToTensor()`." if is_pil(x) else ""
        if is_integer_image(x):
            hint = (
                f" It has dtype {cast(Tensor, x).dtype}: end the transform with "
                f"`v2.ToDtype(torch.float32, scale=True)`."
            )
        raise ValueError(
            f"`{_OWNER}`: the kNN {role} image of item {index} must be a (C, H, W) float tensor "
            f"(or a list of such views, of which the first is used), but it is {describe(x)}."
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
            holder = transform_holder(dataset)
            if holder is None:
                raise ValueError(
                    f"`{_OWNER}`: `clean_transform` is applied to raw images, which are read by "
                    f"switching the dataset's transform off, but {type(dataset).__name__} has no "
                    f"`transform` attribute. Drop `clean_transform` to embed the dataset's own "
                    f"(first) view."
                )
            with transform_disabled(holder):
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
    return check_positive_int(value, name=name, owner=_OWNER)


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
