"""``auto_batch_size``: chunk sizes from the device memory, capped."""

from __future__ import annotations

import pytest
import torch

from lightning_explain import _perf
from lightning_explain._perf import auto_batch_size


def test_cpu_small_images_get_the_cap():
    assert auto_batch_size("cpu", (3, 32, 32)) == _perf.CPU_CAP
    assert auto_batch_size(torch.device("cpu"), (3, 32, 32), cap=48) == 48


def test_cpu_large_images_are_bounded_by_the_memory_budget():
    per_image = 3 * 224 * 224 * 4 * _perf.BYTES_PER_INPUT_BYTE
    assert auto_batch_size("cpu", (3, 224, 224)) == _perf.CPU_BUDGET_BYTES // per_image == 6
    assert auto_batch_size("cpu", (3, 64, 64)) == 85
    # Half precision halves the estimate, so twice the images fit.
    assert auto_batch_size("cpu", (3, 224, 224), dtype=torch.float16) == 13
    # A huge image still gets one image per chunk.
    assert auto_batch_size("cpu", (3, 8192, 8192)) == 1


def test_cuda_uses_free_memory_and_unused_cache(monkeypatch: pytest.MonkeyPatch):
    gib = 1024**3
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (8 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda index: 4 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda index: 2 * gib)
    per_image = 3 * 224 * 224 * 4 * 64
    # A quarter of (8 GiB free + 2 GiB cached but unused).
    assert auto_batch_size("cuda", (3, 224, 224)) == (10 * gib // 4) // per_image
    assert auto_batch_size("cuda:0", (3, 32, 32)) == _perf.CUDA_CAP
    assert auto_batch_size("cuda", (3, 32, 32), cap=300) == 300


@pytest.mark.parametrize("shape", [(), (3, 0, 4), (3, -1, 4), "3x32x32", (3.0, 32, 32)])
def test_bad_shape_raises(shape: object):
    with pytest.raises(ValueError, match="image_shape"):
        auto_batch_size("cpu", shape)  # type: ignore[arg-type]


def test_bad_cap_raises():
    with pytest.raises(ValueError, match="cap"):
        auto_batch_size("cpu", (3, 32, 32), cap=0)
    with pytest.raises(TypeError, match="cap"):
        auto_batch_size("cpu", (3, 32, 32), cap=2.5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# perturbation_autocast


def _conv_dtypes(
    model: torch.nn.Module,
) -> tuple[list[torch.dtype], torch.utils.hooks.RemovableHandle]:
    seen: list[torch.dtype] = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    return seen, handle


@pytest.mark.parametrize("dtype", ["bf16", "fp16", torch.bfloat16])
def test_autocast_runs_the_perturbation_forwards_in_half_precision(dtype: object):
    from lightning_explain import evaluate, explain, perturbation_autocast
    from tests.helpers import TinyCNN, images

    model = TinyCNN(seed=0)
    x1, x2 = images(2, 3, 16, 16, seed=0), images(2, 3, 16, 16, seed=1)
    maps = (torch.rand(2, 16, 16), torch.rand(2, 16, 16))
    keys = ["insertion_simultaneous", "deletion_conditional", "average_drop_simultaneous"]
    full = evaluate(model, x1, x2, maps, keys, n_steps=4)
    full_rise = explain(model, x1, x2, method="rise", n_masks=16, cell=4, seed=0)
    seen, handle = _conv_dtypes(model)
    try:
        with perturbation_autocast(dtype):  # type: ignore[arg-type]
            half = evaluate(model, x1, x2, maps, keys, n_steps=4)
            half_rise = explain(model, x1, x2, method="rise", n_masks=16, cell=4, seed=0)
    finally:
        handle.remove()
    expected = torch.float16 if dtype == "fp16" else torch.bfloat16
    assert seen
    assert set(seen) == {expected}
    for key in keys:
        assert half[key].dtype == torch.float32
        torch.testing.assert_close(half[key], full[key], rtol=0, atol=0.05)
    assert half_rise.h1.dtype == torch.float32
    assert torch.isfinite(half_rise.h1).all()
    assert (half_rise.h1 - full_rise.h1).abs().mean() < 0.1
    # Outside the context everything runs in float32 again.
    after, handle = _conv_dtypes(model)
    try:
        evaluate(model, x1, x2, maps, keys, n_steps=4)
    finally:
        handle.remove()
    assert set(after) == {torch.float32}


def test_autocast_leaves_gradient_passes_alone():
    from lightning_explain import explain, perturbation_autocast
    from tests.helpers import TinyCNN, images

    model = TinyCNN(seed=0)
    x1, x2 = images(2, 3, 16, 16, seed=0), images(2, 3, 16, 16, seed=1)
    plain = explain(model, x1, x2, method="gradcam")
    seen, handle = _conv_dtypes(model)
    try:
        with perturbation_autocast("bf16"):
            inside = explain(model, x1, x2, method="gradcam")
    finally:
        handle.remove()
    assert set(seen) == {torch.float32}
    torch.testing.assert_close(inside.h1, plain.h1)
    torch.testing.assert_close(inside.h2, plain.h2)


def test_autocast_context_is_restored_and_checked():
    from lightning_explain import perturbation_autocast

    assert _perf.autocast_dtype() is None

    def body() -> None:
        with perturbation_autocast("bf16"):
            assert _perf.autocast_dtype() == torch.bfloat16
            with perturbation_autocast(None):
                assert _perf.autocast_dtype() is None
            assert _perf.autocast_dtype() == torch.bfloat16
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        body()
    assert _perf.autocast_dtype() is None
    with pytest.raises(ValueError, match=r"`dtype`.*'bf16'.*torch\.float32"):
        perturbation_autocast(torch.float32).__enter__()
    with pytest.raises(ValueError, match="half"):
        perturbation_autocast("half").__enter__()
