"""Shared pieces of the command line: the error type, argument parsers and text helpers."""

from __future__ import annotations

import argparse
import ast
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

__all__ = [
    "EXIT_USAGE",
    "PROG",
    "CLIError",
    "comma_list",
    "fmt_shape",
    "log",
    "mean_of",
    "parse_device",
    "parse_options",
    "plain",
    "positive_float",
    "positive_int",
    "text_table",
]

PROG = "lightning-explain"
EXIT_USAGE = 2


class CLIError(Exception):
    """An error the user can fix; ``main`` prints its message and returns exit code 2."""


def comma_list(values: Sequence[str]) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (both spellings are accepted on the command line)."""
    out: list[str] = []
    for value in values:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


_Number = TypeVar("_Number", int, float)


def _positive(text: str, parse: Callable[[str], _Number], noun: str, valid: str) -> _Number:
    """``parse(text)`` if it is finite and > 0; else an argparse error (``noun``: what a parse
    failure expected; ``valid``: what an out-of-range value should have been)."""
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive {noun}, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected {valid}, got {value}")
    return value


def positive_float(text: str) -> float:
    return _positive(text, float, "number", "a finite number > 0")


def positive_int(text: str) -> int:
    return _positive(text, int, "integer", "a positive integer")


def plain(value: Any) -> Any:
    """A JSON-friendly rendering of a default value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return repr(value)


def text_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def parse_device(spec: str | None) -> torch.device:
    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError) as err:
        raise CLIError(
            f"--device {spec!r} is not a torch device (expected e.g. cpu, cuda, cuda:1): {err}"
        ) from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(
                f"--device {spec!r} asks for CUDA, but torch sees no CUDA device on this machine "
                f"(torch {torch.__version__}). Use --device cpu."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CLIError(
                f"--device {spec!r}: there are only {torch.cuda.device_count()} CUDA devices."
            )
    return device


def fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise CLIError(
                f"--option {item!r} is malformed: expected NAME=VALUE, e.g. n_masks=500."
            )
        try:
            options[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[name] = text
    return options


def spread_options(
    names: Sequence[str], options: dict[str, Any], accepted: Callable[[str], Sequence[str]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Give each named method the options of ``options`` it takes (``accepted(name)``).

    Returns:
        ``([{"name": name, **its options}, ...], the sorted options no method takes)``.
    """
    entries: list[dict[str, Any]] = []
    used: set[str] = set()
    for name in names:
        taken = {k: v for k, v in options.items() if k in accepted(name)}
        used.update(taken)
        entries.append({"name": name, **taken})
    return entries, sorted(set(options) - used)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mean_of(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan
