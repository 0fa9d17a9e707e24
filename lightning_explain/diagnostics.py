"""Diagnostics that speak up: what a failed dry run means, and explanations that mean nothing.

* :func:`dry_run_error`: the training callback runs the whole evaluation on one probe pair
  before training (the dry run); a failing part becomes an error that names the stage, shows
  what was seen, and says which argument to change.
* :func:`diagnose`: warnings about an evaluation whose numbers cannot be trusted: saturated
  similarities (every pair above 0.99, as for untrained models and DINO-style heads),
  zero-norm embeddings, degenerate (all-zero or constant) maps.
* :func:`layer_report`: the layer each class-activation method explains, with its grid, and a
  warning when the grid is too coarse to localise anything (smaller than 4x4).

Each warning names what it saw (numbers) and what to change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lightning_explain.data.probe import ProbeSet
from lightning_explain.data.sources import ProbeSettings
from lightning_explain.evaluation import MethodSpec, ProbeEvaluation
from lightning_explain.methods import method_info

__all__ = [
    "MIN_GRID",
    "SATURATED",
    "diagnose",
    "dry_run",
    "dry_run_error",
    "dry_run_report",
    "layer_report",
    "probe_similarities",
]

SATURATED = 0.99
"""Similarities above this for every probe pair leave nothing to explain."""

MIN_GRID = 4
"""Feature maps with a side shorter than this cannot localise (a 2x2 map peaks in a corner)."""


def dry_run_error(
    stage: str,
    what: str,
    error: BaseException,
    *,
    probe: ProbeSet,
    owner: str,
    module: Any,
    embedding: object,
    knn_embedding: object,
    specs: Sequence[MethodSpec],
    layer: object,
    metrics: object,
    mean: object,
    std: object,
    label: str = "",
) -> Exception:
    """The error of a failed dry run: ``TypeError`` if ``error`` is one, else ``ValueError``,
    caused by ``error``.

    Args:
        stage: ``"embedding"``, ``"method"``, ``"metrics"``, ``"knn"`` or ``"render"``.
        what: what failed, in words (e.g. ``EvaluationFailure.message()``).
        error: the exception.
        probe: the probe set (its image shape is shown).
        owner: the name in the message.
        module: the LightningModule (its class is named).
        embedding: the ``embedding`` argument.
        knn_embedding: the kNN embedding argument (``None``: ``embedding``).
        specs: the method entries.
        layer: the ``layer`` argument.
        metrics: the ``metrics`` argument.
        mean: the rendering mean.
        std: the rendering std.
        label: the failing method's label (``"method"`` stage).
    """
    shape = tuple(probe.x1.shape[1:])
    base = f"`{owner}`: the dry run on one probe pair (images of shape {shape}) failed while {what}"
    if stage == "embedding":
        hint = (
            f" Check `embedding={embedding!r}`: it must map (B, C, H, W) images to a (B, D) "
            f"tensor ('forward', an attribute path such as 'backbone', or 'pkg.mod:fn')."
        )
    elif stage == "method":
        spec = next((s for s in specs if s.label == label), None)
        hint = f" Check the entry {label!r} of `methods`"
        if spec is not None and method_info(spec.name).needs_layer:
            chosen = spec.options.get("layer", layer)
            hint += (
                f" and `layer={chosen!r}` (a dotted submodule name of {type(module).__name__}, "
                f"or 'auto')"
            )
        hint += "."
    elif stage == "metrics":
        hint = f" Check `metrics={metrics!r}`, `n_steps` and `batch_size`."
    elif stage == "knn":
        used = embedding if knn_embedding is None else knn_embedding
        knn = probe.knn
        knn_shape = tuple(knn.bank.shape[1:]) if knn is not None else shape
        hint = (
            f" Check `knn.embedding` (used: {used!r}): it must map the kNN images of shape "
            f"{knn_shape} to a (B, D) tensor; or set knn=None."
        )
    else:
        hint = (
            f" Check `probe.mean`/`probe.std` (got mean={mean}, std={std}; one value per "
            f"channel) or pass log_images=False."
        )
    err: Exception = (
        TypeError(base + hint) if isinstance(error, TypeError) else ValueError(base + hint)
    )
    err.__cause__ = error
    return err


def diagnose(evaluation: ProbeEvaluation, *, embedding: object = "forward") -> dict[str, str]:
    """Warnings about ``evaluation``'s numbers, each with what was seen and the fix, by kind
    (``"saturated"``, ``"zero_norm"``, ``"degenerate:<label>"``); empty when all is well.

    Example:
        >>> import torch
        >>> print(diagnose(ProbeEvaluation(torch.tensor([0.9995, 0.9999])))["saturated"][:62])
        every probe pair has a similarity above 0.99 (0.9995 to 0.9999
    """
    out: dict[str, str] = {}
    sim = evaluation.sim
    if sim is not None and sim.numel() and bool((sim > SATURATED).all()):
        out["saturated"] = (
            f"every probe pair has a similarity above {SATURATED} ({float(sim.min()):.4f} to "
            f"{float(sim.max()):.4f}), so perturbations barely move it and the maps and scores "
            f"say little. This is typical of untrained models and of projection heads that map "
            f"everything to one direction (DINO-style heads). Explain a representation that "
            f"separates images: `embedding=` the backbone (e.g. 'backbone'; for DINO, the "
            f"student's or the teacher's backbone) instead of {embedding!r}."
        )
    if evaluation.zero_norm:
        out["zero_norm"] = (
            f"{evaluation.zero_norm} probe pair(s) have an all-zero embedding, whose cosine "
            f"similarity is a meaningless 0 and whose maps are empty. Check `embedding=` "
            f"({embedding!r}) and the input normalisation (a ReLU output of all zeros is a dead "
            f"network)."
        )
    for m in evaluation.methods:
        flags = m.degenerate()
        if bool(flags.any()):
            out[f"degenerate:{m.label}"] = (
                f"method {m.label!r}: {int(flags.sum())} of {flags.numel()} maps are all zero or "
                f"constant (logged as `explain/{m.label}/degenerate_maps`, marked in the pair "
                f"grids); they rank no pixel and their scores mean nothing. For occlusion, a "
                f"window that fits the images; for CAMs, an earlier layer; otherwise check the "
                f"similarities."
            )
    return out


def probe_similarities(model: Any, x1: Any, x2: Any, *, similarity: Any = "cosine") -> Any:
    """``(B,)`` similarities of the pairs and ``(B,)`` bool "an embedding is all zero", in one
    gradient-free forward of the ``2B`` images, as a guest of the model."""
    from lightning_explain._core import pair_context

    context = pair_context(model, x1, x2, similarity=similarity, owner="diagnostics")
    with context as ctx, torch.no_grad():
        z = ctx.embed(torch.cat([ctx.x1, ctx.x2]))
        z1, z2 = z[: ctx.batch], z[ctx.batch :]
        sim = ctx.similarity(z1, z2).float().cpu()
        norms = torch.stack([z1.norm(dim=1), z2.norm(dim=1)]).cpu()
    return sim, (norms == 0).any(dim=0)


def layer_report(
    model: Any, specs: Sequence[MethodSpec], layer: object, x1: Any, x2: Any
) -> tuple[list[str], list[str]]:
    """The layer every class-activation method of ``specs`` explains, on one pair of images.

    Returns:
        ``(info, warnings)``: one line per method naming the layer and its grid (``h x w``), and
        a warning for a grid smaller than :data:`MIN_GRID` on a side, with the fix.
    """
    from lightning_explain.methods.cam import capture_layer

    info: list[str] = []
    warnings: list[str] = []
    seen: dict[object, tuple[str, int, int]] = {}
    for spec in specs:
        if not method_info(spec.name).needs_layer:
            continue
        chosen = spec.options.get("layer", layer)
        key = chosen if isinstance(chosen, str) else id(chosen)
        if key not in seen:
            cap = capture_layer(model, x1[:1], x2[:1], layer=chosen)
            seen[key] = (cap.layer, int(cap.a1.shape[2]), int(cap.a1.shape[3]))
        name, h, w = seen[key]
        auto = " (found by layer='auto')" if chosen == "auto" else ""
        info.append(f"method {spec.label!r} explains layer {name!r}{auto}: a {h}x{w} grid.")
        if min(h, w) < MIN_GRID:
            warnings.append(
                f"method {spec.label!r} explains layer {name!r}, whose feature map is only {h}x{w} "
                f"for {tuple(x1.shape[-2:])} images: every map peaks in one of {h * w} cells. Pass "
                f"`layer=` an earlier layer with a finer grid (`lightning_explain.methods."
                f"list_feature_layers(model, x)` lists them), or feed larger images."
            )
    return info, warnings


def dry_run_report(
    module: Any,
    probe: ProbeSet,
    evaluation: ProbeEvaluation,
    *,
    embedding: object,
    precision: Any,
    specs: Sequence[MethodSpec],
    layer: object,
    similarity: Any,
    device: Any,
    owner: str,
) -> tuple[list[str], dict[str, str]]:
    """What the training callback reports before training: the layers of the class-activation
    methods with their grids (``info``), and the warnings of :func:`layer_report` and
    :func:`diagnose` (similarities of every probe pair; maps of the one-pair dry run) by kind."""
    from lightning_explain.embedding import bind_embedding, resolve_embedding

    model = bind_embedding(resolve_embedding(embedding, module, owner=owner), module, precision)
    x1, x2 = probe.x1.to(device), probe.x2.to(device)
    sim, zero = probe_similarities(model, x1, x2, similarity=similarity)
    whole = ProbeEvaluation(sim, evaluation.methods, zero_norm=int(zero.sum()))
    warnings = diagnose(whole, embedding=embedding)
    info, coarse = layer_report(model, specs, layer, x1, x2)
    warnings.update({f"grid:{i}": text for i, text in enumerate(coarse)})
    return info, warnings


def dry_run(
    evaluate: Callable[[ProbeSet], ProbeEvaluation],
    probe: ProbeSet,
    *,
    render: bool,
    report: bool,
    module: Any,
    precision: Any,
    device: Any,
    settings: ProbeSettings,
    embedding: object,
    knn_embedding: object,
    specs: Sequence[MethodSpec],
    layer: object,
    metrics: object,
    similarity: Any,
    owner: str,
) -> tuple[list[str], dict[str, str]]:
    """The training callback's dry run: ``evaluate`` one probe pair (and a few kNN images), render
    it (with ``render``), and (with ``report``) :func:`dry_run_report` on the whole probe set.

    Returns:
        ``(info, warnings)`` of :func:`dry_run_report` (empty without ``report``).

    Raises:
        ValueError / TypeError: from :func:`dry_run_error`, naming the argument to fix.
    """
    from lightning_explain.publish import check_rendering

    one = probe.subset(1)
    if one.knn is not None:  # a few kNN images check the kNN embedding, not the whole set
        one = dataclasses.replace(one, knn=one.knn.subset(4, 2))
    evaluation = evaluate(one)
    mean, std = settings.display_stats(one)
    context: dict[str, Any] = {
        "probe": probe,
        "owner": owner,
        "module": module,
        "embedding": embedding,
        "knn_embedding": knn_embedding,
        "specs": specs,
        "layer": layer,
        "metrics": metrics,
        "mean": mean,
        "std": std,
    }
    if evaluation.failures:
        f = evaluation.failures[0]
        raise dry_run_error(f.stage, f.message(), f.error, label=f.label, **context)
    if render:
        failed = check_rendering(one, evaluation, mean=mean, std=std)
        if failed is not None:
            label, err = failed
            what = f"rendering method {label!r} failed: {type(err).__name__}: {err}"
            raise dry_run_error("render", what, err, **context) from err
    if not report:
        return [], {}
    return dry_run_report(
        module,
        probe,
        evaluation,
        embedding=embedding,
        precision=precision,
        specs=specs,
        layer=layer,
        similarity=similarity,
        device=device,
        owner=owner,
    )
