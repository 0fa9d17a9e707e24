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
    assert auto_batch_size("cpu", (3, 224, 224)) == _perf.CPU_BUDGET_BYTES // per_image == 55
    # Half precision halves the estimate, so twice the images fit.
    assert auto_batch_size("cpu", (3, 224, 224), dtype=torch.float16) == 111
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
