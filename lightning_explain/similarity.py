"""Pair similarity objectives: the scalar per pair that every method explains.

The paper explains the cosine similarity of the two embeddings for every model, including models
that are not trained on cosine (Barlow Twins, SimSiam). ``"dot"`` and ``"neg_l2"`` are offered for
models whose loss uses those geometries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SimilarityFn", "SimilarityName", "list_similarities", "resolve_similarity"]

SimilarityName = Literal["cosine", "dot", "neg_l2"]
SimilarityFn = Callable[[Tensor, Tensor], Tensor]
"""``(z1, z2) -> sim``: two ``(N, D)`` embedding batches to ``(N,)`` similarities."""


def cosine(z1: Tensor, z2: Tensor) -> Tensor:
    """Cosine similarity per row, ``(N, D), (N, D) -> (N,)``."""
    return F.cosine_similarity(z1, z2, dim=1, eps=1e-8)


def dot(z1: Tensor, z2: Tensor) -> Tensor:
    """Dot product per row, ``(N, D), (N, D) -> (N,)``."""
    return (z1 * z2).sum(dim=1)


def neg_l2(z1: Tensor, z2: Tensor) -> Tensor:
    """Negative Euclidean distance per row, ``(N, D), (N, D) -> (N,)``."""
    dist: Tensor = torch.linalg.vector_norm(z1 - z2, dim=1)
    return -dist


_SIMILARITIES: dict[str, SimilarityFn] = {"cosine": cosine, "dot": dot, "neg_l2": neg_l2}


def list_similarities() -> list[str]:
    """Names accepted by the ``similarity`` argument."""
    return sorted(_SIMILARITIES)


def resolve_similarity(similarity: Union[str, SimilarityFn]) -> SimilarityFn:
    """Turn a similarity name (or a callable ``(z1, z2) -> (N,)``) into a callable.

    Raises:
        ValueError: for an unknown name; the message lists the valid names.
        TypeError: for something that is neither a string nor a callable.
    """
    if isinstance(similarity, str):
        try:
            return _SIMILARITIES[similarity]
        except KeyError:
            raise ValueError(
                f"Expected `similarity` to be one of {list_similarities()} or a callable "
                f"(z1, z2) -> (N,), but got {similarity!r}."
            ) from None
    if callable(similarity):
        return similarity
    raise TypeError(
        f"Expected `similarity` to be a name in {list_similarities()} or a callable, "
        f"but got {type(similarity).__name__}."
    )
