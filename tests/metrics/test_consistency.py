"""One source of maths: for every registry key and every direction it supports, the metric class
(one batch, and two batches = the mean of the per-pair scores), the function and ``evaluate`` give
the same scores; and the direction policy means the same everywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from lightning_explain.metrics import (
    AverageDrop,
    AverageIncrease,
    Deletion,
    Insertion,
    MaxSensitivity,
    average_drop,
    average_increase,
    deletion,
    evaluate,
    insertion,
    list_metrics,
    max_sensitivity,
    metric_info,
)
from tests.helpers import images
from tests.metrics.reference import centered_cnn

N_STEPS = 5
BATCH = 7  # images per forward: chunk boundaries fall inside the pairs x steps grid
DIRECTIONS = ("both", "x1", "x2")

# key -> (function, its arguments for the key); every key but max_sensitivity
FUNCTIONS: dict[str, tuple[Callable[..., Tensor], dict[str, Any]]] = {
    "insertion_simultaneous": (insertion, {"mode": "simultaneous", "n_steps": N_STEPS}),
    "insertion_conditional": (insertion, {"mode": "conditional", "n_steps": N_STEPS}),
    "deletion_simultaneous": (deletion, {"mode": "simultaneous", "n_steps": N_STEPS}),
    "deletion_conditional": (deletion, {"mode": "conditional", "n_steps": N_STEPS}),
    "deletion_simultaneous_corrected": (
        deletion,
        {"mode": "simultaneous", "corrected": True, "n_steps": N_STEPS},
    ),
    "average_drop_simultaneous": (average_drop, {"mode": "simultaneous"}),
    "average_drop_conditional": (average_drop, {"mode": "conditional"}),
    "average_increase_simultaneous": (average_increase, {"mode": "simultaneous"}),
    "average_increase_conditional": (average_increase, {"mode": "conditional"}),
}
# key -> the class with the same arguments, given a direction
CLASSES: dict[str, Callable[[Any], Any]] = {
    "insertion_simultaneous": lambda d: Insertion(
        "simultaneous", N_STEPS, batch_size=BATCH, direction=d
    ),
    "insertion_conditional": lambda d: Insertion(
        "conditional", N_STEPS, batch_size=BATCH, direction=d
    ),
    "deletion_simultaneous": lambda d: Deletion(
        "simultaneous", n_steps=N_STEPS, batch_size=BATCH, direction=d
    ),
    "deletion_conditional": lambda d: Deletion(
        "conditional", n_steps=N_STEPS, batch_size=BATCH, direction=d
    ),
    "deletion_simultaneous_corrected": lambda d: Deletion(
        "simultaneous", True, N_STEPS, batch_size=BATCH, direction=d
    ),
    "average_drop_simultaneous": lambda d: AverageDrop(
        "simultaneous", batch_size=BATCH, direction=d
    ),
    "average_drop_conditional": lambda d: AverageDrop("conditional", batch_size=BATCH, direction=d),
    "average_increase_simultaneous": lambda d: AverageIncrease(
        "simultaneous", batch_size=BATCH, direction=d
    ),
    "average_increase_conditional": lambda d: AverageIncrease(
        "conditional", batch_size=BATCH, direction=d
    ),
}
CASES = [(key, d) for key in FUNCTIONS for d in DIRECTIONS]
CONDITIONAL = [k for k in FUNCTIONS if metric_info(k).mode == "conditional"]
SIMULTANEOUS = [k for k in FUNCTIONS if metric_info(k).mode == "simultaneous"]
EXACT = {"rtol": 0.0, "atol": 0.0}  # the same code path: bitwise equal
TIGHT = {"rtol": 1e-5, "atol": 1e-6}  # the same maths, other batch composition or summation


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(11)
    model = centered_cnn(2)
    a = (images(3, 3, 16, 16, seed=21), images(3, 3, 16, 16, seed=22))
    b = (images(2, 3, 16, 16, seed=23), images(2, 3, 16, 16, seed=24))
    maps_a = (torch.rand(3, 16, 16, generator=g), torch.rand(3, 16, 16, generator=g))
    maps_b = (torch.rand(2, 4, 4, generator=g), torch.rand(2, 4, 4, generator=g))  # upsampled
    return model, (*a, *maps_a), (*b, *maps_b)


def _function(key: str, batch: tuple[Tensor, ...], model, direction: str) -> Tensor:
    fn, kwargs = FUNCTIONS[key]
    return fn(model, *batch, direction=direction, batch_size=BATCH, **kwargs)


def test_the_tables_cover_every_key():
    assert sorted([*FUNCTIONS, "max_sensitivity"]) == list_metrics()
    assert set(CLASSES) == set(FUNCTIONS)
    for key, make in CLASSES.items():
        metric = make("both")
        assert metric.key == key
        assert metric.higher_is_better is metric_info(key).higher_is_better


@pytest.mark.parametrize(("key", "direction"), CASES)
def test_class_function_and_evaluate_agree(data, key, direction):
    model, a, b = data
    got_a = _function(key, a, model, direction)
    assert got_a.shape == (3,)
    scores = evaluate(
        model, *a[:2], a[2:], [key], n_steps=N_STEPS, batch_size=BATCH, direction=direction
    )
    torch.testing.assert_close(scores[key], got_a, **EXACT)
    metric = CLASSES[key](direction)
    metric.update(model, *a)
    torch.testing.assert_close(metric.compute(), got_a.mean(), **TIGHT)
    got_b = _function(key, b, model, direction)
    metric.update(model, *b[:2], b[2:])  # a tuple of maps this time
    assert metric.count.item() == 5
    torch.testing.assert_close(metric.compute(), torch.cat([got_a, got_b]).mean(), **TIGHT)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_shared_forwards_give_the_single_key_scores(data, direction):
    """All keys in one evaluate call (one perturbation pass, one masked pass) = key by key."""
    model, a, _ = data
    together, curves = evaluate(
        model,
        *a[:2],
        a[2:],
        list(FUNCTIONS),
        n_steps=N_STEPS,
        batch_size=BATCH,
        direction=direction,
        return_curves=True,
    )
    assert list(together) == list(FUNCTIONS)  # registry order
    for key in FUNCTIONS:
        torch.testing.assert_close(together[key], _function(key, a, model, direction), **TIGHT)
    for key, curve in curves.items():
        fn, kwargs = FUNCTIONS[key]
        _, expected = fn(
            model, *a, direction=direction, batch_size=BATCH, return_curve=True, **kwargs
        )
        torch.testing.assert_close(curve, expected, **TIGHT)


@pytest.mark.parametrize("key", CONDITIONAL)
def test_direction_policy_of_the_conditional_metrics(data, key):
    model, (x1, x2, h1, h2), _ = data
    fn, kwargs = FUNCTIONS[key]
    both = fn(model, x1, x2, h1, h2, **kwargs)  # the default is "both"
    one = fn(model, x1, x2, h1, h2, direction="x1", **kwargs)
    other = fn(model, x1, x2, h1, h2, direction="x2", **kwargs)
    torch.testing.assert_close(both, 0.5 * (one + other), **TIGHT)
    # "x2" perturbs x2 by h2 with x1 intact: the "x1" score of the swapped pair
    torch.testing.assert_close(other, fn(model, x2, x1, h2, h1, direction="x1", **kwargs), **TIGHT)
    # "both" is symmetric under swapping the pair
    torch.testing.assert_close(both, fn(model, x2, x1, h2, h1, **kwargs), **TIGHT)
    # "x1" needs no h2 and does not look at it
    torch.testing.assert_close(fn(model, x1, x2, h1, direction="x1", **kwargs), one, **EXACT)
    if not key.startswith("average_increase"):  # indicators may tie; the others must differ
        assert (one - other).abs().max() > 1e-4, "the two directions coincide: vacuous test"
    for direction in ("both", "x2"):
        with pytest.raises(ValueError, match=r"needs `h2`.*direction=\"x1\""):
            fn(model, x1, x2, h1, direction=direction, **kwargs)


@pytest.mark.parametrize("key", SIMULTANEOUS)
def test_simultaneous_metrics_ignore_the_direction(data, key):
    model, a, _ = data
    reference = _function(key, a, model, "both")
    for direction in ("x1", "x2"):
        torch.testing.assert_close(_function(key, a, model, direction), reference, **EXACT)
    with pytest.raises(ValueError, match=r"mode='simultaneous'.*needs `h2`"):
        FUNCTIONS[key][0](model, *a[:3], direction="x1", **FUNCTIONS[key][1])


def test_unknown_direction_is_refused_everywhere(data):
    model, (x1, x2, h1, h2), _ = data
    pattern = r"`{}`: expected `direction` to be one of \['both', 'x1', 'x2'\].*Did you mean 'both'"
    with pytest.raises(ValueError, match=pattern.format("evaluate")):
        evaluate(model, x1, x2, (h1, h2), direction="booth")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=pattern.format("deletion")):
        deletion(model, x1, x2, h1, h2, mode="conditional", direction="booth")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=pattern.format("Insertion")):
        Insertion(mode="conditional", direction="booth")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=pattern.format("average_drop")):
        average_drop(model, x1, x2, h1, h2, direction="booth")  # type: ignore[arg-type]


def test_max_sensitivity_class_function_and_evaluate_agree(data):
    model, (xa1, xa2, *_), (xb1, xb2, *_) = data
    got_a = max_sensitivity(model, xa1, xa2, "input_x_gradient")
    got_b = max_sensitivity(model, xb1, xb2, "input_x_gradient")
    assert (got_a > 0).all()
    for direction in DIRECTIONS:  # no direction: every value gives the same scores
        scores = evaluate(
            model,
            xa1,
            xa2,
            None,
            ["max_sensitivity"],
            method="input_x_gradient",
            direction=direction,
        )
        torch.testing.assert_close(scores["max_sensitivity"], got_a, **EXACT)
    metric = MaxSensitivity("input_x_gradient")
    metric.update(model, xa1, xa2)
    torch.testing.assert_close(metric.compute(), got_a.mean(), **TIGHT)
    metric.update(model, xb1, xb2)
    torch.testing.assert_close(metric.compute(), torch.cat([got_a, got_b]).mean(), **TIGHT)
