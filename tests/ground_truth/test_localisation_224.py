"""Ground truth at 224 px, the paper's size (slow; see :mod:`tests.ground_truth.test_localisation`)."""

from __future__ import annotations

import pytest

from tests.ground_truth.test_localisation import METHODS, check_224


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_defaults_localise_at_224_px(method: str) -> None:
    check_224(method)
