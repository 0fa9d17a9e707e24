"""Correspondence explanations: which part of image 1 the model matches with which part of image 2.

Every method of :mod:`lightning_explain.methods` answers "which pixels of each image matter"; the
methods here answer the question a contrastive model is trained on: which position of view 1 is
matched with which position of view 2. They return a :class:`PairInteraction`, an interaction
matrix between the positions of the two images whose marginals are ordinary heatmaps, and they
are checked against the geometry of the augmentations that made the views
(:class:`ViewGeometry`, :func:`correspondence_scores`) and by removing the matches
(:func:`match_faithfulness`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from lightning_explain.correspondence import explain_interactions, random_views
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> views = random_views(torch.rand(2, 3, 32, 32), seed=0)
    >>> r = explain_interactions(net, views.x1, views.x2, method="point_to_point")
    >>> scores = correspondence_scores(r, views.geometry)
    >>> tuple(r.interaction.shape), tuple(scores.accuracy.shape)
    ((2, 64, 64), (2,))
"""

from lightning_explain.correspondence._registry import (
    InteractionMethodInfo,
    get_interaction_method,
    interaction_method_info,
    list_interaction_methods,
)
from lightning_explain.correspondence._types import (
    Grid,
    Matches,
    PairInteraction,
    cell_index_map,
    grid_centres,
)
from lightning_explain.correspondence.geometry import (
    ViewGeometry,
    ViewPair,
    circular_shift,
    geometry_from_crops,
    random_views,
)
from lightning_explain.correspondence.methods import (
    Directions,
    InteractionSimilarity,
    Level,
    bilrp,
    explain_interactions,
    point_to_point,
)
from lightning_explain.correspondence.metrics import (
    CorrespondenceScores,
    MatchFaithfulness,
    correspondence_scores,
    match_accuracy,
    match_error_px,
    match_faithfulness,
)
from lightning_explain.correspondence.render import match_grid

__all__ = [
    "CorrespondenceScores",
    "Directions",
    "Grid",
    "InteractionMethodInfo",
    "InteractionSimilarity",
    "Level",
    "MatchFaithfulness",
    "Matches",
    "PairInteraction",
    "ViewGeometry",
    "ViewPair",
    "bilrp",
    "cell_index_map",
    "circular_shift",
    "correspondence_scores",
    "explain_interactions",
    "geometry_from_crops",
    "get_interaction_method",
    "grid_centres",
    "interaction_method_info",
    "list_interaction_methods",
    "match_accuracy",
    "match_error_px",
    "match_faithfulness",
    "match_grid",
    "point_to_point",
    "random_views",
]
