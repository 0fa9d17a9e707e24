"""Insertion and deletion for image pairs (after Petsiuk et al., RISE, BMVC 2018), adapted to pairs
by Sammani et al., "Visualizing and Understanding Contrastive Learning" (IEEE TIP; arXiv 2206.09753).

Pixels are ranked by their own image's heatmap (descending). Each of ``n_steps`` steps moves the
next ``ceil(H*W / n_steps)`` pixels (all channels) from a start image to a finish image, and the
curve records the pair similarity after each step. The score is the trapezoid area under that
curve with the x-axis scaled to [0, 1].
"""

from __future__ import annotations

from typing import Literal, Union, overload

from torch import Tensor

from lightning_explain._core import Model, check_positive_int, pair_context
from lightning_explain.metrics.functional._common import (
    Comparison,
    Mode,
    Substrate,
    Track,
    auc,
    blur,
    check_mode,
    make_substrate,
    perturbation_curves,
    pixel_ranks,
    prepare_map,
    resolve_batch_size,
)
from lightning_explain.similarity import SimilarityFn

__all__ = ["deletion", "insertion"]


def _run(
    kind: Literal["insertion", "deletion"],
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None,
    *,
    mode: str,
    n_steps: int,
    substrate: object,
    corrected: bool,
    similarity: Union[str, SimilarityFn],
    batch_size: int | None,
) -> tuple[Tensor, Tensor]:
    owner = kind
    mode = check_mode(mode, owner=owner)
    n_steps = check_positive_int(n_steps, name="n_steps", owner=owner)
    if not isinstance(corrected, bool):
        raise TypeError(f"`{owner}`: expected `corrected` to be a bool, but got {corrected!r}.")
    if corrected:
        if mode != "simultaneous":
            raise ValueError(
                f"`{owner}`: `corrected=True` only applies to mode='simultaneous' (conditional "
                "deletion keeps one image intact and has no identical-endpoint artifact), but got "
                f"mode={mode!r}. Pass `substrate='blur'` for blur deletion in conditional mode."
            )
        if substrate not in ("zero", "blur"):
            raise ValueError(
                f"`{owner}`: `corrected=True` deletes towards each image's own blurred version; "
                f"do not combine it with `substrate={substrate!r}`."
            )
    if mode == "simultaneous" and h2 is None:
        raise ValueError(
            f"`{owner}`: mode='simultaneous' perturbs both images, so it needs `h2`, but got None."
        )
    with pair_context(model, x1, x2, similarity=similarity, owner=owner) as ctx:
        chunk = resolve_batch_size(batch_size, ctx)
        map1 = prepare_map(h1, ctx.x1, name="h1", owner=owner)
        map2 = None if h2 is None else prepare_map(h2, ctx.x2, name="h2", owner=owner)
        images = [ctx.x1] if mode == "conditional" else [ctx.x1, ctx.x2]
        maps = [map1] if map2 is None or mode == "conditional" else [map1, map2]
        tracks = []
        for x, h in zip(images, maps):
            if kind == "insertion":
                start, finish = make_substrate(x, substrate, owner=owner), x
            elif corrected:
                start, finish = x, blur(x)
            else:
                start, finish = x, make_substrate(x, substrate, owner=owner)
            tracks.append(Track(start=start, finish=finish, rank=pixel_ranks(h)))
        if mode == "simultaneous":
            comparisons = [Comparison(track=0, other=1)]
        else:
            condition = ctx.embed_chunked(ctx.x2, chunk)
            comparisons = [Comparison(track=0, condition=condition)]
        (curve,) = perturbation_curves(ctx, tracks, comparisons, n_steps=n_steps, batch_size=chunk)
    curve = curve.clone()  # an ordinary tensor, usable in autograd code of the caller
    return auc(curve), curve


@overload
def insertion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = ...,
    *,
    mode: Mode = ...,
    n_steps: int = ...,
    substrate: Substrate = ...,
    similarity: Union[str, SimilarityFn] = ...,
    batch_size: int | None = ...,
    return_curve: Literal[False] = ...,
) -> Tensor: ...
@overload
def insertion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = ...,
    *,
    mode: Mode = ...,
    n_steps: int = ...,
    substrate: Substrate = ...,
    similarity: Union[str, SimilarityFn] = ...,
    batch_size: int | None = ...,
    return_curve: Literal[True],
) -> tuple[Tensor, Tensor]: ...
def insertion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = None,
    *,
    mode: Mode = "simultaneous",
    n_steps: int = 224,
    substrate: Substrate = "blur",
    similarity: Union[str, SimilarityFn] = "cosine",
    batch_size: int | None = None,
    return_curve: bool = False,
) -> Union[Tensor, tuple[Tensor, Tensor]]:
    """Insertion score of each pair: how fast the similarity recovers when the most salient pixels
    are restored first (higher is better).

    Start: the substrate image (default: the blurred image, Gaussian k=11, sigma=5). Each step
    restores the next ``ceil(H*W / n_steps)`` original pixels of highest saliency (ranked by the
    image's own map, descending; ties in raster order). After ``n_steps`` steps the image is intact.

    * ``mode="simultaneous"`` (the paper's SI): both images are restored at each step, each by
      its own map; curve ``s_t = sim(f(x1_t), f(x2_t))``.
    * ``mode="conditional"`` (CI): only ``x1`` is restored by ``h1``; ``x2`` stays intact and is
      embedded once; ``s_t = sim(f(x1_t), f(x2))``. Call with swapped arguments for the other side
      (:func:`lightning_explain.metrics.evaluate` averages both directions).

    Score: ``(sum_t s_t - s_0 / 2 - s_T / 2) / T`` with ``T = n_steps`` (the trapezoid area over
    x in [0, 1]).

    Args:
        model: ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        h1: ``(B, h, w)`` map of ``x1`` (``h <= H``, ``w <= W``; lower resolutions, e.g. a 7x7
            CAM, are upsampled bilinearly first).
        h2: ``(B, h, w)`` map of ``x2``; required in simultaneous mode, unused in conditional mode.
        mode: ``"simultaneous"`` (default) or ``"conditional"``.
        n_steps: number of steps ``T`` (default 224, the paper's value at 224 px); the curve has
            ``T + 1`` points.
        substrate: start image: ``"blur"`` (default), ``"zero"``, ``"mean"`` (per-channel mean)
            or a constant.
        similarity: ``"cosine"`` (default, the paper's), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass. Default None: chosen from the device's memory
            (CPU: a 256 MiB activation budget, at most 256 images: 256 at 32 px, 6 at 224 px;
            CUDA: a quarter of the free memory, at most 1024).
        return_curve: also return the ``(B, n_steps + 1)`` curve.

    Returns:
        ``(B,)`` scores, or ``(scores, curve)`` with ``return_curve=True``.

    Cost:
        ``n_steps + 1`` forwards per perturbed image: ``2 * (n_steps + 1)`` per pair in
        simultaneous mode, ``n_steps + 2`` (the intact condition once) in conditional mode; all
        in chunked batches of ``batch_size`` images under ``torch.inference_mode``.

    Raises:
        ValueError: malformed images or maps (shape mismatch, NaN), unknown ``mode`` or
            ``substrate``, ``n_steps < 1``, missing ``h2`` in simultaneous mode.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_explain.metrics import insertion
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> x1, x2 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> h1, h2 = torch.rand(2, 16, 16), torch.rand(2, 16, 16)
        >>> scores, curve = insertion(net, x1, x2, h1, h2, n_steps=8, return_curve=True)
        >>> tuple(scores.shape), tuple(curve.shape)
        ((2,), (2, 9))
    """
    scores, curve = _run(
        "insertion",
        model,
        x1,
        x2,
        h1,
        h2,
        mode=mode,
        n_steps=n_steps,
        substrate=substrate,
        corrected=False,
        similarity=similarity,
        batch_size=batch_size,
    )
    return (scores, curve) if return_curve else scores


@overload
def deletion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = ...,
    *,
    mode: Mode = ...,
    n_steps: int = ...,
    substrate: Substrate = ...,
    corrected: bool = ...,
    similarity: Union[str, SimilarityFn] = ...,
    batch_size: int | None = ...,
    return_curve: Literal[False] = ...,
) -> Tensor: ...
@overload
def deletion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = ...,
    *,
    mode: Mode = ...,
    n_steps: int = ...,
    substrate: Substrate = ...,
    corrected: bool = ...,
    similarity: Union[str, SimilarityFn] = ...,
    batch_size: int | None = ...,
    return_curve: Literal[True],
) -> tuple[Tensor, Tensor]: ...
def deletion(
    model: Model,
    x1: Tensor,
    x2: Tensor,
    h1: Tensor,
    h2: Tensor | None = None,
    *,
    mode: Mode = "simultaneous",
    n_steps: int = 224,
    substrate: Substrate = "zero",
    corrected: bool = False,
    similarity: Union[str, SimilarityFn] = "cosine",
    batch_size: int | None = None,
    return_curve: bool = False,
) -> Union[Tensor, tuple[Tensor, Tensor]]:
    """Deletion score of each pair: how fast the similarity falls when the most salient pixels are
    removed first (lower is better).

    Start: the image. Each step overwrites the next ``ceil(H*W / n_steps)`` most salient pixels
    (ranked by the image's own map, descending; ties in raster order) with the substrate
    (default ``"zero"``, the paper's: black for [0, 1] inputs, the dataset mean for normalised
    inputs). Modes, curve and score as in :func:`insertion`.

    **Simultaneous-deletion artifact.** With a shared substrate the two fully deleted images are
    identical, so the simultaneous curve ends at similarity 1 (cosine) whatever the maps; the
    rising tail inflates the scores and rewards maps that make both images reach the substrate
    early. ``corrected=True`` (registry key ``deletion_simultaneous_corrected``; simultaneous mode
    only) deletes each image towards *its own* blurred version (k=11, sigma=5) instead: the
    endpoints stay two different images, the final similarity is ``sim(f(blur(x1)), f(blur(x2)))``
    (the start of simultaneous insertion), and the deleted pixels stay in the image distribution.
    Subtracting the endpoint similarity alone would not help: it does not depend on the maps, so
    it shifts every method's score by the same amount per pair. This variant is our addition, not
    the paper's.

    Args:
        model: ``nn.Module`` or callable mapping ``(N, C, H, W)`` images to ``(N, D)`` embeddings.
        x1: ``(B, C, H, W)`` first images.
        x2: ``(B, C, H, W)`` second images.
        h1: ``(B, h, w)`` map of ``x1`` (upsampled bilinearly if smaller than the image).
        h2: ``(B, h, w)`` map of ``x2``; required in simultaneous mode, unused in conditional mode.
        mode: ``"simultaneous"`` (default) or ``"conditional"``.
        n_steps: number of steps (default 224).
        substrate: the value deleted pixels take: ``"zero"`` (default), ``"blur"``, ``"mean"`` or a
            constant.
        corrected: delete towards each image's own blurred version (see above). Default False.
        similarity: ``"cosine"`` (default), ``"dot"``, ``"neg_l2"`` or a callable.
        batch_size: images per forward pass (default as in :func:`insertion`).
        return_curve: also return the ``(B, n_steps + 1)`` curve.

    Returns:
        ``(B,)`` scores, or ``(scores, curve)`` with ``return_curve=True``.

    Cost:
        As :func:`insertion`: ``n_steps + 1`` forwards per perturbed image.

    Raises:
        ValueError: as :func:`insertion`; also ``corrected=True`` with conditional mode or with a
            substrate other than the default.
    """
    scores, curve = _run(
        "deletion",
        model,
        x1,
        x2,
        h1,
        h2,
        mode=mode,
        n_steps=n_steps,
        substrate=substrate,
        corrected=corrected,
        similarity=similarity,
        batch_size=batch_size,
    )
    return (scores, curve) if return_curve else scores
