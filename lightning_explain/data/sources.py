"""Where the probe pairs and the kNN images come from: settings, datasets of a Trainer, and the
policy that draws, restores or loads them.

* :class:`ProbeSettings` and :class:`KNNSettings`: small frozen dataclasses, validated at
  construction, accepted by LightningCLI YAML (plain mappings or ``class_path``/``init_args``).
  Their :meth:`~ProbeSettings.identity` is what defines the pairs; the settings hashes stored in
  checkpoints derive from it.
* :func:`first_dataset` / :func:`trainer_dataset`: the dataset behind a Trainer's dataloaders (or
  its datamodule's / module's dataloader hooks), found without iterating a DataLoader.
* :class:`ProbeSource`: the policy of the training callback: a probe set given by the user wins,
  then one restored from a checkpoint drawn with the same settings, then a probe file, then a draw
  from the validation set (falling back to the training set); the kNN set likewise.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from lightning_utilities.core.rank_zero import rank_zero_info, rank_zero_warn

from lightning_explain._checks import (
    check_bool,
    check_literal,
    check_positive_int,
    check_real,
    check_stats,
    describe,
)
from lightning_explain._guard import seeded_global_rng
from lightning_explain._lightning import resolve_dotted
from lightning_explain.data.knn import KNNSet, draw_knn_set
from lightning_explain.data.probe import PAIRINGS, Pairing, ProbeSet, draw_probe_set, hash_settings
from lightning_explain.embedding import check_embedding_spec

__all__ = [
    "KNNSettings",
    "ProbeSettings",
    "ProbeSource",
    "TransformSpec",
    "first_dataset",
    "trainer_dataset",
]

TransformSpec = Union[str, Callable[[Any], Any], None]
"""A transform: a dotted path to a callable (or to a class built without arguments), a callable,
or ``None``."""

_KNN_WARN_BYTES = 64 * 2**20


def _resolve_transform(spec: object, *, name: str, owner: str) -> Callable[[Any], Any] | None:
    if spec is None:
        return None
    obj = resolve_dotted(spec, argument=name, owner=owner) if isinstance(spec, str) else spec
    if isinstance(spec, str) and isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise TypeError(
            f"`{owner}`: expected `{name}` to be a callable image -> (C, H, W) tensor, or a "
            f"dotted path to one (or to a class constructible without arguments), but got "
            f"{describe(spec)}."
        )
    fn: Callable[[Any], Any] = obj
    return fn


def _coerce(value: object, cls: type[Any], *, name: str, owner: str) -> Any:
    """``value`` as a ``cls`` instance: itself, or ``cls(**value)`` for a mapping."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        try:
            return cls(**dict(value))
        except TypeError as err:
            valid = [f.name for f in dataclasses.fields(cls) if f.init]
            raise TypeError(
                f"`{owner}`: invalid `{name}` {dict(value)!r}: {err}. Valid keys: {valid}."
            ) from None
    raise TypeError(
        f"`{owner}`: expected `{name}` to be a {cls.__name__} or a mapping of its fields, but got "
        f"{describe(value)}."
    )


@dataclass(frozen=True)
class ProbeSettings:
    """What the probe pairs are and where they are drawn from.

    Attributes:
        n_pairs: number of probe pairs. Default 8.
        pairing: how a pair is formed from a dataset item (see :mod:`lightning_explain.data`):
            ``"two_views"`` (the two random views of a multi-view transform such as lightly's
            ``SimCLRTransform``), ``"clean_vs_augmented"`` (the paper's pairs: a deterministic
            resize + centre-crop view vs an augmented view of the raw image) or ``"dataset"``
            (items ``(x1, x2, ...)``). Default ``"two_views"``.
        source: ``"val"`` (the validation set if the run has one and its items fit ``pairing``,
            else the training set), ``"train"``, or the path of a probe file written by
            ``PairExplanationCallback.save_probe`` / :meth:`ProbeSet.save`. Datasets are indexed
            directly, never iterated through a DataLoader. Default ``"val"``.
        clean_transform: ``"clean_vs_augmented"`` only: raw image -> ``(C, H, W)`` tensor, as a
            dotted path or a callable. Default ``None``: resize the shorter side to
            ``size / 0.875``, centre-crop ``size`` (the augmented view's size), scale to [0, 1] and
            apply the ``Normalize`` found in the dataset's transform. With the kNN probe, also the
            view embedded for the kNN images.
        augment_transform: ``"clean_vs_augmented"`` only: the augmentation. Default ``None``: the
            dataset's own transform (its first view if it returns several).
        mean: per-channel normalisation mean to undo in rendered images. Default ``None``: taken
            from a torchvision ``Normalize`` in the dataset's transform if there is one.
        std: per-channel normalisation std, as ``mean``. Default ``None``.

    Raises:
        ValueError / TypeError: at construction, for a bad value (the message names the field).

    Example:
        >>> ProbeSettings(n_pairs=4, pairing="dataset", source="train").identity()["n_pairs"]
        4
    """

    n_pairs: int = 8
    pairing: Pairing = "two_views"
    source: str = "val"
    clean_transform: TransformSpec = None
    augment_transform: TransformSpec = None
    mean: tuple[float, ...] | None = field(default=None, metadata={"identity": False})
    std: tuple[float, ...] | None = field(default=None, metadata={"identity": False})

    def __post_init__(self) -> None:
        owner = "ProbeSettings"
        check_positive_int(self.n_pairs, name="n_pairs", owner=owner)
        check_literal(self.pairing, Pairing, name="pairing", owner=owner)
        if not isinstance(self.source, (str, os.PathLike)):
            raise TypeError(
                f"`{owner}`: expected `source` to be 'val', 'train' or the path of a probe file, "
                f"but got {describe(self.source)}."
            )
        object.__setattr__(self, "source", str(self.source))
        if self.source not in ("val", "train") and not Path(self.source).expanduser().is_file():
            raise ValueError(
                f"`{owner}`: expected `source` to be 'val', 'train' or the path of an existing "
                f"probe file (written by `save_probe`), but {self.source!r} is neither."
            )
        for name in ("clean_transform", "augment_transform"):
            _resolve_transform(getattr(self, name), name=name, owner=owner)
        mean = check_stats(None if self.mean is None else list(self.mean), name="mean", owner=owner)
        std = check_stats(None if self.std is None else list(self.std), name="std", owner=owner)
        if (mean is None) != (std is None):
            raise ValueError(
                f"`{owner}`: expected `mean` and `std` to be given together (or both None to "
                f"detect them from the dataset's Normalize), but got mean={mean}, std={std}."
            )
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def coerce(cls, value: object, *, owner: str, name: str = "probe") -> ProbeSettings:
        """``value`` as settings: itself, or ``ProbeSettings(**value)`` for a mapping."""
        out: ProbeSettings = _coerce(value, cls, name=name, owner=owner)
        return out

    @property
    def probe_file(self) -> Path | None:
        """The probe file named by ``source``, or ``None`` for ``"val"``/``"train"``."""
        return None if self.source in ("val", "train") else Path(self.source).expanduser()

    def display_stats(
        self, probe: ProbeSet
    ) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
        """The normalisation to undo when showing ``probe``: ``mean``/``std`` if given, else the
        probe set's (found in the dataset's ``Normalize``)."""
        if self.mean is not None and self.std is not None:
            return self.mean, self.std
        return probe.mean, probe.std

    def transforms(self) -> tuple[Callable[[Any], Any] | None, Callable[[Any], Any] | None]:
        """The resolved ``(clean_transform, augment_transform)``."""
        return (
            _resolve_transform(self.clean_transform, name="clean_transform", owner="ProbeSettings"),
            _resolve_transform(
                self.augment_transform, name="augment_transform", owner="ProbeSettings"
            ),
        )

    def identity(self) -> dict[str, object]:
        """The fields that define the pairs (not ``mean``/``std``, which only affect rendering);
        a transform given as a callable enters as ``None`` (its code cannot be hashed)."""
        return {
            f.name: _identity_value(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.metadata.get("identity", True)
        }


@dataclass(frozen=True)
class KNNSettings:
    """The online kNN probe: a weighted cosine kNN classifier on a fixed labelled image set.

    Every evaluation classifies ``queries`` labelled validation images against a bank of
    ``samples`` labelled training images with the weighted vote of
    ``lightly.utils.benchmarking.knn_predict`` (Wu et al., 2018) and relates the accuracy to the
    explanation scores (:mod:`lightning_explain.downstream`). Items must be ``(x, label, ...)``.

    Attributes:
        k: neighbours (capped at the bank size). Default 200 (lightly's).
        temperature: temperature of the vote weights ``exp(sim / t)``. Default 0.1.
        samples: bank size cap (training images). Default 512.
        queries: query count cap (validation images; without a labelled validation set, a part of
            the training set disjoint from the bank). Default 256.
        embedding: the embedding of the kNN probe, in the forms of the callback's ``embedding``
            (e.g. ``"backbone"``: kNN on backbone features while the projection is explained).
            Default ``None``: the explained embedding.
        correlations: also log, from the third evaluation on, the Spearman and Pearson
            correlation of every score with the accuracy over the evaluations so far
            (``explain_corr/...``: their own prefix, so that they sort after the scores in
            TensorBoard and MLflow), with a table and a scatter plot. The history behind them is
            kept either way (``PairExplanationCallback.history``). Default ``False``.

    Example:
        >>> KNNSettings(k=20).identity()
        {'samples': 512, 'queries': 256}
    """

    k: int = 200
    temperature: float = 0.1
    samples: int = 512
    queries: int = 256
    embedding: Union[str, Callable[[Any, Any], Any], None] = field(
        default=None, metadata={"identity": False}
    )
    correlations: bool = field(default=False, metadata={"identity": False})

    def __post_init__(self) -> None:
        owner = "KNNSettings"
        check_positive_int(self.k, name="k", owner=owner)
        object.__setattr__(
            self,
            "temperature",
            check_real(
                self.temperature,
                name="temperature",
                owner=owner,
                minimum=0.0,
                exclusive_minimum=True,
            ),
        )
        check_positive_int(self.samples, name="samples", owner=owner)
        check_positive_int(self.queries, name="queries", owner=owner)
        check_bool(self.correlations, name="correlations", owner=owner)
        if self.embedding is not None:
            check_embedding_spec(self.embedding, argument="embedding", owner=owner)

    @classmethod
    def coerce(cls, value: object, *, owner: str, name: str = "knn") -> KNNSettings | None:
        """``None``, the settings themselves, or ``KNNSettings(**value)`` for a mapping."""
        if value is None:
            return None
        out: KNNSettings = _coerce(value, cls, name=name, owner=owner)
        return out

    def identity(self) -> dict[str, object]:
        """The fields that define which images are drawn (``k``, ``temperature`` and
        ``embedding`` only change how they are classified)."""
        return {"samples": self.samples, "queries": self.queries}


def _identity_value(value: object) -> object:
    return value if value is None or isinstance(value, (str, int, float, tuple)) else None


# --------------------------------------------------------------------------------------------------
# Datasets of a Trainer


def first_dataset(loaders: object) -> Any:
    """The dataset of a DataLoader, or of the first DataLoader in a list/tuple/dict of them (or
    in a Lightning ``CombinedLoader``); ``None`` if there is none."""
    if loaders is None:
        return None
    dataset = getattr(loaders, "dataset", None)
    if dataset is not None:
        return dataset
    iterables = getattr(loaders, "iterables", None)  # CombinedLoader
    if iterables is not None and iterables is not loaders:
        return first_dataset(iterables)
    values: list[object] = []
    if isinstance(loaders, Mapping):
        values = list(loaders.values())
    elif isinstance(loaders, (list, tuple)):
        values = list(loaders)
    for value in values:
        found = first_dataset(value)
        if found is not None:
            return found
    return None


def trainer_dataset(trainer: Any, pl_module: Any, which: str) -> Any:
    """The ``"train"`` or ``"val"`` dataset of a run: from the loaded dataloaders, else from the
    datamodule's or the module's ``<which>_dataloader()`` hook (called with the global RNGs
    forked; loaders are never iterated). ``None`` if the run has none (yet)."""
    loaded = trainer.val_dataloaders if which == "val" else trainer.train_dataloader
    dataset = first_dataset(loaded)
    if dataset is not None:
        return dataset
    with seeded_global_rng(0):
        for owner in (getattr(trainer, "datamodule", None), pl_module):
            hook = getattr(owner, f"{which}_dataloader", None) if owner is not None else None
            if hook is None:
                continue
            try:
                loaders = hook()
            except Exception:  # not implemented (Lightning raises) or not available yet
                continue
            dataset = first_dataset(loaders)
            if dataset is not None:
                return dataset
    return None


def _no_val(trainer: Any) -> bool:
    """Whether the run will have no validation data: validation is off
    (``limit_val_batches=0``), or the sanity check ran and loaded none."""
    if getattr(trainer, "limit_val_batches", 1) == 0:
        return True
    loaded_train = getattr(trainer, "train_dataloader", None) is not None
    sanity = int(getattr(trainer, "num_sanity_val_steps", 0) or 0)
    return loaded_train and sanity != 0


class _NotYet(Exception):
    """A preferred dataset may still appear later in the run."""


# --------------------------------------------------------------------------------------------------
# The policy


class ProbeSource:
    """The probe set (and kNN set) of a training run: drawn once, kept, restored on resume.

    Precedence: a probe set given with :meth:`use` (``load_probe``), then one restored from a
    checkpoint (:meth:`restore`; kept only when it was drawn with the same settings), then the
    probe file of ``settings.source``, then a draw from the run's datasets. The kNN set (with
    ``knn``) is kept when it came with the probe set and was drawn with the same settings, else
    drawn from the training (bank) and validation (queries) sets.

    Args:
        settings: the probe settings.
        knn: the kNN settings, or ``None`` (no kNN set).
        seed: seed of every draw.
        knn_embedding: the kNN embedding as text, recorded with the kNN set.
        owner: the name in messages.
    """

    def __init__(
        self,
        settings: ProbeSettings,
        knn: KNNSettings | None,
        *,
        seed: int,
        knn_embedding: str = "",
        owner: str = "ProbeSource",
    ) -> None:
        self.settings = settings
        self.knn = knn
        self.seed = seed
        self.owner = owner
        self.knn_embedding = knn_embedding
        self.probe_hash = hash_settings(seed=seed, **settings.identity())
        self.knn_hash = hash_settings(
            seed=seed,
            probe_source=settings.source,
            clean_transform=_identity_value(settings.clean_transform),
            **(knn.identity() if knn is not None else {}),
        )
        self.probe: ProbeSet | None = None
        self.knn_redrawn = False
        """Set when a new kNN set was drawn (the accuracy history must restart)."""
        self._user = False
        self._restored: ProbeSet | None = None

    # ----------------------------------------------------------------------------------------------

    def use(self, probe: ProbeSet) -> ProbeSet:
        """Use ``probe`` from now on (it takes precedence over a restored one)."""
        self.probe, self._user = probe, True
        return probe

    def identity(self) -> dict[str, object]:
        """What defines the probe pairs: the seed and :meth:`ProbeSettings.identity` (kept in the
        checkpoint state, so a resume can say what changed)."""
        return {"seed": self.seed, **self.settings.identity()}

    def restore(
        self,
        stored: Mapping[str, Any] | None,
        config_hash: object,
        *,
        identity: Mapping[str, object] | None = None,
    ) -> bool:
        """Keep a probe set from a checkpoint if it was drawn with the current settings.

        Args:
            stored: the probe set's dict, or ``None``.
            config_hash: the settings hash it was drawn with.
            identity: the settings it was drawn with (:meth:`identity`), to name what changed.

        Returns:
            Whether it was kept; a probe set drawn with other settings is dropped with a warning
            that lists the changed settings.
        """
        if stored is None:
            return False
        if config_hash != self.probe_hash:
            now = self.identity()
            if isinstance(identity, Mapping):
                changed = ", ".join(
                    f"{k}: {identity.get(k)!r} -> {now.get(k)!r}"
                    for k in sorted(set(now) | set(identity))
                    if identity.get(k) != now.get(k)
                )
            else:
                changed = "n_pairs, pairing, seed, source or transforms"
            rank_zero_warn(
                f"`{self.owner}`: the checkpoint's probe set was drawn with other settings "
                f"({changed or 'a transform given as a callable'}); drawing a new probe set, so "
                f"explanations before and after the resume show different pairs."
            )
            return False
        self._restored = ProbeSet.from_dict(stored, origin="the checkpoint")
        return True

    def ensure(self, trainer: Any, pl_module: Any, *, final: bool) -> ProbeSet | None:
        """The probe set (with its kNN set when ``knn`` is set), or ``None`` while the data is
        not there yet (``final=False``).

        Raises:
            ValueError: no dataset, or items that do not fit the pairing or the kNN probe.
        """
        probe = self._pairs(trainer, pl_module, final=final)
        if probe is None or self.knn is None:
            return probe
        return self._with_knn(self.knn, trainer, pl_module, probe, final=final)

    def stand_in(self, trainer: Any, pl_module: Any) -> ProbeSet | None:
        """One pair (and a few kNN images) from the training set, to dry-run the configuration
        before the validation set is loaded; ``None`` if the training set cannot provide them.
        Nothing is kept."""
        train = trainer_dataset(trainer, pl_module, "train")
        if train is None:
            return None
        s = self.settings
        clean, augment = s.transforms()
        try:
            with torch.inference_mode(False):
                probe = draw_probe_set(
                    train,
                    1,
                    pairing=s.pairing,
                    seed=self.seed,
                    clean_transform=clean,
                    augment_transform=augment,
                    source="train",
                    mean=s.mean,
                    std=s.std,
                )
                if self.knn is not None:
                    knn = draw_knn_set(
                        train, None, n_bank=4, n_queries=2, seed=self.seed, clean_transform=clean
                    )
                    probe = dataclasses.replace(probe, knn=knn)
        except (TypeError, ValueError):
            return None
        return probe

    # ----------------------------------------------------------------------------------------------

    def _pairs(self, trainer: Any, pl_module: Any, *, final: bool) -> ProbeSet | None:
        if self.probe is not None and (self._user or self._restored is None):
            return self.probe
        if self._restored is not None:
            self.probe, self._restored = self._restored, None
            return self.probe
        path = self.settings.probe_file
        with torch.inference_mode(False):
            if path is not None:
                probe = ProbeSet.load(path)
                knn = probe.knn
                self.probe = dataclasses.replace(
                    probe,
                    config_hash=self.probe_hash,
                    knn=None
                    if knn is None
                    else dataclasses.replace(knn, config_hash=self.knn_hash),
                )
                return self.probe
            try:
                candidates = self._datasets(trainer, pl_module, final=final)
            except _NotYet:
                return None
            if not candidates:
                raise ValueError(
                    f"`{self.owner}`: found no dataset to draw the probe set from (probe source "
                    f"{self.settings.source!r}). Give the Trainer a datamodule or dataloaders, or "
                    f"pass the path of a saved probe file as `ProbeSettings(source=...)`."
                )
            return self._draw(candidates)

    def _datasets(self, trainer: Any, pl_module: Any, *, final: bool) -> list[tuple[str, Any]]:
        order = ["val", "train"] if self.settings.source == "val" else ["train"]
        found: list[tuple[str, Any]] = []
        for which in order:
            dataset = trainer_dataset(trainer, pl_module, which)
            if dataset is None and which == "val" and not final and not _no_val(trainer):
                raise _NotYet
            if dataset is None and which == "train" and not final and not found:
                raise _NotYet
            if dataset is not None:
                found.append((which, dataset))
        return found

    def _draw(self, candidates: list[tuple[str, Any]]) -> ProbeSet:
        s = self.settings
        clean, augment = s.transforms()
        errors: list[str] = []
        for source, dataset in candidates:
            try:
                probe = draw_probe_set(
                    dataset,
                    s.n_pairs,
                    pairing=s.pairing,
                    seed=self.seed,
                    clean_transform=clean,
                    augment_transform=augment,
                    source=source,
                    mean=s.mean,
                    std=s.std,
                    config_hash=self.probe_hash,
                )
            except (TypeError, ValueError) as err:
                errors.append(f"{source} set: {err}")
                continue
            if source != s.source:
                reason = f"does not fit pairing={s.pairing!r}" if errors else "is not available"
                rank_zero_info(
                    f"`{self.owner}`: drew the probe set from the {source} set (the validation "
                    f"set {reason})."
                )
            if len(probe) < s.n_pairs:
                rank_zero_warn(
                    f"`{self.owner}`: the {source} set has only {len(probe)} items; the probe set "
                    f"has {len(probe)} pairs instead of n_pairs={s.n_pairs}."
                )
            self.probe = probe
            return probe
        raise ValueError(
            f"`{self.owner}`: cannot draw the probe set with pairing={s.pairing!r} (valid: "
            f"{list(PAIRINGS)}). " + " | ".join(errors)
        )

    def _with_knn(
        self, settings: KNNSettings, trainer: Any, pl_module: Any, probe: ProbeSet, *, final: bool
    ) -> ProbeSet | None:
        knn = probe.knn
        if knn is not None and (
            knn.config_hash == self.knn_hash or self._user or self.settings.probe_file is not None
        ):
            record = dataclasses.replace(
                knn,
                k=settings.k,
                temperature=settings.temperature,
                embedding=self.knn_embedding,
                config_hash=self.knn_hash,
            )
            if record != knn:
                self.probe = probe = dataclasses.replace(probe, knn=record)
            return probe
        train = trainer_dataset(trainer, pl_module, "train")
        val = trainer_dataset(trainer, pl_module, "val")
        if not final and (train is None or (val is None and not _no_val(trainer))):
            return None
        bank_source = "train"
        if train is None:  # e.g. `trainer.validate`: bank and queries from the validation set
            train, val, bank_source = val, None, "val"
        if train is None:
            raise ValueError(
                f"`{self.owner}`: `knn` asks for the online kNN probe, whose images come from the "
                f"training and validation sets, but the run has neither. Give the Trainer a "
                f"datamodule or dataloaders, use a probe file that holds a kNN set, or set "
                f"knn=None."
            )
        if knn is not None:
            rank_zero_warn(
                f"`{self.owner}`: the stored kNN set was drawn with other settings (samples, "
                f"queries, seed, probe source or clean_transform changed); drawing a new one and "
                f"restarting the score/accuracy history, so kNN accuracies before and after the "
                f"resume are not comparable."
            )
        drawn = self._draw_knn(settings, train, val, bank_source)
        self.knn_redrawn = True
        self.probe = dataclasses.replace(probe, knn=drawn)
        return self.probe

    def _draw_knn(self, settings: KNNSettings, train: Any, val: Any, bank_source: str) -> KNNSet:
        clean, _ = self.settings.transforms()
        options: dict[str, Any] = {
            "bank_source": bank_source,
            "n_bank": settings.samples,
            "n_queries": settings.queries,
            "seed": self.seed,
            "clean_transform": clean,
            "k": settings.k,
            "temperature": settings.temperature,
            "embedding": self.knn_embedding,
            "config_hash": self.knn_hash,
        }
        errors: list[str] = []
        drawn: KNNSet | None = None
        with torch.inference_mode(False):
            for queries in [val, None] if val is not None else [None]:
                try:
                    drawn = draw_knn_set(train, queries, **options)
                    break
                except (TypeError, ValueError) as err:
                    where = "bank train / queries val" if queries is not None else bank_source
                    errors.append(f"{where}: {err}")
        if drawn is None:
            raise ValueError(
                f"`{self.owner}`: cannot draw the kNN set for `knn` (the online kNN probe needs "
                f"labelled items (x, label, ...) in the {bank_source} set). " + " | ".join(errors)
            )
        if errors:
            rank_zero_info(
                f"`{self.owner}`: the validation set does not fit the kNN probe ({errors[0]}); the "
                f"kNN queries are a part of the training set, disjoint from the bank."
            )
        if drawn.nbytes > _KNN_WARN_BYTES:
            rank_zero_warn(
                f"`{self.owner}`: the kNN set ({len(drawn.bank)} bank + {len(drawn.queries)} query "
                f"images of shape {tuple(drawn.bank.shape[1:])}) takes "
                f"{drawn.nbytes / 2**20:.0f} MB in every checkpoint; lower `KNNSettings.samples` / "
                f"`queries`."
            )
        return drawn
