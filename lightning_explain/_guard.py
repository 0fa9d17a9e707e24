"""The one guest guard: whatever runs inside leaves the user's model and random streams as found.

:func:`guest` is used by every method and metric (through
:func:`lightning_explain._core.pair_context`), by the evaluation engine and by the callback. Inside:

* every submodule of the given modules is in eval mode (no BatchNorm statistics are updated,
  dropout is off); each submodule's own ``training`` flag is restored on exit;
* gradients are enabled and inference mode is off (Lightning's evaluation loops run under
  ``no_grad`` or ``inference_mode``);
* the global torch (CPU and the CUDA device in use), NumPy and Python RNGs are forked: their
  states are restored on exit, so nothing inside can shift the caller's random streams;
* module hooks are accounted for: any forward/backward hook added to a guarded module inside and
  not removed is removed on exit, and the module's backward-hook mode (which PyTorch keeps after a
  full backward hook's handle is removed) is restored, so a later ``register_backward_hook`` by the
  user still works.

All of this also holds when the body raises. Guards nest cheaply: an inner guard over modules an
outer guard already covers only switches gradients on and inference mode off.
:func:`seeded_global_rng` is the same RNG fork with the three generators seeded, for dataset
transforms that draw from the global RNGs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar

import numpy as np
import torch
from torch import nn

__all__ = ["forked_rngs", "guest", "seeded_global_rng"]

# Hook dictionaries of nn.Module (private torch attributes, read defensively).
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)

_ACTIVE: ContextVar[tuple[frozenset[int], frozenset[int]]] = ContextVar(
    "lightning_explain_guest", default=(frozenset(), frozenset())
)
"""Ids of the modules and CUDA device indices the enclosing guards cover."""


@contextmanager
def forked_rngs(device: torch.device | None = None) -> Iterator[None]:
    """Restore the global torch (CPU and ``device`` if CUDA), NumPy and Python RNGs on exit."""
    devices = [device.index or 0] if device is not None and device.type == "cuda" else []
    py_state = random.getstate()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed the global torch, NumPy and Python RNGs with ``seed``; restore all three on exit.

    Dataset transforms (torchvision, lightly) draw from these global RNGs; running them inside this
    context makes the draw reproducible and leaves the caller's random streams exactly as found.
    """
    with forked_rngs():
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        yield


def _all_modules(roots: Sequence[nn.Module]) -> list[nn.Module]:
    seen: set[int] = set()
    out: list[nn.Module] = []
    for root in roots:
        for m in root.modules():
            if id(m) not in seen:
                seen.add(id(m))
                out.append(m)
    return out


@contextmanager
def _hooks_restored(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Remove hooks added inside and restore each module's backward-hook mode on exit."""
    before: list[tuple[nn.Module, dict[str, set[int]], object]] = []
    for m in modules:
        keys = {name: set(getattr(m, name, {}) or {}) for name in _HOOK_DICTS}
        before.append((m, keys, m.__dict__.get("_is_full_backward_hook", None)))
    try:
        yield
    finally:
        for m, keys, mode in before:
            for name, known in keys.items():
                hooks = getattr(m, name, None)
                if hooks:
                    for key in [k for k in hooks if k not in known]:
                        del hooks[key]
            m.__dict__["_is_full_backward_hook"] = mode


@contextmanager
def guest(modules: Sequence[nn.Module], device: torch.device | None = None) -> Iterator[None]:
    """Run the body as a guest of ``modules`` (see the module docstring).

    Args:
        modules: the ``nn.Module`` objects the body may run (their submodules are covered).
        device: the device the body computes on (its CUDA RNG is forked too).
    """
    covered, devices = _ACTIVE.get()
    cuda = {device.index or 0} if device is not None and device.type == "cuda" else set()
    new = [m for m in _all_modules(modules) if id(m) not in covered]
    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        outermost = not covered and not devices
        if new or outermost or not cuda <= devices:
            flags = [(m, m.training) for m in new]
            stack.enter_context(forked_rngs(device))
            stack.enter_context(_hooks_restored(new))
            stack.callback(_restore_flags, flags)
            token = _ACTIVE.set((covered | {id(m) for m in new}, devices | cuda))
            stack.callback(_ACTIVE.reset, token)
            for root in modules:
                root.eval()
        yield


def _restore_flags(flags: list[tuple[nn.Module, bool]]) -> None:
    for m, flag in flags:
        m.training = flag
