"""Argument validation shared by every public function, method, metric, the callback and the CLI.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, wrong value)
with one message shape: "`<owner>`: expected `<name>` to be <what>, but got <value>." plus the fix
where there is one. Options typed as ``Literal[...]`` are checked from their type
(:func:`check_literal`, :func:`check_signature_options`), so the valid choices are written once.
"""

from __future__ import annotations

import difflib
import inspect
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from torch import Tensor

__all__ = [
    "Bounds",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "UnitFloat",
    "check_batch_size",
    "check_bool",
    "check_int",
    "check_layer",
    "check_literal",
    "check_positive_int",
    "check_range",
    "check_real",
    "check_schedule",
    "check_signature_options",
    "check_stats",
    "describe",
    "did_you_mean",
    "keyword_options",
    "literal_choices",
]


def describe(value: object) -> str:
    """A short description of ``value`` for error messages (tensors: dtype, shape and device)."""
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe(v) for v in list(value)[:4])
        more = ", ..." if len(value) > 4 else ""
        return f"a {type(value).__name__} of {len(value)} ({inner}{more})"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    return f"an object of type {type(value).__name__}"


def did_you_mean(name: str, valid: Sequence[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest valid name, or ``""``."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


# --------------------------------------------------------------------------------------------------
# Numbers and flags


def check_int(value: object, *, name: str, owner: str, minimum: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool), ``>= minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{owner}`: expected `{name}` to be an int, but got {describe(value)}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{owner}`: expected `{name}` >= {minimum}, but got {value}.")
    return value


def check_positive_int(value: object, *, name: str, owner: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an int ``>= minimum`` (default 1)."""
    return check_int(value, name=name, owner=owner, minimum=minimum)


def check_batch_size(value: object, *, owner: str, name: str = "batch_size") -> int | None:
    """Return ``value`` if it is None (chosen per device) or a positive int."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"`{owner}`: expected `{name}` to be a positive int or None (chosen from the device's "
            f"memory), but got {describe(value)}."
        )
    return check_positive_int(value, name=name, owner=owner)


def check_bool(value: object, *, name: str, owner: str) -> bool:
    """Return ``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"`{owner}`: expected `{name}` to be a bool, but got {describe(value)}.")
    return value


def check_real(
    value: object,
    *,
    name: str,
    owner: str,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
) -> float:
    """Return ``value`` as a finite float within ``[minimum, maximum]`` (``(minimum, ...`` when
    ``exclusive_minimum``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{owner}`: expected `{name}` to be a number, but got {describe(value)}.")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"`{owner}`: expected `{name}` to be finite, but got {value!r}.")
    low_ok = minimum is None or (out > minimum if exclusive_minimum else out >= minimum)
    high_ok = maximum is None or out <= maximum
    if not (low_ok and high_ok):
        low = (
            ""
            if minimum is None
            else (f"> {minimum:g}" if exclusive_minimum else f">= {minimum:g}")
        )
        high = "" if maximum is None else f"<= {maximum:g}"
        bounds = " and ".join(b for b in (low, high) if b)
        raise ValueError(f"`{owner}`: expected `{name}` {bounds}, but got {value!r}.")
    return out


def check_range(
    value: object, *, name: str, owner: str, upper: float | None = None
) -> tuple[float, float]:
    """Return a ``(low, high)`` pair with ``0 < low <= high`` (and ``high <= upper`` if given)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(
            f"`{owner}`: expected `{name}` to be a (low, high) pair of numbers, but got "
            f"{describe(value)}."
        )
    low = check_real(value[0], name=f"{name}[0]", owner=owner)
    high = check_real(value[1], name=f"{name}[1]", owner=owner)
    bound = "" if upper is None else f" <= {upper:g}"
    if not (0.0 < low <= high) or (upper is not None and high > upper):
        raise ValueError(
            f"`{owner}`: expected `{name}` = (low, high) with 0 < low <= high{bound}, but got "
            f"{value!r}."
        )
    return low, high


def check_stats(values: object, *, name: str, owner: str) -> tuple[float, ...] | None:
    """Per-channel normalisation statistics: ``None`` or a non-empty list of numbers (``std``
    values must be ``> 0``)."""
    if values is None:
        return None
    if (
        not isinstance(values, Sequence)
        or isinstance(values, str)
        or not values
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    ):
        raise TypeError(
            f"`{owner}`: expected `{name}` to be a list of per-channel numbers such as "
            f"[0.485, 0.456, 0.406], or None, but got {describe(values)}."
        )
    if name == "std" and any(float(v) <= 0 for v in values):
        raise ValueError(f"`{owner}`: expected every `std` value > 0, but got {list(values)}.")
    return tuple(float(v) for v in values)


# --------------------------------------------------------------------------------------------------
# Option types that carry their constraint


@dataclass(frozen=True)
class Bounds:
    """The range of a numeric option, as ``Annotated`` metadata (see :data:`PositiveInt`): checked
    from the type by :func:`check_signature_options`, e.g. when a method entry is parsed."""

    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False


PositiveInt = Annotated[int, Bounds(1)]
"""An int ``>= 1`` (counts)."""
NonNegativeInt = Annotated[int, Bounds(0)]
"""An int ``>= 0`` (seeds of generators that need it)."""
PositiveFloat = Annotated[float, Bounds(0.0, exclusive_minimum=True)]
"""A finite number ``> 0``."""
NonNegativeFloat = Annotated[float, Bounds(0.0)]
"""A finite number ``>= 0``."""
UnitFloat = Annotated[float, Bounds(0.0, 1.0)]
"""A finite number in ``[0, 1]``."""


def _check_typed(value: object, tp: object, *, name: str, owner: str) -> None:
    """Check ``value`` against a plain ``bool``/``int``/``float`` type, an ``Annotated`` one with
    :class:`Bounds`, or ``Optional`` of those; other types are not checked here."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is Union and type(None) in args:
        if value is None:
            return
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            return
        tp = rest[0]
    bounds = None
    if typing.get_origin(tp) is Annotated:
        base, *meta = typing.get_args(tp)
        bounds = next((m for m in meta if isinstance(m, Bounds)), None)
        tp = base
    if tp is bool:
        check_bool(value, name=name, owner=owner)
    elif tp is int:
        minimum = None if bounds is None or bounds.minimum is None else int(bounds.minimum)
        check_int(value, name=name, owner=owner, minimum=minimum)
        if bounds is not None and bounds.maximum is not None and value > bounds.maximum:  # type: ignore[operator]
            raise ValueError(
                f"`{owner}`: expected `{name}` <= {bounds.maximum:g}, but got {value}."
            )
    elif tp is float:
        check_real(
            value,
            name=name,
            owner=owner,
            minimum=None if bounds is None else bounds.minimum,
            maximum=None if bounds is None else bounds.maximum,
            exclusive_minimum=False if bounds is None else bounds.exclusive_minimum,
        )


# --------------------------------------------------------------------------------------------------
# Literal options, checked from their type


def literal_choices(tp: object) -> tuple[object, ...]:
    """The values of a ``Literal[...]`` type, looking through ``Union``/``Optional`` and nested
    literals; ``()`` if ``tp`` holds no literal."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        out: list[object] = []
        for arg in typing.get_args(tp):
            out.extend(literal_choices(arg) if typing.get_origin(arg) is Literal else [arg])
        return tuple(out)
    if origin is Union:
        found: list[object] = []
        for arg in typing.get_args(tp):
            found.extend(literal_choices(arg))
        return tuple(found)
    return ()


def _literal_only(tp: object) -> bool:
    """Whether every member of ``tp`` is a literal (or ``None``): then a value outside the
    choices is wrong. ``Union[Literal[...], float]`` also admits other values."""
    if typing.get_origin(tp) is Literal:
        return True
    if typing.get_origin(tp) is Union:
        return all(arg is type(None) or _literal_only(arg) for arg in typing.get_args(tp))
    return False


def check_literal(value: object, tp: object, *, name: str, owner: str, hint: str = "") -> Any:
    """Return ``value`` if it is one of the choices of the ``Literal`` type ``tp``.

    Raises:
        ValueError: listing the valid choices (and the closest one), plus ``hint``.
    """
    choices = literal_choices(tp)
    allows_none = typing.get_origin(tp) is Union and type(None) in typing.get_args(tp)
    if value is None and allows_none:
        return None
    # Compare types too: `True == 1` holds in Python.
    if any(type(value) is type(c) and value == c for c in choices):
        return value
    names = [c for c in choices if isinstance(c, str)]
    close = did_you_mean(value, names) if isinstance(value, str) else ""
    listed = repr([*choices, *([None] if allows_none else [])])
    raise ValueError(
        f"`{owner}`: expected `{name}` to be one of {listed}, but got {value!r}.{close}"
        + (f" {hint}" if hint else "")
    )


def keyword_options(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The keyword-only parameters of ``fn`` (the options of a method or metric)."""
    return {
        n: p
        for n, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _hints(fn: Callable[..., Any]) -> Mapping[str, object]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable forward references: no type-based checks
        return {}


def check_signature_options(
    fn: Callable[..., Any], options: Mapping[str, object], *, owner: str, what: str
) -> None:
    """Check ``options`` against the keyword-only parameters of ``fn``.

    Unknown names raise a ``TypeError`` listing the valid options (``what`` names the owner of
    the options, e.g. ``"method 'rise'"``); a value of an option typed purely as ``Literal``
    (or ``Optional[Literal]``) outside its choices raises a ``ValueError`` listing them; options
    typed ``bool``, ``int`` or ``float`` (plain, ``Optional``, or ``Annotated`` with
    :class:`Bounds` such as :data:`PositiveInt`) are checked for their type and range.
    """
    valid = keyword_options(fn)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"`{owner}`: unknown option(s) {unknown} for {what}.{did_you_mean(unknown[0], list(valid))}"
            f" Valid options: {', '.join(valid)}."
        )
    hints = _hints(fn)
    for key, value in options.items():
        tp = hints.get(key)
        if tp is None:
            continue
        if _literal_only(tp):
            check_literal(value, tp, name=key, owner=owner)
        else:
            _check_typed(value, tp, name=key, owner=owner)


def check_schedule(
    every_n_epochs: object, every_n_train_steps: object, hook: object, *, owner: str
) -> tuple[int | None, int | None, Any]:
    """The evaluation schedule of the training callback: at most one of ``every_n_epochs`` and
    ``every_n_train_steps`` (positive ints), and a ``hook`` in ``("train_epoch_end",
    "validation_epoch_end")``; step schedules need the train hook."""
    if every_n_epochs is not None and every_n_train_steps is not None:
        raise ValueError(
            f"`{owner}`: `every_n_epochs={every_n_epochs}` and `every_n_train_steps="
            f"{every_n_train_steps}` are mutually exclusive; set one of them (or neither, for "
            f"every epoch)."
        )
    epochs = (
        None
        if every_n_epochs is None
        else check_positive_int(every_n_epochs, name="every_n_epochs", owner=owner)
    )
    steps = (
        None
        if every_n_train_steps is None
        else check_positive_int(every_n_train_steps, name="every_n_train_steps", owner=owner)
    )
    hook = check_literal(
        hook, Literal["train_epoch_end", "validation_epoch_end"], name="hook", owner=owner
    )
    if hook == "validation_epoch_end" and steps is not None:
        raise ValueError(
            f"`{owner}`: `every_n_train_steps` evaluates after training batches and needs "
            f"hook='train_epoch_end', but got hook={hook!r}."
        )
    return epochs, steps, hook


def check_layer(layer: object, *, owner: str) -> Any:
    """A layer spec of the class-activation methods: ``"auto"``, a dotted submodule name, or a
    module (anything with ``named_modules``)."""
    if not isinstance(layer, str) and not hasattr(layer, "named_modules"):
        raise TypeError(
            f"`{owner}`: expected `layer` to be 'auto' or a dotted submodule name of the "
            f"LightningModule such as 'backbone.layer4', but got {describe(layer)}."
        )
    return layer
