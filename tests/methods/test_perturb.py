"""The perturbation engine shared by occlusion and RISE: chunks covered by broadcast blocks, and
the images the model sees, checked bit for bit against images built one by one."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor, nn

from lightning_explain import explain
from lightning_explain._core import grid_blocks
from lightning_explain.methods.occlusion import erasing_boxes, window_starts
from lightning_explain.methods.rise import rise_mask_params, rise_masks
from tests.helpers import images
from tests.methods.test_occlusion import Centred, Counting


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_grid_blocks_cover_the_items_in_order(width: int) -> None:
    for lo, hi in itertools.combinations(range(4 * width + 2), 2):
        blocks = grid_blocks(lo, hi, width)
        covered = [r * width + c for rows, cols in blocks for r in range(rows.start, rows.stop)
                   for c in range(cols.start, cols.stop)]  # fmt: skip
        assert covered == list(range(lo, hi)), (lo, hi, blocks)
        assert len(blocks) <= 3
        assert all(rows.stop > rows.start and cols.stop > cols.start for rows, cols in blocks)


class Recording(Counting):
    """Counts the images of every forward batch and keeps a copy of them, in order."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return super().forward(x)


def _perturbed(model: Recording, n_intact: int) -> Tensor:
    return torch.cat(model.seen)[n_intact:]


def _by_variant(seen: Tensor, n_items: int, batch_size: int) -> tuple[Tensor, Tensor]:
    """Images of two variants per item, as the engine embeds them (each chunk holds its items'
    first images, then their second images), regrouped into all first and all second images."""
    per_chunk = max(1, batch_size // 2)
    first, second, at = [], [], 0
    for start in range(0, n_items, per_chunk):
        k = min(per_chunk, n_items - start)
        first.append(seen[at : at + k])
        second.append(seen[at + k : at + 2 * k])
        at += 2 * k
    assert at == len(seen)
    return torch.cat(first), torch.cat(second)


def _window_reference(x: Tensor, window: int, stride: int, fill: float, inside: bool) -> Tensor:
    """Per window position (row-major), per image: the image with the window set to ``fill``
    (``inside=False``), or everything but the window set to ``fill`` (``inside=True``)."""
    out = []
    for top in window_starts(x.shape[2], window, stride):
        for left in window_starts(x.shape[3], window, stride):
            for img in x:
                window_only = torch.full_like(img, fill)
                window_only[:, top : top + window, left : left + window] = img[
                    :, top : top + window, left : left + window
                ]
                filled = img.clone()
                filled[:, top : top + window, left : left + window] = fill
                out.append(window_only if inside else filled)
    return torch.stack(out)


# Chunks of 1, of fewer images than one window position has (2 pairs = 4 images), of a number
# that splits positions, and of all positions at once.
BATCH_SIZES = [1, 3, 6, 1000]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_conditional_occlusion_images_are_exactly_the_image_or_the_fill(batch_size: int) -> None:
    x1, x2 = images(2, 3, 12, 10, seed=1), images(2, 3, 12, 10, seed=2)
    model = Recording(Centred())
    explain(model, x1, x2, method="conditional_occlusion", window=4, stride=3, fill=0.25,
            batch_size=batch_size)  # fmt: skip
    expected = _window_reference(torch.cat([x1, x2]), 4, 3, 0.25, inside=False)
    assert torch.equal(_perturbed(model, 4), expected)
    assert max(model.batches) <= batch_size


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_context_agnostic_images_are_exactly_the_window_alone_and_the_image_without_it(
    batch_size: int,
) -> None:
    x1, x2 = images(2, 3, 12, 10, seed=1), images(2, 3, 12, 10, seed=2)
    model = Recording(Centred())
    explain(model, x1, x2, method="context_agnostic_occlusion", window=4, stride=3, fill=0.25,
            estimator="paper", batch_size=batch_size)  # fmt: skip
    x = torch.cat([x1, x2])
    alone = _window_reference(x, 4, 3, 0.25, inside=True)
    without = _window_reference(x, 4, 3, 0.25, inside=False)
    got_alone, got_without = _by_variant(_perturbed(model, 4), len(alone), batch_size)
    assert torch.equal(got_alone, alone)
    assert torch.equal(got_without, without)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_pairwise_occlusion_images_are_the_pairs_with_their_boxes_erased(batch_size: int) -> None:
    b, n, fill, seed = 2, 5, 0.3, 4
    x1, x2 = images(b, 3, 14, 12, seed=1), images(b, 3, 14, 12, seed=2)
    model = Recording(Centred())
    scale, ratio = (0.05, 0.4), (0.5, 2.0)
    explain(model, x1, x2, method="pairwise_occlusion", n_erasures=n, fill=fill, seed=seed,
            scale=scale, ratio=ratio, batch_size=batch_size)  # fmt: skip
    top, left, h, w = erasing_boxes(
        torch.Generator().manual_seed(seed), (2, b, n), (14, 12), scale, ratio
    )
    erased = torch.empty(2, b, n, 3, 14, 12)
    for side, x in enumerate((x1, x2)):
        for i, k in itertools.product(range(b), range(n)):
            y = x[i].clone()
            t, lf = int(top[side, i, k]), int(left[side, i, k])
            y[:, t : t + int(h[side, i, k]), lf : lf + int(w[side, i, k])] = fill
            erased[side, i, k] = y
    # Items are (pair, erasure), pair-major, with an erased x1 and an erased x2 each.
    got1, got2 = _by_variant(_perturbed(model, 2 * b), b * n, batch_size)
    assert torch.equal(got1, erased[0].flatten(0, 1))
    assert torch.equal(got2, erased[1].flatten(0, 1))


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_rise_images_are_the_images_times_their_masks(batch_size: int) -> None:
    x1, x2 = images(2, 3, 12, 10, seed=1), images(2, 3, 12, 10, seed=2)
    model = Recording(Centred())
    explain(model, x1, x2, method="rise", n_masks=7, cell=4, p_keep=0.5, seed=3,
            batch_size=batch_size)  # fmt: skip
    grids, shifts = rise_mask_params(torch.Generator().manual_seed(3), 7, 4, 0.5, (12, 10))
    masks = rise_masks(grids, shifts, (12, 10))  # (7, H, W)
    x = torch.cat([x1, x2])
    expected = (x.unsqueeze(0) * masks[:, None, None]).flatten(0, 1)  # mask-major
    assert torch.equal(_perturbed(model, 4), expected)
