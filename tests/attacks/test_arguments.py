"""Bad arguments are refused at construction, with the argument, what was expected and what
arrived: option values of every method (checked from their type), labels that trackers would merge,
and inputs of the wrong dtype."""

from __future__ import annotations

import typing
from typing import Any

import pytest
import torch
from torch import nn

from lightning_explain import PairExplanationCallback, explain, parse_methods
from lightning_explain._checks import Bounds
from lightning_explain.methods import get_method, list_methods
from tests.helpers import TinyCNN


def _bounded_options() -> list[tuple[str, str, Any, Any]]:
    """(method, option, a value outside its bounds, a value inside) for every bounded option."""
    cases = []
    for name in list_methods():
        hints = typing.get_type_hints(get_method(name), include_extras=True)
        for option, tp in hints.items():
            args = typing.get_args(tp)
            if typing.get_origin(tp) is typing.Union:  # Optional[Annotated[...]]
                tp = next(a for a in args if a is not type(None))
            if typing.get_origin(tp) is not typing.Annotated:
                continue
            base, *meta = typing.get_args(tp)
            bounds = next(m for m in meta if isinstance(m, Bounds))
            low = bounds.minimum
            assert low is not None
            bad = low - 1 if base is int else (low if bounds.exclusive_minimum else low - 0.5)
            good = int(low) + (1 if bounds.exclusive_minimum else 0) if base is int else low + 0.5
            if bounds.maximum is not None:
                good = min(good, bounds.maximum)
            cases.append((name, option, bad, good))
    return cases


BOUNDED = _bounded_options()


def test_there_are_bounded_options_to_check() -> None:
    names = {(m, o) for m, o, _, _ in BOUNDED}
    assert ("rise", "n_masks") in names
    assert ("smoothgrad", "noise") in names
    assert ("conditional_occlusion", "batch_size") in names


@pytest.mark.parametrize(("method", "option", "bad", "good"), BOUNDED)
def test_out_of_range_options_fail_at_construction_and_at_call(
    method: str, option: str, bad: Any, good: Any
) -> None:
    with pytest.raises(ValueError, match=f"`{option}`"):
        PairExplanationCallback([{"name": method, option: bad}])
    parse_methods([{"name": method, option: good}])  # the boundary itself is accepted
    # The method's own check agrees with its type: a direct call refuses the value too.
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=f"`{option}`"):
        explain(TinyCNN(), x, x, method=method, **{option: bad})


@pytest.mark.parametrize(
    ("entry", "error", "match"),
    [
        ({"name": "interaction_cam", "reduction": "maxx"}, ValueError, "Did you mean 'max'"),
        ({"name": "rise", "n_masks": 2.5}, TypeError, "`n_masks` to be an int"),
        ({"name": "smoothgrad", "guided": "yes"}, TypeError, "`guided` to be a bool"),
        ({"name": "pairwise_occlusion", "credit": "all"}, ValueError, r"\['shapley', 'both', 'norm'"),
        ({"name": "gradcam", "label": "cam=v1"}, ValueError, "MLflow drops '='"),
        ({"name": "gradcam", "label": "sim"}, ValueError, "reserved"),
    ],
)
def test_bad_entries_fail_at_construction(entry: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        PairExplanationCallback([entry])


def test_labels_that_differ_only_in_case_collide() -> None:
    with pytest.raises(ValueError, match="same name"):
        PairExplanationCallback(
            [{"name": "gradcam", "label": "CAM"}, {"name": "interaction_cam", "label": "cam"}]
        )


def test_automatic_labels_stay_tracker_safe() -> None:
    specs = parse_methods([{"name": "rise", "p_keep": 0.5}, {"name": "rise", "p_keep": 0.25}])
    assert [s.label for s in specs] == ["rise-0.5", "rise-0.25"]


def test_a_half_precision_model_with_float32_images_names_both_dtypes() -> None:
    net = TinyCNN().half()
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(TypeError, match=r"torch.float16 but the images are torch.float32.*x.to"):
        explain(net, x, x, method="input_x_gradient")


@pytest.mark.parametrize("method", ["pixel_invariance", "gradcam", "input_x_gradient", "rise"])
def test_bf16_models_are_explained(method: str) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net = net.to(torch.bfloat16)
    x = torch.rand(2, 3, 16, 16, dtype=torch.bfloat16)
    options = {"pixel_invariance": {"n_augmentations": 8, "epochs": 2}, "rise": {"n_masks": 8}}
    e = explain(net, x, x, method=method, **options.get(method, {}))
    assert torch.isfinite(e.h1).all()
