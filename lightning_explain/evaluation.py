"""The evaluation engine: explain a set of image pairs with several methods and score every
explanation with the pairwise faithfulness metrics, in one call.

:func:`evaluate_probe` is the one explain-and-score loop of the package: the training callback,
``lightning-explain compare`` and ``lightning-explain report`` all call it. It computes; it does
not render or log (see :mod:`lightning_explain.render` and the sinks for that). For each pair set
it embeds the intact pairs once (their similarities are ``sim``, and their embeddings are reused as
the unperturbed end of every insertion/deletion curve), optionally computes the online kNN
accuracy, then for every method entry explains the pairs and scores the explanation.

Method entries are parsed by :func:`parse_methods` into :class:`MethodSpec` (name, label, options);
the options every method shares (``similarity``, ``layer``, ``seed``, ``batch_size``) are injected
in one place, :func:`method_options`, where the method takes them and the entry does not set them.

References:
    [0] Sammani, Joukovsky & Deligiannis, "Visualizing and Understanding Contrastive Learning",
    IEEE TIP, arXiv 2206.09753.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import torch
from torch import Tensor

from lightning_explain._checks import (
    check_batch_size,
    check_bool,
    check_int,
    check_literal,
    check_positive_int,
    describe,
)
from lightning_explain._core import Model, check_pair, find_modules, pair_context
from lightning_explain._guard import guest
from lightning_explain._perf import check_autocast_dtype, chunk_tuning, perturbation_autocast
from lightning_explain.correspondence import (
    PairInteraction,
    correspondence_scores,
    explain_interactions,
)
from lightning_explain.data.knn import KNNSet
from lightning_explain.data.probe import ProbeSet
from lightning_explain.downstream import evaluate_knn
from lightning_explain.embedding import bind_embedding, resolve_embedding
from lightning_explain.entries import (
    DEFAULT_METHODS,
    RESERVED_LABELS,
    MethodEntry,
    MethodSpec,
    interaction_options,
    method_options,
    parse_interactions,
    parse_methods,
)
from lightning_explain.explain import explain
from lightning_explain.explanation import PairExplanation
from lightning_explain.metrics import evaluate, metric_info
from lightning_explain.metrics._registry import resolve_metrics
from lightning_explain.similarity import SimilarityFn, resolve_similarity

__all__ = [
    "DEFAULT_METHODS",
    "RESERVED_LABELS",
    "EvaluationFailure",
    "InteractionEvaluation",
    "MethodEntry",
    "MethodEvaluation",
    "MethodSpec",
    "ProbeEvaluation",
    "evaluate_module",
    "evaluate_probe",
    "evaluate_sharded",
    "interaction_options",
    "method_options",
    "parse_interactions",
    "parse_methods",
    "portable",
]

Stage = Literal["embedding", "knn", "method", "metrics", "evaluation"]

DEGENERATE_SPAN = 1e-6
"""Maps whose maximum minus minimum is at most this (maps are scaled to max 1) count as
degenerate: all zero or constant."""

# --------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class EvaluationFailure:
    """One part of an evaluation that raised (collected with ``errors="collect"``).

    Attributes:
        stage: ``"embedding"`` (the intact pairs), ``"knn"``, ``"method"`` (the explanation),
            ``"metrics"`` (scoring it) or ``"evaluation"`` (anything else, on one rank's share of
            the pairs: :func:`evaluate_sharded`).
        label: the method label (or the stage name for ``embedding``/``knn``).
        error: the exception.
    """

    stage: Stage
    label: str
    error: BaseException

    def message(self) -> str:
        """What failed, in one line."""
        where = {
            "embedding": "embedding the probe pairs",
            "method": f"explaining with method {self.label!r}",
            "metrics": f"scoring method {self.label!r}",
            "knn": "computing the kNN accuracy",
            "evaluation": f"evaluating the probe pairs ({self.label})",
        }[self.stage]
        return f"{where} failed: {type(self.error).__name__}: {self.error}"


@dataclass(frozen=True)
class MethodEvaluation:
    """The explanation of one method entry and its scores (all tensors on the CPU).

    Attributes:
        spec: the method entry.
        options: the options the method ran with (after :func:`method_options`).
        explanation: the maps ``h1``, ``h2`` ``(B, H, W)`` and ``sim`` ``(B,)``; ``None`` if the
            method failed.
        scores: metric key -> ``(B,)`` per-pair scores (empty if scoring failed or no metric was
            asked for).
        curves: insertion/deletion key -> ``(B, n_steps + 1)`` similarity curves.
    """

    spec: MethodSpec
    options: Mapping[str, Any]
    explanation: PairExplanation | None
    scores: Mapping[str, Tensor] = field(default_factory=dict)
    curves: Mapping[str, Tensor] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The entry's label."""
        return self.spec.label

    def degenerate(self) -> Tensor:
        """``(B, 2)`` bool: which maps (``h1``, ``h2`` of each pair) are degenerate, i.e. all
        zero or constant, so they rank no pixel above another and explain nothing."""
        if self.explanation is None:
            return torch.zeros(0, 2, dtype=torch.bool)
        maps = torch.stack([self.explanation.h1, self.explanation.h2], dim=1).flatten(2)
        span = maps.amax(dim=2) - maps.amin(dim=2)
        return span <= DEGENERATE_SPAN

    def mean_scores(self) -> dict[str, float]:
        """Metric key -> mean over the pairs with a finite score (NaN when none)."""
        out: dict[str, float] = {}
        for key, values in self.scores.items():
            finite = values[torch.isfinite(values)]
            out[key] = float(finite.double().mean()) if finite.numel() else math.nan
        return out


@dataclass(frozen=True)
class InteractionEvaluation:
    """One correspondence (interaction) method's result on the probe pairs.

    Attributes:
        spec: the entry (see :func:`parse_interactions`).
        options: the options it ran with (after :func:`interaction_options`).
        interaction: the :class:`~lightning_explain.correspondence.PairInteraction` (CPU).
        scores: with a probe set that records its view geometry
            (:attr:`~lightning_explain.data.ProbeSet.geometry`), ``"accuracy"`` and
            ``"error_px"`` ``(B,)`` per pair (see
            :func:`~lightning_explain.correspondence.correspondence_scores`); empty otherwise.
    """

    spec: MethodSpec
    options: Mapping[str, Any]
    interaction: PairInteraction
    scores: Mapping[str, Tensor] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The entry's label."""
        return self.spec.label

    def mean_scores(self) -> dict[str, float]:
        """Score -> mean over the pairs with a finite value (NaN when none)."""
        out: dict[str, float] = {}
        for key, values in self.scores.items():
            finite = values[torch.isfinite(values)]
            out[key] = float(finite.double().mean()) if finite.numel() else math.nan
        return out


@dataclass(frozen=True)
class ProbeEvaluation:
    """Everything :func:`evaluate_probe` computed for one set of pairs.

    Attributes:
        sim: ``(B,)`` similarity of each intact pair (CPU, float32); ``None`` if the embedding
            failed.
        methods: one :class:`MethodEvaluation` per method entry that produced an explanation, in
            entry order.
        failures: what raised, with ``errors="collect"`` (empty otherwise).
        knn_accuracy: the kNN top-1 accuracy, when a kNN set was given.
        zero_norm: how many pairs have an all-zero embedding on either side.
        interactions: one :class:`InteractionEvaluation` per correspondence entry that ran.
    """

    sim: Tensor | None
    methods: tuple[MethodEvaluation, ...] = ()
    failures: tuple[EvaluationFailure, ...] = ()
    knn_accuracy: float | None = None
    zero_norm: int = 0
    interactions: tuple[InteractionEvaluation, ...] = ()

    def __getitem__(self, label: str) -> MethodEvaluation:
        for m in self.methods:
            if m.label == label:
                return m
        raise KeyError(
            f"no method evaluated under the label {label!r}; labels: {[m.label for m in self.methods]}"
        )

    @property
    def labels(self) -> list[str]:
        """The labels of the evaluated methods."""
        return [m.label for m in self.methods]

    def scalars(self, prefix: str = "explain") -> dict[str, float]:
        """The summary scalars: ``<prefix>/sim`` (mean similarity), ``<prefix>/knn_accuracy``,
        ``<prefix>/<label>/<metric>`` (mean score over the pairs) and
        ``<prefix>/<label>/degenerate_maps`` (how many of the ``2B`` maps are all zero or
        constant, see :meth:`MethodEvaluation.degenerate`), and for correspondence entries with
        geometry ``<prefix>/correspondence/<label>/accuracy`` and ``.../error_px``."""
        out: dict[str, float] = {}
        if self.sim is not None:
            out[f"{prefix}/sim"] = float(self.sim.double().mean())
        if self.knn_accuracy is not None:
            out[f"{prefix}/knn_accuracy"] = float(self.knn_accuracy)
        for m in self.methods:
            for key, value in m.mean_scores().items():
                out[f"{prefix}/{m.label}/{key}"] = value
            if m.explanation is not None:
                out[f"{prefix}/{m.label}/degenerate_maps"] = float(m.degenerate().sum())
        for r in self.interactions:
            for key, value in r.mean_scores().items():
                out[f"{prefix}/correspondence/{r.label}/{key}"] = value
        return out

    def table(
        self, label: str, indices: Sequence[int] | None = None
    ) -> tuple[list[str], list[list[object]]]:
        """Per-pair table of one method: columns ``pair``, ``item`` (dataset index, ``-1`` when
        unknown), ``sim`` and one column per metric key."""
        m = self[label]
        keys = list(m.scores)
        n = 0 if self.sim is None else int(self.sim.shape[0])
        n = max([n, *(int(v.shape[0]) for v in m.scores.values())])
        rows: list[list[object]] = []
        for i in range(n):
            item = int(indices[i]) if indices is not None and i < len(indices) else -1
            sim = math.nan if self.sim is None else float(self.sim[i])
            rows.append([i, item, sim, *(float(m.scores[k][i]) for k in keys)])
        return ["pair", "item", "sim", *keys], rows

    @staticmethod
    def concat(parts: Sequence[ProbeEvaluation]) -> ProbeEvaluation:
        """The evaluation of the concatenated pair sets of ``parts`` (e.g. the shards of several
        ranks, in rank order): similarities, maps, scores and curves concatenated along the pairs.

        A method is kept only when every part that evaluated any pair has it (a method that failed
        on one shard is reported by that shard's failure); parts without pairs (``sim`` with 0
        entries, or ``None`` after an embedding failure) add only their failures. The kNN
        accuracy is the first part's that has one.
        """
        full = [p for p in parts if p.sim is not None and p.sim.numel() > 0]
        failures = tuple(f for p in parts for f in p.failures)
        knn = next((p.knn_accuracy for p in parts if p.knn_accuracy is not None), None)
        if not full:
            return ProbeEvaluation(None, (), failures, knn)
        methods: list[MethodEvaluation] = []
        for first in full[0].methods:
            found = [next((m for m in p.methods if m.label == first.label), None) for p in full]
            pieces = [m for m in found if m is not None]
            if len(pieces) != len(full):
                continue
            keys = [k for k in first.scores if all(k in m.scores for m in pieces)]
            curve_keys = [k for k in first.curves if all(k in m.curves for m in pieces)]
            maps = [m.explanation for m in pieces if m.explanation is not None]
            explanation = (
                PairExplanation(
                    torch.cat([e.h1 for e in maps]),
                    torch.cat([e.h2 for e in maps]),
                    torch.cat([e.sim for e in maps]),
                )
                if len(maps) == len(pieces)
                else None
            )
            methods.append(
                MethodEvaluation(
                    first.spec,
                    first.options,
                    explanation,
                    {k: torch.cat([m.scores[k] for m in pieces]) for k in keys},
                    {k: torch.cat([m.curves[k] for m in pieces]) for k in curve_keys},
                )
            )
        interactions: list[InteractionEvaluation] = []
        for first_r in full[0].interactions:
            found_r = [
                next((r for r in p.interactions if r.label == first_r.label), None) for p in full
            ]
            pieces_r = [r for r in found_r if r is not None]
            if len(pieces_r) != len(full):
                continue
            keys = [k for k in first_r.scores if all(k in r.scores for r in pieces_r)]
            joined = PairInteraction(
                torch.cat([r.interaction.interaction for r in pieces_r]),
                first_r.interaction.grid1,
                first_r.interaction.grid2,
                torch.cat([r.interaction.sim for r in pieces_r]),
                first_r.interaction.size,
            )
            interactions.append(
                InteractionEvaluation(
                    first_r.spec,
                    first_r.options,
                    joined,
                    {k: torch.cat([r.scores[k] for r in pieces_r]) for k in keys},
                )
            )
        sim = torch.cat([p.sim for p in full if p.sim is not None])
        return ProbeEvaluation(
            sim,
            tuple(methods),
            failures,
            knn,
            sum(p.zero_norm for p in parts),
            tuple(interactions),
        )

    def raise_on_failure(self, owner: str = "evaluate_probe") -> None:
        """Raise a ``RuntimeError`` (from the first failure) if anything failed."""
        if self.failures:
            first = self.failures[0]
            raise RuntimeError(f"`{owner}`: {first.message()}") from first.error


# --------------------------------------------------------------------------------------------------
# The engine


class _Collector:
    def __init__(self, errors: str) -> None:
        self.collect = errors == "collect"
        self.failures: list[EvaluationFailure] = []

    def failed(self, stage: Stage, label: str, err: BaseException) -> None:
        if not self.collect:
            raise err
        self.failures.append(EvaluationFailure(stage, label, err))


def _pairs(pairs: object, owner: str) -> tuple[Tensor, Tensor]:
    if isinstance(pairs, ProbeSet):
        return pairs.x1, pairs.x2
    if isinstance(pairs, (tuple, list)) and len(pairs) == 2:
        return check_pair(pairs[0], pairs[1], owner=owner)
    raise TypeError(
        f"`{owner}`: expected `pairs` to be a ProbeSet or a tuple (x1, x2) of (B, C, H, W) "
        f"tensors, but got {describe(pairs)}."
    )


def _device(
    device: Union[torch.device, str, None], x: Tensor, model: object, owner: str
) -> torch.device:
    if device is not None:
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"`{owner}`: expected `device` to be a torch device such as 'cpu' or 'cuda:0', but "
                f"got {device!r}."
            ) from err
    for m in find_modules(model):
        for p in m.parameters():
            return p.device
    return x.device


def evaluate_probe(
    model: Model,
    pairs: Union[ProbeSet, tuple[Tensor, Tensor]],
    methods: Sequence[Union[MethodEntry, MethodSpec]] = DEFAULT_METHODS,
    metrics: Union[str, Sequence[str], None] = None,
    *,
    similarity: Union[str, SimilarityFn] = "cosine",
    layer: object = "auto",
    seed: int = 0,
    batch_size: int | None = None,
    tune_chunks: bool = True,
    n_steps: int = 224,
    autocast: Union[str, torch.dtype, None] = None,
    device: Union[torch.device, str, None] = None,
    knn: KNNSet | None = None,
    knn_model: Model | None = None,
    knn_k: int | None = None,
    knn_temperature: float | None = None,
    interactions: Sequence[Union[MethodEntry, MethodSpec]] | None = None,
    errors: Literal["raise", "collect"] = "raise",
    owner: str = "evaluate_probe",
) -> ProbeEvaluation:
    """Explain pairs with every method entry and score each explanation with every metric.

    The model runs as a guest (:func:`lightning_explain._guard.guest`): eval mode with every
    submodule's train/eval flag restored, gradients through ``torch.autograd.grad`` only, the
    global RNGs restored, no hooks left behind.

    Args:
        model: an ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)``
            embeddings (see :func:`lightning_explain.embedding.bind_embedding` to explain a part
            of a LightningModule).
        pairs: a :class:`~lightning_explain.data.ProbeSet` or ``(x1, x2)``, ``(B, C, H, W)``
            each; moved to ``device``.
        methods: method entries (names, dicts with options, or :class:`MethodSpec`; see
            :func:`parse_methods`). Default :data:`DEFAULT_METHODS`.
        metrics: metric keys (see :func:`lightning_explain.metrics.list_metrics`), ``None`` for
            the default set, or ``[]`` for none (explanations only).
        similarity: ``"cosine"`` (the paper's), ``"dot"``, ``"neg_l2"`` or a callable.
        layer: layer of the class-activation methods (``"auto"``, a dotted name, a module).
        seed: seed of the stochastic methods.
        batch_size: images per forward pass of chunked methods and metrics. Default ``None``:
            measured for this model, image shape and device (``tune_chunks``), bounded by the
            device memory.
        tune_chunks: with ``batch_size=None``, time a few chunk sizes once per model, image
            shape, dtype and device and use the fastest (:func:`lightning_explain._perf.
            chunk_tuning`); ``False``: the memory bound of
            :func:`lightning_explain._perf.auto_batch_size`. Default ``True``.
        n_steps: insertion/deletion steps (default 224, the paper's value at 224 px).
        autocast: ``"bf16"``/``"fp16"`` to run the perturbation forwards under autocast (see
            :func:`lightning_explain.perturbation_autocast`). Default ``None`` (off).
        device: where to compute. Default: the device of the model's parameters, else the pairs'.
        knn: a labelled kNN set: the kNN top-1 accuracy of ``knn_model`` on it is computed too.
        knn_model: the embedding of the kNN probe. Default: ``model``.
        knn_k: neighbours of the kNN vote. Default: ``knn.k``.
        knn_temperature: temperature of the kNN vote. Default: ``knn.temperature``.
        interactions: correspondence entries (see :func:`parse_interactions` and
            :mod:`lightning_explain.correspondence`): which position of image 1 is matched with
            which position of image 2; scored against the true correspondence when ``pairs``
            is a probe set that records its view geometry. Default ``None`` (none).
        errors: ``"raise"`` (default): the first exception propagates; ``"collect"``: each failing
            part is recorded in :attr:`ProbeEvaluation.failures` and the rest goes on.
        owner: the name used in error messages.

    Returns:
        A :class:`ProbeEvaluation` with CPU tensors.

    Raises:
        ValueError / TypeError: for bad arguments (checked before any forward pass), and, with
            ``errors="raise"``, whatever a method or metric raises.

    Cost (forwards per pair): 2 for the intact pairs, plus each method's cost
    (``method_info(name).cost``), plus the metrics' cost with the intact embeddings reused (the
    default set: ``4 * n_steps + 2``); with ``knn``, ``len(bank) + len(queries)`` forwards per
    call.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> x1, x2 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> result = evaluate_probe(net, (x1, x2), ["gradcam"], ["insertion_simultaneous"], n_steps=8)
        >>> sorted(result.scalars())
        ['explain/gradcam/degenerate_maps', 'explain/gradcam/insertion_simultaneous', 'explain/sim']
    """
    if not callable(model):
        raise TypeError(
            f"`{owner}`: expected `model` to be an nn.Module or a callable mapping (B, C, H, W) "
            f"images to (B, D) embeddings, but got {describe(model)}."
        )
    x1, x2 = _pairs(pairs, owner)
    geometry = pairs.geometry if isinstance(pairs, ProbeSet) else None
    specs = parse_methods(methods, owner=owner)
    interaction_specs = parse_interactions(interactions, owner=owner)
    keys = (
        []
        if metrics is not None and not isinstance(metrics, str) and len(metrics) == 0
        else (resolve_metrics(metrics, owner=owner))
    )
    for key in keys:
        metric_info(key)
    resolve_similarity(similarity)
    seed = check_int(seed, name="seed", owner=owner)
    batch_size = check_batch_size(batch_size, owner=owner)
    tune_chunks = check_bool(tune_chunks, name="tune_chunks", owner=owner)
    n_steps = check_positive_int(n_steps, name="n_steps", owner=owner)
    dtype = (
        None if autocast is None else check_autocast_dtype(autocast, name="autocast", owner=owner)
    )
    check_literal(errors, Literal["raise", "collect"], name="errors", owner=owner)
    if knn is not None and not isinstance(knn, KNNSet):
        raise TypeError(
            f"`{owner}`: expected `knn` to be a KNNSet or None, but got {describe(knn)}."
        )
    if knn_model is not None and not callable(knn_model):
        raise TypeError(
            f"`{owner}`: expected `knn_model` to be callable, but got {describe(knn_model)}."
        )
    target = _device(device, x1, model, owner)
    x1, x2 = x1.to(target), x2.to(target)

    collector = _Collector(errors)
    modules = find_modules(model) + ([] if knn_model is None else find_modules(knn_model))
    with guest(modules, target), perturbation_autocast(dtype), chunk_tuning(tune_chunks):
        try:
            with (
                pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx,
                torch.no_grad(),
            ):
                z = ctx.embed(torch.cat([ctx.x1, ctx.x2]))
                z1, z2 = z[: ctx.batch], z[ctx.batch :]
                sim = ctx.similarity(z1, z2).detach().float()
                zero = (torch.linalg.vector_norm(z1, dim=1) == 0) | (
                    torch.linalg.vector_norm(z2, dim=1) == 0
                )
        except Exception as err:
            collector.failed("embedding", "embedding", err)
            return ProbeEvaluation(None, (), tuple(collector.failures))
        knn_accuracy: float | None = None
        if knn is not None:
            try:
                knn_accuracy = evaluate_knn(
                    knn_model if knn_model is not None else model,
                    knn,
                    k=knn_k,
                    temperature=knn_temperature,
                    device=target,
                    batch_size=batch_size,
                )
            except Exception as err:
                collector.failed("knn", "knn", err)
        results: list[MethodEvaluation] = []
        for spec in specs:
            options = method_options(
                spec, similarity=similarity, layer=layer, seed=seed, batch_size=batch_size
            )
            try:
                explanation = explain(model, x1, x2, method=spec.name, **options)
            except Exception as err:
                collector.failed("method", spec.label, err)
                continue
            scores: dict[str, Tensor] = {}
            curves: dict[str, Tensor] = {}
            if keys:
                try:
                    raw_scores, raw_curves = evaluate(
                        model,
                        x1,
                        x2,
                        explanation,
                        keys,
                        similarity=similarity,
                        n_steps=n_steps,
                        batch_size=batch_size,
                        method=spec.name,
                        method_options=options,
                        intact=(z1, z2),
                        return_curves=True,
                    )
                    scores = {k: v.detach().float().cpu() for k, v in raw_scores.items()}
                    curves = {k: v.detach().float().cpu() for k, v in raw_curves.items()}
                except Exception as err:
                    collector.failed("metrics", spec.label, err)
            results.append(MethodEvaluation(spec, options, explanation.to("cpu"), scores, curves))
        matched: list[InteractionEvaluation] = []
        for spec in interaction_specs:
            options = interaction_options(
                spec, similarity=similarity, layer=layer, seed=seed, batch_size=batch_size
            )
            try:
                interaction = explain_interactions(model, x1, x2, method=spec.name, **options)
                interaction = interaction.to("cpu")
            except Exception as err:
                collector.failed("method", spec.label, err)
                continue
            geometry_scores: dict[str, Tensor] = {}
            if geometry is not None:
                try:
                    found = correspondence_scores(interaction, geometry)
                    geometry_scores = {"accuracy": found.accuracy, "error_px": found.error_px}
                except Exception as err:
                    collector.failed("metrics", spec.label, err)
            matched.append(InteractionEvaluation(spec, options, interaction, geometry_scores))
    return ProbeEvaluation(
        sim.cpu(),
        tuple(results),
        tuple(collector.failures),
        knn_accuracy,
        int(zero.sum()),
        tuple(matched),
    )


def evaluate_module(
    module: Any,
    pairs: Union[ProbeSet, tuple[Tensor, Tensor]],
    methods: Sequence[Union[MethodEntry, MethodSpec]] = DEFAULT_METHODS,
    metrics: Union[str, Sequence[str], None] = None,
    *,
    embedding: object = "forward",
    knn_embedding: object = None,
    precision: Any = None,
    knn: KNNSet | None = None,
    errors: Literal["raise", "collect"] = "raise",
    owner: str = "evaluate_module",
    **options: Any,
) -> ProbeEvaluation:
    """:func:`evaluate_probe` for a part of a (Lightning) module named by embedding specs.

    ``embedding`` and ``knn_embedding`` take the forms of :mod:`lightning_explain.embedding`
    (``"forward"``, an attribute path such as ``"backbone"``, ``"pkg.mod:fn"``, a callable
    ``fn(module, x)``) and are resolved against ``module``; with ``errors="collect"`` a spec that
    does not resolve becomes an ``"embedding"`` (or ``"knn"``) failure instead of an exception.

    Args:
        module: the module (e.g. a LightningModule).
        pairs: as :func:`evaluate_probe`.
        methods: as :func:`evaluate_probe`.
        metrics: as :func:`evaluate_probe`.
        embedding: what is explained. Default ``"forward"``.
        knn_embedding: what the kNN probe embeds. Default ``None``: ``embedding``.
        precision: a Lightning precision plugin to run the forwards under (see
            :func:`~lightning_explain.embedding.bind_embedding`), or ``None``.
        knn: as :func:`evaluate_probe`.
        errors: as :func:`evaluate_probe`.
        owner: the name used in error messages.
        **options: the other keyword arguments of :func:`evaluate_probe`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class SSL(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1))
        ...     def forward(self, x):
        ...         return self.backbone(x).flatten(1)
        >>> x = torch.rand(2, 3, 16, 16)
        >>> result = evaluate_module(SSL(), (x, x), ["input_x_gradient"], [], embedding="backbone")
        >>> result.labels
        ['input_x_gradient']
    """
    failures: list[EvaluationFailure] = []
    try:
        fn = resolve_embedding(embedding, module, owner=owner)
    except Exception as err:
        if errors != "collect":
            raise
        return ProbeEvaluation(None, failures=(EvaluationFailure("embedding", "embedding", err),))
    knn_model = None
    if knn is not None and knn_embedding is not None:
        try:
            knn_fn = resolve_embedding(knn_embedding, module, argument="knn.embedding", owner=owner)
            knn_model = bind_embedding(knn_fn, module, precision)
        except Exception as err:
            if errors != "collect":
                raise
            knn = None
            failures.append(EvaluationFailure("knn", "knn", err))
    evaluation = evaluate_probe(
        bind_embedding(fn, module, precision),
        pairs,
        methods,
        metrics,
        knn=knn,
        knn_model=knn_model,
        errors=errors,
        owner=owner,
        **options,
    )
    if failures:
        evaluation = dataclasses.replace(evaluation, failures=(*failures, *evaluation.failures))
    return evaluation


def portable(evaluation: ProbeEvaluation) -> ProbeEvaluation:
    """``evaluation`` with every failure's exception replaced by a ``RuntimeError`` of the same
    text when it cannot be pickled, so that it can travel between processes."""
    import pickle

    failures = []
    for f in evaluation.failures:
        try:
            pickle.dumps(f.error)
            failures.append(f)
        except Exception:
            error = RuntimeError(f"{type(f.error).__name__}: {f.error}")
            failures.append(EvaluationFailure(f.stage, f.label, error))
    return dataclasses.replace(evaluation, failures=tuple(failures))


def evaluate_sharded(
    evaluate: Callable[[ProbeSet], ProbeEvaluation],
    probe: ProbeSet,
    *,
    rank: int,
    world_size: int,
) -> ProbeEvaluation | None:
    """Explain and score a probe set across the ranks of a process group: every rank calls this,
    evaluates its contiguous share (:meth:`ProbeSet.shard`; rank 0 also gets the kNN set), and
    rank 0 returns the concatenation (:meth:`ProbeEvaluation.concat`), which equals one
    process's evaluation of the whole set within float tolerance for the deterministic methods
    (stochastic ones draw their randomness per call, i.e. per shard). Other ranks return ``None``.
    A single process (``world_size < 2``) evaluates the whole set and returns it.

    A collective (``torch.distributed.gather_object``): every rank must call it. Failures are
    collected, never raised, so that no rank is left waiting.
    """
    from lightning_explain._lightning import gather_objects

    shard = probe.shard(rank, world_size) if world_size > 1 else probe
    if rank == 0:
        shard = dataclasses.replace(shard, knn=probe.knn)
    try:
        part = evaluate(shard) if len(shard) else ProbeEvaluation(torch.zeros(0))
    except Exception as err:  # every rank must reach the gather
        where = f"rank {rank}" if world_size > 1 else "all pairs"
        part = ProbeEvaluation(None, failures=(EvaluationFailure("evaluation", where, err),))
    if world_size < 2:
        return part
    parts = gather_objects(portable(part), rank=rank, world_size=world_size)
    return ProbeEvaluation.concat(parts) if rank == 0 else None
