"""Method entries: what the user asks to be explained, parsed and checked before any forward pass.

An entry is a registered name (``"gradcam"``) or a dict ``{"name": ..., <option>: <value>,
"label": ...}``; :func:`parse_methods` (heatmap methods) and :func:`parse_interactions`
(correspondence methods) turn entries into :class:`MethodSpec` objects, checking names against
the registries (unknown names list the valid ones) and options against the signatures.
:func:`method_options` and :func:`interaction_options` are the one place where the settings every
method shares (``similarity``, ``layer``, ``seed``, ``batch_size``) are injected. The evaluation
engine (:mod:`lightning_explain.evaluation`) re-exports these names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from lightning_explain._checks import check_signature_options, describe, keyword_options
from lightning_explain.correspondence import get_interaction_method, interaction_method_info
from lightning_explain.methods import get_method, method_info
from lightning_explain.similarity import SimilarityFn

__all__ = [
    "DEFAULT_METHODS",
    "RESERVED_LABELS",
    "MethodEntry",
    "MethodSpec",
    "interaction_options",
    "method_options",
    "parse_interactions",
    "parse_methods",
]

DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "interaction_cam")
"""Methods explained when none are given: the paper's pairwise Grad-CAM baseline and its
Interaction-CAM, each one forward and one backward pass of the pair."""

MethodEntry = Union[str, Mapping[str, Any]]
"""A method name (``"gradcam"``) or a mapping ``{"name": ..., <option>: <value>, ...}`` with an
optional ``"label"`` (the name in logged keys)."""

_LABEL_OK = re.compile(r"^[A-Za-z0-9_.-]+$")
"""Label characters that no supported tracker rewrites (MLflow drops ``=`` and ``+``, TensorBoard
turns them into ``_``), so distinct labels stay distinct keys everywhere."""

RESERVED_LABELS: frozenset[str] = frozenset(
    {"sim", "errors", "knn_accuracy", "corr", "correspondence"}
)
"""Labels that would clash with the callback's own keys (``explain/sim``, ``explain/errors``, ...)."""


# --------------------------------------------------------------------------------------------------
# Method entries


@dataclass(frozen=True)
class MethodSpec:
    """One method entry: a registered method, its options and the name it is reported under.

    Attributes:
        name: the registry name (see :func:`lightning_explain.list_methods`).
        label: the name in logged keys (``explain/<label>/...``), tables and dashboards; the
            method name unless several entries share it.
        options: the options given in the entry (:func:`method_options` adds ``similarity``,
            ``layer``, ``seed`` and ``batch_size`` where the method takes them and the entry does
            not set them).
    """

    name: str
    label: str
    options: Mapping[str, Any] = field(default_factory=dict)


def _option_text(value: object) -> str:
    text = value.__name__ if callable(value) and hasattr(value, "__name__") else str(value)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _entry(entry: object, i: int, owner: str) -> tuple[str, dict[str, Any], str | None]:
    if isinstance(entry, MethodSpec):
        return entry.name, dict(entry.options), entry.label
    if isinstance(entry, str):
        return entry, {}, None
    if not isinstance(entry, Mapping):
        raise TypeError(
            f"`{owner}`: expected entry {i} of `methods` to be a method name or a dict "
            f"{{'name': ..., **options}}, but got {describe(entry)}."
        )
    options = dict(entry)
    if "name" not in options:
        keys = list(options)
        hint = ""
        if len(keys) == 1 and isinstance(keys[0], str):
            inner = options[keys[0]]
            inner_text = ", ".join(f"{k!r}: {v!r}" for k, v in dict(inner or {}).items())
            hint = f" Write it as {{'name': {keys[0]!r}{', ' if inner_text else ''}{inner_text}}}."
        raise ValueError(
            f"`{owner}`: entry {i} of `methods` is a dict without a 'name' key: {options!r}. "
            f"Expected {{'name': <method>, <option>: <value>, ...}}.{hint}"
        )
    name = options.pop("name")
    label = options.pop("label", None)
    if label is not None and (not isinstance(label, str) or not _LABEL_OK.match(label)):
        raise ValueError(
            f"`{owner}`: expected the 'label' of entry {i} of `methods` to be a non-empty string "
            f"of letters, digits and '_.-' (it becomes part of the logged keys, and trackers "
            f"rewrite other characters: MLflow drops '=' and '+'), but got {label!r}."
        )
    return name, options, label


def parse_methods(methods: object, *, owner: str = "parse_methods") -> list[MethodSpec]:
    """Parse method entries into :class:`MethodSpec` objects, checking names and options.

    An entry is a method name (``"gradcam"``), a dict with the key ``name`` plus method options,
    e.g. ``{"name": "interaction_cam", "reduction": "max"}`` (an optional ``label`` key sets the
    name used in logged keys), or a :class:`MethodSpec`. When several entries share a method and
    give no label, each gets the method name followed by its option values, e.g.
    ``interaction_cam-max``. Options are checked against the method's signature: unknown names
    raise a ``TypeError`` listing the valid ones, and options typed as ``Literal`` are checked
    against their choices.

    Raises:
        TypeError: if ``methods`` is not a list of names/dicts, or an option is unknown.
        ValueError: for an unknown method (the message lists the valid names), a value outside an
            option's choices, an empty list, or entries that end up with the same label.

    Example:
        >>> [s.label for s in parse_methods(["gradcam", {"name": "interaction_cam", "reduction": "max"}])]
        ['gradcam', 'interaction_cam']
    """
    if isinstance(methods, (str, Mapping, MethodSpec)):
        methods = [methods]
    if not isinstance(methods, Sequence) or isinstance(methods, (bytes, bytearray)):
        raise TypeError(
            f"`{owner}`: expected `methods` to be a list of method names or dicts "
            f"{{'name': ..., **options}}, but got {describe(methods)}."
        )
    if len(methods) == 0:
        raise ValueError(
            f"`{owner}`: expected at least one entry in `methods`, e.g. {list(DEFAULT_METHODS)}."
        )
    parsed: list[tuple[str, dict[str, Any], str | None]] = []
    for i, item in enumerate(methods):
        name, options, label = _entry(item, i, owner)
        if not isinstance(name, str):
            raise TypeError(f"`{owner}`: expected a method name (str) in entry {i}, got {name!r}.")
        try:
            method_info(name)
            check_signature_options(get_method(name), options, owner=name, what=f"method {name!r}")
        except (TypeError, ValueError) as err:
            raise type(err)(f"`{owner}`: invalid entry {i} of `methods`: {err}") from None
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
    folded = [lab.lower() for lab in labels]
    duplicates = sorted({lab for lab in labels if folded.count(lab.lower()) > 1})
    if duplicates:
        raise ValueError(
            f"`{owner}`: entries of `methods` would be reported under the same name {duplicates} "
            f"(labels that differ only in case collide in file names on case-insensitive disks). "
            f"Remove the repeated entry, give the entries different options, or set a distinct "
            f"'label' in each dict entry."
        )
    reserved = sorted(set(labels) & RESERVED_LABELS)
    if reserved:
        raise ValueError(
            f"`{owner}`: the label(s) {reserved} are reserved for the callback's own keys "
            f"({', '.join(f'explain/{r}' for r in sorted(RESERVED_LABELS))}); set another "
            f"'label' in the entry."
        )
    return specs


def method_options(
    spec: MethodSpec,
    *,
    similarity: Union[str, SimilarityFn] = "cosine",
    layer: object = "auto",
    seed: int = 0,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """The options a method entry runs with: the shared settings the method takes (``similarity``,
    ``layer``, ``seed``, and ``batch_size`` when given), overridden by the entry's own options.

    This is the one place where shared settings are injected into method calls.

    Example:
        >>> spec = parse_methods([{"name": "rise", "n_masks": 100}])[0]
        >>> sorted(method_options(spec, seed=3).items())[:2]
        [('n_masks', 100), ('seed', 3)]
    """
    shared: dict[str, Any] = {"similarity": similarity, "layer": layer, "seed": seed}
    return _with_shared(get_method(spec.name), spec, shared, batch_size)


def _with_shared(
    fn: Callable[..., Any], spec: MethodSpec, shared: dict[str, Any], batch_size: int | None
) -> dict[str, Any]:
    """``shared`` (plus ``batch_size`` when given) where ``fn`` takes it, then the entry's own
    options on top."""
    if batch_size is not None:
        shared = {**shared, "batch_size": batch_size}
    accepted = keyword_options(fn)
    options = {k: v for k, v in shared.items() if k in accepted}
    options.update(spec.options)
    return options


def parse_interactions(
    interactions: object, *, owner: str = "parse_interactions"
) -> list[MethodSpec]:
    """Parse correspondence (interaction) method entries, as :func:`parse_methods` does for
    heatmap methods: names of :func:`lightning_explain.correspondence.list_interaction_methods`
    or dicts ``{"name": ..., **options}`` (an optional ``label``); ``None`` or an empty list
    gives none.

    Raises:
        TypeError: for a malformed entry or an unknown option (the message lists the valid ones).
        ValueError: for an unknown method (the message lists the valid names) or duplicate labels.

    Example:
        >>> [s.label for s in parse_interactions(["point_to_point", {"name": "bilrp", "k": 8}])]
        ['point_to_point', 'bilrp']
    """
    if interactions is None:
        return []
    if isinstance(interactions, (str, Mapping, MethodSpec)):
        interactions = [interactions]
    if not isinstance(interactions, Sequence) or isinstance(interactions, (bytes, bytearray)):
        raise TypeError(
            f"`{owner}`: expected `interactions` to be a list of interaction method names or "
            f"dicts {{'name': ..., **options}}, but got {describe(interactions)}."
        )
    specs: list[MethodSpec] = []
    for i, item in enumerate(interactions):
        name, options, label = _entry(item, i, owner)
        if not isinstance(name, str):
            raise TypeError(
                f"`{owner}`: expected an interaction method name (str) in entry {i} of "
                f"`interactions`, got {name!r}."
            )
        try:
            interaction_method_info(name)
            check_signature_options(
                get_interaction_method(name),
                options,
                owner=name,
                what=f"interaction method {name!r}",
            )
        except (TypeError, ValueError) as err:
            raise type(err)(f"`{owner}`: invalid entry {i} of `interactions`: {err}") from None
        specs.append(MethodSpec(name=name, label=label or name, options=options))
    labels = [s.label.lower() for s in specs]
    duplicates = sorted({s.label for s in specs if labels.count(s.label.lower()) > 1})
    if duplicates:
        raise ValueError(
            f"`{owner}`: entries of `interactions` would be reported under the same name "
            f"{duplicates}; set a distinct 'label' in each dict entry."
        )
    return specs


def interaction_options(
    spec: MethodSpec,
    *,
    similarity: Union[str, SimilarityFn] = "cosine",
    layer: object = "auto",
    seed: int = 0,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """The options an interaction entry runs with: the shared settings it takes (``similarity``
    when it is ``"cosine"`` or ``"dot"``, the two the interaction methods decompose; ``layer``,
    ``seed``, and ``batch_size`` when given), overridden by the entry's own options."""
    shared: dict[str, Any] = {"layer": layer, "seed": seed}
    if similarity in ("cosine", "dot"):
        shared["similarity"] = similarity
    return _with_shared(get_interaction_method(spec.name), spec, shared, batch_size)
