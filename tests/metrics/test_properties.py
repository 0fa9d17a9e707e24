"""Property tests (hypothesis, small budgets) of the insertion/deletion scores."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_explain.metrics import deletion, evaluate, insertion
from tests.helpers import LeftHalfModel, images
from tests.metrics.reference import Centered, centered_cnn

SETTINGS = settings(max_examples=12, deadline=None)

shapes = st.tuples(
    st.integers(1, 3),  # B
    st.sampled_from([1, 3]),  # C
    st.integers(8, 20),  # H
    st.integers(8, 20),  # W
)


@SETTINGS
@given(
    shape=shapes,
    n_steps=st.integers(1, 12),
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["insertion", "deletion"]),
    mode=st.sampled_from(["simultaneous", "conditional"]),
)
def test_score_lies_within_its_curve(shape, n_steps, seed, kind, mode):
    b, c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    model = centered_cnn(seed % 7, c)
    x1, x2 = images(b, c, h, w, seed=seed), images(b, c, h, w, seed=seed + 1)
    h1, h2 = torch.rand(b, h, w, generator=g), torch.rand(b, h, w, generator=g)
    fn = insertion if kind == "insertion" else deletion
    score, curve = fn(model, x1, x2, h1, h2, mode=mode, n_steps=n_steps, return_curve=True)
    assert curve.shape == (b, n_steps + 1)
    assert (score >= curve.amin(dim=1) - 1e-6).all()
    assert (score <= curve.amax(dim=1) + 1e-6).all()


@SETTINGS
@given(
    shape=shapes,
    n_steps=st.integers(1, 10),
    seed=st.integers(0, 10_000),
    corrected=st.booleans(),
)
def test_simultaneous_scores_are_symmetric_in_the_pair(shape, n_steps, seed, corrected):
    b, c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    model = centered_cnn(seed % 5, c)
    x1, x2 = images(b, c, h, w, seed=seed), images(b, c, h, w, seed=seed + 1)
    h1, h2 = torch.rand(b, h, w, generator=g), torch.rand(b, h, w, generator=g)
    ins = insertion(model, x1, x2, h1, h2, n_steps=n_steps)
    ins_swapped = insertion(model, x2, x1, h2, h1, n_steps=n_steps)
    dele = deletion(model, x1, x2, h1, h2, n_steps=n_steps, corrected=corrected)
    dele_swapped = deletion(model, x2, x1, h2, h1, n_steps=n_steps, corrected=corrected)
    assert torch.allclose(ins, ins_swapped, atol=1e-6)
    assert torch.allclose(dele, dele_swapped, atol=1e-6)
    # evaluate's conditional keys average both directions, so they are symmetric too
    keys = ["insertion_conditional", "deletion_conditional", "average_drop_conditional"]
    a = evaluate(model, x1, x2, (h1, h2), keys, n_steps=n_steps)
    s = evaluate(model, x2, x1, (h2, h1), keys, n_steps=n_steps)
    for key in keys:
        assert torch.allclose(a[key], s[key], atol=1e-6), key


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_steps=st.sampled_from([8, 12, 16]))
def test_left_half_map_beats_random_map_for_a_left_half_model(seed, n_steps):
    """A model that sees only the left half: ranking the left half first (in the same random
    order within it) gives higher insertion and lower deletion than the random map itself.

    Pairs are two identical views, so the similarity is 1 when everything the model sees is
    intact; the assertion is on the mean over 4 pairs, as the metrics are reported.
    """
    b, h, w = 4, 16, 24
    g = torch.Generator().manual_seed(seed)
    model = Centered(LeftHalfModel(seed=seed % 50))
    x1 = torch.rand(b, 3, h, w, generator=g)
    x2 = x1.clone()
    rnd1, rnd2 = torch.rand(b, h, w, generator=g), torch.rand(b, h, w, generator=g)
    half = torch.zeros(h, w)
    half[:, : w // 2] = 1.0
    keys = ["insertion_simultaneous", "insertion_conditional", "deletion_conditional"]
    good = evaluate(model, x1, x2, (rnd1 + half, rnd2 + half), keys, n_steps=n_steps)
    rand = evaluate(model, x1, x2, (rnd1, rnd2), keys, n_steps=n_steps)
    assert good["insertion_simultaneous"].mean() > rand["insertion_simultaneous"].mean()
    assert good["insertion_conditional"].mean() > rand["insertion_conditional"].mean()
    assert good["deletion_conditional"].mean() < rand["deletion_conditional"].mean()
