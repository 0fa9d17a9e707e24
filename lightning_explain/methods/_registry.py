"""String registry of explanation methods.

Entries name their implementing module and function and are imported on first use, so listing the
methods imports nothing heavy and registration has no import-time side effects.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightning_explain.explanation import PairExplanation

__all__ = ["MethodInfo", "check_method_options", "get_method", "list_methods", "method_info"]

MethodFn = Callable[..., PairExplanation]


@dataclass(frozen=True)
class MethodInfo:
    """Static facts about one registered method.

    Attributes:
        name: registry key (also the function name).
        family: ``"perturbation"``, ``"cam"``, ``"gradient"`` or ``"surrogate"``.
        module: module that implements it.
        cost: forward/backward passes per pair with the default options, in words.
        stochastic: whether the method takes a ``seed``.
        needs_layer: whether the method takes a ``layer`` (class-activation methods).
        symmetric: whether swapping ``x1`` and ``x2`` swaps ``h1`` and ``h2``.
        summary: one line saying what it computes.
    """

    name: str
    family: str
    module: str
    cost: str
    stochastic: bool
    needs_layer: bool
    symmetric: bool
    summary: str

    def load(self) -> MethodFn:
        """Import and return the method function."""
        fn: MethodFn = getattr(importlib.import_module(self.module), self.name)
        return fn

    def defaults(self) -> dict[str, Any]:
        """Keyword options of the method and their default values."""
        params = inspect.signature(self.load()).parameters.values()
        return {
            p.name: p.default
            for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
        }


_P = "lightning_explain.methods."
_METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo(
            "conditional_occlusion",
            "perturbation",
            _P + "occlusion",
            "2 + 2 x positions forwards (884 at 224 px with window 64, stride 8)",
            False,
            False,
            True,
            "similarity drop when a sliding window of one image is filled, the other image intact",
        ),
        MethodInfo(
            "context_agnostic_occlusion",
            "perturbation",
            _P + "occlusion",
            "2 + 4 x positions forwards (1766 at 224 px) + 1 per call",
            False,
            False,
            True,
            "similarity of the patch-only embedding difference f(patch) - f(image without patch) "
            "with the intact other image",
        ),
        MethodInfo(
            "pairwise_occlusion",
            "perturbation",
            _P + "occlusion",
            "2 + 2 x n_erasures forwards (202)",
            True,
            False,
            False,
            "random erasures of both images at once; each image credited its Shapley share of the drop",
        ),
        MethodInfo(
            "rise",
            "perturbation",
            _P + "rise",
            "2 + 2 x n_masks forwards (2002)",
            True,
            False,
            True,
            "randomised input sampling: masks weighted by the masked pair similarity minus its mean",
        ),
        MethodInfo(
            "gradcam",
            "cam",
            _P + "cam",
            "1 forward + 1 backward of the pair (+1 forward of one pair for layer='auto')",
            False,
            True,
            True,
            "activations times positive gradients of the pair similarity, summed over channels",
        ),
        MethodInfo(
            "interaction_cam",
            "cam",
            _P + "cam",
            "1 forward + 1 backward of the pair (+1 forward of one pair for layer='auto')",
            False,
            True,
            True,
            "Grad-CAM on activations re-weighted by channels active in both images",
        ),
        MethodInfo(
            "input_x_gradient",
            "gradient",
            _P + "gradients",
            "1 forward + 1 backward",
            False,
            False,
            True,
            "max over channels of |input x gradient of the pair similarity|",
        ),
        MethodInfo(
            "smoothgrad",
            "gradient",
            _P + "gradients",
            "n_samples forwards + backwards (50)",
            True,
            False,
            True,
            "input x gradient averaged over noisy copies (same noise on both images)",
        ),
        MethodInfo(
            "averaged_transforms",
            "gradient",
            _P + "gradients",
            "steps forwards + backwards per image (2 * 10)",
            True,
            False,
            False,
            "input x gradient averaged along an interpolation towards a photometric transform",
        ),
        MethodInfo(
            "integrated_gradients",
            "gradient",
            _P + "gradients",
            "n_steps forwards + backwards (2 * 32)",
            False,
            False,
            True,
            "integrated gradients of the pair similarity from a blurred or black baseline",
        ),
        MethodInfo(
            "pixel_invariance",
            "surrogate",
            _P + "surrogate",
            "2 + 2 x n_augmentations forwards (2002) + 2 linear surrogate fits",
            True,
            False,
            False,
            "weights of a linear surrogate predicting the similarity under aligned augmentations",
        ),
    )
}


def list_methods(family: str | None = None) -> list[str]:
    """Names of the registered methods, sorted; optionally only one ``family``."""
    if family is not None and family not in {m.family for m in _METHODS.values()}:
        families = sorted({m.family for m in _METHODS.values()})
        raise ValueError(f"Expected `family` to be one of {families} or None, but got {family!r}.")
    return sorted(n for n, m in _METHODS.items() if family is None or m.family == family)


def method_info(name: str) -> MethodInfo:
    """Facts about a method.

    Raises:
        ValueError: for an unknown name; the message lists the valid names.
    """
    if not isinstance(name, str):
        raise TypeError(f"Expected `method` to be a string, but got {type(name).__name__}.")
    try:
        return _METHODS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_METHODS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown explanation method {name!r}.{hint} Valid methods: {', '.join(list_methods())}."
        ) from None


def get_method(name: str) -> MethodFn:
    """Return the method function registered under ``name``."""
    return method_info(name).load()


def check_method_options(name: str, options: dict[str, Any]) -> None:
    """Raise a ``TypeError`` naming the method and its valid options if ``options`` has unknown keys."""
    fn = get_method(name)
    params = inspect.signature(fn).parameters
    valid = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"Unknown option(s) {unknown} for method {name!r}. Valid options: {', '.join(valid)}."
        )
