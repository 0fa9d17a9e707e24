"""Performance helpers: a device-aware default for the number of images per forward pass.

Every perturbation method and metric runs its perturbed images through the model in chunks of
``batch_size`` images, so memory is bounded by the chunk whatever the number of pairs, steps or
masks. :func:`auto_batch_size` picks that chunk from the memory the device has free:

* CUDA: a fraction of the free device memory (``torch.cuda.mem_get_info`` plus the memory this
  process's caching allocator holds but does not use) divided by an activation estimate per
  image, capped at :data:`CUDA_CAP`. Reading these counters does not change the allocator state.
* CPU and other devices: a fixed budget (:data:`CPU_BUDGET_BYTES`) divided by the same estimate,
  capped at :data:`CPU_CAP`. The budget is small on purpose: on a CPU, a chunk whose activations
  outgrow the caches runs slower per image (ResNet-18 on 2 cores: 224 px images take 22 ms each
  in chunks of 4 and 33 ms in chunks of 256; 32 px images are fastest in chunks of 128-256; see
  ``docs/performance.md``). It gives 256 images at 32 px, 85 at 64 px and 6 at 224 px.

Inside :func:`chunk_tuning`, on CUDA, the bound is computed from the model's own activation memory
instead of that estimate where it can be measured (:func:`activation_bytes`: the bytes autograd
saves in one forward of two images, once per model, shape, dtype and device), so a small model
gets the larger chunks its memory allows. On a CPU the estimate stays: there the budget is about
caches, not memory, and chunks of the measured bound ran slower (a tiny CNN at 224 px: 3.1x its
floor in chunks of 78, 1.1x in chunks of 6; ``docs/performance.md``).

The memory bound says nothing about speed: a small CNN at 32 px runs fastest in chunks far below
256 on a CPU, and a large model at 224 px runs faster per image in larger chunks on a GPU. Inside
:func:`chunk_tuning` (the evaluation engine, hence the callback and the CLI, turn it on) the
default chunk is instead *measured* for the actual model, image shape, dtype and device:
:func:`tuned_batch_size` times forwards of the images at hand in chunks from the memory bound
down through the powers of two below it and keeps the fastest per image, at most
:data:`TUNE_BUDGET_S` seconds of probing, once per model, shape, dtype, device and pass kind
(cached for the life of the model object).
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, Union, overload

import torch
from torch import Tensor

__all__ = [
    "AUTOCAST_DTYPES",
    "AUTOGRAD_BYTES_PER_INPUT_BYTE",
    "BYTES_PER_INPUT_BYTE",
    "CHUNK_OVERHEAD_S",
    "CPU_BUDGET_BYTES",
    "CPU_CAP",
    "CUDA_CAP",
    "CUDA_FREE_FRACTION",
    "TUNE_BUDGET_S",
    "activation_bytes",
    "auto_batch_size",
    "autocast_dtype",
    "chunk_tuning",
    "perturbation_autocast",
    "tuned_batch_size",
]

CUDA_CAP = 1024
"""Most images per forward pass on CUDA."""

CPU_CAP = 256
"""Most images per forward pass on CPU (and other non-CUDA devices)."""

CPU_BUDGET_BYTES = 256 * 1024**2
"""Activation memory a CPU chunk may use (by the :data:`BYTES_PER_INPUT_BYTE` estimate), i.e.
4 MiB of float32 input images per chunk."""

CUDA_FREE_FRACTION = 0.25
"""Share of the free CUDA memory one chunk may use."""

BYTES_PER_INPUT_BYTE = 64
"""Activation memory assumed per byte of input image. Generous for ResNet-style encoders: a
ResNet-18 forward under ``torch.inference_mode`` peaks at roughly 10-20 bytes per input byte, a
forward kept for a backward pass at roughly 40."""

AUTOGRAD_BYTES_PER_INPUT_BYTE = 128
"""Activation memory assumed per input byte for chunks that go through a forward *and* a backward
pass (SmoothGrad, Integrated Gradients, averaged transforms): the forward's activations are kept
for the backward, and the backward allocates gradients of the same size."""


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
    bytes_per_image: int | None = None,
) -> int:
    """Number of images per forward pass for images of ``image_shape`` on ``device``.

    Args:
        device: where the forwards run (``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``).
        image_shape: the shape of one image, ``(C, H, W)`` (e.g. ``x.shape[1:]``).
        cap: most images per chunk. Default ``None``: :data:`CUDA_CAP` (1024) on CUDA,
            :data:`CPU_CAP` (256) elsewhere.
        dtype: the image dtype (its element size enters the memory estimate).
        bytes_per_input_byte: activation memory assumed per input byte (default 64).
        bytes_per_image: activation memory of one image, if known (e.g. measured by
            :func:`activation_bytes`); replaces the ``bytes_per_input_byte`` estimate.

    Returns:
        An int in ``[1, cap]``: ``budget // (prod(image_shape) * itemsize * bytes_per_input_byte)``
        with ``budget`` a quarter of the free CUDA memory (plus the unused part of this process's
        CUDA cache) or :data:`CPU_BUDGET_BYTES` (256 MiB) on other devices.

    Raises:
        ValueError: a malformed ``image_shape``, or ``cap``/``bytes_per_input_byte`` below 1.
        TypeError: a non-int ``cap`` or ``bytes_per_input_byte``.

    Example:
        >>> auto_batch_size("cpu", (3, 32, 32))
        256
        >>> auto_batch_size("cpu", (3, 64, 64))
        85
        >>> auto_batch_size("cpu", (3, 224, 224))
        6
    """
    shape = _check_shape(image_shape)
    checked = (
        ("cap", cap),
        ("bytes_per_input_byte", bytes_per_input_byte),
        ("bytes_per_image", bytes_per_image),
    )
    for name, value in checked:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`auto_batch_size`: expected `{name}` to be an int, got {value!r}.")
        if value < 1:
            raise ValueError(f"`auto_batch_size`: expected `{name}` >= 1, but got {value}.")
    device = torch.device(device)
    per_image = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    per_image = max(
        1, per_image * bytes_per_input_byte if bytes_per_image is None else bytes_per_image
    )
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


# --------------------------------------------------------------------------------------------------
# Activation memory measured for the model at hand

_MEASURED: weakref.WeakKeyDictionary[object, dict[tuple[object, ...], Union[int, None]]] = (
    weakref.WeakKeyDictionary()
)

_MIN_BYTES_PER_INPUT_BYTE = 2
"""A measurement below this many bytes per input byte is not trusted (e.g. a model that detaches
or runs under ``no_grad`` inside, so autograd saves nothing): the constant estimate stays."""


def activation_bytes(
    forward: Callable[[Tensor], Tensor], images: Tensor, *, key: object = None
) -> int | None:
    """Activation memory of one image in ``forward``: the bytes autograd saves for the backward.

    One forward of (at most two of) ``images`` runs with autograd on, under
    :func:`torch.autograd.graph.saved_tensors_hooks` that sum the storages saved for the backward
    (each storage once; parameters and buffers of the modules reachable from ``key`` excluded), and
    nothing is kept: no backward runs, no ``.grad`` is written. An inference forward frees its
    activations as it goes, so it needs at most this much; a forward kept for a backward needs
    this, and its backward about as much again. Measured once per ``key`` (held weakly, e.g. the
    model module), image shape, dtype and device; ``key=None`` caches nothing.

    Returns:
        Bytes per image, or None when the measurement is not usable (the forward raised, or it
        saved less than twice the input's size, as a model that detaches its features does).
    """
    slot = (tuple(images.shape[1:]), images.dtype, str(images.device))
    if key is not None:
        try:
            table = _MEASURED.setdefault(key, {})
        except TypeError:  # not weakly referenceable: measure every time
            key, table = None, {}
        if slot in table:
            return table[slot]
    modules = key.modules() if isinstance(key, torch.nn.Module) else ()
    skip = {
        t.untyped_storage().data_ptr() for m in modules for t in (*m.parameters(), *m.buffers())
    }
    sizes: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip:
            sizes[ptr] = max(sizes.get(ptr, 0), storage.nbytes())
        return t

    sample = images[:2].detach()
    result: int | None
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            forward(sample.clone().requires_grad_(True))
    except Exception:
        result = None
    else:
        per_image = sum(sizes.values()) // sample.shape[0]
        input_bytes = sample[0].numel() * sample.element_size()
        result = per_image if per_image >= _MIN_BYTES_PER_INPUT_BYTE * input_bytes else None
    if key is not None and result is not None:
        table[slot] = result
    return result


# --------------------------------------------------------------------------------------------------
# Chunks measured for the model at hand

TUNE_BUDGET_S = 1.0
"""Most seconds one :func:`tuned_batch_size` probe spends timing candidate chunks."""

CHUNK_OVERHEAD_S = 3e-4
"""Seconds the engines spend per chunk besides the model (building the chunk's images, the
similarity, the output checks: Python and kernel launches), added to every candidate's timed
forward by :func:`tuned_batch_size`. With a nearly free model (an average pool) on the CPU of
``docs/performance.md`` it measured 0.24-0.49 ms per chunk at 32 px for insertion/deletion,
occlusion, RISE and SmoothGrad (``OMP_NUM_THREADS=2 python benchmarks/bench_chunks.py --overhead
--sizes 32``; larger images add cache effects to that difference)."""

_TUNE_NEAR = 1.05
"""The largest chunk within this factor of the fastest per-image time wins (a larger chunk
spreads what :data:`CHUNK_OVERHEAD_S` does not capture over more images)."""

_TUNE_MIN_S = 0.02
"""Each candidate is timed until this many seconds of timed runs (at least 2 runs, at most
:data:`_TUNE_MAX_RUNS`): a small chunk gets more runs, whose minimum is robust to a busy machine."""

_TUNE_MAX_RUNS = 8

_TUNE_STOP = 1.25
"""Probing stops once a chunk is this factor slower per image than the best, past the best."""

_TUNING: ContextVar[bool] = ContextVar("lightning_explain_chunk_tuning", default=False)

_TUNED: weakref.WeakKeyDictionary[object, dict[tuple[object, ...], int]] = (
    weakref.WeakKeyDictionary()
)


@contextmanager
def chunk_tuning(enabled: bool = True) -> Iterator[None]:
    """Measure the default chunk of every method and metric called inside (``batch_size=None``).

    Inside this context a method or metric whose ``batch_size`` is ``None`` runs its forwards in
    chunks of :func:`tuned_batch_size` images (measured once per model, image shape, dtype,
    device and pass kind, then cached) instead of the memory bound of :func:`auto_batch_size`,
    which stays the upper limit. :func:`lightning_explain.evaluate_probe` (and so the callback and
    the CLI) runs inside it unless called with ``tune_chunks=False``. Chunk sizes change results
    only by float rounding (about 1e-7), never the images that are forwarded.

    Args:
        enabled: ``False`` switches tuning off inside the context.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_explain import explain
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> x1, x2 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> with chunk_tuning():
        ...     e = explain(net, x1, x2, method="rise", n_masks=64)
        >>> e.h1.shape
        torch.Size([2, 16, 16])
    """
    token = _TUNING.set(bool(enabled))
    try:
        yield
    finally:
        _TUNING.reset(token)


def tuning_enabled() -> bool:
    """Whether the enclosing :func:`chunk_tuning` is on."""
    return _TUNING.get()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_chunk(forward: Callable[[Tensor], Tensor], x: Tensor, *, autograd: bool) -> float:
    """Seconds of one forward (and, with ``autograd``, one input-gradient backward) of ``x``."""
    _sync(x.device)
    start = time.perf_counter()
    if autograd:
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            z = forward(leaf)
            torch.autograd.grad(z.float().sum(), leaf)
    else:
        with torch.inference_mode():
            forward(x)
    _sync(x.device)
    return time.perf_counter() - start


def tuned_batch_size(
    forward: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    cap: int,
    autograd: bool = False,
    key: object = None,
    budget_s: float = TUNE_BUDGET_S,
    multiple: int = 1,
    overhead_s: float = CHUNK_OVERHEAD_S,
) -> int:
    """The chunk size, at most ``cap``, at which ``forward`` runs fastest per image.

    Candidates are ``cap`` and the powers of two below it, tried from the largest down; each is
    run once to warm up, then timed at least twice and until 20 ms of timed runs (at most 8
    runs; the fastest counts), on copies of ``images`` (cycled to the chunk size, so no random
    numbers are drawn). A candidate's cost per image is ``(time + overhead_s) / size``: the
    caller's own cost per chunk (:data:`CHUNK_OVERHEAD_S`) counts, so that a small chunk that
    the model alone runs as fast per image (a small CNN on a CPU, whose activations then stay in
    cache) does not win only to pay the engine's fixed costs many more times. Probing stops once
    a chunk is 1.25x costlier per image than the best so far, or when ``budget_s`` is spent; the
    largest candidate within 5% of the cheapest wins (memory stays bounded by ``cap``). Trying
    the largest chunk first means that an exhausted budget (a slow model, a loaded machine)
    leaves the memory bound, the default without tuning. The result is cached
    under ``key`` (held weakly, e.g. the model module) for the shape, dtype and device of
    ``images``, the pass kind and the enclosing :func:`perturbation_autocast`; ``key=None`` caches
    nothing. A probe that raises (e.g. out of memory) keeps the best chunk measured before it, or
    ``cap`` when there is none, and is not cached.

    With ``multiple=k`` (a caller that forwards ``k`` images per item, e.g. both images of a pair
    for a gradient method) every candidate is a multiple of ``k``: ``k`` times ``m = ceil(cap /
    k)`` and the powers of two below ``m``. The chunk can then exceed ``cap`` by less than ``k``
    images, instead of the caller rounding ``cap // k`` items down (at ``cap = 3``, ``k = 2`` that
    forwarded 2 images where 4 ran faster per image for a tiny CNN and for ResNet-18 at 224 px on
    a CPU).

    Args:
        forward: ``(N, C, H, W)`` images -> ``(N, D)`` embeddings.
        images: ``(B, C, H, W)`` example images, on the device the forwards run on.
        cap: the largest chunk (the memory bound, e.g. :func:`auto_batch_size`).
        autograd: time a forward and a backward to the inputs (gradient methods) instead of a
            forward under ``torch.inference_mode``.
        key: the object the result is cached for (weakly referenced), or ``None``.
        budget_s: most seconds spent timing.
        multiple: every candidate is a multiple of this many images (see above).
        overhead_s: the caller's seconds per chunk besides ``forward`` (see above).

    Returns:
        An int in ``[1, cap]`` (``multiple=1``), else a multiple of ``multiple`` below
        ``cap + multiple``.
    """
    multiple = max(1, int(multiple))
    items = -(-max(1, int(cap)) // multiple)  # ceil: whole items, the last one may pass the cap
    cap = multiple * items
    dtype = autocast_dtype()
    slot = (
        tuple(images.shape[1:]),
        images.dtype,
        str(images.device),
        bool(autograd),
        dtype,
        multiple,
        float(overhead_s),
    )
    if key is not None:
        try:
            cached = _TUNED.get(key, {}).get(slot)
        except TypeError:  # not weakly referenceable: tune every time
            key, cached = None, None
        if cached is not None:
            return min(cap, cached)
    run = forward if autograd or dtype is None else (lambda x: autocast_forward(forward, x))
    candidates = sorted(
        {*(multiple * 2**i for i in range(items.bit_length()) if 2**i <= items), cap},
        reverse=True,
    )
    per_image: dict[int, float] = {}
    spent, failed = 0.0, False
    for size in candidates:
        batch = images[torch.arange(size, device=images.device) % images.shape[0]]
        try:
            times = [_time_chunk(run, batch, autograd=autograd)]  # the warm-up
            while len(times) < 3 or (
                sum(times[1:]) < _TUNE_MIN_S
                and len(times) <= _TUNE_MAX_RUNS
                and spent + sum(times) <= budget_s
            ):
                times.append(_time_chunk(run, batch, autograd=autograd))
        except Exception:
            failed = True
            break
        spent += sum(times)
        per_image[size] = (min(times[1:]) + overhead_s) / size
        best = min(per_image, key=per_image.__getitem__)
        if spent > budget_s or per_image[size] > _TUNE_STOP * per_image[best]:
            break
    if not per_image:
        return cap
    fastest = min(per_image.values())
    chosen = max(s for s, t in per_image.items() if t <= _TUNE_NEAR * fastest)
    if key is not None and not failed:
        _TUNED.setdefault(key, {})[slot] = chosen
    return chosen


# --------------------------------------------------------------------------------------------------
# Opt-in mixed precision for the perturbation forwards

AUTOCAST_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
"""Names accepted for the autocast dtype (and the dtypes themselves)."""

_AUTOCAST: ContextVar[Union[torch.dtype, None]] = ContextVar(
    "lightning_explain_perturbation_autocast", default=None
)


@overload
def check_autocast_dtype(
    dtype: object, *, name: str = ..., owner: str, optional: Literal[False] = ...
) -> torch.dtype: ...
@overload
def check_autocast_dtype(
    dtype: object, *, name: str = ..., owner: str, optional: Literal[True]
) -> torch.dtype | None: ...
def check_autocast_dtype(
    dtype: object, *, name: str = "dtype", owner: str, optional: bool = False
) -> torch.dtype | None:
    """``dtype`` as a half-precision ``torch.dtype``; accepts the names of :data:`AUTOCAST_DTYPES`
    (and ``None`` with ``optional=True``: autocast off).

    Raises:
        ValueError: an unknown name or a dtype other than float16/bfloat16.
    """
    if dtype is None and optional:
        return None
    if isinstance(dtype, str) and dtype in AUTOCAST_DTYPES:
        return AUTOCAST_DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in (torch.float16, torch.bfloat16):
        return dtype
    raise ValueError(
        f"`{owner}`: expected `{name}` to be one of {sorted(AUTOCAST_DTYPES)} (or "
        f"torch.bfloat16 / torch.float16), but got {dtype!r}. bfloat16 is the safe choice: it "
        "keeps float32's range."
    )


@contextmanager
def perturbation_autocast(dtype: Union[str, torch.dtype, None] = torch.bfloat16) -> Iterator[None]:
    """Run the perturbation forwards of every method and metric called inside under autocast.

    The perturbation forwards are the chunked, gradient-free passes over occluded, masked,
    augmented or partly deleted images (occlusion, RISE, Pixel Invariance, insertion/deletion,
    average drop/increase) and the embeddings of the intact images they are compared with; they
    are nearly all of the cost of those methods and metrics. Inside this context they run under
    ``torch.autocast(device_type=<the images' device>, dtype=dtype)`` and their embeddings are
    cast back to float32 before any similarity is taken, so curves, scores and maps are computed
    in float32 from half-precision forwards. Passes that take gradients (Grad-CAM, the gradient
    methods) are left in the caller's precision. Off by default: half-precision embeddings move
    similarities by about 1e-3 (bfloat16), which is below what the metrics resolve but not
    bit-identical.

    Inside a Lightning callback the trainer's precision plugin (``Trainer(precision="bf16-mixed")``)
    already wraps every forward of the callback; use the callback's ``autocast`` argument to get
    this behaviour with a full-precision trainer.

    Args:
        dtype: ``torch.bfloat16`` (default) or ``torch.float16``, or their names ``"bf16"``,
            ``"fp16"``; ``None`` switches autocast off inside the context (handy for a flag).

    Raises:
        ValueError: another dtype.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_explain import evaluate, perturbation_autocast
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> x1, x2 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> maps = (torch.rand(2, 16, 16), torch.rand(2, 16, 16))
        >>> with perturbation_autocast("bf16"):
        ...     scores = evaluate(net, x1, x2, maps, ["deletion_conditional"], n_steps=8)
        >>> scores["deletion_conditional"].dtype
        torch.float32
    """
    resolved = None if dtype is None else check_autocast_dtype(dtype, owner="perturbation_autocast")
    token = _AUTOCAST.set(resolved)
    try:
        yield
    finally:
        _AUTOCAST.reset(token)


def autocast_dtype() -> Union[torch.dtype, None]:
    """The dtype of the enclosing :func:`perturbation_autocast`, or None."""
    return _AUTOCAST.get()


def autocast_forward(model: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``model(x)`` under the enclosing :func:`perturbation_autocast` (if any), as float32."""
    dtype = _AUTOCAST.get()
    if dtype is None:
        return model(x)
    with torch.autocast(device_type=x.device.type, dtype=dtype):
        z = model(x)
    return z.float() if isinstance(z, Tensor) and z.is_floating_point() else z
