"""Ground truth on the saturated models (every pair similarity above 0.999, as an untrained
network), at 32 px (see :mod:`tests.ground_truth.test_localisation`)."""

from __future__ import annotations

import pytest

from tests.ground_truth.models import KINDS
from tests.ground_truth.test_localisation import METHODS, check_saturated


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_defaults_localise_on_saturated_models(method: str, kind: str) -> None:
    check_saturated(method, kind)
