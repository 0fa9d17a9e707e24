"""``auto_batch_size``: chunk sizes from the device memory, capped."""

from __future__ import annotations

import functools

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


# --------------------------------------------------------------------------------------------------
# Chunks measured for the model at hand


class _Counting(torch.nn.Module):
    """A conv embedder that records the batch size of every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(int(x.shape[0]))
        return self.conv(x).mean(dim=(2, 3))


def test_tuned_batch_size_is_within_the_cap_and_cached_per_model_and_shape() -> None:
    net = _Counting()
    x = torch.rand(3, 3, 8, 8)
    size = _perf.tuned_batch_size(net, x, cap=16, key=net)
    assert 1 <= size <= 16
    tried = sorted(set(net.sizes))
    assert tried[-1] == 16  # the cap first ...
    assert set(tried) <= {1, 2, 4, 8, 16}  # ... then powers of two below it
    net.sizes.clear()
    assert _perf.tuned_batch_size(net, x, cap=16, key=net) == size
    assert net.sizes == []  # cached: no second probe
    assert _perf.tuned_batch_size(net, x, cap=1, key=net) == 1  # a smaller cap still bounds it
    _perf.tuned_batch_size(net, torch.rand(3, 3, 10, 10), cap=4, key=net)
    assert net.sizes  # another image shape is probed anew
    net.sizes.clear()
    _perf.tuned_batch_size(net, x, cap=16, key=net, autograd=True)
    assert net.sizes  # and so is the backward pass kind


def _per_image_clock(monkeypatch: pytest.MonkeyPatch, cost: dict[int, float]) -> None:
    """Time every probed chunk of ``n`` images as ``n * cost[n]`` ms (``cost`` read at each call,
    so a test may change it between probes)."""
    monkeypatch.setattr(
        _perf, "_time_chunk", lambda f, x, autograd: 1e-3 * cost[int(x.shape[0])] * len(x)
    )


def test_tuned_batch_size_prefers_the_fastest_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    # Per-image time is lowest at 4 images (a fake clock), so 4 wins over the cap of 16.
    cost = {1: 1.0, 2: 0.6, 4: 0.2, 8: 0.3, 16: 0.5}  # ms per image
    _per_image_clock(monkeypatch, cost)
    x = torch.rand(2, 3, 8, 8)
    tune = functools.partial(_perf.tuned_batch_size, _Counting(), x, cap=16, key=None)
    assert tune(overhead_s=0.0) == 4
    # Within 5% of the fastest, the larger chunk wins (the engine's costs per chunk amortised);
    # a smaller chunk as fast does not.
    cost.update({2: 0.205})
    assert tune(overhead_s=0.0) == 4
    cost.update({8: 0.205})
    assert tune(overhead_s=0.0) == 8
    # A budget spent on the first (largest) candidate leaves the memory bound.
    assert tune(budget_s=1e-3) == 16


def test_tuned_batch_size_counts_the_callers_cost_per_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The model alone runs 4 images a little faster per image than 16 (a CPU cache); with the
    # engine's own cost per chunk counted, 16 images per chunk are cheaper and win.
    cost = {1: 1.0, 2: 0.5, 4: 0.095, 8: 0.105, 16: 0.1}  # ms per image
    _per_image_clock(monkeypatch, cost)
    x = torch.rand(2, 3, 8, 8)
    tune = functools.partial(_perf.tuned_batch_size, _Counting(), x, cap=16, key=None)
    assert tune(overhead_s=0.0) == 4
    assert tune(overhead_s=3e-4) == 16
    assert tune() == 16  # the default counts CHUNK_OVERHEAD_S
    # The overhead is part of the cache slot: a probe with another overhead is not answered
    # from the cache.
    net = _Counting()
    assert _perf.tuned_batch_size(net, x, cap=16, key=net, overhead_s=0.0) == 4
    assert _perf.tuned_batch_size(net, x, cap=16, key=net, overhead_s=3e-4) == 16


def test_tuned_batch_size_times_a_small_chunk_until_its_minimum_is_robust(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 16 images run at 0.1 ms per image, 8 at 0.15 ms, but the warm-up and the first two timed
    # runs of 16 are slowed 4x by another process: a probe that timed 16 only twice would keep
    # 8; timing on until 20 ms of timed runs finds 16's real time.
    calls: dict[int, int] = {}
    base = {16: 0.1, 8: 0.15, 4: 0.3, 2: 0.6, 1: 1.2}  # ms per image

    def fake(f: object, x: torch.Tensor, autograd: bool) -> float:
        n = int(x.shape[0])
        calls[n] = calls.get(n, 0) + 1
        slow = 4.0 if n == 16 and calls[n] <= 3 else 1.0
        return 1e-3 * base[n] * n * slow

    monkeypatch.setattr(_perf, "_time_chunk", fake)
    x = torch.rand(2, 3, 8, 8)
    assert _perf.tuned_batch_size(_Counting(), x, cap=16, key=None, overhead_s=0.0) == 16
    assert calls[16] > 3


def test_tuned_batch_size_in_multiples_of_the_images_per_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A caller that forwards 2 images per item (a pair) and a bound of 3 images: the candidates
    # are 4 and 2 (never 3, of which only 2 would be used), and 4 wins where it runs faster.
    cost = {1: 1.0, 2: 0.5, 3: 0.1, 4: 0.3}  # ms per image
    _per_image_clock(monkeypatch, cost)
    x = torch.rand(2, 3, 8, 8)
    net = _Counting()
    assert _perf.tuned_batch_size(net, x, cap=3, key=net, multiple=2) == 4
    cost.update({2: 0.2})
    assert _perf.tuned_batch_size(_Counting(), x, cap=3, key=None, multiple=2) == 2
    # The cache keeps the multiple apart from the plain probe of the same shape: a plain probe
    # caches 3 (its fastest), and a pair probe of the same model then measures its own 2 or 4.
    other = _Counting()
    assert _perf.tuned_batch_size(other, x, cap=3, key=other) == 3
    assert _perf.tuned_batch_size(other, x, cap=3, key=other, multiple=2) == 2
    assert _perf.tuned_batch_size(net, x, cap=3, key=net, multiple=2) == 4  # cached earlier
    # Every candidate is a multiple, the largest the first multiple at or above the cap.
    monkeypatch.undo()
    counting = _Counting()
    _perf.tuned_batch_size(counting, x, cap=9, key=None, multiple=2, budget_s=60.0)
    assert set(counting.sizes) <= {10, 8, 4, 2}
    assert counting.sizes[0] == 10


def test_smoothgrad_passes_hold_whole_pairs_up_to_the_bound_rounded_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightning_explain import _core, explain

    # The probe returns the largest candidate it is offered: at a bound of 3 images that is 4,
    # i.e. two pairs' worth of images per forward + backward, not one pair (3 // 2).
    monkeypatch.setattr(
        _core,
        "tuned_batch_size",
        lambda forward, images, *, cap, multiple=1, **_: multiple * -(-cap // multiple),
    )
    monkeypatch.setattr(_core, "auto_batch_size", lambda *args, **kwargs: 3)
    net = _Counting()
    x1, x2 = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    with _perf.chunk_tuning():
        explain(net, x1, x2, method="smoothgrad", n_samples=2)
    assert 4 in net.sizes
    assert max(net.sizes) == 4


def test_tuned_batch_size_keeps_the_memory_bound_when_probing_fails() -> None:
    calls = {"n": 0}

    def failing(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        raise RuntimeError("CUDA out of memory (simulated)")

    net = _Counting()
    assert _perf.tuned_batch_size(failing, torch.rand(2, 3, 8, 8), cap=8, key=net) == 8
    assert net not in _perf._TUNED  # a failed probe is not cached
    assert calls["n"] == 1


def test_tuning_inside_the_engine_draws_no_random_numbers_and_leaves_the_model_alone() -> None:
    from lightning_explain import evaluate_probe
    from tests.helpers import TinyCNN, untouched

    net = TinyCNN().train()
    x1, x2 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    with untouched(net):
        methods = [{"name": "rise", "n_masks": 64}, "gradcam"]
        evaluate_probe(net, (x1, x2), methods, ["deletion_simultaneous"], n_steps=4)
    assert net in _perf._TUNED


def test_chunk_tuning_context_switches_it_on_and_off() -> None:
    assert not _perf.tuning_enabled()
    with _perf.chunk_tuning():
        assert _perf.tuning_enabled()
        with _perf.chunk_tuning(False):
            assert not _perf.tuning_enabled()
        assert _perf.tuning_enabled()
    assert not _perf.tuning_enabled()


def test_evaluate_probe_scores_do_not_depend_on_tuning() -> None:
    from lightning_explain import evaluate_probe
    from tests.helpers import TinyCNN

    net = TinyCNN()
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.rand(4, 3, 16, 16, generator=g), torch.rand(4, 3, 16, 16, generator=g)
    methods = [{"name": "rise", "n_masks": 64}, "gradcam"]
    metrics = ["insertion_simultaneous", "deletion_conditional"]
    tuned = evaluate_probe(net, (x1, x2), methods, metrics, n_steps=8, tune_chunks=True)
    assert net in _perf._TUNED  # the engine tuned the chunk for this model
    plain = evaluate_probe(net, (x1, x2), methods, metrics, n_steps=8, tune_chunks=False)
    for key, value in plain.scalars().items():
        assert tuned.scalars()[key] == pytest.approx(value, abs=1e-5), key
    with pytest.raises(TypeError, match="tune_chunks"):
        evaluate_probe(net, (x1, x2), methods, metrics, tune_chunks="yes")  # type: ignore[arg-type]


def test_auto_layer_is_detected_once_per_model_and_input_shape() -> None:
    from lightning_explain.methods.cam import gradcam
    from tests.helpers import TinyCNN

    net = TinyCNN().eval()
    forwards: list[int] = []
    net.register_forward_pre_hook(lambda m, a: forwards.append(int(a[0].shape[0])))
    x1, x2 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    first = gradcam(net, x1, x2)
    detection_and_cam = len(forwards)
    forwards.clear()
    again = gradcam(net, x1, x2)
    assert len(forwards) == detection_and_cam - 1 == 1  # the CAM's forward only
    assert torch.equal(first.h1, again.h1)
    forwards.clear()
    gradcam(net, torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24))
    assert len(forwards) == detection_and_cam  # a new input shape is detected anew
    # A cached layer that left the model is not used: the new one is found.
    import copy

    net.features = copy.deepcopy(net.features)
    forwards.clear()
    gradcam(net, x1, x2)
    assert len(forwards) == detection_and_cam


class _Wide(torch.nn.Module):
    """A 1x1 conv to 16 channels and a ReLU: autograd saves the input (for the conv's weight
    gradient) and the ReLU's output, nothing else; a big parameter that must not count."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 1, bias=False)
        self.unused = torch.nn.Parameter(torch.zeros(1_000_000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def test_activation_bytes_counts_saved_activations_not_parameters() -> None:
    net = _Wide().eval()
    x = torch.rand(4, 3, 8, 8)
    measured = _perf.activation_bytes(net, x, key=net)
    # Per image: the input (3 x 8 x 8 floats) and the ReLU output (16 x 8 x 8 floats).
    assert measured == (3 + 16) * 8 * 8 * 4
    assert all(p.grad is None for p in net.parameters())  # no backward ran
    assert not net.training
    assert _perf.activation_bytes(lambda t: 1 / 0, x, key=net) == measured  # cached per key
    assert _perf.activation_bytes(net, torch.rand(4, 3, 16, 16), key=net) == 4 * measured


def test_activation_bytes_refuses_unusable_measurements() -> None:
    net = _Wide().eval()

    def detached(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(x)

    assert _perf.activation_bytes(detached, torch.rand(2, 3, 8, 8)) is None  # saved nothing
    assert _perf.activation_bytes(lambda t: 1 / 0, torch.rand(2, 3, 8, 8)) is None  # raised


def test_the_measured_bound_is_for_cuda_memory_and_cpus_keep_the_cache_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightning_explain import _core
    from tests.helpers import TinyCNN

    # The timed probe returns its cap, so the test sees the bound it was given.
    monkeypatch.setattr(_core, "tuned_batch_size", lambda forward, images, *, cap, **_: cap)
    net = TinyCNN().eval()
    x1, x2 = torch.rand(2, 3, 224, 224), torch.rand(2, 3, 224, 224)
    with _core.pair_context(net, x1, x2, owner="test") as ctx, _perf.chunk_tuning():
        assert ctx.chunk_size(None) == auto_batch_size("cpu", (3, 224, 224)) == 6
        assert ctx.chunk_size(None, autograd=True) == 3
    # On CUDA the measured bytes replace the estimate: a quarter of the free memory over them.
    gib = 1024**3
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (8 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda index: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda index: 0)
    per_image = _perf.activation_bytes(net, x1)
    assert per_image is not None
    lifted = auto_batch_size("cuda", (3, 224, 224), bytes_per_image=per_image)
    assert lifted == min(_perf.CUDA_CAP, 2 * gib // per_image)
    assert lifted > auto_batch_size("cuda", (3, 224, 224))
