"""The demo's correspondence options (``examples/train_ssl.py``): ``--interactions`` reaches the
callback and the final commands, ``--probe-views`` writes a probe file that records its geometry."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytest.importorskip("lightly")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def demo() -> Iterator[ModuleType]:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import train_ssl

        yield train_ssl
    finally:
        sys.path.remove(str(EXAMPLES))


def test_the_demo_parses_its_correspondence_options(demo: ModuleType) -> None:
    args = demo.parse_args([])
    assert args.interactions == ["point_to_point"]
    assert args.probe_views is False
    args = demo.parse_args(["--interactions", "point_to_point", "bilrp", "--probe-views"])
    assert args.interactions == ["point_to_point", "bilrp"]
    assert args.probe_views is True


def test_probe_views_records_the_geometry_of_normalised_views(
    demo: ModuleType, tmp_path: Path
) -> None:
    from ssl_models import SSLDataModule

    from lightning_explain.data.probe import ProbeSet

    args = demo.parse_args(["--n-pairs", "3", "--input-size", "16"])
    data = SSLDataModule(data=None, input_size=16, batch_size=8, limit=64)
    probe = ProbeSet.load(demo.views_probe(data, args, tmp_path / "views.pt"))
    assert tuple(probe.x1.shape) == (3, 3, 16, 16)
    assert probe.geometry is not None
    assert tuple(probe.geometry.shape) == (3, 2, 3)
    assert probe.mean == pytest.approx(demo.IMAGENET_MEAN)
    # Normalised as the training views: digits are white on black, so values go below zero.
    assert float(probe.x1.min()) < -1.5
    assert torch.isfinite(probe.x2).all()
