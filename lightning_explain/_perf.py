"""Performance helpers: a device-aware default for the number of images per forward pass.

Every perturbation method and metric runs its perturbed images through the model in chunks of
``batch_size`` images, so memory is bounded by the chunk whatever the number of pairs, steps or
masks. :func:`auto_batch_size` picks that chunk from the memory the device has free:

* CUDA: a fraction of the free device memory (``torch.cuda.mem_get_info`` plus the memory this
  process's caching allocator holds but does not use) divided by an activation estimate per
  image, capped at :data:`CUDA_CAP`. Reading these counters does not change the allocator state.
* CPU and other devices: a fixed memory budget (:data:`CPU_BUDGET_BYTES`) divided by the same
  estimate, capped at :data:`CPU_CAP`. On a CPU, chunks beyond a few dozen images gain little
  throughput (see ``docs/performance.md``), so the cap matters more than the memory estimate,
  except for large images (224 px: 55 images).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "BYTES_PER_INPUT_BYTE",
    "CPU_BUDGET_BYTES",
    "CPU_CAP",
    "CUDA_CAP",
    "CUDA_FREE_FRACTION",
    "auto_batch_size",
]

CUDA_CAP = 1024
"""Most images per forward pass on CUDA."""

CPU_CAP = 256
"""Most images per forward pass on CPU (and other non-CUDA devices)."""

CPU_BUDGET_BYTES = 2 * 1024**3
"""Activation memory a CPU chunk may use (by the :data:`BYTES_PER_INPUT_BYTE` estimate)."""

CUDA_FREE_FRACTION = 0.25
"""Share of the free CUDA memory one chunk may use."""

BYTES_PER_INPUT_BYTE = 64
"""Activation memory assumed per byte of input image. Generous for ResNet-style encoders: a
ResNet-18 forward under ``torch.inference_mode`` peaks at roughly 10-20 bytes per input byte, a
forward kept for a backward pass at roughly 40."""


def _check_shape(image_shape: object) -> tuple[int, ...]:
    if (
        not isinstance(image_shape, Sequence)
        or isinstance(image_shape, str)
        or len(image_shape) == 0
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in image_shape)
    ):
        raise ValueError(
            "`auto_batch_size`: expected `image_shape` to be the shape of one image, e.g. "
            f"(3, 224, 224), with positive ints, but got {image_shape!r}. Pass `x.shape[1:]`."
        )
    return tuple(image_shape)


def auto_batch_size(
    device: torch.device | str,
    image_shape: Sequence[int],
    cap: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    bytes_per_input_byte: int = BYTES_PER_INPUT_BYTE,
) -> int:
    """Number of images per forward pass for images of ``image_shape`` on ``device``.

    Args:
        device: where the forwards run (``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``).
        image_shape: the shape of one image, ``(C, H, W)`` (e.g. ``x.shape[1:]``).
        cap: most images per chunk. Default ``None``: :data:`CUDA_CAP` (1024) on CUDA,
            :data:`CPU_CAP` (256) elsewhere.
        dtype: the image dtype (its element size enters the memory estimate).
        bytes_per_input_byte: activation memory assumed per input byte (default 64).

    Returns:
        An int in ``[1, cap]``: ``budget // (prod(image_shape) * itemsize * bytes_per_input_byte)``
        with ``budget`` a quarter of the free CUDA memory (plus the unused part of this process's
        CUDA cache) or :data:`CPU_BUDGET_BYTES` (2 GiB) on other devices.

    Raises:
        ValueError: a malformed ``image_shape``, or ``cap``/``bytes_per_input_byte`` below 1.
        TypeError: a non-int ``cap`` or ``bytes_per_input_byte``.

    Example:
        >>> auto_batch_size("cpu", (3, 32, 32))
        256
        >>> auto_batch_size("cpu", (3, 224, 224))
        55
    """
    shape = _check_shape(image_shape)
    for name, value in (("cap", cap), ("bytes_per_input_byte", bytes_per_input_byte)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`auto_batch_size`: expected `{name}` to be an int, got {value!r}.")
        if value < 1:
            raise ValueError(f"`auto_batch_size`: expected `{name}` >= 1, but got {value}.")
    device = torch.device(device)
    per_image = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    per_image = max(1, per_image * bytes_per_input_byte)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, _ = torch.cuda.mem_get_info(index)
        cached = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
        budget = int((free + max(0, cached)) * CUDA_FREE_FRACTION)
        limit = CUDA_CAP if cap is None else cap
    else:
        budget = CPU_BUDGET_BYTES
        limit = CPU_CAP if cap is None else cap
    return int(max(1, min(limit, budget // per_image)))
