"""``PairExplanationCallback``: explain a fixed probe set of image pairs while a contrastive model trains.

At the scheduled points of a run the callback explains why the model finds each probe pair similar
(pairwise heatmaps, Sammani et al. [0]), scores every explanation with the pairwise faithfulness
metrics, and logs heatmap grids, curves, tables and scalars to every logger of the trainer.

The logic lives in :class:`PairExplanationLogic`, which touches the Trainer only through public
attributes that both ``lightning.pytorch`` and ``pytorch_lightning`` provide. Each namespace gets its
own ``Callback`` subclass (LightningCLI accepts only callbacks of its own namespace):

* ``lightning_explain.PairExplanationCallback`` subclasses ``lightning.pytorch.Callback`` (or
  ``pytorch_lightning.Callback`` when the ``lightning`` package is not installed);
* ``lightning_explain.pl.PairExplanationCallback`` subclasses ``pytorch_lightning.Callback`` (the
  namespace lightly uses).

References:
    [0] Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive Learning",
    IEEE TIP, arXiv 2206.09753.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
import torch
from lightning_utilities.core.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightning_explain._core import attribute_embedding as _attribute_embedding
from lightning_explain._core import forward_embedding as _forward_embedding
from lightning_explain._core import has_attribute_path as _has_attribute_path
from lightning_explain._lightning import callback_base, default_namespace, resolve_dotted
from lightning_explain._lightning import unsupported_strategy as _unsupported_strategy
from lightning_explain._perf import check_autocast_dtype, perturbation_autocast
from lightning_explain.downstream import (
    Correlation,
    DownstreamPoint,
    KNNSet,
    correlation_table,
    draw_knn_set,
    evaluate_knn,
)
from lightning_explain.explain import explain
from lightning_explain.explanation import PairExplanation
from lightning_explain.methods import check_method_options, get_method, method_info
from lightning_explain.probe import (
    PAIRINGS,
    Pairing,
    ProbeSet,
    draw_probe_set,
    hash_settings,
    seeded_global_rng,
)
from lightning_explain.similarity import SimilarityName, list_similarities, resolve_similarity

__all__ = [
    "DEFAULT_METHODS",
    "MethodSpec",
    "PairExplanationCallback",
    "PairExplanationLogic",
    "parse_methods",
]

_OWNER = "PairExplanationCallback"
_STATE_VERSION = 1
_KNN_KEY = "explain/knn_accuracy"
_KNN_WARN_BYTES = 64 * 2**20

DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "interaction_cam")
"""Methods explained when ``methods`` is not given: the paper's pairwise Grad-CAM baseline and its
Interaction-CAM, each one forward and one backward pass of the pair."""

OnError = Literal["warn", "raise"]
Hook = Literal["train_epoch_end", "validation_epoch_end"]
MethodEntry = Union[str, dict[str, Any]]
EmbeddingFn = Callable[[Any, Tensor], Tensor]
TransformSpec = Union[str, Callable[[Any], Any], None]

_CHECKPOINT_FORMAT = "lightning-explain-callback"
_MIN_TILE = 96
"""Smallest tile side of the logged pair grids: 32 px probes are enlarged 3x to stay legible."""


# --------------------------------------------------------------------------------------------------
# Method specs


@dataclass(frozen=True)
class MethodSpec:
    """One entry of ``methods``: a registered method, its options and the name it is logged under.

    Attributes:
        name: the registry name (see :func:`lightning_explain.list_methods`).
        label: the name in logged keys, ``explain/<label>/...``; the method name unless several
            entries share it.
        options: the method options given in the entry (the callback adds ``similarity``,
            ``layer``, ``seed`` and ``batch_size`` where the method takes them and the entry does
            not set them).
    """

    name: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)


_LABEL_OK = re.compile(r"^[A-Za-z0-9_.=+-]+$")


def _option_text(value: object) -> str:
    text = value.__name__ if callable(value) and hasattr(value, "__name__") else str(value)
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_") or "x"


def parse_methods(methods: object, *, owner: str = _OWNER) -> list[MethodSpec]:
    """Parse the ``methods`` argument into :class:`MethodSpec` entries.

    An entry is a method name (``"gradcam"``) or a dict with the key ``name`` plus method options,
    e.g. ``{"name": "interaction_cam", "reduction": "max"}``; an optional ``label`` key sets the
    name used in logged keys. When several entries share a method and give no label, each gets the
    method name followed by its option values, e.g. ``interaction_cam-max``.

    Raises:
        TypeError: if ``methods`` is not a list of names/dicts, or an option is unknown to the
            method (the message lists the valid options).
        ValueError: for an unknown method (the message lists the valid names), an empty list, or
            entries that end up with the same label.
    """
    if isinstance(methods, (str, dict)):
        methods = [methods]
    if not isinstance(methods, Sequence) or isinstance(methods, (bytes, bytearray)):
        raise TypeError(
            f"`{owner}`: expected `methods` to be a list of method names or dicts "
            f"{{'name': ..., **options}}, but got {type(methods).__name__}."
        )
    if len(methods) == 0:
        raise ValueError(
            f"`{owner}`: expected at least one entry in `methods`, e.g. {list(DEFAULT_METHODS)}."
        )
    parsed: list[tuple[str, dict[str, Any], str | None]] = []
    for i, entry in enumerate(methods):
        if isinstance(entry, str):
            name, options, label = entry, {}, None
        elif isinstance(entry, Mapping):
            entry = dict(entry)
            if "name" not in entry:
                keys = list(entry)
                hint = ""
                if len(keys) == 1 and isinstance(keys[0], str):
                    inner = entry[keys[0]]
                    inner_text = ", ".join(f"{k!r}: {v!r}" for k, v in dict(inner or {}).items())
                    hint = f" Write it as {{'name': {keys[0]!r}{', ' if inner_text else ''}{inner_text}}}."
                raise ValueError(
                    f"`{owner}`: entry {i} of `methods` is a dict without a 'name' key: {entry!r}. "
                    f"Expected {{'name': <method>, <option>: <value>, ...}}.{hint}"
                )
            name = entry.pop("name")
            label = entry.pop("label", None)
            options = entry
            if label is not None and (not isinstance(label, str) or not _LABEL_OK.match(label)):
                raise ValueError(
                    f"`{owner}`: expected the 'label' of entry {i} of `methods` to be a non-empty "
                    f"string of letters, digits and '_.=+-' (it becomes part of the logged keys), "
                    f"but got {label!r}."
                )
        else:
            raise TypeError(
                f"`{owner}`: expected entry {i} of `methods` to be a method name or a dict "
                f"{{'name': ..., **options}}, but got {type(entry).__name__}."
            )
        if not isinstance(name, str):
            raise TypeError(f"`{owner}`: expected a method name (str) in entry {i}, got {name!r}.")
        try:
            method_info(name)
        except ValueError as err:
            raise ValueError(f"`{owner}`: invalid entry {i} of `methods`: {err}") from None
        try:
            check_method_options(name, options)
        except TypeError as err:
            raise TypeError(f"`{owner}`: invalid entry {i} of `methods`: {err}") from None
        parsed.append((name, options, label))

    counts: dict[str, int] = {}
    for name, _, label in parsed:
        if label is None:
            counts[name] = counts.get(name, 0) + 1
    specs: list[MethodSpec] = []
    for name, options, label in parsed:
        if label is None:
            label = name
            if counts[name] > 1 and options:
                label = "-".join([name, *(_option_text(v) for v in options.values())])
        specs.append(MethodSpec(name=name, label=label, options=options))
    labels = [s.label for s in specs]
    duplicates = sorted({lab for lab in labels if labels.count(lab) > 1})
    if duplicates:
        raise ValueError(
            f"`{owner}`: entries of `methods` would be logged under the same name {duplicates}. "
            f"Remove the repeated entry, give the entries different options, or set a distinct "
            f"'label' in each dict entry."
        )
    return specs


# --------------------------------------------------------------------------------------------------
# Embedding


def _embed(fn: EmbeddingFn, precision: Any, module: Any, x: Tensor) -> Tensor:
    """Run the embedding under the trainer's precision; half-precision outputs come back as float32."""
    if precision is not None:
        x = precision.convert_input(x)
        with precision.forward_context():
            z = fn(module, x)
    else:
        z = fn(module, x)
    if isinstance(z, Tensor) and z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    return z


# --------------------------------------------------------------------------------------------------
# Results of one evaluation


@dataclass
class _Failure:
    stage: str  # "embedding", "method", "metrics", "render", "knn"
    label: str
    error: BaseException

    def message(self) -> str:
        where = {
            "embedding": "embedding the probe pairs",
            "method": f"explaining with method {self.label!r}",
            "metrics": f"scoring method {self.label!r}",
            "render": f"rendering method {self.label!r}",
            "knn": "computing the kNN accuracy",
        }[self.stage]
        return f"{where} failed: {type(self.error).__name__}: {self.error}"


@dataclass
class _Outcome:
    spec: MethodSpec
    explanation: PairExplanation | None = None
    scores: dict[str, Tensor] = field(default_factory=dict)
    curves: dict[str, Tensor] = field(default_factory=dict)
    grid: Tensor | None = None
    caption: str = ""
    curves_figure: Any = None


@dataclass
class _Evaluation:
    sim: Tensor | None
    outcomes: list[_Outcome]
    failures: list[_Failure]
    knn_accuracy: float | None = None

    def scalars(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.sim is not None:
            out["explain/sim"] = float(self.sim.double().mean())
        if self.knn_accuracy is not None:
            out[_KNN_KEY] = float(self.knn_accuracy)
        for o in self.outcomes:
            for key, value in o.scores.items():
                out[f"explain/{o.spec.label}/{key}"] = float(value.double().mean())
        return out


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


def _short(key: str) -> str:
    for long, short in _ABBREVIATIONS:
        key = key.replace(long, short)
    return key


# --------------------------------------------------------------------------------------------------
# Guard


@contextmanager
def _guest(module: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode (per-submodule flags restored), gradients on, inference mode off, and the global
    torch (CPU and the current CUDA device), NumPy and Python RNGs restored on exit."""
    flags = [(m, m.training) for m in module.modules()]
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    py_state = random.getstate()
    np_state = np.random.get_state()
    with (
        torch.random.fork_rng(devices=fork_devices),
        torch.inference_mode(False),
        torch.enable_grad(),
    ):
        try:
            module.eval()
            yield
        finally:
            for m, flag in flags:
                m.training = flag
            random.setstate(py_state)
            np.random.set_state(np_state)


def _first_dataset(loaders: object) -> Any:
    """The dataset of a DataLoader, or of the first DataLoader in a list/tuple/dict of them."""
    if loaders is None:
        return None
    dataset = getattr(loaders, "dataset", None)
    if dataset is not None:
        return dataset
    iterables = getattr(loaders, "iterables", None)  # CombinedLoader
    if iterables is not None and iterables is not loaders:
        return _first_dataset(iterables)
    if isinstance(loaders, Mapping):
        for value in loaders.values():
            found = _first_dataset(value)
            if found is not None:
                return found
    elif isinstance(loaders, (list, tuple)):
        for value in loaders:
            found = _first_dataset(value)
            if found is not None:
                return found
    return None


class _NoData(Exception):
    """Raised internally when a probe source has no dataset (yet)."""


# --------------------------------------------------------------------------------------------------
# The namespace-free logic


class PairExplanationLogic:
    """Everything :class:`PairExplanationCallback` does, without a Lightning base class.

    The concrete callback classes combine this with ``lightning.pytorch.Callback`` or
    ``pytorch_lightning.Callback``; see :class:`PairExplanationCallback` for the arguments.
    """

    def __init__(
        self,
        methods: Sequence[MethodEntry] = DEFAULT_METHODS,
        metrics: Sequence[str] | None = None,
        *,
        n_pairs: int = 8,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        embedding: Union[str, EmbeddingFn] = "forward",
        layer: str = "auto",
        pairing: Pairing = "two_views",
        probe_source: str = "val",
        clean_transform: TransformSpec = None,
        augment_transform: TransformSpec = None,
        seed: int = 0,
        batch_size: int | None = None,
        autocast: str | None = None,
        log_images: bool = True,
        on_error: OnError = "warn",
        n_steps: int = 32,
        similarity: Union[SimilarityName, Callable[[Tensor, Tensor], Tensor]] = "cosine",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        hook: Hook = "train_epoch_end",
        knn_k: int | None = None,
        knn_temperature: float = 0.1,
        knn_samples: int = 512,
        knn_queries: int = 256,
        knn_embedding: Union[str, EmbeddingFn, None] = None,
    ) -> None:
        super().__init__()
        self._specs = parse_methods(methods)
        self.methods = [s.label for s in self._specs]
        self.metrics = self._check_metrics(metrics)
        self.n_pairs = self._positive_int(n_pairs, "n_pairs")
        if every_n_epochs is not None and every_n_train_steps is not None:
            raise ValueError(
                f"`{_OWNER}`: `every_n_epochs={every_n_epochs}` and `every_n_train_steps="
                f"{every_n_train_steps}` are mutually exclusive; set one of them (or neither, "
                f"for every epoch)."
            )
        self.every_n_epochs = (
            None if every_n_epochs is None else self._positive_int(every_n_epochs, "every_n_epochs")
        )
        self.every_n_train_steps = (
            None
            if every_n_train_steps is None
            else self._positive_int(every_n_train_steps, "every_n_train_steps")
        )
        self.embedding = embedding
        self._embedding_fn: EmbeddingFn | None = self._check_embedding(embedding)
        if not isinstance(layer, (str, nn.Module)):
            raise TypeError(
                f"`{_OWNER}`: expected `layer` to be 'auto' or a dotted submodule name of the "
                f"LightningModule such as 'backbone.layer4', but got {type(layer).__name__}."
            )
        self.layer = layer
        if pairing not in PAIRINGS:
            raise ValueError(
                f"`{_OWNER}`: expected `pairing` to be one of {list(PAIRINGS)}, but got {pairing!r}."
            )
        self.pairing: Pairing = pairing
        if not isinstance(probe_source, (str, os.PathLike)):
            raise TypeError(
                f"`{_OWNER}`: expected `probe_source` to be 'val', 'train' or the path of a probe "
                f"file, but got {type(probe_source).__name__}."
            )
        self.probe_source = str(probe_source)
        self._probe_path: Path | None = None
        if self.probe_source not in ("val", "train"):
            path = Path(self.probe_source).expanduser()
            if not path.is_file():
                raise ValueError(
                    f"`{_OWNER}`: expected `probe_source` to be 'val', 'train' or the path of an "
                    f"existing probe file (written by `save_probe`), but {self.probe_source!r} is "
                    f"neither."
                )
            self._probe_path = path
        self.clean_transform = clean_transform
        self.augment_transform = augment_transform
        self._clean_fn = self._resolve_transform(clean_transform, "clean_transform")
        self._augment_fn = self._resolve_transform(augment_transform, "augment_transform")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"`{_OWNER}`: expected `seed` to be an int, but got {seed!r}.")
        self.seed = seed
        self.batch_size = (
            None if batch_size is None else self._positive_int(batch_size, "batch_size")
        )
        self.autocast = autocast
        self._autocast_dtype = (
            None
            if autocast is None
            else check_autocast_dtype(autocast, name="autocast", owner=_OWNER)
        )
        self.log_images = bool(log_images)
        if on_error not in ("warn", "raise"):
            raise ValueError(
                f"`{_OWNER}`: expected `on_error` to be 'warn' or 'raise', but got {on_error!r}."
            )
        self.on_error: OnError = on_error
        self.n_steps = self._positive_int(n_steps, "n_steps")
        try:
            resolve_similarity(similarity)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"`{_OWNER}`: invalid `similarity`: {err} Valid names: {list_similarities()}."
            ) from None
        self.similarity = similarity
        self.mean = self._check_stats(mean, "mean")
        self.std = self._check_stats(std, "std")
        if (self.mean is None) != (self.std is None):
            raise ValueError(
                f"`{_OWNER}`: expected `mean` and `std` to be given together (or both None to "
                f"detect them from the dataset's Normalize), but got mean={self.mean}, "
                f"std={self.std}."
            )
        if hook not in ("train_epoch_end", "validation_epoch_end"):
            raise ValueError(
                f"`{_OWNER}`: expected `hook` to be 'train_epoch_end' or 'validation_epoch_end', "
                f"but got {hook!r}."
            )
        if hook == "validation_epoch_end" and every_n_train_steps is not None:
            raise ValueError(
                f"`{_OWNER}`: `every_n_train_steps` evaluates after training batches and needs "
                f"hook='train_epoch_end', but got hook={hook!r}."
            )
        self.hook: Hook = hook
        self.knn_k = None if knn_k is None else self._positive_int(knn_k, "knn_k")
        if (
            isinstance(knn_temperature, bool)
            or not isinstance(knn_temperature, (int, float))
            or not math.isfinite(float(knn_temperature))
            or knn_temperature <= 0
        ):
            raise ValueError(
                f"`{_OWNER}`: expected `knn_temperature` to be a finite number > 0 (lightly's "
                f"default is 0.1), but got {knn_temperature!r}."
            )
        self.knn_temperature = float(knn_temperature)
        self.knn_samples = self._positive_int(knn_samples, "knn_samples")
        self.knn_queries = self._positive_int(knn_queries, "knn_queries")
        self.knn_embedding = knn_embedding
        self._knn_embedding_fn: EmbeddingFn | None = (
            None
            if knn_embedding is None
            else self._check_embedding(knn_embedding, argument="knn_embedding")
        )
        self._knn_hash = hash_settings(
            knn_samples=self.knn_samples,
            knn_queries=self.knn_queries,
            seed=self.seed,
            probe_source=self.probe_source,
            clean_transform=self.clean_transform if isinstance(clean_transform, str) else None,
        )

        self._config_hash = hash_settings(
            n_pairs=self.n_pairs,
            pairing=self.pairing,
            seed=self.seed,
            probe_source=self.probe_source,
            clean_transform=self.clean_transform if isinstance(clean_transform, str) else None,
            augment_transform=self.augment_transform
            if isinstance(augment_transform, str)
            else None,
        )
        self._probe: ProbeSet | None = None
        self._user_probe = False
        self._restored_probe: ProbeSet | None = None
        self._errors = 0
        self._evaluations = 0
        self._last_step = -1
        self._model_class: str | None = None
        self._checked = False
        self._sinks: list[Any] | None = None
        self._history: list[dict[str, Any]] = []
        self._correlations: list[Correlation] = []

    # ----------------------------------------------------------------------------------------------
    # Argument checks

    @staticmethod
    def _positive_int(value: object, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"`{_OWNER}`: expected `{name}` to be a positive int, but got {value!r}."
            )
        if value < 1:
            raise ValueError(
                f"`{_OWNER}`: expected `{name}` to be a positive int, but got {value}."
            )
        return value

    @staticmethod
    def _check_metrics(metrics: object) -> list[str] | None:
        from lightning_explain.metrics import list_metrics, metric_info

        if metrics is None:
            return None
        if isinstance(metrics, str):
            metrics = [metrics]
        if not isinstance(metrics, Sequence) or not all(isinstance(m, str) for m in metrics):
            raise TypeError(
                f"`{_OWNER}`: expected `metrics` to be None (the default set) or a list of metric "
                f"names, but got {metrics!r}. Valid metrics: {', '.join(list_metrics())}."
            )
        if len(metrics) == 0:
            raise ValueError(
                f"`{_OWNER}`: expected at least one metric in `metrics` (or None for the default "
                f"set). Valid metrics: {', '.join(list_metrics())}."
            )
        for m in metrics:
            try:
                metric_info(m)
            except ValueError as err:
                raise ValueError(f"`{_OWNER}`: invalid `metrics`: {err}") from None
        return list(dict.fromkeys(metrics))

    @staticmethod
    def _check_stats(values: object, name: str) -> tuple[float, ...] | None:
        if values is None:
            return None
        if (
            not isinstance(values, Sequence)
            or isinstance(values, str)
            or not values
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ):
            raise TypeError(
                f"`{_OWNER}`: expected `{name}` to be a list of per-channel numbers such as "
                f"[0.485, 0.456, 0.406], or None, but got {values!r}."
            )
        if name == "std" and any(float(v) <= 0 for v in values):
            raise ValueError(f"`{_OWNER}`: expected every `std` value > 0, but got {list(values)}.")
        return tuple(float(v) for v in values)

    @staticmethod
    def _check_embedding(embedding: object, argument: str = "embedding") -> EmbeddingFn | None:
        """Resolve what can be resolved without the module: callables and 'pkg.mod:fn' paths."""
        if callable(embedding) and not isinstance(embedding, str):
            fn: EmbeddingFn = embedding  # type: ignore[assignment]
            return fn
        if not isinstance(embedding, str) or not embedding:
            raise TypeError(
                f"`{_OWNER}`: expected `{argument}` to be 'forward', an attribute path of the "
                f"LightningModule such as 'backbone', a dotted function path 'pkg.mod:fn', or a "
                f"callable (module, x) -> (B, D), but got {embedding!r}."
            )
        if embedding == "forward":
            return _forward_embedding
        if ":" in embedding:
            obj = resolve_dotted(embedding, argument=argument, owner=_OWNER)
            if not callable(obj):
                raise TypeError(
                    f"`{_OWNER}`: `{argument}={embedding!r}` is not callable; expected a function "
                    f"(module, x) -> (B, D)."
                )
            fn2: EmbeddingFn = obj
            return fn2
        return None  # attribute path or 'pkg.mod.fn': resolved against the module at setup

    @staticmethod
    def _resolve_transform(spec: object, name: str) -> Callable[[Any], Any] | None:
        if spec is None:
            return None
        if isinstance(spec, str):
            obj = resolve_dotted(spec, argument=name, owner=_OWNER)
            if isinstance(obj, type):
                obj = obj()
        else:
            obj = spec
        if not callable(obj):
            raise TypeError(
                f"`{_OWNER}`: expected `{name}` to be a callable image -> (C, H, W) tensor, or a "
                f"dotted path to one (or to a class constructible without arguments), but got "
                f"{spec!r}."
            )
        fn: Callable[[Any], Any] = obj
        return fn

    # ----------------------------------------------------------------------------------------------
    # Public helpers

    @property
    def state_key(self) -> str:
        """Checkpoint key: the class name plus the method labels and the hook."""
        return f"{type(self).__qualname__}{{'methods': {self.methods!r}, 'hook': {self.hook!r}}}"

    @property
    def probe(self) -> ProbeSet | None:
        """The probe set, once drawn, restored or loaded (``None`` before)."""
        return self._probe

    @property
    def error_count(self) -> int:
        """How many method evaluations failed so far (logged as ``explain/errors``)."""
        return self._errors

    @property
    def method_specs(self) -> list[MethodSpec]:
        """The parsed ``methods`` entries."""
        return list(self._specs)

    def save_probe(self, path: Union[str, os.PathLike[str]]) -> Path:
        """Write the probe set to ``path`` (``torch.save`` of tensors and metadata); return the path.

        Raises:
            RuntimeError: if no probe set exists yet (it is drawn when fitting starts).
        """
        if self._probe is None:
            raise RuntimeError(
                f"`{_OWNER}.save_probe`: there is no probe set yet; it is drawn when `trainer.fit` "
                f"starts (or use `load_probe`, or `lightning_explain.probe.draw_probe_set`)."
            )
        return self._probe.save(path)

    def load_probe(self, path: Union[str, os.PathLike[str]]) -> ProbeSet:
        """Use the probe set saved at ``path`` (read with ``weights_only=True``) from now on.

        It takes precedence over a probe set restored from a checkpoint.
        """
        self._probe = ProbeSet.load(path)
        self._user_probe = True
        self._checked = False
        self._history.clear()  # scores on other pairs are not comparable
        return self._probe

    def compute_scores(self, module: nn.Module) -> dict[str, float]:
        """Explain and score the probe set with ``module``, outside any Trainer.

        Returns the scalars the callback logs (``explain/sim``, ``explain/<label>/<metric>`` and,
        with ``knn_k`` set and a kNN set stored with the probe set, ``explain/knn_accuracy``),
        computed on the module's device without the trainer's precision plugin (the perturbation
        forwards still run under ``autocast`` when it is set).

        Raises:
            RuntimeError: if there is no probe set, or a method or metric fails.
        """
        if self._probe is None:
            raise RuntimeError(
                f"`{_OWNER}.compute_scores`: there is no probe set; call `load_probe(path)` first."
            )
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        evaluation = self._compute(module, self._probe, device=device, precision=None, render=False)
        if evaluation.failures:
            first = evaluation.failures[0]
            raise RuntimeError(f"`{_OWNER}.compute_scores`: {first.message()}") from first.error
        return evaluation.scalars()

    # ----------------------------------------------------------------------------------------------
    # Checkpoint state

    def state_dict(self) -> dict[str, Any]:
        """Probe tensors (small: ``n_pairs`` pairs, plus the kNN set when ``knn_k`` is set), seed,
        indices, config hashes, the counters and the history of (step, epoch, scores, kNN
        accuracy) behind the correlations."""
        return {
            "format": _CHECKPOINT_FORMAT,
            "version": _STATE_VERSION,
            "probe": None if self._probe is None else self._probe.to_dict(),
            "config_hash": self._config_hash,
            "errors": self._errors,
            "evaluations": self._evaluations,
            "last_step": self._last_step,
            # Lets `lightning-explain compare` rebuild the module without `--model-class`.
            "model_class": self._model_class,
            "knn_hash": self._knn_hash,
            "history": [dict(entry, scores=dict(entry["scores"])) for entry in self._history],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counters and, if the probe settings are unchanged, the probe set."""
        if not isinstance(state_dict, Mapping) or state_dict.get("format") != _CHECKPOINT_FORMAT:
            rank_zero_warn(
                f"`{_OWNER}`: the checkpoint's state for this callback is not recognised; starting "
                f"with a fresh probe set."
            )
            return
        self._errors = int(state_dict.get("errors", 0))
        self._evaluations = int(state_dict.get("evaluations", 0))
        self._last_step = int(state_dict.get("last_step", -1))
        same_probe = state_dict.get("config_hash") == self._config_hash
        same_knn = state_dict.get("knn_hash") == self._knn_hash
        self._history = (
            [self._history_entry(e) for e in state_dict.get("history") or []]
            if same_probe and same_knn and self.knn_k is not None
            else []
        )
        probe = state_dict.get("probe")
        if probe is None:
            return
        if state_dict.get("config_hash") != self._config_hash:
            rank_zero_warn(
                f"`{_OWNER}`: the checkpoint's probe set was drawn with other settings "
                f"(n_pairs, pairing, seed, probe_source or transforms changed); drawing a new "
                f"probe set, so explanations before and after the resume show different pairs."
            )
            return
        self._restored_probe = ProbeSet.from_dict(probe, origin="the checkpoint")

    # ----------------------------------------------------------------------------------------------
    # Hooks

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Refuse sharded strategies (FSDP, DeepSpeed) before anything runs."""
        name = _unsupported_strategy(trainer.strategy)
        if name is not None:
            raise ValueError(
                f"`{_OWNER}` does not support the {name} strategy ({type(trainer.strategy).__name__}):"
                f" it explains the probe set on global rank 0 with the unsharded LightningModule, "
                f"which sharded parameters do not allow. Supported: single-device training and "
                f"the DDP family (strategy='ddp', 'ddp_spawn', 'ddp_fork', 'ddp_notebook'). "
                f"Remove the callback and explain saved checkpoints instead."
            )

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """After a checkpoint restore: take the restored probe set or draw one, then the dry run."""
        self._checked = False
        self._sinks = None
        cls = type(pl_module)
        self._model_class = f"{cls.__module__}:{cls.__qualname__}"
        self._prepare(trainer, pl_module, final=False)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Retry drawing the probe set once the trainer has loaded the dataloaders."""
        if not self._checked:
            self._prepare(trainer, pl_module, final=False)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        """For ``trainer.validate`` with ``hook='validation_epoch_end'``: prepare and dry-run."""
        if self.hook == "validation_epoch_end" and self._stage(trainer) == "validate":
            self._sinks = None
            if not self._checked:
                self._prepare(trainer, pl_module, final=True)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Default evaluation point: after the epoch's validation, before its checkpoint."""
        if (
            self.hook == "train_epoch_end"
            and self.every_n_train_steps is None
            and not self._skipped(trainer)
            and self._epoch_due(trainer)
        ):
            self._run(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Evaluation point for ``hook='validation_epoch_end'`` (fit, and ``trainer.validate``)."""
        if self.hook != "validation_epoch_end" or self._skipped(trainer):
            return
        stage = self._stage(trainer)
        if stage == "validate" or (stage == "fit" and self._epoch_due(trainer)):
            self._run(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Evaluation point for ``every_n_train_steps``."""
        n = self.every_n_train_steps
        if n is None or self._skipped(trainer):
            return
        step = int(trainer.global_step)
        if step > 0 and step % n == 0 and step != self._last_step:
            self._run(trainer, pl_module)

    # ----------------------------------------------------------------------------------------------
    # Scheduling

    @staticmethod
    def _stage(trainer: Any) -> str:
        fn = getattr(getattr(trainer, "state", None), "fn", None)
        return str(getattr(fn, "value", fn))

    @staticmethod
    def _skipped(trainer: Any) -> bool:
        return bool(trainer.sanity_checking) or bool(trainer.fast_dev_run)

    def _epoch_due(self, trainer: Any) -> bool:
        n = self.every_n_epochs or 1
        return (int(trainer.current_epoch) + 1) % n == 0

    # ----------------------------------------------------------------------------------------------
    # Preparation: embedding, probe set, sinks, dry run

    @staticmethod
    def _resolve_spec(
        spec: object, resolved: EmbeddingFn | None, pl_module: Any, argument: str
    ) -> EmbeddingFn:
        """Resolve an embedding spec against the module (attribute paths need the module)."""
        if resolved is not None and (not isinstance(spec, str) or spec == "forward" or ":" in spec):
            return resolved
        path = str(spec)
        if _has_attribute_path(pl_module, path):
            return functools.partial(_attribute_embedding, path)
        try:
            obj = resolve_dotted(path, argument=argument, owner=_OWNER)
        except ValueError:
            obj = None
        if obj is None or not callable(obj):
            children = (
                [n for n, _ in pl_module.named_children()]
                if isinstance(pl_module, nn.Module)
                else []
            )
            raise ValueError(
                f"`{_OWNER}`: `{argument}={path!r}` is neither an attribute path of "
                f"{type(pl_module).__name__} (its submodules: {children}) nor an importable "
                f"function. Expected 'forward', an attribute path such as 'backbone' (meaning "
                f"`module.backbone(x).flatten(1)`), or 'pkg.mod:fn' with fn(module, x) -> (B, D)."
            )
        fn: EmbeddingFn = obj
        return fn

    def _resolve_embedding(self, pl_module: Any) -> EmbeddingFn:
        self._embedding_fn = self._resolve_spec(
            self.embedding, self._embedding_fn, pl_module, "embedding"
        )
        return self._embedding_fn

    def _resolve_knn_embedding(self, pl_module: Any) -> EmbeddingFn:
        """The embedding of the kNN probe: ``knn_embedding``, else ``embedding``."""
        if self.knn_embedding is None:
            return self._resolve_embedding(pl_module)
        self._knn_embedding_fn = self._resolve_spec(
            self.knn_embedding, self._knn_embedding_fn, pl_module, "knn_embedding"
        )
        return self._knn_embedding_fn

    def _embed_callable(self, module: Any, precision: Any) -> Callable[[Tensor], Tensor]:
        fn = self._resolve_embedding(module)
        # A partial whose arguments include the module: the core finds it (eval mode, hooks).
        return functools.partial(_embed, fn, precision, module)

    def _knn_spec(self) -> str:
        """The kNN embedding as text, recorded with the kNN set (``""`` for a callable)."""
        spec = self.embedding if self.knn_embedding is None else self.knn_embedding
        return spec if isinstance(spec, str) else ""

    def _prepare(self, trainer: Any, pl_module: Any, *, final: bool) -> None:
        probe = self._ensure_probe(trainer, pl_module, final=final)
        if probe is not None and not self._checked:
            self._dry_run(trainer, pl_module, probe)

    def _datasets(self, trainer: Any, pl_module: Any, *, final: bool) -> list[tuple[str, Any]]:
        """Candidate ``(source, dataset)`` pairs in order of preference.

        Raises:
            _NoData: if the preferred source may still appear later (not ``final``).
        """
        order = ["val", "train"] if self.probe_source == "val" else ["train"]
        found: list[tuple[str, Any]] = []
        for which in order:
            dataset = self._dataset(trainer, pl_module, which)
            if dataset is None and which == "val" and not final and not self._no_val(trainer):
                raise _NoData
            if dataset is None and which == "train" and not final and not found:
                raise _NoData
            if dataset is not None:
                found.append((which, dataset))
        return found

    @staticmethod
    def _no_val(trainer: Any) -> bool:
        """Whether the validation data would have been loaded by now if there were any: after the
        sanity check, an unloaded validation set means there is none."""
        loaded_train = getattr(trainer, "train_dataloader", None) is not None
        sanity = int(getattr(trainer, "num_sanity_val_steps", 0) or 0)
        limit = getattr(trainer, "limit_val_batches", 1)
        return loaded_train and sanity != 0 and limit != 0

    @staticmethod
    def _dataset(trainer: Any, pl_module: Any, which: str) -> Any:
        loaded = trainer.val_dataloaders if which == "val" else trainer.train_dataloader
        dataset = _first_dataset(loaded)
        if dataset is not None:
            return dataset
        # Not loaded yet: ask the datamodule / module hooks (RNG-neutral; loaders are not iterated).
        with seeded_global_rng(0):
            for owner in (getattr(trainer, "datamodule", None), pl_module):
                hook = getattr(owner, f"{which}_dataloader", None) if owner is not None else None
                if hook is None:
                    continue
                try:
                    loaders = hook()
                except Exception:  # not implemented (Lightning raises) or not available yet
                    continue
                dataset = _first_dataset(loaders)
                if dataset is not None:
                    return dataset
        return None

    def _ensure_probe(self, trainer: Any, pl_module: Any, *, final: bool) -> ProbeSet | None:
        """The probe pairs and, with ``knn_k`` set, their kNN set (``None``: data not there yet)."""
        probe = self._ensure_pairs(trainer, pl_module, final=final)
        if probe is None or self.knn_k is None:
            return probe
        return self._ensure_knn(trainer, pl_module, probe, final=final)

    def _ensure_pairs(self, trainer: Any, pl_module: Any, *, final: bool) -> ProbeSet | None:
        if self._probe is not None and (self._user_probe or self._restored_probe is None):
            return self._probe
        if self._restored_probe is not None:
            self._probe, self._restored_probe = self._restored_probe, None
            return self._probe
        with torch.inference_mode(False):
            if self._probe_path is not None:
                probe = ProbeSet.load(self._probe_path)
                self._probe = ProbeSet(
                    x1=probe.x1,
                    x2=probe.x2,
                    indices=probe.indices,
                    seed=probe.seed,
                    pairing=probe.pairing,
                    source=probe.source,
                    mean=probe.mean,
                    std=probe.std,
                    config_hash=self._config_hash,
                    extra=probe.extra,
                    knn=None
                    if probe.knn is None
                    else dataclasses.replace(probe.knn, config_hash=self._knn_hash),
                )
                return self._probe
            try:
                candidates = self._datasets(trainer, pl_module, final=final)
            except _NoData:
                return None
            if not candidates:
                raise ValueError(
                    f"`{_OWNER}`: found no dataset to draw the probe set from (probe_source="
                    f"{self.probe_source!r}). Give the Trainer a datamodule or dataloaders, or "
                    f"pass the path of a saved probe file as `probe_source`."
                )
            errors: list[str] = []
            for source, dataset in candidates:
                try:
                    self._probe = draw_probe_set(
                        dataset,
                        self.n_pairs,
                        pairing=self.pairing,
                        seed=self.seed,
                        clean_transform=self._clean_fn,
                        augment_transform=self._augment_fn,
                        source=source,
                        mean=self.mean,
                        std=self.std,
                        config_hash=self._config_hash,
                    )
                except (TypeError, ValueError) as err:
                    errors.append(f"{source} set: {err}")
                    continue
                if source != self.probe_source:
                    rank_zero_info(
                        f"`{_OWNER}`: drew the probe set from the {source} set (the validation set "
                        f"{'does not fit' if errors else 'is not available'}"
                        f"{' pairing=' + repr(self.pairing) if errors else ''})."
                    )
                if len(self._probe) < self.n_pairs:
                    rank_zero_warn(
                        f"`{_OWNER}`: the {source} set has only {len(self._probe)} items; the probe "
                        f"set has {len(self._probe)} pairs instead of n_pairs={self.n_pairs}."
                    )
                return self._probe
            raise ValueError(
                f"`{_OWNER}`: cannot draw the probe set with pairing={self.pairing!r} (argument "
                f"`pairing`; valid: {list(PAIRINGS)}). " + " | ".join(errors)
            )

    def _ensure_knn(
        self, trainer: Any, pl_module: Any, probe: ProbeSet, *, final: bool
    ) -> ProbeSet | None:
        """Attach the kNN set to the probe set: the stored one if it was drawn with the current
        settings (or came with a probe file), else a new draw from the training (bank) and
        validation (queries) sets."""
        knn = probe.knn
        if knn is not None and (
            knn.config_hash == self._knn_hash or self._user_probe or self._probe_path is not None
        ):
            record = dataclasses.replace(
                knn,
                k=int(self.knn_k or knn.k),
                temperature=self.knn_temperature,
                embedding=self._knn_spec(),
                config_hash=self._knn_hash,
            )
            if record != knn:
                self._probe = probe = dataclasses.replace(probe, knn=record)
            return probe
        train = self._dataset(trainer, pl_module, "train")
        val = self._dataset(trainer, pl_module, "val")
        if not final and (train is None or (val is None and not self._no_val(trainer))):
            return None
        bank_source = "train"
        if train is None:  # e.g. `trainer.validate`: bank and queries from the validation set
            train, val, bank_source = val, None, "val"
        if train is None:
            raise ValueError(
                f"`{_OWNER}`: `knn_k={self.knn_k}` asks for the online kNN probe, whose images come "
                f"from the training and validation sets, but the run has neither. Give the "
                f"Trainer a datamodule or dataloaders, use a probe file that holds a kNN set, or "
                f"set knn_k=None."
            )
        if knn is not None:
            rank_zero_warn(
                f"`{_OWNER}`: the stored kNN set was drawn with other settings (knn_samples, "
                f"knn_queries, seed, probe_source or clean_transform changed); drawing a new one "
                f"and restarting the score/accuracy history, so kNN accuracies before and after "
                f"the resume are not comparable."
            )
        self._history.clear()
        options: dict[str, Any] = {
            "bank_source": bank_source,
            "n_bank": self.knn_samples,
            "n_queries": self.knn_queries,
            "seed": self.seed,
            "clean_transform": self._clean_fn,
            "k": int(self.knn_k or 200),
            "temperature": self.knn_temperature,
            "embedding": self._knn_spec(),
            "config_hash": self._knn_hash,
        }
        errors: list[str] = []
        drawn: KNNSet | None = None
        with torch.inference_mode(False):
            for queries in [val, None] if val is not None else [None]:
                try:
                    drawn = draw_knn_set(train, queries, **options)
                    break
                except (TypeError, ValueError) as err:
                    errors.append(
                        f"{'bank train / queries val' if queries is not None else bank_source}: "
                        f"{err}"
                    )
        if drawn is None:
            raise ValueError(
                f"`{_OWNER}`: cannot draw the kNN set for `knn_k={self.knn_k}` (the online kNN "
                f"probe needs labelled items (x, label, ...) in the {bank_source} set). "
                + " | ".join(errors)
            )
        if errors:
            rank_zero_info(
                f"`{_OWNER}`: the validation set does not fit the kNN probe ({errors[0]}); the "
                f"kNN queries are a part of the training set, disjoint from the bank."
            )
        if drawn.nbytes > _KNN_WARN_BYTES:
            rank_zero_warn(
                f"`{_OWNER}`: the kNN set ({len(drawn.bank)} bank + {len(drawn.queries)} query "
                f"images of shape {tuple(drawn.bank.shape[1:])}) takes "
                f"{drawn.nbytes / 2**20:.0f} MB in every checkpoint; lower `knn_samples` / "
                f"`knn_queries`."
            )
        self._probe = dataclasses.replace(probe, knn=drawn)
        return self._probe

    @staticmethod
    def _history_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "step": int(entry.get("step", -1)),
            "epoch": int(entry.get("epoch", -1)),
            "knn_accuracy": float(entry.get("knn_accuracy", math.nan)),
            "scores": {str(k): float(v) for k, v in dict(entry.get("scores") or {}).items()},
        }

    def _stats(self, probe: ProbeSet) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
        if self.mean is not None and self.std is not None:
            return self.mean, self.std
        return probe.mean, probe.std

    def _dry_run(self, trainer: Any, pl_module: Any, probe: ProbeSet) -> None:
        """Fail fast: run the whole evaluation on one probe pair and build the sinks."""
        device = self._device(trainer, pl_module)
        one = probe.subset(1)
        if one.knn is not None:  # a few kNN images check the kNN embedding, not the whole set
            one = dataclasses.replace(one, knn=one.knn.subset(4, 2))
        evaluation = self._compute(
            pl_module,
            one,
            device=device,
            precision=self._precision(trainer),
            render=self.log_images and bool(trainer.is_global_zero),
        )
        for o in evaluation.outcomes:
            if o.curves_figure is not None:
                from lightning_explain.sinks.base import release_figure

                release_figure(o.curves_figure)
        if evaluation.failures:
            raise self._dry_run_error(evaluation.failures[0], probe, pl_module)
        if trainer.is_global_zero:
            self._build_sinks(trainer)
        self._checked = True

    def _dry_run_error(self, failure: _Failure, probe: ProbeSet, pl_module: Any) -> Exception:
        shape = tuple(probe.x1.shape[1:])
        base = (
            f"`{_OWNER}`: the dry run on one probe pair (images of shape {shape}) failed while "
            f"{failure.message()}"
        )
        if failure.stage == "embedding":
            hint = (
                f" Check `embedding={self.embedding!r}`: it must map (B, C, H, W) images to a "
                f"(B, D) tensor ('forward', an attribute path such as 'backbone', or "
                f"'pkg.mod:fn')."
            )
        elif failure.stage == "method":
            spec = next((s for s in self._specs if s.label == failure.label), None)
            hint = f" Check the entry {failure.label!r} of `methods`"
            if spec is not None and method_info(spec.name).needs_layer:
                layer = spec.options.get("layer", self.layer)
                hint += (
                    f" and `layer={layer!r}` (a dotted submodule name of "
                    f"{type(pl_module).__name__}, or 'auto')"
                )
            hint += "."
        elif failure.stage == "metrics":
            hint = f" Check `metrics={self.metrics!r}`, `n_steps` and `batch_size`."
        elif failure.stage == "knn":
            used = self.embedding if self.knn_embedding is None else self.knn_embedding
            knn = probe.knn
            shape = tuple(knn.bank.shape[1:]) if knn is not None else shape
            hint = (
                f" Check `knn_embedding={self.knn_embedding!r}` (used: {used!r}): it must map the "
                f"kNN images of shape {shape} to a (B, D) tensor; or set knn_k=None."
            )
        else:
            hint = (
                f" Check `mean`/`std` (got mean={self.mean}, std={self.std}; one value per "
                f"channel) or pass log_images=False."
            )
        err: Exception = (
            TypeError(base + hint)
            if isinstance(failure.error, TypeError)
            else ValueError(base + hint)
        )
        err.__cause__ = failure.error
        return err

    def _build_sinks(self, trainer: Any) -> list[Any]:
        if self._sinks is None:
            if not self.log_images:
                self._sinks = []
            else:
                from lightning_explain.sinks import sinks_for

                self._sinks = sinks_for(trainer.loggers, fallback_dir=trainer.default_root_dir)
        return self._sinks

    @staticmethod
    def _device(trainer: Any, pl_module: Any) -> torch.device:
        device = getattr(getattr(trainer, "strategy", None), "root_device", None)
        if isinstance(device, torch.device):
            return device
        return next((p.device for p in pl_module.parameters()), torch.device("cpu"))

    @staticmethod
    def _precision(trainer: Any) -> Any:
        plugin = getattr(trainer, "precision_plugin", None)
        if plugin is None:
            plugin = getattr(getattr(trainer, "strategy", None), "precision_plugin", None)
        return plugin

    # ----------------------------------------------------------------------------------------------
    # One evaluation

    def _call_options(self, spec: MethodSpec) -> dict[str, Any]:
        params = inspect.signature(get_method(spec.name)).parameters
        accepted = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        options: dict[str, Any] = {}
        if "similarity" in accepted:
            options["similarity"] = self.similarity
        if "layer" in accepted:
            options["layer"] = self.layer
        if "seed" in accepted:
            options["seed"] = self.seed
        if "batch_size" in accepted and self.batch_size is not None:
            options["batch_size"] = self.batch_size
        options.update(spec.options)
        return options

    def _compute(
        self,
        module: nn.Module,
        probe: ProbeSet,
        *,
        device: torch.device,
        precision: Any,
        render: bool,
        epoch: int | None = None,
        step: int | None = None,
    ) -> _Evaluation:
        """Explain, score and (optionally) render the probe set. Never raises for a method failure:
        failures are collected. Runs no collective, so it may run on one rank only."""
        from lightning_explain.metrics import evaluate
        from lightning_explain.render import curves_figure, pair_grid

        failures: list[_Failure] = []
        outcomes: list[_Outcome] = []
        sim: Tensor | None = None
        with _guest(module, device), perturbation_autocast(self._autocast_dtype):
            x1 = probe.x1.to(device)
            x2 = probe.x2.to(device)
            try:
                embed = self._embed_callable(module, precision)
                from lightning_explain._core import pair_context

                with (
                    pair_context(embed, x1, x2, similarity=self.similarity, owner=_OWNER) as ctx,
                    torch.no_grad(),
                ):
                    z = ctx.embed(torch.cat([ctx.x1, ctx.x2]))
                    z1, z2 = z[: ctx.batch], z[ctx.batch :]
                    sim = ctx.similarity(z1, z2).detach().float().cpu()
            except Exception as err:
                failures.append(_Failure("embedding", "embedding", err))
                return _Evaluation(None, [], failures)
            knn_accuracy: float | None = None
            if self.knn_k is not None and probe.knn is not None:
                try:
                    fn = self._resolve_knn_embedding(module)
                    knn_accuracy = evaluate_knn(
                        functools.partial(_embed, fn, precision, module),
                        probe.knn,
                        k=self.knn_k,
                        temperature=self.knn_temperature,
                        device=device,
                        batch_size=self.batch_size,
                    )
                except Exception as err:
                    failures.append(_Failure("knn", "knn", err))
            mean, std = self._stats(probe)
            for spec in self._specs:
                outcome = _Outcome(spec)
                options = self._call_options(spec)
                try:
                    explanation = explain(embed, x1, x2, method=spec.name, **options)
                except Exception as err:
                    failures.append(_Failure("method", spec.label, err))
                    continue
                outcome.explanation = explanation.to("cpu")
                outcomes.append(outcome)
                try:
                    scores, curves = evaluate(
                        embed,
                        x1,
                        x2,
                        explanation,
                        self.metrics,
                        similarity=self.similarity,
                        n_steps=self.n_steps,
                        batch_size=self.batch_size,
                        method=spec.name,
                        method_options=options,
                        intact=(z1, z2),
                        return_curves=True,
                    )
                    outcome.scores = {k: v.detach().float().cpu() for k, v in scores.items()}
                    outcome.curves = {k: v.detach().float().cpu() for k, v in curves.items()}
                except Exception as err:
                    failures.append(_Failure("metrics", spec.label, err))
                if not render:
                    continue
                try:
                    outcome.grid = pair_grid(
                        probe.x1,
                        probe.x2,
                        outcome.explanation.h1,
                        outcome.explanation.h2,
                        mean=mean,
                        std=std,
                        min_tile=_MIN_TILE,
                    )
                    outcome.caption = self._caption(outcome, sim, probe, epoch, step)
                    if outcome.curves:
                        title = f"{spec.label}" + (f", epoch {epoch}" if epoch is not None else "")
                        outcome.curves_figure = curves_figure(outcome.curves, title=title)
                except Exception as err:
                    failures.append(_Failure("render", spec.label, err))
        return _Evaluation(sim, outcomes, failures, knn_accuracy)

    @staticmethod
    def _caption(
        outcome: _Outcome,
        sim: Tensor | None,
        probe: ProbeSet,
        epoch: int | None,
        step: int | None,
    ) -> str:
        head = outcome.spec.label
        if epoch is not None:
            head += f" | epoch {epoch}"
        if step is not None:
            head += f" | step {step}"
        lines = [head + " | rows: x1, heatmap 1, x2, heatmap 2"]
        for i in range(len(probe)):
            parts = [f"pair {i} (item {probe.indices[i]})"]
            if sim is not None:
                parts.append(f"sim {float(sim[i]):.3f}")
            parts += [f"{_short(k)} {float(v[i]):.3f}" for k, v in outcome.scores.items()]
            lines.append(", ".join(parts))
        return "\n".join(lines)

    def _run(self, trainer: Any, pl_module: Any) -> None:
        """One scheduled evaluation. Rank policy: global rank 0 computes and logs; every rank
        receives the scalars through one broadcast, outside the guarded computation."""
        probe = self._ensure_probe(trainer, pl_module, final=True)
        if probe is None:  # pragma: no cover - final=True always draws or raises
            return
        if not self._checked:
            self._dry_run(trainer, pl_module, probe)
        step = int(trainer.global_step)
        epoch = int(trainer.current_epoch)
        evaluation: _Evaluation | None = None
        payload: dict[str, Any] = {"scalars": {}, "errors": []}
        if trainer.is_global_zero:
            evaluation = self._compute(
                pl_module,
                probe,
                device=self._device(trainer, pl_module),
                precision=self._precision(trainer),
                render=self.log_images,
                epoch=epoch,
                step=step,
            )
            payload = {
                "scalars": evaluation.scalars(),
                "errors": [f.message() for f in evaluation.failures],
            }
        # The only collective of an evaluation; every rank reaches it (nothing above can raise
        # past the guard on rank 0, and other ranks skip the computation).
        payload = trainer.strategy.broadcast(payload, src=0)
        errors: list[str] = list(payload["errors"])
        self._errors += len(errors)
        self._evaluations += 1
        self._last_step = step
        scalars: dict[str, float] = dict(payload["scalars"])
        scalars["explain/errors"] = float(self._errors)
        # Every rank updates the history from the broadcast scalars (same state everywhere).
        scalars.update(self._update_history(scalars, step=step, epoch=epoch))
        for key, value in scalars.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        for message in errors:
            rank_zero_warn(
                f"`{_OWNER}`: at epoch {epoch}, step {step}, {message}. The run goes on; failures "
                f"are counted in `explain/errors`. Pass on_error='raise' to stop instead."
                if self.on_error == "warn"
                else f"`{_OWNER}`: at epoch {epoch}, step {step}, {message}."
            )
        if errors and self.on_error == "raise":
            if evaluation is not None:
                for o in evaluation.outcomes:
                    if o.curves_figure is not None:
                        from lightning_explain.sinks.base import release_figure

                        release_figure(o.curves_figure)
            err = RuntimeError(
                f"`{_OWNER}` (on_error='raise'): {len(errors)} failure(s) at epoch {epoch}, "
                f"step {step}: " + "; ".join(errors)
            )
            if evaluation is not None and evaluation.failures:
                raise err from evaluation.failures[0].error
            raise err
        if trainer.is_global_zero and evaluation is not None:
            self._log(trainer, evaluation, scalars, probe, step=step, epoch=epoch)

    def _log(
        self,
        trainer: Any,
        evaluation: _Evaluation,
        scalars: dict[str, float],
        probe: ProbeSet,
        *,
        step: int,
        epoch: int,
    ) -> None:
        """Rank 0: scalars to every logger, images/figures/tables to the sinks."""
        from lightning_explain.sinks.base import release_figure

        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
        try:
            sinks = self._build_sinks(trainer) if self.log_images else []
            for sink in sinks:
                sink.set_context(epoch=epoch)
            for o in evaluation.outcomes:
                label = o.spec.label
                for sink in sinks:
                    if o.grid is not None:
                        sink.log_image(f"explain/{label}/pairs", o.grid, step, o.caption)
                    if o.curves_figure is not None:
                        sink.log_figure(f"explain/{label}/curves", o.curves_figure, step)
                    if o.scores:
                        columns, rows = self._table(o, evaluation.sim, probe)
                        sink.log_table(f"explain/{label}/scores", columns, rows, step)
                if o.curves_figure is not None:
                    release_figure(o.curves_figure)
            if self._correlations and sinks:
                self._log_correlations(sinks, step)
            for sink in sinks:
                sink.flush()
        except Exception as err:
            if self.on_error == "raise":
                raise
            self._errors += 1
            rank_zero_warn(
                f"`{_OWNER}`: logging the explanations at step {step} failed: "
                f"{type(err).__name__}: {err}. The run goes on; counted in `explain/errors`."
            )

    # ----------------------------------------------------------------------------------------------
    # Explanation scores vs downstream accuracy

    def _update_history(
        self, scalars: Mapping[str, float], *, step: int, epoch: int
    ) -> dict[str, float]:
        """Record this evaluation's scores and kNN accuracy; with >= 3 recorded evaluations,
        return the ``explain/corr/<label>/<metric>/{spearman,pearson}`` scalars."""
        self._correlations = []
        if _KNN_KEY not in scalars:
            return {}
        scores: dict[str, float] = {}
        for key, value in scalars.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "explain" and parts[1] in self.methods:
                scores[f"{parts[1]}/{parts[2]}"] = float(value)
        self._history.append(
            {
                "step": step,
                "epoch": epoch,
                "knn_accuracy": float(scalars[_KNN_KEY]),
                "scores": scores,
            }
        )
        if len(self._history) < 3:
            return {}
        points = self.history_points()
        self._correlations = correlation_table(points, methods=self.methods)
        out: dict[str, float] = {}
        for c in self._correlations:
            out[f"explain/corr/{c.method}/{c.metric}/spearman"] = c.spearman
            out[f"explain/corr/{c.method}/{c.metric}/pearson"] = c.pearson
        return out

    def history_points(self) -> list[DownstreamPoint]:
        """The recorded evaluations as :class:`~lightning_explain.downstream.DownstreamPoint`
        (mean scores per method and metric, kNN accuracy, label ``"e<epoch>"``), oldest first."""
        points: list[DownstreamPoint] = []
        for entry in self._history:
            nested: dict[str, dict[str, float]] = {}
            for key, value in entry["scores"].items():
                label, _, metric = key.partition("/")
                nested.setdefault(label, {})[metric] = float(value)
            points.append(
                DownstreamPoint(nested, float(entry["knn_accuracy"]), f"e{entry['epoch']}")
            )
        return points

    @property
    def history(self) -> list[dict[str, Any]]:
        """One entry per evaluation with a kNN accuracy: ``{"step", "epoch", "knn_accuracy",
        "scores": {"<label>/<metric>": mean score}}`` (a copy; kept in the checkpoint state)."""
        return [dict(e, scores=dict(e["scores"])) for e in self._history]

    def _log_correlations(self, sinks: list[Any], step: int) -> None:
        """Rank 0: the correlation table and the score-vs-accuracy scatter figure."""
        from lightning_explain.downstream import correlation_figure
        from lightning_explain.sinks.base import release_figure

        columns = ["method", "metric", "direction", "n", "spearman", "pearson"]
        rows: list[list[object]] = [
            [
                c.method,
                c.metric,
                {True: "higher is better", False: "lower is better"}.get(
                    c.higher_is_better,  # type: ignore[arg-type]
                    "",
                ),
                c.n,
                c.spearman,
                c.pearson,
            ]
            for c in self._correlations
        ]
        figure = correlation_figure(
            self.history_points(),
            self._correlations,
            methods=self.methods,
            title=f"explanation scores vs kNN accuracy over {len(self._history)} evaluations",
        )
        try:
            for sink in sinks:
                sink.log_table("explain/corr/table", columns, rows, step)
                sink.log_figure("explain/corr/scatter", figure, step)
        finally:
            release_figure(figure)

    @staticmethod
    def _table(
        outcome: _Outcome, sim: Tensor | None, probe: ProbeSet
    ) -> tuple[list[str], list[list[object]]]:
        keys = list(outcome.scores)
        columns = ["pair", "item", "sim", *keys]
        rows: list[list[object]] = []
        for i in range(len(probe)):
            rows.append(
                [
                    i,
                    int(probe.indices[i]),
                    float("nan") if sim is None else float(sim[i]),
                    *(float(outcome.scores[k][i]) for k in keys),
                ]
            )
        return columns, rows


# --------------------------------------------------------------------------------------------------
# The lightning.pytorch (or, without `lightning`, pytorch_lightning) class

_DOC = """Explain a fixed probe set of image pairs during training, score and log the explanations.

    At each scheduled point the callback explains why the model finds each probe pair similar with
    every method of ``methods`` (pairwise heatmaps of Sammani et al. [0]), scores each explanation
    with the pairwise faithfulness metrics of ``metrics``, and logs the results to every logger of
    the trainer, with ``trainer.global_step`` as the step. The run is left untouched: the model is
    explained in eval mode with every submodule's train/eval flag restored, gradients are taken
    with ``torch.autograd.grad`` with respect to inputs and activations only (parameter ``.grad``,
    optimizer state and BatchNorm statistics are never written), and the global torch, NumPy and
    Python RNGs are restored, so training with the callback is bitwise identical to training
    without it.

    Every argument is expressible in a LightningCLI YAML file::

        trainer:
          callbacks:
            - class_path: lightning_explain.PairExplanationCallback   # lightning_explain.pl.* for
              init_args:                                             # pytorch_lightning / lightly
                methods: [gradcam, {name: interaction_cam, reduction: max}]
                metrics: [insertion_simultaneous, deletion_simultaneous]
                embedding: backbone
                n_pairs: 8
                every_n_epochs: 5

    Logged keys (``<label>`` is the method name, see ``methods``; ``<metric>`` a metric key):

    ======================================= =========== =============================================
    key                                     kind        content
    ======================================= =========== =============================================
    ``explain/<label>/<metric>``            scalar      mean score over the probe pairs; also in
                                                        ``trainer.callback_metrics`` (monitorable)
    ``explain/sim``                         scalar      mean similarity of the probe pairs
    ``explain/errors``                      scalar      failed evaluations so far (``on_error="warn"``)
    ``explain/<label>/pairs``               image       rows x1 / heatmap 1 / x2 / heatmap 2 per pair,
                                                        captioned with per-pair similarity and scores
    ``explain/<label>/curves``              figure      insertion/deletion curves (mean and band)
    ``explain/<label>/scores``              table       per-pair scores (W&B tables; CSV files for the
                                                        file sink)
    ``explain/knn_accuracy``                scalar      with ``knn_k``: top-1 accuracy of the weighted
                                                        cosine kNN probe (also in callback_metrics)
    ``explain/corr/<label>/<metric>/...``   scalar      with ``knn_k``, from the 3rd evaluation on:
                                                        ``spearman`` and ``pearson`` correlation of the
                                                        score with the kNN accuracy over the
                                                        evaluations so far (NaN when undefined)
    ``explain/corr/table``                  table       the correlations of every method x metric
    ``explain/corr/scatter``                figure      kNN accuracy against each score, per method
    ======================================= =========== =============================================

    Images, figures and tables go through :mod:`lightning_explain.sinks`: W&B media and tables,
    TensorBoard images and figures, MLflow image artifacts, and, for a ``CSVLogger`` or a run
    without an image-capable logger, PNG/CSV files under
    ``<log_dir>/explanations/epoch=NNN/explain_<label>_pairs.png``.

    Rank policy: every rank draws the same probe set; global rank 0 computes the explanations and
    metrics on the whole probe set with its (unwrapped) LightningModule, renders and logs; the
    scalars reach every rank through one ``strategy.broadcast`` that all ranks call after the
    guarded computation, so ``ModelCheckpoint``/``EarlyStopping`` see the same values everywhere
    and a failure on rank 0 cannot deadlock the others. FSDP and DeepSpeed are refused at setup.
    To monitor a score with the default hook, give ``ModelCheckpoint(save_on_train_epoch_end=True)``
    / ``EarlyStopping(check_on_train_epoch_end=True)``, so that they run after the callback.

    Cost of one evaluation (forward/backward passes per probe pair): 2 forwards for
    ``explain/sim``, plus for each method its own cost (``method_info(name).cost``; Grad-CAM and
    Interaction-CAM: 1 forward + 1 backward of the pair) and the metric cost (default metric set:
    ``4 * n_steps + 2`` forwards, the intact pair's embeddings being reused; 130 at
    ``n_steps=32``). The dry run at fit start costs the
    same for one pair.

    Args:
        methods: explanation methods: names (see :func:`lightning_explain.list_methods`) or dicts
            ``{"name": <method>, <option>: <value>, ...}`` (optional ``"label"``: the name in the
            logged keys). Entries sharing a method get labels with their option values, e.g.
            ``interaction_cam-max``. Default ``("gradcam", "interaction_cam")``.
        metrics: metric keys (see :func:`lightning_explain.metrics.list_metrics`), or ``None``
            for the metrics' default set (insertion, deletion, average drop and increase, each
            simultaneous and conditional). Default ``None``.
        n_pairs: number of probe pairs. Default 8.
        every_n_epochs: evaluate every n epochs (at the epoch's end). Default ``None``: every epoch
            unless ``every_n_train_steps`` is set.
        every_n_train_steps: evaluate every n optimizer steps (after the training batch) instead of
            at epoch ends. Default ``None``.
        embedding: how to get ``(B, D)`` embeddings from the LightningModule: ``"forward"``
            (``module(x)``), an attribute path such as ``"backbone"`` or ``"model.encoder"``
            (``module.backbone(x).flatten(1)``), a dotted function path ``"pkg.mod:fn"`` or
            ``"pkg.mod.fn"``, or a callable ``fn(module, x) -> z``. lightly models differ in what
            ``forward`` returns (backbone features, projections or predictions), so choose here.
            Default ``"forward"``.
        layer: layer of the class-activation methods: ``"auto"`` or a dotted submodule name of the
            LightningModule (``"backbone.layer4"``). A ``"layer"`` in a method entry overrides it.
            Default ``"auto"``.
        pairing: how a probe pair is formed from a dataset item: ``"two_views"`` (the two random
            views of a multi-view transform such as lightly's ``SimCLRTransform``; items
            ``([v1, v2, ...], label, ...)`` or ``[v1, v2]``), ``"clean_vs_augmented"`` (the paper's
            pairs: a deterministic resize + centre-crop view vs an augmented view of the raw image;
            see ``clean_transform``), or ``"dataset"`` (items ``(x1, x2, ...)``). Default
            ``"two_views"``.
        probe_source: ``"val"`` (the validation set if the run has one and its items fit
            ``pairing``, else the training set), ``"train"``, or the path of a probe file written
            by :meth:`save_probe`. Datasets are indexed directly, never iterated through a
            DataLoader. Default ``"val"``.
        clean_transform: ``"clean_vs_augmented"`` only: a dotted path to a callable raw image ->
            ``(C, H, W)`` tensor (or to a class built without arguments). Default ``None``: resize
            the shorter side to ``size / 0.875``, centre-crop ``size`` (the augmented view's size),
            scale to [0, 1] and apply the ``Normalize`` found in the dataset's transform.
        augment_transform: ``"clean_vs_augmented"`` only: dotted path to the augmentation.
            Default ``None``: the dataset's own transform (its first view if it returns several).
        seed: seed of the probe draw (indices and dataset transforms) and of stochastic methods.
            Default 0.
        batch_size: images per forward pass for chunked methods and metrics. Default ``None``:
            chosen from the device's memory (CUDA: a quarter of the free memory, at most 1024
            images; CPU: at most 256, fewer for large images).
        autocast: ``"bf16"`` or ``"fp16"`` to run the gradient-free perturbation forwards of the
            methods and metrics (nearly all of an evaluation's forwards) under ``torch.autocast``
            with that dtype, scores computed in float32 (see
            :func:`lightning_explain.perturbation_autocast`). With a mixed-precision trainer
            (``precision="bf16-mixed"``) every forward of the callback already runs under the
            trainer's autocast. Default ``None``: the trainer's precision.
        log_images: log heatmap grids, curve figures and tables (scalars are always logged).
            Default ``True``.
        on_error: ``"warn"``: an exception inside a method, metric or renderer is caught, warned
            about with the method name and counted in ``explain/errors``, and the run goes on;
            ``"raise"``: stop the run. Configuration errors found by the dry run at fit start
            always raise. Default ``"warn"``.
        n_steps: insertion/deletion steps of the metrics (the paper uses 224 at 224 px). Default 32.
        similarity: ``"cosine"`` (the paper's), ``"dot"``, ``"neg_l2"`` or a callable
            ``(z1, z2) -> (N,)``. Default ``"cosine"``.
        mean: per-channel normalisation mean to undo in the rendered images. Default ``None``:
            taken from a torchvision ``Normalize`` in the dataset's transform if there is one.
        std: per-channel normalisation std, as ``mean``. Default ``None``.
        hook: ``"train_epoch_end"`` (after the epoch's validation, before its checkpoint; with
            gradients on) or ``"validation_epoch_end"`` (also runs in ``trainer.validate``).
            Default ``"train_epoch_end"``. Sanity checks and ``fast_dev_run`` are skipped (the dry
            run still checks the configuration).
        knn_k: neighbours of the online kNN probe, or ``None`` to switch it off. When set, every
            evaluation also classifies ``knn_queries`` labelled validation images against a bank of
            ``knn_samples`` labelled training images with the weighted cosine kNN of
            ``lightly.utils.benchmarking.knn_predict`` (k capped at the bank size), logs the
            accuracy as ``explain/knn_accuracy`` and, from the third evaluation on, the Spearman
            and Pearson correlation of every score with it (see
            :mod:`lightning_explain.downstream`). Items must be ``(x, label, ...)``; for two-view
            items ``([v1, v2], label)`` the first view, drawn under ``seed``, is embedded (or
            ``clean_transform(raw)`` when ``clean_transform`` is given). The images are drawn once
            and stored with the probe set. Cost: ``knn_samples + knn_queries`` forwards per
            evaluation, in inference mode. Default ``None`` (off).
        knn_temperature: temperature of the kNN vote weights ``exp(sim / t)``. Default 0.1.
        knn_samples: bank size cap (training images). Default 512.
        knn_queries: query count cap (validation images; without a labelled validation set, a
            part of the training set disjoint from the bank; in ``trainer.validate`` without
            training data, bank and queries are disjoint parts of the validation set). Default 256.
        knn_embedding: the embedding of the kNN probe, in the forms of ``embedding`` (e.g.
            ``"backbone"``: kNN on backbone features while the projection is explained). Default
            ``None``: ``embedding``.

    Raises:
        ValueError: at construction, for an unknown method, metric, pairing, hook or on_error
            value (the message lists the valid choices), a missing probe file, or bad numbers; at
            fit start, when the dry run fails (the message names the argument to fix) or the
            strategy is FSDP/DeepSpeed.
        TypeError: for arguments of the wrong type, or an option a method does not take.

    Example::

        from lightning.pytorch import Trainer
        from lightning_explain import PairExplanationCallback

        trainer = Trainer(max_epochs=100, callbacks=[
            PairExplanationCallback(["gradcam", "interaction_cam"], embedding="backbone",
                                    every_n_epochs=10),
        ])

    References:
        [0] Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive
        Learning", IEEE TIP, arXiv 2206.09753.
    """

if TYPE_CHECKING:
    from lightning.pytorch import Callback as _Callback
else:
    _Callback = callback_base(default_namespace())


class PairExplanationCallback(PairExplanationLogic, _Callback):
    __doc__ = _DOC
