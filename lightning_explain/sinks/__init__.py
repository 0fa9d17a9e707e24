"""Sinks: send rendered explanations (images, figures, tables) to experiment trackers and files.

Use :func:`sinks_for` with ``trainer.loggers`` to get one sink per logger; add other trackers with
:func:`register_sink`. The tracker packages are imported only when their sink is used.
"""

from __future__ import annotations

from lightning_explain.sinks.base import ExplanationSink, check_image, check_table
from lightning_explain.sinks.dispatch import (
    SinkFactory,
    register_sink,
    registered_sinks,
    sinks_for,
    unregister_sink,
)
from lightning_explain.sinks.files import FileSink
from lightning_explain.sinks.mlflow import MLflowSink
from lightning_explain.sinks.tensorboard import TensorBoardSink
from lightning_explain.sinks.wandb import WandbSink

__all__ = [
    "ExplanationSink",
    "FileSink",
    "MLflowSink",
    "SinkFactory",
    "TensorBoardSink",
    "WandbSink",
    "check_image",
    "check_table",
    "register_sink",
    "registered_sinks",
    "sinks_for",
    "unregister_sink",
]
