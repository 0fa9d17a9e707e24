"""Pairwise faithfulness metrics of Sammani et al., "Visualizing and Understanding Contrastive
Learning" (IEEE TIP; arXiv 2206.09753): insertion, deletion, average drop / increase and
max-sensitivity, adapted to pairs (simultaneous and conditional modes).

* Functional core: :func:`insertion`, :func:`deletion`, :func:`average_drop`,
  :func:`average_increase`, :func:`max_sensitivity`, each returning ``(B,)`` per-pair scores.
* :func:`evaluate`: several metrics by registry key in shared, chunked forward passes.
* Registry: :func:`list_metrics`, :func:`metric_info` (``higher_is_better``, cost).
* torchmetrics classes (DDP-synced means): :class:`Insertion`, :class:`Deletion`,
  :class:`AverageDrop`, :class:`AverageIncrease`, :class:`MaxSensitivity`.
* :data:`Direction`: which image a conditional metric perturbs (``"both"``, the default
  everywhere: the mean of both directions; ``"x1"``; ``"x2"``).

The maths of each family lives once, in ``metrics/functional/<family>.py``; the functions, the
classes and :func:`evaluate` all run it through the same helpers.
"""

from lightning_explain.metrics._evaluate import evaluate
from lightning_explain.metrics._registry import (
    DEFAULT_METRICS,
    MetricInfo,
    list_metrics,
    metric_info,
)
from lightning_explain.metrics.drop_increase import AverageDrop, AverageIncrease
from lightning_explain.metrics.functional import (
    average_drop,
    average_increase,
    deletion,
    insertion,
    max_sensitivity,
)
from lightning_explain.metrics.functional._common import Direction
from lightning_explain.metrics.insertion_deletion import Deletion, Insertion
from lightning_explain.metrics.sensitivity import MaxSensitivity

__all__ = [
    "DEFAULT_METRICS",
    "AverageDrop",
    "AverageIncrease",
    "Deletion",
    "Direction",
    "Insertion",
    "MaxSensitivity",
    "MetricInfo",
    "average_drop",
    "average_increase",
    "deletion",
    "evaluate",
    "insertion",
    "list_metrics",
    "max_sensitivity",
    "metric_info",
]
