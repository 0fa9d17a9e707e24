"""The result type of the correspondence methods, and the grid conventions every part shares.

**Grids and positions.** An interaction is taken between the positions of two grids: a feature
map's ``(h, w)`` grid, a ViT's patch grid, or a grid of pixel patches. Position ``p`` of an
``(h, w)`` grid is the cell in row ``p // w`` and column ``p % w`` (row-major, as
``Tensor.flatten`` orders a ``(h, w)`` map). The cell covers the rows ``floor(r * H / h)`` to
``floor((r + 1) * H / h) - 1`` of an ``H x W`` input, and likewise for columns, so the cells of a
grid partition the image (:func:`cell_index_map`).

**Normalised coordinates.** Points are ``(u, v) = (x / W, y / H)`` in ``[0, 1]``, ``x`` to the
right and ``y`` down, with pixel ``(row, col)`` spanning ``[col, col + 1] x [row, row + 1]``. The
centre of cell ``(r, c)`` is ``((c + 0.5) / w, (r + 0.5) / h)`` (:func:`grid_centres`), the
``align_corners=False`` convention of the bilinear upsampling that turns the maps into heatmaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_explain._core import finalize_maps
from lightning_explain.explanation import PairExplanation

__all__ = ["Grid", "Matches", "PairInteraction", "cell_index_map", "grid_centres"]

Grid = tuple[int, int]
"""An ``(h, w)`` grid of positions."""


def grid_centres(grid: Grid, *, device: torch.device | str | None = None) -> Tensor:
    """Normalised centres of the cells of an ``(h, w)`` grid, in position order.

    Returns:
        ``(h * w, 2)`` float32 tensor of ``(u, v)`` points.

    Example:
        >>> grid_centres((1, 2)).tolist()
        [[0.25, 0.5], [0.75, 0.5]]
    """
    h, w = grid
    v = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
    u = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
    return torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1).reshape(h * w, 2)


def cell_index_map(
    grid: Grid, size: tuple[int, int], *, device: torch.device | str | None = None
) -> Tensor:
    """The grid position of every pixel of an ``(H, W)`` image.

    Returns:
        ``(H, W)`` int64 tensor with values in ``[0, h * w)``; pixel row ``y`` lies in grid row
        ``floor(y * h / H)``, so the cells partition the image (uneven by at most one pixel when
        ``h`` does not divide ``H``).

    Example:
        >>> cell_index_map((2, 2), (2, 4)).tolist()
        [[0, 0, 1, 1], [2, 2, 3, 3]]
    """
    h, w = grid
    height, width = size
    rows = torch.arange(height, device=device) * h // height
    cols = torch.arange(width, device=device) * w // width
    return rows[:, None] * w + cols[None, :]


class Matches(NamedTuple):
    """The strongest matches of each pair (see :meth:`PairInteraction.top_matches`).

    Attributes:
        i1: ``(B, k)`` int64 positions in the grid of image 1.
        i2: ``(B, k)`` int64 positions in the grid of image 2.
        strength: ``(B, k)`` raw interactions of those position pairs, strongest first.
    """

    i1: Tensor
    i2: Tensor
    strength: Tensor


@dataclass(frozen=True)
class PairInteraction:
    """How strongly each position of image 1 interacts with each position of image 2.

    ``interaction[b, i, j]`` is the share of the similarity ``sim[b]`` that comes from position
    ``i`` of image 1 together with position ``j`` of image 2. For the models a method is exact for
    (see :func:`~lightning_explain.correspondence.point_to_point`), the entries of a pair sum to
    its similarity; otherwise they sum to its gradient linearisation (:attr:`total`).

    **Normalisation.** The raw, signed interactions are kept: their sum is what is conserved, and
    their sign says whether a pair of positions raises or lowers the similarity. The marginals
    (:meth:`marginals`) are the row sums (image 1) and column sums (image 2), i.e. each
    position's net contribution to the similarity, clamped at zero, upsampled and scaled to max
    1 as every heatmap of the package. The sum is taken *before* the clamp so that a position
    whose positive and negative interactions cancel contributes nothing, as it does to the
    similarity; clamping keeps what raises the similarity, as Grad-CAM's ReLU does, and gives
    maps that every existing metric and renderer accepts.

    Attributes:
        interaction: ``(B, h1 * w1, h2 * w2)`` float32 interactions (raw, signed).
        grid1: ``(h1, w1)`` grid of image 1 (positions in row-major order).
        grid2: ``(h2, w2)`` grid of image 2.
        sim: ``(B,)`` similarity of the unperturbed pairs.
        size: ``(H, W)`` input resolution of the images (for the marginals and the geometry).
    """

    interaction: Tensor
    grid1: Grid
    grid2: Grid
    sim: Tensor
    size: tuple[int, int]

    def __post_init__(self) -> None:
        for name in ("grid1", "grid2", "size"):
            value = getattr(self, name)
            if (
                not isinstance(value, tuple)
                or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
            ):
                raise ValueError(
                    f"`PairInteraction`: expected `{name}` to be a pair of positive ints, but got "
                    f"{value!r}."
                )
        r, sim = self.interaction, self.sim
        n1, n2 = self.grid1[0] * self.grid1[1], self.grid2[0] * self.grid2[1]
        if not isinstance(r, Tensor) or r.ndim != 3 or tuple(r.shape[1:]) != (n1, n2):
            shape = tuple(r.shape) if isinstance(r, Tensor) else type(r).__name__
            raise ValueError(
                f"`PairInteraction`: expected `interaction` of shape (B, {n1}, {n2}) for grids "
                f"{self.grid1} and {self.grid2}, but got {shape}."
            )
        if not isinstance(sim, Tensor) or tuple(sim.shape) != (r.shape[0],):
            shape = tuple(sim.shape) if isinstance(sim, Tensor) else type(sim).__name__
            raise ValueError(
                f"`PairInteraction`: expected `sim` of shape ({r.shape[0]},), but got {shape}."
            )

    def __len__(self) -> int:
        return int(self.sim.shape[0])

    @property
    def total(self) -> Tensor:
        """``(B,)`` sum of the interactions of each pair; equals :attr:`sim` for exact models."""
        return self.interaction.sum(dim=(1, 2))

    def raw_marginals(self) -> tuple[Tensor, Tensor]:
        """Signed row and column sums on the grids: ``(B, h1, w1)`` and ``(B, h2, w2)``."""
        b = self.interaction.shape[0]
        m1 = self.interaction.sum(dim=2).reshape(b, *self.grid1)
        m2 = self.interaction.sum(dim=1).reshape(b, *self.grid2)
        return m1, m2

    def marginals(self, size: tuple[int, int] | None = None) -> PairExplanation:
        """The two marginals as ordinary heatmaps.

        Args:
            size: ``(H, W)`` of the heatmaps. Default: :attr:`size`, the input resolution.

        Returns:
            :class:`~lightning_explain.PairExplanation` with ``h1``, ``h2`` of shape ``(B, H, W)``:
            positive part of the row (column) sums, bilinearly upsampled, each map scaled to max 1
            (all-zero maps stay zero; see :func:`lightning_explain._core.finalize_maps`).
        """
        out = self.size if size is None else (int(size[0]), int(size[1]))
        m1, m2 = self.raw_marginals()
        return PairExplanation(finalize_maps(m1, out), finalize_maps(m2, out), self.sim.float())

    def top_matches(self, k: int, *, distinct: bool = False) -> Matches:
        """The ``k`` strongest position pairs of each pair (largest raw interaction first).

        Args:
            k: number of matches; capped at the number of candidates.
            distinct: at most one match per position of image 2 (its best match in image 1), so
                that one strong position of image 2 cannot take every line of a rendering.

        Returns:
            :class:`Matches` with ``(B, k)`` tensors.

        Example:
            >>> import torch
            >>> r = torch.tensor([[[0.0, 3.0], [2.0, 1.0]]])
            >>> m = PairInteraction(r, (1, 2), (1, 2), r.sum((1, 2)), (4, 4)).top_matches(2)
            >>> m.i1.tolist(), m.i2.tolist(), m.strength.tolist()
            ([[0, 1]], [[1, 0]], [[3.0, 2.0]])
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"`PairInteraction.top_matches`: expected `k` >= 1, but got {k!r}.")
        r = self.interaction
        n2 = r.shape[2]
        if distinct:
            best, i1 = r.max(dim=1)  # (B, n2): best position of image 1 for every position j
            strength, i2 = best.topk(min(k, n2), dim=1)
            return Matches(i1.gather(1, i2), i2, strength)
        strength, flat = r.flatten(1).topk(min(k, r.shape[1] * n2), dim=1)
        return Matches(flat // n2, flat % n2, strength)

    def to(self, device: torch.device | str) -> PairInteraction:
        """Return a copy with every tensor on ``device``."""
        return PairInteraction(
            self.interaction.to(device), self.grid1, self.grid2, self.sim.to(device), self.size
        )

    def swap(self) -> PairInteraction:
        """The interaction of the swapped pair ``(x2, x1)``: the matrix transposed, grids exchanged."""
        return PairInteraction(
            self.interaction.transpose(1, 2).contiguous(),
            self.grid2,
            self.grid1,
            self.sim,
            self.size,
        )
