"""The one guest guard: modes, grad mode, RNGs and hooks are left as found, also after errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from lightning_explain import explain
from lightning_explain._guard import guest, seeded_global_rng
from tests.helpers import TinyCNN


def _rng_state() -> tuple[object, ...]:
    return (torch.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate())


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return bool(torch.equal(a[0], b[0])) and bool(np.array_equal(a[1], b[1])) and a[2] == b[2]  # type: ignore[arg-type]


def test_guest_restores_modes_grad_and_every_rng_after_an_exception() -> None:
    net = TinyCNN()
    net.train()
    net.head.eval()  # a frozen part keeps its own flag
    before = _rng_state()
    seen: list[bool] = []

    def body() -> None:
        with torch.inference_mode(), guest([net]):
            seen.append(any(m.training for m in net.modules()))
            seen.append(torch.is_grad_enabled())
            seen.append(torch.is_inference_mode_enabled())
            torch.rand(3), np.random.rand(), random.random()
            raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        body()
    assert seen == [False, True, False]
    assert _same(before, _rng_state())
    assert net.training
    assert net.features.training
    assert not net.head.training


def test_guest_removes_hooks_left_behind_and_restores_the_backward_hook_mode() -> None:
    net = TinyCNN()
    relu = net.features[2]
    with guest([net]):
        net.features[0].register_forward_hook(lambda *a: None)
        net.features[0].register_forward_pre_hook(lambda *a: None)
        relu.register_full_backward_hook(lambda *a: None)
    for m in net.modules():
        assert not m._forward_hooks
        assert not m._forward_pre_hooks
        assert not m._backward_hooks
    # PyTorch keeps a module's hook mode after its handles are removed; the guard does not, so
    # the old-style API works again (it would raise "Cannot use both ..." otherwise).
    relu.register_backward_hook(lambda *a: None)
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    with pytest.warns(FutureWarning, match="non-full backward hook"):
        net(x).sum().backward()


def test_nested_guards_restore_once_and_cover_new_modules() -> None:
    a, b = TinyCNN(seed=0), TinyCNN(seed=1)
    a.train()
    b.train()
    with guest([a]):
        with guest([a, b]):
            assert not b.training
            assert not a.training
        assert b.training  # the inner guard restored what it alone covered
        assert not a.training
    assert a.training
    assert b.training


def test_seeded_global_rng_is_reproducible_and_restores() -> None:
    before = _rng_state()
    with seeded_global_rng(3):
        first = (torch.rand(2), np.random.rand(), random.random())
    with seeded_global_rng(3):
        second = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(first[0], second[0])
    assert first[1:] == second[1:]
    assert _same(before, _rng_state())


@pytest.mark.filterwarnings("ignore:Using a non-full backward hook:FutureWarning")
@pytest.mark.parametrize("order", ["guided_first", "user_hooks_first"])
def test_guided_methods_leave_no_mark_on_relu_hook_modes(order: str) -> None:
    net = TinyCNN()
    x1, x2 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    calls: list[int] = []
    if order == "user_hooks_first":
        for m in relus:
            m.register_backward_hook(lambda *a: calls.append(1))
    e = explain(net, x1, x2, method="input_x_gradient", guided=True)
    assert torch.isfinite(e.h1).all()
    if order == "guided_first":
        for m in relus:
            m.register_backward_hook(lambda *a: calls.append(1))  # the old API still works
        x = torch.rand(1, 3, 16, 16, requires_grad=True)
        net(x).sum().backward()
        assert calls
    assert all(not m._forward_hooks for m in relus)
