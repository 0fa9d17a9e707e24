"""Pictures drawn on several ranks (``publish.plan_rendering``, ``render_jobs``, ``publish(drawn=)``):
every picture drawn once somewhere, and rank 0 logs exactly what it would have drawn itself."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from lightning_explain import evaluate_probe, publish
from lightning_explain.data.probe import ProbeSet
from lightning_explain.evaluation import ProbeEvaluation
from lightning_explain.publish import (
    RenderedPicture,
    RenderJob,
    evaluation_for,
    figure_dpis,
    plan_rendering,
    render_jobs,
)
from lightning_explain.render import figure_to_image
from lightning_explain.sinks import ExplanationSink, FileSink, MLflowSink, WandbSink
from tests.helpers import TinyCNN, images


class Recording(ExplanationSink):
    """Keeps every call: images and captions, curves data and the pixels of the figure ``draw``
    returns (rasterised at ``figure_dpi``), tables."""

    def __init__(self, dpi: float | None = None) -> None:
        self.dpi = dpi
        self.calls: list[tuple[Any, ...]] = []

    @property
    def figure_dpi(self) -> float | None:
        return self.dpi

    def log_image(
        self, key: str, image: torch.Tensor, step: int, caption: str | None = None
    ) -> None:
        self.calls.append(("image", key, step, image.clone(), caption))

    def log_curves(self, key: str, curves: Any, step: int, *, draw: Any) -> None:
        pixels = figure_to_image(draw(), dpi=self.dpi)
        self.calls.append(("curves", key, step, {k: v.clone() for k, v in curves.items()}, pixels))

    def log_table(self, key: str, columns: list[str], rows: list[list[object]], step: int) -> None:
        self.calls.append(("table", key, step, columns, rows))


def same_calls(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    def plain(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return (value.dtype, tuple(value.shape), value.tolist())
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return [tuple(plain(v) for v in call) for call in a] == [
        tuple(plain(v) for v in call) for call in b
    ]


@pytest.fixture(scope="module")
def evaluated() -> tuple[ProbeSet, ProbeEvaluation]:
    x1, x2 = images(3, h=16, w=16, seed=0), images(3, h=16, w=16, seed=1)
    probe = ProbeSet(x1, x2, indices=(4, 7, 9), seed=0, pairing="dataset", source="dataset")
    evaluation = evaluate_probe(
        TinyCNN(),
        (x1, x2),
        ["gradcam", "input_x_gradient", "interaction_cam"],
        ["insertion_simultaneous", "deletion_simultaneous"],
        n_steps=4,
        interactions=["point_to_point"],
    )
    return probe, evaluation


def png_files(root: Path) -> dict[str, Any]:
    """Relative path -> (pixels, PNG text chunks) for PNGs, the text for other files."""
    out: dict[str, Any] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = str(path.relative_to(root))
        if path.suffix == ".png":
            with Image.open(path) as img:
                out[name] = (np.asarray(img.convert("RGB")).tolist(), dict(img.text))
        else:
            out[name] = path.read_text()
    return out


def drawn_on(
    probe: ProbeSet, evaluation: ProbeEvaluation, sinks: list[Any], world_size: int, **kw: Any
) -> list[RenderedPicture]:
    """What ``world_size`` ranks draw, each from its part of the evaluation, sent as pickles."""
    plan = plan_rendering(evaluation, curves=bool(figure_dpis(sinks)), world_size=world_size)
    out: list[RenderedPicture] = []
    for jobs in plan:
        part = pickle.loads(pickle.dumps(evaluation_for(evaluation, jobs)))
        drawn = render_jobs(probe, part, jobs, dpis=figure_dpis(sinks), **kw)
        out += pickle.loads(pickle.dumps(drawn))
    return out


@pytest.mark.parametrize("world_size", [2, 3, 7])
def test_publish_logs_pictures_drawn_on_other_ranks_as_it_would_draw_them(
    evaluated: tuple[ProbeSet, ProbeEvaluation],
    world_size: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe, evaluation = evaluated
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    context = dict(mean=mean, std=std, epoch=3, step=12)

    def sinks(root: Path) -> list[Any]:
        return [FileSink(root / "a"), FileSink(root / "b", dpi=72), Recording(), Recording(150.0)]

    alone = sinks(tmp_path / "alone")
    assert publish.publish(alone, evaluation, probe, **context) == 0
    shared = sinks(tmp_path / "shared")
    drawn = drawn_on(probe, evaluation, shared, world_size, **context)

    drew: list[str] = []
    monkeypatch.setattr(publish, "curves_figure", lambda *a, **k: drew.append("curves"))
    monkeypatch.setattr(publish, "pair_grid", lambda *a, **k: drew.append("pairs"))
    monkeypatch.setattr(publish, "match_grid", lambda *a, **k: drew.append("matches"))
    assert publish.publish(shared, evaluation, probe, drawn=drawn, **context) == 0
    assert drew == []  # rank 0 drew nothing itself

    for a, b in zip(alone[2:], shared[2:]):
        assert len(a.calls) == 3 * 3 + 1  # 3 methods x (pairs, curves, table), 1 match grid
        assert same_calls(a.calls, b.calls)
    for folder in ("a", "b"):
        files = png_files(tmp_path / "alone" / folder)
        assert len(files) == 3 * 4 + 1  # grid, curves PNG and CSV, scores; the match grid
        assert png_files(tmp_path / "shared" / folder) == files


def test_plan_rendering_draws_every_picture_once_on_balanced_ranks(
    evaluated: tuple[ProbeSet, ProbeEvaluation],
) -> None:
    _probe, evaluation = evaluated
    labels = ["gradcam", "input_x_gradient", "interaction_cam"]
    every = {RenderJob(kind, label) for label in labels for kind in ("pairs", "curves")}
    every.add(RenderJob("matches", "point_to_point"))
    weight = {"curves": 4, "pairs": 1, "matches": 1}
    for world_size in (1, 2, 3, 4, 9):
        plan = plan_rendering(evaluation, curves=True, world_size=world_size)
        assert len(plan) == world_size
        jobs = [job for share in plan for job in share]
        assert Counter(jobs) == Counter(every)  # each once
        loads = [sum(weight[job.kind] for job in share) for share in plan]
        assert max(loads) - min(loads) <= 4, (world_size, plan)
    two = plan_rendering(evaluation, curves=True, world_size=2)
    assert [sum(j.kind == "curves" for j in share) for share in two] == [2, 1]
    # Without a sink that draws curves, no curves figure is planned.
    flat = [j for share in plan_rendering(evaluation, curves=False, world_size=2) for j in share]
    assert {j.kind for j in flat} == {"pairs", "matches"}
    # A rank's part of the evaluation holds only what its jobs need.
    part = evaluation_for(evaluation, [RenderJob("curves", "gradcam")])
    assert part.labels == ["gradcam"]
    assert part.interactions == ()
    assert part.failures == ()
    assert torch.equal(part.sim, evaluation.sim)  # type: ignore[arg-type]


def test_figure_dpis_are_those_of_the_sinks_that_draw_curves(tmp_path: Path) -> None:
    default = float(matplotlib.rcParams["figure.dpi"])
    wandb = WandbSink.__new__(WandbSink)  # no W&B run needed: only the class attributes
    assert not wandb.draws_curves
    assert figure_dpis([wandb]) == ()
    sinks = [wandb, FileSink(tmp_path, dpi=72), Recording(), FileSink(tmp_path), Recording(72)]
    assert figure_dpis(sinks) == (72.0, default) if default != 72 else (72.0,)
    mlflow = MLflowSink.__new__(MLflowSink)
    assert mlflow.figure_dpi is None  # savefig.dpi "figure": the figure's own
    with matplotlib.rc_context({"savefig.dpi": 150}):
        assert mlflow.figure_dpi == 150.0


def test_a_picture_that_failed_elsewhere_is_reported_once_and_the_rest_is_logged(
    evaluated: tuple[ProbeSet, ProbeEvaluation], tmp_path: Path
) -> None:
    probe, evaluation = evaluated

    class DataOnly(Recording):
        draws_curves = False

        def log_curves(self, key: str, curves: Any, step: int, *, draw: Any) -> None:
            self.calls.append(("curves", key, step))

    sinks: list[Any] = [Recording(), DataOnly()]
    drawn = drawn_on(probe, evaluation, sinks, 2, step=1)
    broken = [
        RenderedPicture(p.job, error="MemoryError: no room")
        if p.job in (RenderJob("pairs", "gradcam"), RenderJob("curves", "input_x_gradient"))
        else p
        for p in drawn
    ]
    failures: list[tuple[str, str]] = []
    count = publish.publish(
        sinks,
        evaluation,
        probe,
        step=1,
        drawn=broken,
        on_error=lambda w, e: failures.append((w, str(e))),
    )
    assert count == 2
    assert failures == [
        ("rendering method 'gradcam'", "MemoryError: no room"),
        ("rendering the curves of method 'input_x_gradient'", "MemoryError: no room"),
    ]
    keys = [(call[0], call[1]) for call in sinks[0].calls]
    assert not any("gradcam/" in key for _, key in keys if "interaction" not in key)
    assert ("curves", "explain/input_x_gradient/curves") not in keys  # not drawn again
    assert ("image", "explain/input_x_gradient/pairs") in keys
    # A sink that logs curves as data still gets them.
    assert ("curves", "explain/input_x_gradient/curves") in [c[:2] for c in sinks[1].calls]
    with pytest.raises(RuntimeError, match="MemoryError: no room"):
        publish.publish(sinks, evaluation, probe, step=1, drawn=broken)


def test_render_jobs_never_raises(evaluated: tuple[ProbeSet, ProbeEvaluation]) -> None:
    probe, evaluation = evaluated
    jobs = [RenderJob("pairs", "nope"), RenderJob("matches", "nope"), RenderJob("pairs", "gradcam")]
    out = render_jobs(probe, evaluation, jobs, mean=[0.5], std=[0.0, 1.0, 2.0, 3.0])
    assert [p.job for p in out] == jobs
    assert out[0].error is not None
    assert "nope" in out[0].error
    assert out[1].error is not None
    assert "nope" in out[1].error
    assert out[2].error is not None
    assert out[2].image is None
    fine = render_jobs(probe, evaluation, [RenderJob("curves", "gradcam")], dpis=(50.0, 100.0))
    assert fine[0].error is None
    assert [tuple(p.shape) for p in fine[0].pictures.values()] == [(3, 180, 250), (3, 360, 500)]
