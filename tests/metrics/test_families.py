"""The registry rows name a family file and its options; evaluate dispatches on them alone.

This module is itself a family file (``FAMILY`` below): the last tests add a metric to the
registry with one row naming this module, and ``evaluate`` runs it with no other change.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch
from torch import Tensor

import lightning_explain.metrics._registry as registry
from lightning_explain.metrics import (
    DEFAULT_METRICS,
    average_drop,
    average_increase,
    deletion,
    evaluate,
    insertion,
    list_metrics,
    max_sensitivity,
    metric_info,
)
from lightning_explain.metrics.functional._common import MapInputs, MetricFamily, similarity
from tests.helpers import images
from tests.metrics.reference import Counting, centered_cnn

FUNCTION_OF_FAMILY = {
    "insertion": insertion,
    "deletion": deletion,
    "average_drop": average_drop,
    "average_increase": average_increase,
    "max_sensitivity": max_sensitivity,
}


def test_every_row_names_a_family_and_complete_options():
    names = set()
    for key in list_metrics():
        info = metric_info(key)
        family = info.load()
        assert isinstance(family, MetricFamily)
        assert info.module.endswith(f".functional.{family.name}")
        assert info.family_name == family.name
        names.add(family.name)
        options = dict(info.options)
        assert family.check(options, "test") == options, key  # complete and valid
        assert info.family == options["kind"]
        assert info.mode == options.get("mode")
        assert (family.inputs == "pairs") is info.needs_method
        with pytest.raises(TypeError):
            info.options["mode"] = "x"  # type: ignore[index]  # read-only
    assert names == {"insertion_deletion", "drop_increase", "sensitivity"}


def test_row_options_are_the_functions_defaults():
    """evaluate's keys use the functions' defaults (substrates, noise protocol), so the class, the
    function and evaluate agree without arguments."""
    for key in list_metrics():
        info = metric_info(key)
        params = inspect.signature(FUNCTION_OF_FAMILY[info.family]).parameters
        for name, value in info.options.items():
            if name in ("kind", "mode") or name not in params:
                continue
            if name == "corrected" and value:
                continue  # the corrected key's one deviation from the default
            assert params[name].default == value, (key, name)


def test_family_checks_name_the_bad_option():
    family = metric_info("insertion_simultaneous").load()
    good = dict(metric_info("insertion_simultaneous").options)
    with pytest.raises(TypeError, match=r"unknown \['colour'\]"):
        family.check({**good, "colour": 1}, "t")
    with pytest.raises(ValueError, match=r"`t`: expected `substrate` to be one of"):
        family.check({**good, "substrate": "noise"}, "t")
    with pytest.raises(TypeError, match=r"`substrate` to be one of .* or a number"):
        family.check({**good, "substrate": [0.0]}, "t")
    with pytest.raises(ValueError, match="`substrate` to be finite"):
        family.check({**good, "substrate": float("nan")}, "t")
    assert family.check({**good, "substrate": 1}, "t")["substrate"] == 1.0
    with pytest.raises(ValueError, match="deletion only"):
        family.check({**good, "corrected": True}, "t")
    sens = metric_info("max_sensitivity").load()
    with pytest.raises(TypeError, match="`seed` to be an int"):
        sens.check({"seed": 0.5}, "t")


# --------------------------------------------------------------------------------------------------
# Adding a metric: this module is the family file, one registry row per key.

UPDATES: list[int] = []


def _toy_check(options: Mapping[str, Any], owner: str) -> dict[str, Any]:
    return {"kind": "toy", "side": options["side"]}


def _toy_update(inputs: MapInputs, requests: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
    """Mean saliency of each map times the intact similarity (no forward of its own)."""
    UPDATES.append(len(requests))
    base = similarity(inputs.ctx, *inputs.intact)
    assert inputs.map2 is not None
    return {"x1": base * inputs.map1.mean(dim=(1, 2)), "x2": base * inputs.map2.mean(dim=(1, 2))}


def _toy_compute(state: dict[str, Tensor], options: Mapping[str, Any]) -> tuple[Tensor, None]:
    return state[options["side"]].clone(), None


FAMILY = MetricFamily(
    name="test_families",
    inputs="maps",
    check=_toy_check,
    update=_toy_update,
    compute=_toy_compute,
)


@pytest.fixture
def toy_rows(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    keys = []
    for side in ("x1", "x2"):
        key = f"toy_saliency_{side}"
        row = registry.MetricInfo(
            key,
            "toy",
            None,
            True,
            "no forwards of its own",
            "mean saliency times the intact similarity",
            module=__name__,
            options={"kind": "toy", "side": side},
        )
        monkeypatch.setitem(registry.REGISTRY, key, row)
        keys.append(key)
    UPDATES.clear()
    return keys


def test_a_new_family_file_and_its_rows_are_enough(toy_rows: list[str]):
    g = torch.Generator().manual_seed(3)
    model = centered_cnn(3)
    x1, x2 = images(2, 3, 16, 16, seed=1), images(2, 3, 16, 16, seed=2)
    h1, h2 = torch.rand(2, 16, 16, generator=g), torch.rand(2, 16, 16, generator=g)
    assert set(toy_rows) <= set(list_metrics())
    assert list_metrics("toy") == toy_rows
    assert metric_info("toy_saliency_x1").load() is FAMILY
    counting = Counting(model)
    keys = [*toy_rows, "insertion_simultaneous"]
    scores = evaluate(counting, x1, x2, (h1, h2), keys, n_steps=4)
    assert list(scores) == ["insertion_simultaneous", *toy_rows]  # registry order
    assert UPDATES == [2]  # one update for both toy keys
    assert counting.images == 2 * (2 + 2 * 4)  # the toy keys reuse the intact forwards
    with torch.no_grad():
        base = torch.cosine_similarity(model.eval()(x1), model(x2))
    torch.testing.assert_close(scores["toy_saliency_x1"], base * h1.mean(dim=(1, 2)))
    torch.testing.assert_close(scores["toy_saliency_x2"], base * h2.mean(dim=(1, 2)))
    insertion_alone = evaluate(model, x1, x2, (h1, h2), "insertion_simultaneous", n_steps=4)
    torch.testing.assert_close(
        scores["insertion_simultaneous"], insertion_alone["insertion_simultaneous"]
    )
    assert "toy_saliency_x1" not in evaluate(model, x1, x2, (h1, h2), n_steps=2)
    assert set(DEFAULT_METRICS) <= set(list_metrics())
