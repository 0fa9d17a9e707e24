"""torchmetrics classes: accumulation, directions, and DDP sync across two gloo processes."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_explain.explanation import PairExplanation
from lightning_explain.metrics import (
    AverageDrop,
    AverageIncrease,
    Deletion,
    Insertion,
    MaxSensitivity,
    evaluate,
    metric_info,
)
from tests.helpers import images
from tests.metrics.reference import centered_cnn

N_STEPS = 6


def _probe_set(n: int = 5):
    g = torch.Generator().manual_seed(0)
    model = centered_cnn(1)
    x1, x2 = images(n, 3, 16, 20, seed=3), images(n, 3, 16, 20, seed=4)
    h1, h2 = torch.rand(n, 16, 20, generator=g), torch.rand(n, 4, 5, generator=g)
    return model, x1, x2, h1, h2


def _metrics(**kwargs):
    return {
        "insertion_simultaneous": Insertion(n_steps=N_STEPS, **kwargs),
        "insertion_conditional": Insertion(mode="conditional", n_steps=N_STEPS, **kwargs),
        "deletion_simultaneous": Deletion(n_steps=N_STEPS, **kwargs),
        "deletion_conditional": Deletion(mode="conditional", n_steps=N_STEPS, **kwargs),
        "deletion_simultaneous_corrected": Deletion(corrected=True, n_steps=N_STEPS, **kwargs),
        "average_drop_simultaneous": AverageDrop(**kwargs),
        "average_drop_conditional": AverageDrop(mode="conditional", **kwargs),
        "average_increase_simultaneous": AverageIncrease(**kwargs),
        "average_increase_conditional": AverageIncrease(mode="conditional", **kwargs),
        "max_sensitivity": MaxSensitivity("input_x_gradient", n_samples=2, **kwargs),
    }


def _feed(metrics, model, x1, x2, h1, h2, index: list[int], chunk: int) -> None:
    """Update every metric with the pairs ``index`` in batches of ``chunk`` (max-sensitivity one
    pair at a time, since its noise depends on the batch)."""
    for lo in range(0, len(index), chunk):
        sel = index[lo : lo + chunk]
        for key, metric in metrics.items():
            if key == "max_sensitivity":
                for i in sel:
                    metric.update(model, x1[i : i + 1], x2[i : i + 1])
            else:
                metric.update(model, x1[sel], x2[sel], h1[sel], h2[sel])


def test_mean_of_per_pair_scores_and_directions():
    model, x1, x2, h1, h2 = _probe_set()
    metrics = _metrics()
    _feed(metrics, model, x1, x2, h1, h2, list(range(5)), chunk=2)
    scores = evaluate(model, x1, x2, (h1, h2), list(metrics)[:-1], n_steps=N_STEPS)
    for key, metric in metrics.items():
        assert metric.key == key
        assert metric.higher_is_better is metric_info(key).higher_is_better
        assert metric.full_state_update is False
        assert metric.count.item() == 5
        if key != "max_sensitivity":
            assert torch.allclose(metric.compute(), scores[key].mean(), atol=1e-5), key
    metrics["insertion_simultaneous"].reset()
    assert metrics["insertion_simultaneous"].count.item() == 0


def test_update_accepts_an_explanation_and_inference_mode():
    model, x1, x2, h1, h2 = _probe_set(2)
    a = Insertion(n_steps=N_STEPS)
    b = Insertion(n_steps=N_STEPS)
    a.update(model, x1, x2, h1, h2)
    with torch.inference_mode():
        b.update(model, x1, x2, PairExplanation(h1, h2, torch.zeros(2)))
    assert torch.allclose(a.compute(), b.compute())
    c = Insertion(n_steps=N_STEPS)
    c.update(model, x1, x2, (h1, h2))
    assert torch.allclose(a.compute(), c.compute())


def test_wrapper_argument_errors():
    model, x1, x2, h1, h2 = _probe_set(2)
    with pytest.raises(ValueError, match=r"`Insertion`.*`mode`"):
        Insertion(mode="both")
    with pytest.raises(ValueError, match="`n_steps` >= 1"):
        Deletion(n_steps=0)
    with pytest.raises(ValueError, match="only applies to mode='simultaneous'"):
        Deletion(mode="conditional", corrected=True)
    with pytest.raises(ValueError, match=r"`AverageIncrease`.*`direction`.*'both', 'x1', 'x2'"):
        AverageIncrease(mode="conditional", direction="x3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`corrected` to be a bool"):
        Deletion(corrected="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`batch_size` >= 1"):
        AverageDrop(batch_size=0)
    with pytest.raises(ValueError, match="`radius` >= 0"):
        MaxSensitivity("input_x_gradient", radius=-0.1)
    metric = AverageDrop()
    with pytest.raises(ValueError, match="expected `h2`"):
        metric.update(model, x1, x2, h1)
    with pytest.raises(ValueError, match="do not pass `h2` too"):
        metric.update(model, x1, x2, (h1, h2), h2)


def test_public_signatures_and_positional_arguments():
    def params(cls: type) -> list[str]:
        return list(inspect.signature(cls).parameters)

    curve = ["n_steps", "similarity", "batch_size", "direction", "ties", "kwargs"]
    assert params(Insertion) == ["mode", *curve]
    assert params(Deletion) == ["mode", "corrected", *curve]
    assert params(AverageDrop) == params(AverageIncrease) == ["mode", *curve[1:4], "kwargs"]
    for cls in (Insertion, Deletion, AverageDrop, AverageIncrease):
        direction = inspect.signature(cls).parameters["direction"]
        assert direction.kind is inspect.Parameter.KEYWORD_ONLY
        assert direction.default == "both"
    assert Insertion(direction="x2").direction == "x2"
    ins = Insertion("conditional", 8, "dot", 4)
    assert (ins.key, ins.n_steps, ins.similarity) == ("insertion_conditional", 8, "dot")
    assert ins.batch_size == 4
    assert Deletion("simultaneous", True, 8).key == "deletion_simultaneous_corrected"
    inc = AverageIncrease("conditional", "dot", 4)
    assert (inc.key, inc.similarity, inc.batch_size) == ("average_increase_conditional", "dot", 4)
    assert AverageDrop().key == "average_drop_simultaneous"


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, x1, x2, h1, h2 = _probe_set()
        metrics = _metrics()
        shard = list(range(rank, x1.shape[0], world))  # uneven: 3 pairs and 2 pairs
        _feed(metrics, model, x1, x2, h1, h2, shard, chunk=2)
        values = {k: m.compute().item() for k, m in metrics.items()}
        torch.save(values, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_ddp_sharded_probe_set_matches_one_process(tmp_path: Path):
    model, x1, x2, h1, h2 = _probe_set()
    single = _metrics()
    _feed(single, model, x1, x2, h1, h2, list(range(5)), chunk=2)
    expected = {k: m.compute().item() for k, m in single.items()}
    init_file = tmp_path / "init"
    mp.spawn(_ddp_worker, args=(2, str(init_file), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-5), (rank, key)
    # the shards alone give different means, so the equality above needs the sync
    shard_only = _metrics()
    _feed(shard_only, model, x1, x2, h1, h2, [0, 2, 4], chunk=2)
    differs = [k for k, m in shard_only.items() if abs(m.compute().item() - expected[k]) > 1e-4]
    assert len(differs) >= 5
