"""What is explained: the probe pairs, the labelled kNN images, and drawing them from datasets.

* :class:`ProbeSet` / :func:`draw_probe_set`: a small, fixed batch of image pairs, drawn once with
  a seed and kept as tensors, so that every evaluation of a run (a resumed run, a later
  comparison of checkpoints) explains exactly the same pairs.
* :class:`KNNSet` / :func:`draw_knn_set`: the labelled bank and query images of the online kNN
  probe (see :mod:`lightning_explain.downstream`), stored with the probe set.
* :class:`ProbeSettings` / :class:`KNNSettings`: how the callback draws them;
  :class:`ProbeSource`: its draw / restore / load policy; :func:`trainer_dataset`: the datasets
  of a Trainer.
"""

from lightning_explain.data.knn import KNN_FORMAT, KNNSet, draw_knn_set
from lightning_explain.data.probe import (
    PAIRINGS,
    PROBE_FORMAT,
    Pairing,
    ProbeSet,
    default_clean_transform,
    draw_probe_set,
    find_normalize,
    hash_settings,
)
from lightning_explain.data.sources import (
    KNNSettings,
    ProbeSettings,
    ProbeSource,
    TransformSpec,
    first_dataset,
    trainer_dataset,
)

__all__ = [
    "KNN_FORMAT",
    "PAIRINGS",
    "PROBE_FORMAT",
    "KNNSet",
    "KNNSettings",
    "Pairing",
    "ProbeSet",
    "ProbeSettings",
    "ProbeSource",
    "TransformSpec",
    "default_clean_transform",
    "draw_knn_set",
    "draw_probe_set",
    "find_normalize",
    "first_dataset",
    "hash_settings",
    "trainer_dataset",
]
