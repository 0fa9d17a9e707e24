"""The probe set: a small, fixed batch of image pairs that the callback explains at every evaluation.

The probe set is drawn once, with a seed, and kept as tensors, so that every evaluation of a run (and
a resumed run, and a later comparison of checkpoints) explains exactly the same pairs.

Three ways of forming a pair from a dataset item (``pairing``):

* ``"two_views"``: the dataset's transform returns several random views of one image, as lightly's
  ``MultiViewTransform`` / ``SimCLRTransform`` do. An item is ``([v1, v2, ...], label, ...)`` or
  ``[v1, v2, ...]``; the pair is ``(v1, v2)``.
* ``"clean_vs_augmented"``: the pairs of Sammani et al. [0] (section "Forming a pair"): ``x1`` is a
  deterministic "clean" view of the raw image and ``x2`` an augmented view. The dataset's transform is
  switched off while the raw image is read (the dataset needs a settable ``transform`` attribute, as
  torchvision datasets and ``lightly.data.LightlyDataset`` have), then:

  - ``x2 = augment_transform(raw)``; by default the dataset's own transform, and its first view
    when it returns several;
  - ``x1 = clean_transform(raw)``; by default the paper's resize + centre crop (the paper resizes to
    256 and crops 224; here the shorter side is resized to ``size / 0.875`` and the centre
    ``size`` crop is taken, ``size`` being the augmented view's size), scaled to ``[0, 1]`` and
    normalised with the ``Normalize`` found in the dataset's transform, if any.
* ``"dataset"``: the dataset yields pairs; an item is ``(x1, x2, ...)``.

Every view must be a ``(C, H, W)`` float tensor, and both views of a pair must have the same shape.

Randomness: indices come from a private ``torch.Generator``; dataset transforms (which draw from the
global torch, NumPy and Python RNGs, as torchvision and lightly transforms do) run with those three
global RNGs seeded from ``seed`` and restored afterwards, so drawing a probe set never shifts the
random stream of the training run.

References:
    [0] Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive Learning",
    IEEE TIP, arXiv 2206.09753.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, cast, get_args

import torch
from torch import Tensor

from lightning_explain._checks import check_literal, check_positive_int, describe
from lightning_explain._guard import seeded_global_rng
from lightning_explain.data._items import (
    as_single_view,
    is_integer_image,
    is_pil,
    is_view,
    match_channels,
    transform_disabled,
    transform_holder,
)
from lightning_explain.data.knn import KNNSet

__all__ = [
    "PAIRINGS",
    "PROBE_FORMAT",
    "Pairing",
    "ProbeSet",
    "default_clean_transform",
    "draw_probe_set",
    "find_normalize",
    "hash_settings",
]

Pairing = Literal["two_views", "clean_vs_augmented", "dataset"]
PAIRINGS: tuple[str, ...] = get_args(Pairing)
PROBE_FORMAT = "lightning-explain-probe"
_PROBE_VERSION = 1
_OWNER = "draw_probe_set"


# --------------------------------------------------------------------------------------------------
# The probe set


@dataclass(frozen=True)
class ProbeSet:
    """A fixed batch of image pairs plus where it came from.

    Attributes:
        x1: ``(N, C, H, W)`` float32 first images, on the CPU.
        x2: ``(N, C, H, W)`` float32 second images, on the CPU.
        indices: the ``N`` dataset indices the pairs were drawn from (``-1`` where unknown).
        seed: the seed the set was drawn with.
        pairing: how a pair was formed (``"two_views"``, ``"clean_vs_augmented"``, ``"dataset"``).
        source: where the items came from (``"val"``, ``"train"``, a file path, ``"dataset"``).
        mean: per-channel mean of the input normalisation, if known (for rendering).
        std: per-channel standard deviation of the input normalisation, if known.
        config_hash: a hash of the settings that produced the set; a resumed callback keeps a
            restored probe set only when its own settings hash to the same value.
        extra: free-form string metadata.
        knn: the labelled image set of the online kNN probe
            (:class:`lightning_explain.data.KNNSet`), stored with the pairs so that resumed
            runs and ``lightning-explain compare`` classify the same images; ``None`` without one.
        geometry: ``(N, 2, 3)`` float32 affine maps from view-2 to view-1 normalised coordinates
            (``[u1, v1] = A[:, :2] @ [u2, v2] + A[:, 2]``, ``u = x / W``, ``v = y / H``), the
            ground truth of the correspondence metrics
            (:class:`lightning_explain.correspondence.ViewGeometry`), when the pairs were made
            with known crops and flips; ``None`` otherwise.
    """

    x1: Tensor
    x2: Tensor
    indices: tuple[int, ...]
    seed: int
    pairing: str
    source: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    config_hash: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    knn: KNNSet | None = None
    geometry: Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("x1", "x2"):
            x = getattr(self, name)
            if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 4:
                raise ValueError(
                    f"`ProbeSet`: expected `{name}` to be a float tensor of shape (N, C, H, W), "
                    f"but got {describe(x)}."
                )
        if self.x1.shape != self.x2.shape:
            raise ValueError(
                f"`ProbeSet`: expected `x1` and `x2` of the same shape, but got "
                f"{tuple(self.x1.shape)} and {tuple(self.x2.shape)}."
            )
        if len(self.indices) != self.x1.shape[0]:
            raise ValueError(
                f"`ProbeSet`: expected {self.x1.shape[0]} indices (one per pair), but got "
                f"{len(self.indices)}."
            )
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.x1.shape[1]:
                raise ValueError(
                    f"`ProbeSet`: expected `{name}` with one value per channel "
                    f"({self.x1.shape[1]}), but got {list(value)}."
                )
        g = self.geometry
        if g is not None and (
            not isinstance(g, Tensor)
            or not g.is_floating_point()
            or tuple(g.shape) != (self.x1.shape[0], 2, 3)
        ):
            raise ValueError(
                f"`ProbeSet`: expected `geometry` to be None or a float tensor of shape "
                f"({self.x1.shape[0]}, 2, 3) (one view-2 to view-1 affine map per pair), but got "
                f"{describe(g)}."
            )

    def __len__(self) -> int:
        return int(self.x1.shape[0])

    def subset(self, n: int) -> ProbeSet:
        """The first ``n`` pairs (used for the callback's dry run); the kNN set is kept whole."""
        return ProbeSet(
            x1=self.x1[:n],
            x2=self.x2[:n],
            indices=self.indices[:n],
            seed=self.seed,
            pairing=self.pairing,
            source=self.source,
            mean=self.mean,
            std=self.std,
            config_hash=self.config_hash,
            extra=dict(self.extra),
            knn=self.knn,
            geometry=None if self.geometry is None else self.geometry[:n],
        )

    def shard(self, rank: int, world_size: int) -> ProbeSet:
        """The ``rank``-th of ``world_size`` contiguous, near-equal parts of the pairs (earlier
        parts take one pair more when the count does not divide), without the kNN set; the parts
        of ranks ``0 .. world_size - 1`` concatenated are the whole set, in order. A part may be
        empty when there are fewer pairs than ranks (then ``x1`` has 0 rows).

        Example:
            >>> import torch
            >>> p = ProbeSet(torch.rand(5, 3, 4, 4), torch.rand(5, 3, 4, 4), (0, 1, 2, 3, 4), 0, "dataset", "x")
            >>> [p.shard(r, 2).indices for r in range(2)]
            [(0, 1, 2), (3, 4)]
        """
        n = len(self)
        base, extra = divmod(n, world_size)
        start = rank * base + min(rank, extra)
        stop = start + base + (1 if rank < extra else 0)
        return dataclasses.replace(
            self,
            x1=self.x1[start:stop],
            x2=self.x2[start:stop],
            indices=self.indices[start:stop],
            extra=dict(self.extra),
            knn=None,
            geometry=None if self.geometry is None else self.geometry[start:stop],
        )

    def to_dict(self) -> dict[str, Any]:
        """A dict of tensors, strings, numbers and lists only (loadable with ``weights_only=True``)."""
        return {
            "format": PROBE_FORMAT,
            "version": _PROBE_VERSION,
            "x1": self.x1.detach().cpu().contiguous(),
            "x2": self.x2.detach().cpu().contiguous(),
            "indices": torch.tensor(self.indices, dtype=torch.long),
            "seed": int(self.seed),
            "pairing": str(self.pairing),
            "source": str(self.source),
            "mean": None if self.mean is None else [float(v) for v in self.mean],
            "std": None if self.std is None else [float(v) for v in self.std],
            "config_hash": str(self.config_hash),
            "extra": {str(k): str(v) for k, v in self.extra.items()},
            "knn": None if self.knn is None else self.knn.to_dict(),
            "geometry": (
                None if self.geometry is None else self.geometry.detach().cpu().float().contiguous()
            ),
        }

    @classmethod
    def from_dict(cls, data: object, *, origin: str = "state") -> ProbeSet:
        """Rebuild a probe set from :meth:`to_dict` output.

        Raises:
            ValueError: if ``data`` is not a probe-set dict (``origin`` names where it came from).
        """
        if not isinstance(data, dict) or data.get("format") != PROBE_FORMAT:
            raise ValueError(
                f"`ProbeSet`: {origin} does not hold a lightning-explain probe set (expected a dict "
                f"with format {PROBE_FORMAT!r}). Create one with `PairExplanationCallback.save_probe` "
                f"or `ProbeSet.save`."
            )
        if int(data.get("version", 0)) > _PROBE_VERSION:
            raise ValueError(
                f"`ProbeSet`: {origin} was written by a newer lightning-explain (probe format "
                f"version {data['version']}, this version reads <= {_PROBE_VERSION}). Upgrade."
            )
        knn = None
        if data.get("knn") is not None:
            knn = KNNSet.from_dict(data["knn"], origin=f"{origin} (its kNN set)")
        for name in ("x1", "x2"):
            x = data.get(name)
            if not isinstance(x, Tensor) or not x.is_floating_point():
                hint = (
                    " Images must be stored as floats in the model's input space (e.g. converted "
                    "with `v2.ToDtype(torch.float32, scale=True)`); converting integer images here "
                    "would give 0..255 values the model never saw."
                    if isinstance(x, Tensor)
                    else ""
                )
                raise ValueError(
                    f"`ProbeSet`: {origin} stores `{name}` as {describe(x)}; expected a float "
                    f"tensor of shape (N, C, H, W).{hint}"
                )
        try:
            indices = data["indices"]
            mean, std = data.get("mean"), data.get("std")
            geometry = data.get("geometry")  # absent in files written before it existed
            return cls(
                x1=data["x1"].float(),
                x2=data["x2"].float(),
                indices=tuple(int(i) for i in indices.tolist()),
                seed=int(data["seed"]),
                pairing=str(data["pairing"]),
                source=str(data["source"]),
                mean=None if mean is None else tuple(float(v) for v in mean),
                std=None if std is None else tuple(float(v) for v in std),
                config_hash=str(data.get("config_hash", "")),
                extra={str(k): str(v) for k, v in dict(data.get("extra", {})).items()},
                knn=knn,
                geometry=None if geometry is None else geometry.float(),
            )
        except (KeyError, AttributeError, TypeError) as err:
            raise ValueError(f"`ProbeSet`: {origin} holds a malformed probe set: {err!r}.") from err

    def save(self, path: Union[str, os.PathLike[str]]) -> Path:
        """Write the probe set with ``torch.save`` (a dict of tensors and metadata); return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.to_dict(), path)
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike[str]]) -> ProbeSet:
        """Read a probe set written by :meth:`save` (with ``torch.load(weights_only=True)``).

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the file does not hold a probe set.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"`ProbeSet.load`: no probe file at {str(path)!r}. Write one with "
                f"`PairExplanationCallback.save_probe(path)` or `ProbeSet.save(path)`."
            )
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise ValueError(
                f"`ProbeSet.load`: the file {str(path)!r} holds Python objects that a safe load "
                f"(torch.load(weights_only=True)) refuses to rebuild. Probe files written by "
                f"lightning-explain hold only tensors, numbers and strings, so this file was made "
                f"by something else or altered. Do not load it with weights_only=False (that can "
                f"run code stored in the file); rewrite it with `ProbeSet.save` from trusted data."
            ) from None
        except (RuntimeError, EOFError, OSError, AttributeError) as err:
            raise ValueError(
                f"`ProbeSet.load`: the file {str(path)!r} cannot be read: it is corrupt, truncated "
                f"or not a PyTorch file ({type(err).__name__}). Rewrite it with `ProbeSet.save`."
            ) from err
        return cls.from_dict(data, origin=f"the file {str(path)!r}")


# --------------------------------------------------------------------------------------------------
# Transforms


def find_normalize(transform: object, _depth: int = 0) -> tuple[list[float], list[float]] | None:
    """Find a torchvision ``Normalize`` inside a (nested) transform; return its ``(mean, std)``.

    Looks through ``Compose``-like ``transforms`` lists, ``transform`` attributes (lightly's
    ``MultiViewTransform`` and view transforms) and ``RandomApply``. Returns ``None`` if none is found.
    """
    if transform is None or _depth > 8:
        return None
    if type(transform).__name__ == "Normalize":
        mean = getattr(transform, "mean", None)
        std = getattr(transform, "std", None)
        if mean is not None and std is not None:
            return [float(v) for v in mean], [float(v) for v in std]
    children: list[object] = []
    if isinstance(transform, (list, tuple)):
        children.extend(transform)
    for attr in ("transforms", "transform"):
        child = getattr(transform, attr, None)
        if child is not None and child is not transform:
            if isinstance(child, (list, tuple)):
                children.extend(child)
            else:
                children.append(child)
    for child in children:
        found = find_normalize(child, _depth + 1)
        if found is not None:
            return found
    return None


def default_clean_transform(
    size: tuple[int, int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Callable[[Any], Tensor]:
    """The deterministic "clean" view: resize, centre crop, scale to ``[0, 1]``, normalise.

    Follows the paper's pure view (Resize 256 then CenterCrop 224, a 0.875 ratio): the shorter side
    is resized to ``round(min(size) / 0.875)`` and the centre ``size`` crop is taken.

    Args:
        size: output ``(H, W)``.
        mean: per-channel mean for ``Normalize``; ``None`` skips normalisation.
        std: per-channel standard deviation for ``Normalize``.

    Returns:
        A callable mapping a PIL image, an ``(H, W, C)`` array or a ``(C, H, W)`` tensor to a
        ``(C, H, W)`` float32 tensor.
    """
    from torchvision.transforms import v2

    steps: list[Callable[[Any], Any]] = [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Resize(round(min(size) / 0.875), antialias=True),
        v2.CenterCrop(list(size)),
    ]
    if mean is not None and std is not None:
        steps.append(v2.Normalize(list(mean), list(std)))
    return cast(Callable[[Any], Tensor], v2.Compose(steps))


# --------------------------------------------------------------------------------------------------
# Pair extraction


def _check_views(v1: object, v2: object, *, index: int, pairing: str) -> tuple[Tensor, Tensor]:
    for name, v in (("first", v1), ("second", v2)):
        if not is_view(v):
            hint = ""
            if is_pil(v):
                hint = " End the transform with `ToTensor()` (or `v2.ToImage()` + `v2.ToDtype`)."
            elif is_integer_image(v):
                hint = (
                    f" The view has dtype {cast(Tensor, v).dtype}: end the transform with "
                    f"`v2.ToDtype(torch.float32, scale=True)` (or `ToTensor()`), which scales "
                    f"pixels to [0, 1]."
                )
            raise ValueError(
                f"`{_OWNER}`: with pairing={pairing!r}, the {name} view of item {index} must be a "
                f"(C, H, W) float tensor, but it is {describe(v)}.{hint}"
            )
    a, b = cast(Tensor, v1), cast(Tensor, v2)
    if a.shape != b.shape:
        raise ValueError(
            f"`{_OWNER}`: the two views of item {index} differ in shape: {tuple(a.shape)} and "
            f"{tuple(b.shape)}. Pairs need views of one size (multi-crop local views cannot be "
            f"paired with global views)."
        )
    return a, b


def _pair_from_item(item: object, *, index: int, pairing: str) -> tuple[Tensor, Tensor]:
    """Extract ``(v1, v2)`` from a dataset item for the ``two_views`` and ``dataset`` pairings."""
    if pairing == "two_views":
        views: object = item
        if isinstance(item, (list, tuple)) and item and isinstance(item[0], (list, tuple)):
            views = item[0]
        if (
            isinstance(views, (list, tuple))
            and len(views) >= 2
            and (is_pil(views[0]) or is_integer_image(views[0]))
        ):
            _check_views(views[0], views[1], index=index, pairing=pairing)  # raises with a hint
        if (
            not isinstance(views, (list, tuple))
            or len(views) < 2
            or not (is_view(views[0]) and is_view(views[1]))
        ):
            raise ValueError(
                f"`{_OWNER}`: pairing='two_views' expects items of the form ([v1, v2, ...], label, "
                f"...) or [v1, v2, ...] from a multi-view transform (e.g. lightly's "
                f"SimCLRTransform), but item {index} is {describe(item)}. Use a dataset whose "
                f"transform returns two views (e.g. ProbeSettings(source='train')), pairing='dataset' for "
                f"a dataset of (x1, x2) pairs, or pairing='clean_vs_augmented'."
            )
        return _check_views(views[0], views[1], index=index, pairing=pairing)
    if not isinstance(item, (list, tuple)) or len(item) < 2:
        raise ValueError(
            f"`{_OWNER}`: pairing='dataset' expects items (x1, x2, ...), but item {index} is "
            f"{describe(item)}."
        )
    return _check_views(item[0], item[1], index=index, pairing=pairing)


# --------------------------------------------------------------------------------------------------
# Drawing


def hash_settings(**settings: object) -> str:
    """A short stable hash of the settings that determine a probe set."""
    text = json.dumps({k: repr(v) for k, v in sorted(settings.items())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def draw_probe_set(
    dataset: Any,
    n_pairs: int = 8,
    *,
    pairing: Pairing = "two_views",
    seed: int = 0,
    clean_transform: Callable[[Any], Any] | None = None,
    augment_transform: Callable[[Any], Any] | None = None,
    source: str = "dataset",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    config_hash: str = "",
) -> ProbeSet:
    """Draw ``n_pairs`` pairs from a map-style dataset, reproducibly and without side effects.

    Indices are drawn without replacement from a private generator seeded with ``seed``. Dataset
    items are read by index (never through a DataLoader), with the global torch, NumPy and Python
    RNGs seeded from ``seed`` and restored afterwards (see :func:`seeded_global_rng`).

    Args:
        dataset: a map-style dataset (``len`` and ``__getitem__``).
        n_pairs: number of pairs; capped at ``len(dataset)``.
        pairing: ``"two_views"``, ``"clean_vs_augmented"`` or ``"dataset"`` (see the module docs).
        seed: seed of the index draw and of the transforms.
        clean_transform: ``clean_vs_augmented`` only: raw image -> ``(C, H, W)`` clean view.
            Default: :func:`default_clean_transform` at the augmented view's size.
        augment_transform: ``clean_vs_augmented`` only: raw image -> augmented ``(C, H, W)`` view
            (or a list of views, of which the first is used). Default: the dataset's transform.
        source: a label stored with the set (``"val"``, ``"train"``, ...).
        mean: normalisation mean stored with the set; default: found in the dataset's transform.
        std: normalisation std stored with the set; default: found in the dataset's transform.
        config_hash: stored with the set (the callback uses it to validate restored state).

    Returns:
        A :class:`ProbeSet` with ``(N, C, H, W)`` float32 CPU tensors, ``N = min(n_pairs, len)``.

    Raises:
        TypeError: if the dataset has no ``len``/``__getitem__`` (iterable datasets).
        ValueError: for an empty dataset, an unknown pairing, or items that do not fit the pairing
            (the message shows the item's structure and the fix).
    """
    pairing = check_literal(pairing, Pairing, name="pairing", owner=_OWNER)
    n_pairs = check_positive_int(n_pairs, name="n_pairs", owner=_OWNER)
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise TypeError(
            f"`{_OWNER}`: the probe set is read by index and needs a map-style dataset "
            f"(`__len__` and `__getitem__`), but got {type(dataset).__name__}. For an iterable "
            f"dataset, build a ProbeSet from tensors, `ProbeSet.save` it, and pass its path as "
            f"`ProbeSettings(source=...)`."
        )
    size = len(dataset)
    if size == 0:
        raise ValueError(f"`{_OWNER}`: the dataset ({source}) is empty.")
    n = min(n_pairs, size)
    g = torch.Generator().manual_seed(int(seed))
    indices = [int(i) for i in torch.randperm(size, generator=g)[:n].tolist()]

    holder = transform_holder(dataset)
    if mean is None or std is None:
        found = find_normalize(getattr(holder, "transform", None)) if holder is not None else None
        if found is not None:
            mean, std = found

    firsts: list[Tensor] = []
    seconds: list[Tensor] = []
    with seeded_global_rng(int(seed)):
        if pairing == "clean_vs_augmented":
            if holder is None:
                raise ValueError(
                    f"`{_OWNER}`: pairing='clean_vs_augmented' reads raw images by switching the "
                    f"dataset's transform off, but {type(dataset).__name__} has no `transform` "
                    f"attribute. Use a torchvision/lightly dataset, or pairing='dataset' with a "
                    f"dataset that yields (clean, augmented) pairs."
                )
            with transform_disabled(holder) as original:
                augment = augment_transform if augment_transform is not None else original
                if augment is None:
                    raise ValueError(
                        f"`{_OWNER}`: pairing='clean_vs_augmented' needs an augmentation, but the "
                        f"dataset has no transform and `augment_transform` is None."
                    )
                for i in indices:
                    item = dataset[i]
                    raw = item[0] if isinstance(item, (list, tuple)) else item
                    aug = as_single_view(augment(raw))
                    if not is_view(aug):
                        raise ValueError(
                            f"`{_OWNER}`: the augmentation returned {describe(aug)} for item {i}; "
                            f"expected a (C, H, W) float tensor."
                        )
                    aug = cast(Tensor, aug)
                    clean_fn = clean_transform
                    if clean_fn is None:
                        clean_fn = default_clean_transform(
                            (int(aug.shape[1]), int(aug.shape[2])), mean, std
                        )
                    clean = clean_fn(raw)
                    if isinstance(clean, Tensor) and clean.ndim == 3:
                        clean = match_channels(clean.float(), int(aug.shape[0]))
                    v1, v2 = _check_views(clean, aug, index=i, pairing=pairing)
                    firsts.append(v1)
                    seconds.append(v2)
        else:
            for i in indices:
                v1, v2 = _pair_from_item(dataset[i], index=i, pairing=pairing)
                firsts.append(v1)
                seconds.append(v2)
    try:
        x1 = torch.stack([v.detach().float().cpu() for v in firsts])
        x2 = torch.stack([v.detach().float().cpu() for v in seconds])
    except RuntimeError as err:
        shapes = sorted({tuple(v.shape) for v in firsts + seconds})
        raise ValueError(
            f"`{_OWNER}`: the probe views have different shapes {shapes}; the dataset's transform "
            f"must produce images of one size (add a Resize/CenterCrop)."
        ) from err
    if mean is not None and std is not None and not (len(mean) == len(std) == x1.shape[1]):
        mean = std = None  # a Normalize for another channel count: render without un-normalising
    return ProbeSet(
        x1=x1,
        x2=x2,
        indices=tuple(indices),
        seed=int(seed),
        pairing=pairing,
        source=source,
        mean=None if mean is None else tuple(float(v) for v in mean),
        std=None if std is None else tuple(float(v) for v in std),
        config_hash=config_hash,
    )
