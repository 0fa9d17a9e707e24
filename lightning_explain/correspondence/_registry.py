"""String registry of the interaction (correspondence) methods.

Entries name their implementing module and function and are imported on first use, so listing the
methods imports nothing heavy and registration has no import-time side effects (as
:mod:`lightning_explain.methods`' registry).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightning_explain._checks import did_you_mean
from lightning_explain.correspondence._types import PairInteraction

__all__ = [
    "InteractionMethodInfo",
    "get_interaction_method",
    "interaction_method_info",
    "list_interaction_methods",
]

InteractionFn = Callable[..., PairInteraction]


@dataclass(frozen=True)
class InteractionMethodInfo:
    """Static facts about one registered interaction method.

    Attributes:
        name: registry key (also the function name).
        module: module that implements it.
        cost: forward/backward passes per image with the default options, in words.
        stochastic: whether the result depends on a ``seed``.
        needs_layer: whether the default options explain a feature layer (``layer``).
        summary: one line saying what it computes.
        reference: the paper it follows.
    """

    name: str
    module: str
    cost: str
    stochastic: bool
    needs_layer: bool
    summary: str
    reference: str

    def load(self) -> InteractionFn:
        """Import and return the method function."""
        fn: InteractionFn = getattr(importlib.import_module(self.module), self.name)
        return fn

    def defaults(self) -> dict[str, Any]:
        """Keyword options of the method and their default values."""
        params = inspect.signature(self.load()).parameters.values()
        return {
            p.name: p.default
            for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
        }


_M = "lightning_explain.correspondence.methods"
_METHODS: dict[str, InteractionMethodInfo] = {
    m.name: m
    for m in (
        InteractionMethodInfo(
            "point_to_point",
            _M,
            "per chunk: 1 forward with autograd + 1 batched backward of the D embedding "
            "coordinates to `layer` (vmapped; only the model after the layer is traversed); "
            "+1 forward of one pair and partial backwards for layer='auto', once per model",
            False,
            True,
            "per-position embedding contributions at a feature layer, paired by dot product: "
            "interaction[i, j] = <z1_i, z2_j> (/ |z1||z2| for cosine)",
            "Zhu, Yang & Chen, 'Visual Explanation for Deep Metric Learning', IEEE TIP 2021",
        ),
        InteractionMethodInfo(
            "bilrp",
            _M,
            "per image: 1 forward with autograd + k full backwards to the input (k = 32); "
            "+1 forward without autograd for directions='principal'",
            True,
            False,
            "second-order gradient x input: R = sum_m (x1 * grad phi_m(x1)) (x2 * grad phi_m(x2))^T "
            "over k projections phi_m of the embedding, pooled into a grid of pixel patches",
            "Eberle et al., 'Building and Interpreting Deep Similarity Models', IEEE TPAMI 2022",
        ),
    )
}


def list_interaction_methods() -> list[str]:
    """Names of the registered interaction methods, sorted.

    Example:
        >>> list_interaction_methods()
        ['bilrp', 'point_to_point']
    """
    return sorted(_METHODS)


def interaction_method_info(name: str) -> InteractionMethodInfo:
    """Facts about an interaction method.

    Raises:
        TypeError: if ``name`` is not a string.
        ValueError: for an unknown name; the message lists the valid names.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"`explain_interactions`: expected `method` to be a string, but got "
            f"{type(name).__name__}."
        )
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(
            f"`explain_interactions`: unknown interaction method {name!r}."
            f"{did_you_mean(name, list(_METHODS))} Valid methods: "
            f"{', '.join(list_interaction_methods())}."
        ) from None


def get_interaction_method(name: str) -> InteractionFn:
    """Return the method function registered under ``name`` (see :func:`interaction_method_info`)."""
    return interaction_method_info(name).load()
