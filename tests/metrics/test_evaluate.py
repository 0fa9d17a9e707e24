"""evaluate(): registry, default set, bad input, no side effects, callers' autograd modes."""

from __future__ import annotations

import pytest
import torch

from lightning_explain.explanation import PairExplanation
from lightning_explain.metrics import (
    DEFAULT_METRICS,
    average_drop,
    deletion,
    evaluate,
    insertion,
    list_metrics,
    metric_info,
)
from tests.helpers import images, untouched, with_grads
from tests.metrics.reference import centered_cnn

ALL_KEYS = [
    "average_drop_conditional",
    "average_drop_simultaneous",
    "average_increase_conditional",
    "average_increase_simultaneous",
    "deletion_conditional",
    "deletion_simultaneous",
    "deletion_simultaneous_corrected",
    "insertion_conditional",
    "insertion_simultaneous",
    "max_sensitivity",
]
LOWER_IS_BETTER = {
    "average_drop_conditional",
    "average_drop_simultaneous",
    "deletion_conditional",
    "deletion_simultaneous",
    "deletion_simultaneous_corrected",
    "max_sensitivity",
}


def _setup(b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = centered_cnn(seed)
    x1, x2 = images(b, 3, 24, 24, seed=seed), images(b, 3, 24, 24, seed=seed + 1)
    h1, h2 = torch.rand(b, 24, 24, generator=g), torch.rand(b, 24, 24, generator=g)
    return model, x1, x2, h1, h2


def test_registry():
    assert list_metrics() == ALL_KEYS
    for key in ALL_KEYS:
        info = metric_info(key)
        assert info.key == key
        assert info.higher_is_better is (key not in LOWER_IS_BETTER)
        assert info.cost
    assert list_metrics("deletion") == [
        "deletion_conditional",
        "deletion_simultaneous",
        "deletion_simultaneous_corrected",
    ]
    assert metric_info("max_sensitivity").needs_method
    assert not metric_info("deletion_simultaneous_corrected").paper
    with pytest.raises(ValueError, match=r"Did you mean 'insertion_conditional'.*Valid metrics"):
        metric_info("insertion_conditionl")
    with pytest.raises(ValueError, match="family"):
        list_metrics("occlusion")


def test_default_set_and_shapes():
    model, x1, x2, h1, h2 = _setup(3)
    scores = evaluate(model, x1, x2, PairExplanation(h1, h2, torch.zeros(3)), n_steps=6)
    assert list(scores) == list(DEFAULT_METRICS)
    assert "max_sensitivity" not in scores
    assert "deletion_simultaneous_corrected" not in scores
    for key, value in scores.items():
        assert value.shape == (3,), key
        assert torch.isfinite(value).all(), key
        assert not value.is_inference(), key


def test_selection_order_duplicates_and_curves():
    model, x1, x2, h1, h2 = _setup()
    keys = ["average_drop_simultaneous", "insertion_conditional", "insertion_conditional"]
    scores, curves = evaluate(model, x1, x2, (h1, h2), keys, n_steps=5, return_curves=True)
    assert list(scores) == ["insertion_conditional", "average_drop_simultaneous"]
    assert list(curves) == ["insertion_conditional"]
    assert curves["insertion_conditional"].shape == (2, 6)
    single = evaluate(model, x1, x2, (h1, h2), "deletion_simultaneous", n_steps=5)
    assert list(single) == ["deletion_simultaneous"]


def test_similarity_option_reaches_every_metric():
    model, x1, x2, h1, h2 = _setup()
    keys = ["insertion_simultaneous", "average_drop_conditional"]
    got = evaluate(model, x1, x2, (h1, h2), keys, similarity="dot", n_steps=4)
    ins = insertion(model, x1, x2, h1, h2, similarity="dot", n_steps=4)
    one = {"mode": "conditional", "direction": "x1", "similarity": "dot"}
    d12 = average_drop(model, x1, x2, h1, **one)
    d21 = average_drop(model, x2, x1, h2, **one)
    assert torch.allclose(got["insertion_simultaneous"], ins, atol=1e-4)
    assert torch.allclose(got["average_drop_conditional"], 0.5 * (d12 + d21), atol=1e-5)
    cosine = evaluate(model, x1, x2, (h1, h2), keys, n_steps=4)
    assert not torch.allclose(cosine["insertion_simultaneous"], got["insertion_simultaneous"])


def test_no_side_effects():
    model, x1, x2, h1, h2 = _setup()
    model = with_grads(model)
    model.train()
    x1_before, h1_before = x1.clone(), h1.clone()
    with untouched(model):
        evaluate(model, x1, x2, (h1, h2), list_metrics()[:-1], n_steps=4)
    assert torch.equal(x1, x1_before)
    assert torch.equal(h1, h1_before)


@pytest.mark.parametrize("guard", [torch.no_grad, torch.inference_mode, torch.enable_grad])
def test_callers_autograd_mode(guard):
    model, x1, x2, h1, h2 = _setup()
    expected = evaluate(model, x1, x2, (h1, h2), n_steps=4)
    with guard():
        got = evaluate(model, x1, x2, (h1, h2), n_steps=4)
    for key in expected:
        assert torch.allclose(got[key], expected[key]), key


def test_bad_input_names_the_argument():
    model, x1, x2, h1, h2 = _setup()
    with pytest.raises(ValueError, match=r"Unknown metric 'insertion'.*Valid metrics"):
        evaluate(model, x1, x2, (h1, h2), ["insertion"])
    with pytest.raises(ValueError, match="at least one metric"):
        evaluate(model, x1, x2, (h1, h2), [])
    with pytest.raises(ValueError, match=r"`h2`.*shape"):
        evaluate(model, x1, x2, (h1, h2[:1]))
    with pytest.raises(ValueError, match=r"`h1`.*no larger than the images"):
        evaluate(model, x1, x2, (torch.rand(2, 30, 24), h2))
    nan = h1.clone()
    nan[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"`h1`.*NaN"):
        evaluate(model, x1, x2, (nan, h2))
    with pytest.raises(ValueError, match="`n_steps` >= 1"):
        evaluate(model, x1, x2, (h1, h2), n_steps=0)
    with pytest.raises(ValueError, match="`batch_size` >= 1"):
        evaluate(model, x1, x2, (h1, h2), batch_size=0)
    with pytest.raises(TypeError, match="`explanation`"):
        evaluate(model, x1, x2, h1)
    with pytest.raises(ValueError, match="`explanation` is required"):
        evaluate(model, x1, x2, None, ["insertion_simultaneous"])
    with pytest.raises(ValueError, match="`similarity`"):
        evaluate(model, x1, x2, (h1, h2), similarity="euclid")


@pytest.mark.parametrize("fn", [insertion, deletion, average_drop])
def test_functional_bad_input(fn):
    model, x1, x2, h1, h2 = _setup()
    name = fn.__name__
    with pytest.raises(ValueError, match=rf"`{name}`.*`mode`.*'simultaneous', 'conditional'"):
        fn(model, x1, x2, h1, h2, mode="both")
    with pytest.raises(ValueError, match=rf"`{name}`.*needs `h2`"):
        fn(model, x1, x2, h1)
    with pytest.raises(ValueError, match=r"`h1`.*shape"):
        fn(model, x1, x2, h1[0], h2)
    bad = h2.clone()
    bad[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"`h2`.*NaN"):
        fn(model, x1, x2, h1, bad)
    if fn is not average_drop:
        with pytest.raises(ValueError, match="`n_steps` >= 1"):
            fn(model, x1, x2, h1, h2, n_steps=0)
        with pytest.raises(ValueError, match="`substrate`"):
            fn(model, x1, x2, h1, h2, substrate="noise")


def test_corrected_deletion_argument_checks():
    model, x1, x2, h1, h2 = _setup()
    with pytest.raises(ValueError, match="only applies to mode='simultaneous'"):
        deletion(model, x1, x2, h1, h2, mode="conditional", corrected=True)
    with pytest.raises(ValueError, match="own blurred version"):
        deletion(model, x1, x2, h1, h2, corrected=True, substrate="mean")


def test_model_errors_surface():
    _, x1, x2, h1, h2 = _setup()
    with pytest.raises(ValueError, match="embeddings of shape"):
        evaluate(lambda x: x, x1, x2, (h1, h2), n_steps=2)
