"""The probe set: reproducible, side-effect free draws; pairings; files; normalisation detection."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset, Subset

from lightning_explain.data import (
    ProbeSet,
    default_clean_transform,
    draw_probe_set,
    find_normalize,
)
from tests.callback.helpers import PairDataset, TwoViewDataset


def _rng_states() -> tuple[Any, Any, Any]:
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def test_two_views_draw_is_reproducible_and_leaves_global_rngs_alone() -> None:
    ds = TwoViewDataset(20, size=16)
    before = _rng_states()
    a = draw_probe_set(ds, 4, pairing="two_views", seed=3)
    after = _rng_states()
    assert torch.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1])
    assert before[2] == after[2]

    assert a.x1.shape == a.x2.shape == (4, 3, 16, 16)
    assert a.x1.dtype == torch.float32
    assert len(set(a.indices)) == 4
    assert all(0 <= i < 20 for i in a.indices)
    # The two views are two different augmentations of the same image.
    assert not torch.equal(a.x1, a.x2)
    base = ds.images[list(a.indices)]
    assert (a.x1 - base).abs().mean() < 0.2 or (a.x1 - base.flip(-1)).abs().mean() < 0.2

    b = draw_probe_set(ds, 4, pairing="two_views", seed=3)
    assert a.indices == b.indices
    assert torch.equal(a.x1, b.x1)
    assert torch.equal(a.x2, b.x2)
    c = draw_probe_set(ds, 4, pairing="two_views", seed=4)
    assert c.indices != a.indices or not torch.equal(c.x1, a.x1)


def test_dataset_pairing_takes_the_items_pairs() -> None:
    ds = PairDataset(6)
    probe = draw_probe_set(ds, 3, pairing="dataset", seed=0)
    for k, i in enumerate(probe.indices):
        assert torch.equal(probe.x1[k], ds.a[i])
        assert torch.equal(probe.x2[k], ds.b[i])
    assert probe.pairing == "dataset"


def test_n_pairs_is_capped_at_the_dataset_size() -> None:
    probe = draw_probe_set(PairDataset(3), 8, pairing="dataset")
    assert len(probe) == 3
    assert sorted(probe.indices) == [0, 1, 2]


def test_clean_vs_augmented_uses_a_deterministic_clean_view_and_restores_the_transform() -> None:
    ds = TwoViewDataset(10, size=16)
    transform = ds.transform
    a = draw_probe_set(ds, 3, pairing="clean_vs_augmented", seed=0)
    b = draw_probe_set(ds, 3, pairing="clean_vs_augmented", seed=1)
    assert ds.transform is transform
    clean = default_clean_transform((16, 16))
    for probe in (a, b):
        for k, i in enumerate(probe.indices):
            assert torch.allclose(probe.x1[k], clean(ds.images[i]), atol=1e-6)
            # The augmented view is the first view of the dataset's multi-view transform.
            assert not torch.equal(probe.x2[k], probe.x1[k])


def test_clean_vs_augmented_accepts_explicit_transforms() -> None:
    ds = TwoViewDataset(5, size=16)
    probe = draw_probe_set(
        ds,
        2,
        pairing="clean_vs_augmented",
        clean_transform=lambda x: x * 0.5,
        augment_transform=lambda x: x.flip(-1),
    )
    for k, i in enumerate(probe.indices):
        assert torch.equal(probe.x1[k], ds.images[i] * 0.5)
        assert torch.equal(probe.x2[k], ds.images[i].flip(-1))


def test_subset_is_looked_through_for_the_transform() -> None:
    ds = TwoViewDataset(8, size=16)
    probe = draw_probe_set(Subset(ds, [5, 6, 7]), 2, pairing="clean_vs_augmented")
    assert probe.x1.shape == (2, 3, 16, 16)


def test_items_that_do_not_fit_the_pairing_get_a_clear_error() -> None:
    single = TwoViewDataset(4)
    single.transform = None  # items (image, label)
    with pytest.raises(ValueError, match=r"pairing='two_views' expects items.*item \d+ is a tuple"):
        draw_probe_set(single, 2, pairing="two_views")
    with pytest.raises(ValueError, match="pairing='dataset' expects items"):
        draw_probe_set([torch.rand(3, 8, 8)] * 3, 2, pairing="dataset")
    with pytest.raises(ValueError, match="must be a \\(C, H, W\\) float tensor"):
        draw_probe_set([(torch.rand(3, 8, 8), 1)] * 3, 2, pairing="dataset")
    with pytest.raises(ValueError, match="differ in shape"):
        draw_probe_set([(torch.rand(3, 8, 8), torch.rand(3, 4, 4))], 1, pairing="dataset")
    with pytest.raises(ValueError, match="no `transform` attribute"):
        draw_probe_set(PairDataset(3), 1, pairing="clean_vs_augmented")
    with pytest.raises(ValueError, match="expected `pairing` to be one of"):
        draw_probe_set(PairDataset(3), 1, pairing="views")  # type: ignore[arg-type]


def test_pil_views_get_a_to_tensor_hint() -> None:
    from PIL import Image

    img = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match="ToTensor"):
        draw_probe_set([([img, img], 0)], 1, pairing="two_views")


def test_iterable_datasets_are_refused_with_the_fix() -> None:
    class Stream(IterableDataset[Any]):
        def __iter__(self) -> Any:
            yield torch.rand(3, 8, 8), torch.rand(3, 8, 8)

    with pytest.raises(TypeError, match=r"map-style dataset.*ProbeSettings\(source=...\)"):
        draw_probe_set(Stream(), 1, pairing="dataset")


def test_save_and_load_round_trip_with_weights_only(tmp_path: Path) -> None:
    probe = draw_probe_set(TwoViewDataset(8), 3, seed=2, config_hash="abc")
    path = probe.save(tmp_path / "sub" / "probe.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "lightning-explain-probe"
    loaded = ProbeSet.load(path)
    assert torch.equal(loaded.x1, probe.x1)
    assert torch.equal(loaded.x2, probe.x2)
    assert loaded.indices == probe.indices
    assert (loaded.seed, loaded.pairing, loaded.config_hash) == (2, "two_views", "abc")


def test_loading_something_else_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no probe file"):
        ProbeSet.load(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not hold a lightning-explain probe set"):
        ProbeSet.load(tmp_path / "other.pt")


def test_probe_set_validates_its_tensors() -> None:
    with pytest.raises(ValueError, match="same shape"):
        ProbeSet(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 4, 4), (0, 1), 0, "dataset", "x")
    with pytest.raises(ValueError, match="indices"):
        ProbeSet(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), (0,), 0, "dataset", "x")


def test_find_normalize_looks_inside_nested_transforms() -> None:
    from torchvision import transforms as T

    inner = T.Compose([T.ToTensor(), T.Normalize([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])])
    nested = T.Compose([T.RandomApply([T.ColorJitter(0.1)], p=0.5), inner])
    assert find_normalize(nested) == ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    assert find_normalize(T.Compose([T.ToTensor()])) is None


def test_find_normalize_reads_lightly_simclr_transform() -> None:
    pytest.importorskip("lightly")
    from lightly.transforms import SimCLRTransform
    from lightly.transforms.utils import IMAGENET_NORMALIZE

    found = find_normalize(SimCLRTransform(input_size=32))
    assert found is not None
    assert np.allclose(found[0], IMAGENET_NORMALIZE["mean"])
    assert np.allclose(found[1], IMAGENET_NORMALIZE["std"])
