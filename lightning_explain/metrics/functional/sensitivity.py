"""Max-Sensitivity for image pairs (after Yeh et al., "On the (In)fidelity and Sensitivity of
Explanations", NeurIPS 2019), as adapted to pairs by Sammani et al., "Visualizing and Understanding
Contrastive Learning" (IEEE TIP; arXiv 2206.09753).

The maths of the family, for :func:`max_sensitivity`, the
:class:`~lightning_explain.metrics.MaxSensitivity` class and
:func:`~lightning_explain.metrics.evaluate` alike:

* :func:`_max_sensitivity_update` re-explains noisy copies of the pairs and keeps, per image, the
  largest relative change of its map over the noise draws.
* :func:`_max_sensitivity_compute` averages the two images.

Options of a metric: ``kind`` (``"max_sensitivity"``), ``n_samples``, ``radius``, ``seed``,
``explain_batch_size`` and ``noise_at`` (see :func:`max_sensitivity`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union

import torch
from torch import Tensor

from lightning_explain._checks import (
    check_batch_size,
    check_int,
    check_literal,
    check_positive_int,
    check_real,
)
from lightning_explain._core import Model, pair_context
from lightning_explain.explain import explain
from lightning_explain.methods import method_info
from lightning_explain.metrics.functional._common import MetricFamily, PairInputs, score_pairs

__all__ = ["DEFAULT_EXPLAIN_PAIRS", "FAMILY", "NoiseAt", "SensitivityState", "max_sensitivity"]

DEFAULT_EXPLAIN_PAIRS = 64
"""Default ``explain_batch_size``: noisy pairs per ``explain`` call (at least the batch)."""

NoiseAt = Literal["inputs", "mixed"]
"""Where the noise goes. ``"inputs"`` (default): added to ``x1`` and ``x2`` before they are
explained. ``"mixed"``: the paper's protocol for Averaged Transforms: added to every mixed image of
the method's path (after its transform; the method's ``path_noise`` option); methods without such
a path take the noise on their inputs, as in the paper."""

_OPTIONS = ("kind", "n_samples", "radius", "seed", "explain_batch_size", "noise_at")
_PATH_OPTION = "path_noise"
_Key = tuple[int, float, int, Union[int, None], str]

SensitivityState = dict[_Key, tuple[Tensor, Tensor]]
"""What :func:`_max_sensitivity_update` computed: per distinct ``(n_samples, radius, seed,
explain_batch_size, noise_at)``, the ``(B,)`` largest relative change of the maps of ``x1`` and of
``x2``."""


def _relative_change(reference: Tensor, noisy: Tensor) -> Tensor:
    """``||e - e'||_2 / ||e||_2`` per map: ``(B, H, W)``, ``(S, B, H, W)`` -> ``(S, B)``.

    An all-zero reference map gives 0 if the noisy map is also zero, else ``inf``.
    """
    ref = reference.flatten(1)
    diff = torch.linalg.vector_norm(noisy.flatten(2) - ref.unsqueeze(0), dim=2)
    norm = torch.linalg.vector_norm(ref, dim=1).unsqueeze(0)
    ratio = diff / norm.clamp(min=torch.finfo(ref.dtype).tiny)
    unbounded = torch.where(diff > 0, torch.full_like(diff, math.inf), torch.zeros_like(diff))
    return torch.where(norm > 0, ratio, unbounded)


def _max_sensitivity_check(options: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Validate one metric's options; return them complete (missing ones take the defaults of
    :func:`max_sensitivity`)."""
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise TypeError(
            f"`{owner}`: max-sensitivity options are {list(_OPTIONS)}, but got unknown {unknown}."
        )
    kind: Literal["max_sensitivity"] = check_literal(
        options.get("kind", "max_sensitivity"), Literal["max_sensitivity"], name="kind", owner=owner
    )
    return {
        "kind": kind,
        "n_samples": check_positive_int(
            options.get("n_samples", 10), name="n_samples", owner=owner
        ),
        "radius": check_real(options.get("radius", 0.2), name="radius", owner=owner, minimum=0.0),
        "seed": check_int(options.get("seed", 0), name="seed", owner=owner),
        "explain_batch_size": check_batch_size(
            options.get("explain_batch_size"), owner=owner, name="explain_batch_size"
        ),
        "noise_at": check_literal(
            options.get("noise_at", "inputs"),
            NoiseAt,
            name="noise_at",
            owner=owner,
            hint="'inputs' adds the noise to x1 and x2; 'mixed' to every mixed image of a path "
            "method (the paper's protocol for averaged_transforms).",
        ),
    }


def _key(options: Mapping[str, Any]) -> _Key:
    return (
        options["n_samples"],
        options["radius"],
        options["seed"],
        options["explain_batch_size"],
        options["noise_at"],
    )


def _check_method(method: object, *, owner: str) -> str:
    if method is None:
        raise ValueError(
            f"`{owner}`: max_sensitivity re-explains noisy copies of the pairs, so it needs the "
            "explanation method: pass `method=` (a name from `lightning_explain.list_methods()`) "
            "and, if the explanation used non-default options, `method_options=`."
        )
    if not isinstance(method, str):
        raise TypeError(f"`{owner}`: expected `method` to be a string, but got {method!r}.")
    method_info(method)  # unknown names raise a ValueError listing the valid ones
    return method


def _max_changes(
    inputs: PairInputs,
    method: str,
    *,
    n_samples: int,
    radius: float,
    seed: int,
    explain_batch_size: int | None,
    noise_at: NoiseAt = "inputs",
) -> tuple[Tensor, Tensor]:
    """Per image, the ``(B,)`` max over ``n_samples`` noise draws of the relative map change."""
    options = dict(inputs.method_options)
    model = inputs.model
    on_path = noise_at == "mixed" and _PATH_OPTION in method_info(method).defaults()
    if _PATH_OPTION in options:
        raise ValueError(
            f"`{inputs.owner}`: max_sensitivity sets `{_PATH_OPTION}` itself (noise_at='mixed'); "
            f"remove it from the method options."
        )
    with pair_context(model, inputs.x1, inputs.x2, owner=inputs.owner) as ctx:
        generator = ctx.generator(seed)
        reference = explain(model, ctx.x1, ctx.x2, method=method, **options)
        batch = ctx.batch
        per_call = explain_batch_size or max(batch, DEFAULT_EXPLAIN_PAIRS)
        samples_per_group = max(1, per_call // batch)
        worst1 = torch.zeros(batch, device=ctx.device)
        worst2 = torch.zeros(batch, device=ctx.device)
        for first in range(0, n_samples, samples_per_group):
            count = min(samples_per_group, n_samples - first)
            noise = torch.stack(
                [
                    (
                        torch.rand(
                            ctx.x1.shape, generator=generator, device=ctx.device, dtype=ctx.x1.dtype
                        )
                        * 2
                        - 1
                    )
                    * radius
                    for _ in range(count)
                ]
            )
            flat_noise = noise.flatten(0, 1)
            if on_path:  # the paper's protocol: the method adds it to every mixed image
                noisy1 = ctx.x1.unsqueeze(0).expand_as(noise).flatten(0, 1)
                noisy2 = ctx.x2.unsqueeze(0).expand_as(noise).flatten(0, 1)
            else:
                noisy1 = (ctx.x1.unsqueeze(0) + noise).flatten(0, 1)
                noisy2 = (ctx.x2.unsqueeze(0) + noise).flatten(0, 1)
            parts = [
                explain(
                    model, a, b, method=method, **options, **({_PATH_OPTION: e} if on_path else {})
                )
                for a, b, e in zip(
                    torch.split(noisy1, per_call),
                    torch.split(noisy2, per_call),
                    torch.split(flat_noise, per_call),
                )
            ]
            maps1 = torch.cat([p.h1 for p in parts]).view(count, *reference.h1.shape)
            maps2 = torch.cat([p.h2 for p in parts]).view(count, *reference.h2.shape)
            change1 = _relative_change(reference.h1, maps1).amax(dim=0)
            change2 = _relative_change(reference.h2, maps2).amax(dim=0)
            worst1 = torch.maximum(worst1, change1.to(worst1))
            worst2 = torch.maximum(worst2, change2.to(worst2))
    return worst1, worst2


def _max_sensitivity_update(
    inputs: PairInputs, requests: Sequence[Mapping[str, Any]]
) -> SensitivityState:
    """Re-explain noisy copies of the pairs once per distinct noise protocol among the requests.

    Args:
        inputs: model, images, ``method`` and ``method_options``.
        requests: the options of each requested metric (checked, see :data:`FAMILY`).

    Returns:
        The :class:`SensitivityState`. Cost: ``n_samples + 1`` explanations per pair and protocol.
    """
    method = _check_method(inputs.method, owner=inputs.owner)
    state: SensitivityState = {}
    for options in requests:
        key = _key(options)
        if key not in state:
            state[key] = _max_changes(
                inputs,
                method,
                n_samples=options["n_samples"],
                radius=options["radius"],
                seed=options["seed"],
                explain_batch_size=options["explain_batch_size"],
                noise_at=options["noise_at"],
            )
    return state


def _max_sensitivity_compute(
    state: SensitivityState, options: Mapping[str, Any]
) -> tuple[Tensor, None]:
    """One metric's ``(B,)`` scores: the mean of the two images' largest relative changes."""
    worst1, worst2 = state[_key(options)]
    return 0.5 * (worst1 + worst2), None


FAMILY = MetricFamily(
    name="sensitivity",
    inputs="pairs",
    check=_max_sensitivity_check,
    update=_max_sensitivity_update,
    compute=_max_sensitivity_compute,
)
"""The max-sensitivity family (registry key ``max_sensitivity``)."""


def max_sensitivity(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    method: str,
    *,
    n_samples: int = 10,
    radius: float = 0.2,
    seed: int = 0,
    explain_batch_size: int | None = None,
    noise_at: NoiseAt = "inputs",
    options: Mapping[str, Any] | None = None,
    **method_options: Any,
) -> Tensor:
    """Largest relative change of the pair's maps under small input noise (lower is better).

    For each of ``n_samples`` draws, the same noise ``U(-radius, radius)`` (per element, in the
    model's input space, no clamping) is added to both images of a pair, the pair is explained
    again with ``lightning_explain.explain(model, x1 + n, x2 + n, method=method, **options)``, and
    ``||h_i - h_i'||_2 / ||h_i||_2`` is computed for each image. Score per pair: the max over the
    samples, averaged over the two images.

    Noise comes from a private ``torch.Generator`` seeded with ``seed``; sample ``s`` is
    ``(torch.rand(x1.shape, generator=g) * 2 - 1) * radius`` drawn in order ``s = 0 .. n-1``.
    The noisy pairs of several samples go through one ``explain`` call (``explain_batch_size``
    pairs per call).

    Differences from the paper: the maps compared are the package's finished maps (upsampled to
    input resolution, clamped at 0, max-normalised), so values are not comparable to the paper's
    tables, where CAMs were compared at 7x7 and gradient maps unnormalised. The paper compares
    gradient maps *without* output blur; pass the method's blur option off (if it has one) for
    that protocol. For Averaged Transforms the paper adds the noise to every mixed image of the
    path rather than to ``x1``, ``x2`` before the transform: ``noise_at="mixed"`` does that (the
    two differ for the default ``design="pair"``, whose transform is not linear; for
    ``design="paper"`` they coincide). An all-zero reference map counts as ``inf`` unless the noisy map is zero too.

    Args:
        model: ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        method: a name from :func:`lightning_explain.list_methods`.
        n_samples: number of noise draws (default 10, the paper's).
        radius: noise half-width (default 0.2, the paper's).
        seed: seed of the noise generator (default 0). Stochastic methods keep their own seed
            option (default, or set through ``options``) for the reference and every noisy copy.
        explain_batch_size: pairs per ``explain`` call (default ``max(B, 64)``: several samples
            per call when ``B`` is small).
        noise_at: ``"inputs"`` (default) or ``"mixed"`` (see :data:`NoiseAt`).
        options: method options as a mapping; use it for options whose names clash with this
            function's parameters (e.g. ``smoothgrad``'s ``n_samples`` or a method's ``seed``).
        **method_options: further method options, e.g. ``layer=...``, ``similarity="dot"``.

    Returns:
        ``(B,)`` max-sensitivities (``>= 0``).

    Cost:
        ``n_samples + 1`` explanations per pair (the reference plus the noisy copies).

    Raises:
        ValueError: missing or unknown ``method``, ``n_samples < 1``, ``radius < 0``, malformed
            images.
        TypeError: unknown method options (listed by :func:`lightning_explain.explain`).
    """
    owner = "max_sensitivity"
    merged = dict(options or {})
    clash = sorted(set(merged) & set(method_options))
    if clash:
        raise ValueError(
            f"`{owner}`: method option(s) {clash} were given both in `options` and as "
            "keyword arguments; give each once."
        )
    merged.update(method_options)
    checked = _max_sensitivity_check(
        {
            "n_samples": n_samples,
            "radius": radius,
            "seed": seed,
            "explain_batch_size": explain_batch_size,
            "noise_at": noise_at,
        },
        owner,
    )
    inputs = PairInputs(
        model=model, x1=x1, x2=x2, method=method, method_options=merged, owner=owner
    )
    ((scores, _),) = score_pairs(inputs, [(FAMILY, checked)])
    return scores
