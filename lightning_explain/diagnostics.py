"""Diagnostics that speak up: what a failed dry run means and which argument fixes it.

The training callback runs the whole evaluation on one probe pair before training (the dry run).
When a part fails, :func:`dry_run_error` turns the failure into an error that names the stage,
shows what was seen, and says which argument to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_explain.data.probe import ProbeSet
from lightning_explain.evaluation import MethodSpec
from lightning_explain.methods import method_info

__all__ = ["dry_run_error"]


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
