"""Ground truth at 64 px: every registered method with its defaults localises the known evidence
(see :mod:`tests.ground_truth.test_localisation`)."""

from __future__ import annotations

import pytest

from tests.ground_truth.models import KINDS
from tests.ground_truth.test_localisation import METHODS, check_known_evidence


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_defaults_localise_known_evidence_at_64_px(method: str, kind: str) -> None:
    check_known_evidence(method, kind, 64)
