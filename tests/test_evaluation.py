"""The evaluation engine: one call explains and scores pairs; shards of a probe set concatenate to
the whole; options are injected in one place."""

from __future__ import annotations

import pytest
import torch

from lightning_explain import ProbeSet, evaluate_probe
from lightning_explain.evaluation import (
    EvaluationFailure,
    ProbeEvaluation,
    evaluate_sharded,
    method_options,
    parse_methods,
)
from tests.helpers import CentredLeftHalfModel

METHODS = ["gradcam", "input_x_gradient"]
METRICS = ["insertion_simultaneous", "deletion_conditional"]


def _probe(n: int = 5) -> ProbeSet:
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.rand(n, 3, 16, 16, generator=g), torch.rand(n, 3, 16, 16, generator=g)
    return ProbeSet(x1, x2, tuple(range(n)), 0, "dataset", "test")


@pytest.mark.parametrize("world", [2, 3, 5])
def test_shards_concatenate_to_the_whole_evaluation(world: int) -> None:
    model, probe = CentredLeftHalfModel(size=16), _probe()
    whole = evaluate_probe(model, probe, METHODS, METRICS, n_steps=4)
    parts = [
        evaluate_probe(model, probe.shard(r, world), METHODS, METRICS, n_steps=4)
        for r in range(world)
    ]
    assert sum(len(probe.shard(r, world)) for r in range(world)) == len(probe)
    merged = ProbeEvaluation.concat(parts)
    torch.testing.assert_close(merged.sim, whole.sim)
    for label in METHODS:
        a, b = merged[label], whole[label]
        torch.testing.assert_close(a.explanation.h1, b.explanation.h1, atol=1e-5, rtol=1e-4)
        for key in METRICS:
            torch.testing.assert_close(a.scores[key], b.scores[key], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(a.curves[key], b.curves[key], atol=1e-5, rtol=1e-4)
    assert merged.scalars().keys() == whole.scalars().keys()


def test_a_method_missing_from_one_shard_is_dropped_and_failures_are_kept() -> None:
    model, probe = CentredLeftHalfModel(size=16), _probe(4)
    full = evaluate_probe(model, probe.shard(0, 2), METHODS, [], n_steps=4)
    failed = ProbeEvaluation(
        evaluate_probe(model, probe.shard(1, 2), ["gradcam"], []).sim,
        evaluate_probe(model, probe.shard(1, 2), ["gradcam"], []).methods,
        (EvaluationFailure("method", "input_x_gradient", RuntimeError("boom")),),
    )
    merged = ProbeEvaluation.concat([full, failed, ProbeEvaluation(torch.zeros(0))])
    assert merged.labels == ["gradcam"]
    assert len(merged.sim) == 4
    assert [f.label for f in merged.failures] == ["input_x_gradient"]


def test_one_process_evaluates_the_whole_set_and_a_raising_evaluation_is_collected() -> None:
    probe = _probe()
    seen: list[int] = []

    def evaluate(part: ProbeSet) -> ProbeEvaluation:
        seen.append(len(part))
        raise RuntimeError("bug")

    out = evaluate_sharded(evaluate, probe, rank=0, world_size=1)
    assert seen == [len(probe)]
    assert out is not None
    assert out.sim is None
    assert [f.message() for f in out.failures] == [
        "evaluating the probe pairs (all pairs) failed: RuntimeError: bug"
    ]


def test_shared_options_are_injected_once_and_entries_win() -> None:
    spec = parse_methods([{"name": "rise", "n_masks": 50, "seed": 7}])[0]
    options = method_options(spec, similarity="dot", layer="x", seed=1, batch_size=8)
    assert options == {"n_masks": 50, "seed": 7, "similarity": "dot", "batch_size": 8}
    (cam,) = parse_methods(["gradcam"])
    assert method_options(cam, layer="features.3") == {
        "similarity": "cosine",
        "layer": "features.3",
    }
