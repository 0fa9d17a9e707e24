"""Shared machinery of every method and metric: input checks, the pair context, map finishing.

Every public method and metric opens a :func:`pair_context`. Inside it the inputs have been
validated (shape, dtype, device) and replaced by detached clones that are ordinary
(non-inference) tensors, so gradients can be taken even when the caller is under
``torch.inference_mode()``, and the body runs under the guest guard of
:func:`lightning_explain._guard.guest` (eval mode with every submodule's flag restored, gradients
on, the global RNGs forked, no hooks left behind). Methods draw their own randomness from
:meth:`PairContext.generator`.

Gradients are only ever taken with :func:`torch.autograd.grad` with respect to inputs or
activations, so parameter ``.grad`` buffers are never written.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Union, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_explain._checks import check_batch_size, check_positive_int, describe
from lightning_explain._guard import guest
from lightning_explain._perf import (
    AUTOGRAD_BYTES_PER_INPUT_BYTE,
    BYTES_PER_INPUT_BYTE,
    activation_bytes,
    auto_batch_size,
    autocast_forward,
    tuned_batch_size,
    tuning_enabled,
)
from lightning_explain.explanation import PairExplanation
from lightning_explain.similarity import SimilarityFn, resolve_similarity

__all__ = [
    "REFERENCE_SIZE",
    "Model",
    "PairContext",
    "check_batch_size",
    "check_embedding",
    "check_heatmap",
    "check_pair",
    "check_positive_int",
    "finalize_maps",
    "find_modules",
    "gaussian_blur",
    "grid_blocks",
    "guided_relu",
    "pair_context",
    "relative_blur",
    "relative_pixels",
    "removable_hooks",
    "upsample_maps",
]

Model = Union[nn.Module, Callable[[Tensor], Tensor]]
"""An embedding model: maps ``(B, C, H, W)`` images to ``(B, D)`` embeddings."""

# --------------------------------------------------------------------------------------------------
# Input validation


def check_pair(x1: object, x2: object, *, owner: str = "explain") -> tuple[Tensor, Tensor]:
    """Validate an image pair batch and return it.

    Raises:
        TypeError: if an input is not a floating-point tensor.
        ValueError: for a wrong number of dimensions, a shape or device mismatch, or an empty batch.
    """
    for name, x in (("x1", x1), ("x2", x2)):
        if not isinstance(x, Tensor):
            raise TypeError(
                f"`{owner}`: expected `{name}` to be a float tensor of shape (B, C, H, W), "
                f"but got {describe(x)}."
            )
        if not x.is_floating_point():
            raise TypeError(
                f"`{owner}`: expected `{name}` to be a floating-point tensor, but got dtype "
                f"{x.dtype}. Convert images with `x.float() / 255` or torchvision's `ToTensor`."
            )
        if x.ndim != 4:
            hint = " Add a batch dimension with `x.unsqueeze(0)`." if x.ndim == 3 else ""
            raise ValueError(
                f"`{owner}`: expected `{name}` of shape (B, C, H, W) (4 dimensions), but got "
                f"shape {tuple(x.shape)} ({x.ndim} dimensions).{hint}"
            )
    x1, x2 = cast(Tensor, x1), cast(Tensor, x2)
    if x1.shape != x2.shape:
        raise ValueError(
            f"`{owner}`: expected `x1` and `x2` to have the same shape (B, C, H, W), but got "
            f"{tuple(x1.shape)} and {tuple(x2.shape)}. Resize both views to one size."
        )
    if x1.device != x2.device:
        raise ValueError(
            f"`{owner}`: expected `x1` and `x2` on the same device, but got {x1.device} and "
            f"{x2.device}. Move both with `.to(device)`."
        )
    if x1.shape[0] == 0:
        raise ValueError(f"`{owner}`: expected at least one pair, but got an empty batch.")
    return x1, x2


def check_heatmap(h: object, x: Tensor, *, name: str, owner: str) -> Tensor:
    """Validate a ``(B, h, w)`` heatmap for image batch ``x``; return it as float on ``x``'s device.

    Lower-resolution maps are allowed (they are upsampled by the caller); the batch size must match.

    Raises:
        TypeError: if ``h`` is not a tensor.
        ValueError: for a wrong shape or non-finite values.
    """
    if not isinstance(h, Tensor):
        raise TypeError(f"`{owner}`: expected `{name}` to be a tensor, but got {describe(h)}.")
    if h.ndim == 4 and h.shape[1] == 1:
        h = h[:, 0]
    if h.ndim != 3 or h.shape[0] != x.shape[0]:
        raise ValueError(
            f"`{owner}`: expected `{name}` of shape (B, H, W) with B={x.shape[0]} (images are "
            f"{tuple(x.shape)}), but got shape {tuple(h.shape)}."
        )
    if h.shape[1] > x.shape[2] or h.shape[2] > x.shape[3]:
        raise ValueError(
            f"`{owner}`: expected `{name}` no larger than the images ({x.shape[2]}x{x.shape[3]}), "
            f"but got {h.shape[1]}x{h.shape[2]}."
        )
    h = h.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
    if not torch.isfinite(h).all():
        raise ValueError(
            f"`{owner}`: expected `{name}` to be finite, but it contains NaN or infinite values."
        )
    return h


# --------------------------------------------------------------------------------------------------
# Modules reachable from a model callable


def find_modules(model: object) -> list[nn.Module]:
    """Return the ``nn.Module`` objects a model callable runs: the model itself, the owner of a bound
    method, the function and arguments of a ``functools.partial``, and modules captured in a closure.
    """
    found: list[nn.Module] = []
    seen: set[int] = set()

    def visit(obj: object, depth: int) -> None:
        if depth > 3 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            found.append(obj)
            return
        if isinstance(obj, functools.partial):
            visit(obj.func, depth + 1)
            for a in (*obj.args, *obj.keywords.values()):
                visit(a, depth + 1)
            return
        owner = getattr(obj, "__self__", None)
        if owner is not None:
            visit(owner, depth + 1)
        closure = getattr(obj, "__closure__", None) or ()
        for cell in closure:
            try:
                visit(cell.cell_contents, depth + 1)
            except ValueError:  # empty cell
                continue

    visit(model, 0)
    return found


# --------------------------------------------------------------------------------------------------
# Hooks


@contextmanager
def removable_hooks() -> Iterator[list[RemovableHandle]]:
    """Collect hook handles in a list; every handle is removed on exit, also after an exception."""
    handles: list[RemovableHandle] = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


class _PositiveGradient(torch.autograd.Function):
    """Identity forward (a copy, so that later in-place operations are allowed); the backward
    passes on only the positive part of the gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


def _guide_output(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    return _PositiveGradient.apply(output) if isinstance(output, Tensor) else output


@contextmanager
def guided_relu(modules: Sequence[nn.Module], enabled: bool = True) -> Iterator[None]:
    """Guided backpropagation: every ``nn.ReLU`` passes back only the positive part of its gradient.

    As in the paper's code, only ``nn.ReLU`` modules are guided; functional ``F.relu`` calls are
    not. The gradient reaching each ReLU's output is clamped at 0 by a forward hook (the ReLU's
    own backward then masks it by its input), which equals the paper's backward hook on the ReLU's
    input gradient, ``clamp(g * 1[x > 0]) = clamp(g) * 1[x > 0]``. Forward hooks leave no mark on
    the module (full backward hooks would switch its backward-hook mode and clash with in-place
    ReLUs and with the user's own ``register_backward_hook``). Hooks are removed on exit, also
    after an exception.
    """
    if not enabled:
        yield
        return
    with removable_hooks() as handles:
        seen: set[int] = set()
        for root in modules:
            for m in root.modules():
                if isinstance(m, nn.ReLU) and id(m) not in seen:
                    seen.add(id(m))
                    handles.append(m.register_forward_hook(_guide_output))
        yield


# --------------------------------------------------------------------------------------------------
# Map post-processing


def grid_blocks(lo: int, hi: int, width: int) -> list[tuple[slice, slice]]:
    """Cover the items ``lo:hi`` of a row-major grid ``width`` items wide by rectangles, in order.

    Item ``i`` lies in row ``i // width``, column ``i % width`` (e.g. a pair and a step, a window
    position and an image). The rectangles ``(rows, columns)`` are at most three: the rest of a
    partial first row, the whole rows in between, the start of a partial last row. The items of
    each are ``rows x columns``, row-major, so the perturbation engines build a chunk's images
    with one broadcast kernel per rectangle on slices of their tensors instead of gathering them
    item by item.
    """
    blocks: list[tuple[slice, slice]] = []
    row, col = divmod(lo, width)
    end_row, end_col = divmod(hi, width)
    if row == end_row:
        return [(slice(row, row + 1), slice(col, end_col))] if end_col > col else []
    if col:
        blocks.append((slice(row, row + 1), slice(col, width)))
        row += 1
    if end_row > row:
        blocks.append((slice(row, end_row), slice(0, width)))
    if end_col:
        blocks.append((slice(end_row, end_row + 1), slice(0, end_col)))
    return blocks


def gaussian_blur(x: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """Gaussian blur of ``(..., H, W)`` maps or images (torchvision), the paper's k=11, sigma=5.

    On a CPU, float32 and bfloat16 ``(B, C, H, W)`` images with several channels are handed to
    torchvision in the channels-last memory format and the result is made contiguous again:
    torch's depthwise convolution on a CPU is faster in that format for those dtypes (measured by
    ``benchmarks/bench_chunks.py --overhead``, see ``docs/performance.md``), and the values are
    those of the contiguous call. Other dtypes (float64 and float16 run slower there) and other
    devices use the plain call.
    """
    from torchvision.transforms.v2.functional import gaussian_blur as tv_blur

    squeeze = x.ndim == 3
    images = x.unsqueeze(1) if squeeze else x
    channels_last = (
        images.device.type == "cpu"
        and images.dtype in (torch.float32, torch.bfloat16)
        and images.ndim == 4
        and images.shape[1] > 1
    )
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    y: Tensor = tv_blur(images, [kernel_size, kernel_size], [sigma, sigma])
    if channels_last:
        y = y.contiguous()
    return y.squeeze(1) if squeeze else y


REFERENCE_SIZE = 224
"""The image side the paper's pixel sizes are given for (its ``224 x 224`` inputs). Defaults in
pixels are scaled from it by the input's shorter side (:func:`relative_pixels`,
:func:`relative_blur`)."""


def relative_pixels(
    pixels: float, side: int, *, minimum: int = 1, reference: int = REFERENCE_SIZE
) -> int:
    """A length of ``pixels`` at ``reference`` px, scaled to an image whose shorter side is ``side``.

    ``max(minimum, round(pixels * side / reference))``; exactly ``pixels`` (when an int) at
    ``side == reference``.

    Example:
        >>> relative_pixels(64, 224), relative_pixels(64, 32, minimum=4), relative_pixels(8, 64)
        (64, 9, 2)
    """
    return max(minimum, round(pixels * side / reference))


def relative_blur(
    side: int,
    *,
    kernel: int = 11,
    sigma: float = 5.0,
    reference: int = REFERENCE_SIZE,
    minimum: int = 3,
) -> tuple[int, float]:
    """The Gaussian blur ``(kernel, sigma)`` given for ``reference`` px, scaled to ``side`` px.

    The kernel is ``kernel * side / reference`` rounded to the nearest odd integer (half-way
    between two, the larger), at least
    ``minimum`` (and at most ``2 * side - 1``, the largest that reflect padding allows); sigma is
    ``sigma * side / reference``. At ``side == reference`` both are returned unchanged, so
    the paper's ``k=11, sigma=5`` at 224 px stays bitwise the same.

    Example:
        >>> relative_blur(224), relative_blur(64), relative_blur(32)
        ((11, 5.0), (3, 1.4285714285714286), (3, 0.7142857142857143))
    """
    if side == reference:
        return min(kernel, max(1, 2 * side - 1)), sigma
    odd = 2 * math.floor(kernel * side / reference / 2) + 1  # the nearest odd size, ties up
    return min(max(minimum, odd), max(1, 2 * side - 1)), sigma * side / reference


def upsample_maps(h: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly upsample ``(B, h, w)`` maps to ``(B, H, W)``; no-op at the right size."""
    if tuple(h.shape[-2:]) == tuple(size):
        return h
    return F.interpolate(h.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def finalize_maps(h: Tensor, size: tuple[int, int], *, minmax: bool = False) -> Tensor:
    """Bring raw ``(B, h, w)`` maps to the public contract: ``(B, H, W)``, finite, ``>= 0``, max 1.

    Args:
        h: raw maps of any spatial size.
        size: the input resolution ``(H, W)``.
        minmax: min-max normalise (used by methods whose raw scores are signed, e.g. occlusion
            drops, as in the paper's code) instead of clamping negatives to zero.
    """
    h = h.detach().float()
    if minmax:
        low = h.flatten(1).amin(dim=1).view(-1, 1, 1)
        h = h - low
    h = upsample_maps(h.clamp(min=0), size).clamp(min=0)
    peak = h.flatten(1).amax(dim=1).view(-1, 1, 1)
    h = torch.where(peak > 0, h / peak.clamp(min=torch.finfo(h.dtype).tiny), torch.zeros_like(h))
    return torch.nan_to_num(h, nan=0.0, posinf=0.0, neginf=0.0)


# --------------------------------------------------------------------------------------------------
# The context every method and metric runs in


@dataclass
class PairContext:
    """What a method or metric sees inside :func:`pair_context`.

    Attributes:
        model: the embedding callable.
        modules: the ``nn.Module`` objects reachable from ``model`` (for hooks).
        x1: ``(B, C, H, W)`` detached, ordinary clone of the first images.
        x2: ``(B, C, H, W)`` detached, ordinary clone of the second images.
        similarity: ``(z1, z2) -> (N,)`` objective.
        owner: name used in error messages.
    """

    model: Callable[[Tensor], Tensor]
    modules: list[nn.Module]
    x1: Tensor
    x2: Tensor
    similarity: SimilarityFn
    owner: str

    @property
    def size(self) -> tuple[int, int]:
        """Input resolution ``(H, W)``."""
        return (int(self.x1.shape[2]), int(self.x1.shape[3]))

    @property
    def batch(self) -> int:
        """Number of pairs ``B``."""
        return int(self.x1.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x1.device

    def embed(self, x: Tensor) -> Tensor:
        """Run the model on ``(N, C, H, W)`` images and check that it returns finite ``(N, D)``."""
        z = self.model(x)
        return check_embedding(z, x, owner=self.owner)

    def embed_chunked(self, x: Tensor, batch_size: int, *, autocast: bool = True) -> Tensor:
        """Embed ``(N, C, H, W)`` images in chunks of ``batch_size``, without autograd.

        Inside :func:`lightning_explain.perturbation_autocast` the forwards run under autocast and
        the embeddings come back as float32 (unless ``autocast=False``: the targets of gradient
        methods stay in the caller's precision).
        """
        forward = functools.partial(autocast_forward, self.model) if autocast else self.model
        with torch.inference_mode():
            parts = [
                check_embedding(forward(c), c, owner=self.owner, finite=False)
                for c in torch.split(x, batch_size)
            ]
            z = parts[0] if len(parts) == 1 else torch.cat(parts)
            # Finite values checked once for all chunks (one device sync per call on CUDA).
            return check_embedding(z, x, owner=self.owner)

    def chunk_size(
        self, batch_size: int | None, *, autograd: bool = False, multiple: int = 1
    ) -> int:
        """``batch_size`` if given, else a default for these images on this device.

        The default is :func:`lightning_explain._perf.auto_batch_size` (CUDA: from the free
        memory, at most 1024; CPU: a 256 MiB activation budget, at most 256), with a doubled
        activation estimate for chunks that also run a backward pass (``autograd=True``). Inside
        :func:`lightning_explain._perf.chunk_tuning` the bound on CUDA comes from this model's
        measured activation memory (:func:`lightning_explain._perf.activation_bytes`, doubled for
        ``autograd``) where it can be measured (on a CPU the estimate stays: there the bound is a
        cache budget, not memory), and it is only the upper limit: the chunk is timed for this
        model by :func:`lightning_explain._perf.tuned_batch_size`. ``multiple``: the caller
        forwards this many images per item (e.g. 2 for both images of a pair), so the tuned
        chunk is a multiple of it (it may exceed the bound by fewer than ``multiple`` images).
        """
        if batch_size is not None:
            return batch_size
        per_byte = AUTOGRAD_BYTES_PER_INPUT_BYTE if autograd else BYTES_PER_INPUT_BYTE
        if not tuning_enabled():
            return auto_batch_size(
                self.device, tuple(self.x1.shape[1:]), dtype=self.x1.dtype,
                bytes_per_input_byte=per_byte,
            )  # fmt: skip
        key = self.modules[0] if self.modules else self.model
        # On CUDA the bound is memory, so the model's measured activations set it; on a CPU it
        # is a speed budget (larger chunks run slower per image once they outgrow the caches:
        # a tiny CNN at 224 px ran 3x slower in the measured bound's chunks of 78 than in 6).
        measured = (
            activation_bytes(self.embed, self.x1, key=key) if self.device.type == "cuda" else None
        )
        cap = auto_batch_size(
            self.device,
            tuple(self.x1.shape[1:]),
            dtype=self.x1.dtype,
            bytes_per_input_byte=per_byte,
            bytes_per_image=None if measured is None else measured * (2 if autograd else 1),
        )
        return tuned_batch_size(
            self.embed,
            torch.cat([self.x1, self.x2]),
            cap=cap,
            autograd=autograd,
            key=key,
            multiple=multiple,
        )

    def generator(self, seed: int) -> torch.Generator:
        """A fresh generator on the input device, seeded with ``seed``."""
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def finish(
        self, raw1: Tensor, raw2: Tensor, sim: Tensor, *, minmax: bool = False
    ) -> PairExplanation:
        """Post-process raw maps into a :class:`PairExplanation` (see :func:`finalize_maps`)."""
        return PairExplanation(
            h1=finalize_maps(raw1, self.size, minmax=minmax),
            h2=finalize_maps(raw2, self.size, minmax=minmax),
            sim=sim.detach().float(),
        )


def check_embedding(z: object, x: Tensor, *, owner: str, finite: bool = True) -> Tensor:
    """Check a model output: a finite floating ``(N, D)`` tensor with ``N == len(x)``.

    ``finite=False`` skips the finiteness check (a caller that checks many chunks at once: on
    CUDA the check waits for the device).

    Raises:
        TypeError: if the model does not return a tensor.
        ValueError: for a wrong shape or non-finite values.
    """
    if not isinstance(z, Tensor):
        hint = ""
        if isinstance(z, (tuple, list)):
            hint = (
                " The model returns several outputs; pass a callable that returns the embedding, "
                "e.g. `lambda x: model(x)[0]`."
            )
        raise TypeError(
            f"`{owner}`: expected `model` to return a (B, D) embedding tensor, but it returned "
            f"{describe(z)}.{hint}"
        )
    if z.ndim != 2 or z.shape[0] != x.shape[0]:
        hint = ""
        if z.ndim == 4 and z.shape[2:] == (1, 1):
            hint = " Flatten pooled features, e.g. `lambda x: model(x).flatten(1)`."
        elif z.ndim > 2:
            hint = " Pool or flatten the features to (B, D) in the model callable."
        raise ValueError(
            f"`{owner}`: expected `model` to map images of shape {tuple(x.shape)} to embeddings "
            f"of shape ({x.shape[0]}, D), but got shape {tuple(z.shape)}.{hint}"
        )
    if finite and not torch.isfinite(z).all():
        raise ValueError(
            f"`{owner}`: the model returned non-finite embeddings (NaN or inf) for inputs of shape "
            f"{tuple(x.shape)}. Check the model weights and the input normalisation."
        )
    return z


_MISMATCH_MARKERS = (
    "should be the same",
    "same dtype",
    "expected scalar type",
    "same device",
    "Expected all tensors",
)


def _parameter(modules: Sequence[nn.Module]) -> Tensor | None:
    for m in modules:
        for p in m.parameters():
            if p.is_floating_point():
                return p
    return None


def _explained_errors(
    model: Callable[[Tensor], Tensor], modules: Sequence[nn.Module], owner: str
) -> Callable[[Tensor], Tensor]:
    """``model`` whose dtype and device mismatches with the images raise an error that names both
    and the fix, instead of torch's raw message."""

    def forward(x: Tensor) -> Tensor:
        try:
            return model(x)
        except RuntimeError as err:
            p = _parameter(modules)
            if p is None or not any(m in str(err) for m in _MISMATCH_MARKERS):
                raise
            if p.device != x.device:
                raise ValueError(
                    f"`{owner}`: the model's parameters are on {p.device} but the images are on "
                    f"{x.device}. Move the images with `x.to({str(p.device)!r})` (or the model "
                    f"with `model.to({str(x.device)!r})`)."
                ) from err
            if p.dtype != x.dtype:
                raise TypeError(
                    f"`{owner}`: the model's parameters are {p.dtype} but the images are "
                    f"{x.dtype}. Pass images of the model's dtype (`x.to({p.dtype})`), explain a "
                    f"float32 copy of the model (`copy.deepcopy(model).float()`), or run under "
                    f"`torch.autocast`."
                ) from err
            raise

    # The guest guard and the layer lookup find the modules through the closure.
    return forward


@contextmanager
def pair_context(
    model: Model,
    x1: object,
    x2: object,
    *,
    similarity: Union[str, SimilarityFn] = "cosine",
    owner: str = "explain",
) -> Iterator[PairContext]:
    """Validate inputs and run the body as a guest (see :func:`lightning_explain._guard.guest`).

    Raises:
        TypeError: if ``model`` is not callable or an input is not a float tensor.
        ValueError: for malformed inputs (see :func:`check_pair`) or an unknown similarity.
    """
    if not callable(model):
        raise TypeError(
            f"`{owner}`: expected `model` to be an nn.Module or a callable mapping (B, C, H, W) "
            f"images to (B, D) embeddings, but got {type(model).__name__}."
        )
    a, b = check_pair(x1, x2, owner=owner)
    sim_fn = resolve_similarity(similarity)
    modules = find_modules(model)
    with guest(modules, a.device):
        # Clones made outside inference mode are ordinary tensors that autograd accepts.
        yield PairContext(
            model=_explained_errors(model, modules, owner),
            modules=modules,
            x1=a.detach().clone(),
            x2=b.detach().clone(),
            similarity=sim_fn,
            owner=owner,
        )
