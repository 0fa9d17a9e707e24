"""lightning_explain.streaming: pairs streamed through a Lightning Trainer score as the engine
scores them in memory; the pair datasets are deterministic; duplicates from a sampler drop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_explain import evaluate_probe
from lightning_explain.data.probe import ProbeSet
from lightning_explain.streaming import ImageFolderPairs, ProbePairs, _merge, evaluate_stream
from tests.helpers import TinyCNN, images

METHODS = ["gradcam", {"name": "rise", "n_masks": 32}]
METRICS = ["insertion_simultaneous", "deletion_conditional"]


def _probe(n: int = 7) -> ProbeSet:
    return ProbeSet(
        images(n, h=16, w=16, seed=0),
        images(n, h=16, w=16, seed=1),
        indices=tuple(range(n)),
        seed=0,
        pairing="dataset",
        source="dataset",
    )


def test_streamed_scores_equal_the_in_memory_engine_and_leave_the_rng_alone() -> None:
    net, probe = TinyCNN(), _probe()
    before = torch.get_rng_state()
    result = evaluate_stream(
        net,
        ProbePairs(probe),
        METHODS,
        METRICS,
        batch_pairs=3,
        accelerator="cpu",
        n_steps=4,
        progress=False,
    )
    assert torch.equal(before, torch.get_rng_state())
    assert result is not None
    assert result.n_pairs == 7
    assert result.indices.tolist() == list(range(7))
    assert result.failures == []
    whole = evaluate_probe(net, probe, METHODS, METRICS, n_steps=4)
    torch.testing.assert_close(result.sim, whole.sim)
    for m in whole.methods:
        for key, values in m.scores.items():
            if m.label == "rise":  # drawn per batch: same estimator, other masks
                assert result.scores["rise"][key].shape == values.shape
                continue
            torch.testing.assert_close(result.scores[m.label][key], values, atol=1e-5, rtol=0)
    assert net.training  # the model's mode is back


def test_image_folder_pairs_are_deterministic_and_global_seed_free(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    pairs = ImageFolderPairs(tmp_path, size=24, seed=5)
    assert len(pairs) == 6
    torch.manual_seed(1)
    a1, a2, i = pairs[4]
    torch.manual_seed(2)
    state = torch.get_rng_state()
    b1, b2, _ = pairs[4]
    assert torch.equal(state, torch.get_rng_state())  # no draw from the caller's RNG
    assert i == 4
    assert a1.shape == a2.shape == (3, 24, 24)
    assert torch.equal(a1, b1)
    assert torch.equal(a2, b2)  # the same augmentation whatever the global seed
    assert not torch.equal(pairs[3][1], ImageFolderPairs(tmp_path, size=24, seed=6)[3][1])
    with pytest.raises(ValueError, match="root"):
        ImageFolderPairs(tmp_path / "nope")
    with pytest.raises(ValueError, match="both `mean` and `std`"):
        ImageFolderPairs(tmp_path, mean=[0.5, 0.5, 0.5])


def test_merge_keeps_one_entry_per_index_in_dataset_order() -> None:
    # A DistributedSampler over 5 items and 2 ranks gives rank 0: 0, 2, 4 and rank 1: 1, 3, 0.
    def part(index: list[int]) -> dict[str, object]:
        values = torch.tensor([float(i) for i in index])
        return {
            "index": torch.tensor(index),
            "sim": values,
            "scores": {"gradcam": {"insertion_simultaneous": values / 10}},
            "failures": [],
        }

    result = _merge(
        [part([0, 2, 4]), part([1, 3, 0])], ["gradcam"], ["insertion_simultaneous"], 1.0
    )
    assert result.indices.tolist() == [0, 1, 2, 3, 4]
    assert result.sim.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert result.means("gradcam")["insertion_simultaneous"] == pytest.approx(0.2)


def test_bad_arguments_fail_before_any_pair_is_read() -> None:
    probe = ProbePairs(_probe(2))
    with pytest.raises(TypeError, match="module"):
        evaluate_stream(lambda x: x, probe)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_pairs"):
        evaluate_stream(TinyCNN(), probe, batch_pairs=0)
    with pytest.raises(ValueError, match="Unknown explanation method"):
        evaluate_stream(TinyCNN(), probe, ["gradcan"])
