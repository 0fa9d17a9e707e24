"""Choosing sinks for a trainer's loggers, and the registry users extend for other trackers."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Union

from lightning_explain.sinks.base import ExplanationSink
from lightning_explain.sinks.files import FileSink

__all__ = ["SinkFactory", "register_sink", "registered_sinks", "sinks_for", "unregister_sink"]

SinkFactory = Callable[[Any], Union[ExplanationSink, None]]
"""Builds the sink of one logger; may return ``None`` to send nothing to that logger."""

LoggerMatch = Union[type, str]
"""A logger class (matched with ``isinstance``) or a class name (matched along the MRO)."""

_LIGHTNING_LOGGER_MODULES = (
    "lightning.pytorch.loggers",
    "pytorch_lightning.loggers",
    "lightning.fabric.loggers",
    "lightning_fabric.loggers",
)

_registry: list[tuple[LoggerMatch, SinkFactory]] = []


def _lightning_names(logger: object) -> set[str]:
    """Names of the Lightning logger classes ``logger`` is an instance of, in either namespace.

    Matching on class names along the MRO is ``isinstance`` against ``lightning.pytorch.loggers.X``
    and ``pytorch_lightning.loggers.X`` at once, without importing either namespace (or a tracker).
    """
    return {
        cls.__name__
        for cls in type(logger).__mro__
        if cls.__module__.startswith(_LIGHTNING_LOGGER_MODULES)
    }


def _matches(logger: object, match: LoggerMatch) -> bool:
    if isinstance(match, str):
        return any(cls.__name__ == match for cls in type(logger).__mro__)
    return isinstance(logger, match)


def _wandb(logger: Any) -> ExplanationSink:
    from lightning_explain.sinks.wandb import WandbSink

    return WandbSink(logger)


def _tensorboard(logger: Any) -> ExplanationSink:
    from lightning_explain.sinks.tensorboard import TensorBoardSink

    return TensorBoardSink(logger)


def _mlflow(logger: Any) -> ExplanationSink:
    from lightning_explain.sinks.mlflow import MLflowSink

    return MLflowSink(logger)


def _csv(logger: Any) -> ExplanationSink:
    return FileSink(logger.log_dir)


_BUILTIN: tuple[tuple[str, SinkFactory], ...] = (
    ("WandbLogger", _wandb),
    ("TensorBoardLogger", _tensorboard),
    ("MLFlowLogger", _mlflow),
    ("CSVLogger", _csv),
)


def register_sink(logger_cls: type | str, factory: SinkFactory) -> None:
    """Teach :func:`sinks_for` how to log explanations to another tracker.

    Registered factories are tried before the built-in ones, the latest registration first, so a
    registration can also replace a built-in sink (register ``"WandbLogger"`` to change how W&B is
    fed) or silence a logger (a factory returning ``None``).

    Args:
        logger_cls: the logger class (matched with ``isinstance``, subclasses included), or a
            class name such as ``"CometLogger"`` (matched against the names of all classes in the
            logger's MRO, so it covers the ``lightning.pytorch`` and ``pytorch_lightning`` classes
            at once).
        factory: ``logger -> ExplanationSink | None``, typically the sink class itself.

    Raises:
        TypeError: if ``logger_cls`` is not a class or a string, or ``factory`` is not callable.

    Example::

        from lightning.pytorch.loggers import CometLogger
        from lightning_explain.sinks import register_sink
        register_sink(CometLogger, CometSink)   # CometSink subclasses ExplanationSink
    """
    if not isinstance(logger_cls, (type, str)) or logger_cls == "":
        raise TypeError(
            f"`register_sink`: expected `logger_cls` to be a logger class or a class name, but got "
            f"{logger_cls!r}."
        )
    if not callable(factory):
        raise TypeError(
            f"`register_sink`: expected `factory` to be a callable `logger -> ExplanationSink`, "
            f"but got {factory!r}."
        )
    _registry.insert(0, (logger_cls, factory))


def unregister_sink(logger_cls: type | str) -> None:
    """Remove every registration made for ``logger_cls`` with :func:`register_sink`.

    Raises:
        ValueError: if nothing is registered for ``logger_cls``.
    """
    kept = [(m, f) for m, f in _registry if m != logger_cls]
    if len(kept) == len(_registry):
        known = [m if isinstance(m, str) else m.__qualname__ for m, _ in _registry]
        raise ValueError(
            f"`unregister_sink`: nothing is registered for {logger_cls!r}; registered: {known}."
        )
    _registry[:] = kept


def registered_sinks() -> list[tuple[type | str, SinkFactory]]:
    """The user registrations, in the order they are tried (latest first)."""
    return list(_registry)


def _sink_for(logger: object) -> tuple[bool, ExplanationSink | None]:
    """``(known, sink)``: whether some factory handles ``logger``, and the sink it built."""
    if isinstance(logger, ExplanationSink):
        return True, logger
    for match, factory in _registry:
        if _matches(logger, match):
            return True, _check_sink(factory(logger), factory)
    names = _lightning_names(logger)
    for name, factory in _BUILTIN:
        if name in names:
            return True, factory(logger)
    return False, None


def _check_sink(sink: object, factory: SinkFactory) -> ExplanationSink | None:
    if sink is not None and not isinstance(sink, ExplanationSink):
        raise TypeError(
            f"`sinks_for`: the factory {factory!r} registered with `register_sink` returned "
            f"{type(sink).__name__}; expected an `ExplanationSink` (or None to skip the logger)."
        )
    return sink


def sinks_for(
    loggers: Iterable[object], *, fallback_dir: str | os.PathLike[str] | None = None
) -> list[ExplanationSink]:
    """The sinks that send rendered explanations to the given loggers.

    Dispatch, per logger (classes of ``lightning.pytorch.loggers`` and ``pytorch_lightning.loggers``
    alike, subclasses included, detected without importing any tracker):

    ============================== ============================================================
    logger                         sink
    ============================== ============================================================
    an ``ExplanationSink``         itself
    registered with register_sink  the registered factory's sink
    ``WandbLogger``                :class:`~lightning_explain.sinks.WandbSink`
    ``TensorBoardLogger``          :class:`~lightning_explain.sinks.TensorBoardSink`
    ``MLFlowLogger``               :class:`~lightning_explain.sinks.MLflowSink`
    ``CSVLogger``                  :class:`~lightning_explain.sinks.FileSink` under ``log_dir``
    anything else                  none, with a warning naming :func:`register_sink`
    ============================== ============================================================

    If no logger yields a sink and ``fallback_dir`` is given, the result is a single
    ``FileSink(fallback_dir)`` (pass ``trainer.default_root_dir`` for runs without a logger).
    File sinks writing to the same directory are merged.

    Args:
        loggers: the loggers, typically ``trainer.loggers``; sinks may be mixed in.
        fallback_dir: directory for PNG files when nothing else receives images. Default ``None``
            (no fallback).

    Returns:
        The sinks, in logger order.

    Raises:
        TypeError: if ``loggers`` is not an iterable, or a registered factory returns a non-sink.
        ModuleNotFoundError: if a logger's tracker package is missing (with the ``pip install``
            hint).
    """
    if isinstance(loggers, (str, bytes)) or not isinstance(loggers, Iterable):
        raise TypeError(
            f"`sinks_for`: expected a list of loggers (e.g. `trainer.loggers`), but got "
            f"{type(loggers).__name__}. Wrap a single logger in a list."
        )
    sinks: list[ExplanationSink] = []
    directories: set[Path] = set()
    for logger in loggers:
        known, sink = _sink_for(logger)
        if not known:
            warnings.warn(
                f"lightning-explain has no sink for `{type(logger).__name__}`, so explanation "
                f"images are not sent to it (its scalars still are). Write one and register it "
                f"with `lightning_explain.sinks.register_sink({type(logger).__name__}, factory)`.",
                UserWarning,
                stacklevel=2,
            )
            continue
        if sink is None:
            continue
        if isinstance(sink, FileSink):
            resolved = sink.directory.resolve()
            if resolved in directories:
                continue
            directories.add(resolved)
        sinks.append(sink)
    if not sinks and fallback_dir is not None:
        sinks.append(FileSink(fallback_dir))
    return sinks
