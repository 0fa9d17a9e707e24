"""Pictures drawn on several ranks (``publish.plan_rendering``, ``render_jobs``, ``publish(drawn=)``):
every picture drawn once somewhere, and rank 0 logs exactly what it would have drawn itself."""

from __future__ import annotations

import io
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
    picture_formats,
    plan_rendering,
    render_jobs,
)
from lightning_explain.render import figure_to_image
from lightning_explain.sinks import ExplanationSink, FileSink, MLflowSink, WandbSink
from lightning_explain.sinks.base import PngEncoder
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
    probe: ProbeSet,
    evaluation: ProbeEvaluation,
    sinks: list[Any],
    world_size: int,
    *,
    formats: bool = True,
    **kw: Any,
) -> list[RenderedPicture]:
    """What ``world_size`` ranks draw, each from its part of the evaluation, sent as pickles:
    in the sinks' formats as the callback asks (``formats``), or as pixels at their dpis."""
    wanted = picture_formats(sinks)
    plan = plan_rendering(evaluation, curves=wanted.curves, world_size=world_size)
    out: list[RenderedPicture] = []
    for jobs in plan:
        part = pickle.loads(pickle.dumps(evaluation_for(evaluation, jobs)))
        if formats:
            drawn = render_jobs(probe, part, jobs, formats=pickle.loads(pickle.dumps(wanted)), **kw)
        else:
            drawn = render_jobs(probe, part, jobs, dpis=figure_dpis(sinks), **kw)
        out += pickle.loads(pickle.dumps(drawn))
    return out


@pytest.mark.parametrize(("world_size", "formats"), [(2, True), (3, True), (7, True), (2, False)])
def test_publish_logs_pictures_drawn_on_other_ranks_as_it_would_draw_them(
    evaluated: tuple[ProbeSet, ProbeEvaluation],
    world_size: int,
    formats: bool,
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
    drawn = drawn_on(probe, evaluation, shared, world_size, formats=formats, **context)
    # In the sinks' formats the file sinks' PNG files travel, encoded where they were drawn.
    assert all(bool(p.png) == formats for p in drawn)

    drew: list[str] = []
    monkeypatch.setattr(publish, "curves_figure", lambda *a, **k: drew.append("curves"))
    monkeypatch.setattr(publish, "pair_grid", lambda *a, **k: drew.append("pairs"))
    monkeypatch.setattr(publish, "match_grid", lambda *a, **k: drew.append("matches"))
    if formats:  # and rank 0 encodes nothing either
        monkeypatch.setattr(PngEncoder, "encode", lambda *a, **k: drew.append("encode"))
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


def test_pictures_for_file_sinks_only_travel_as_png_files_and_are_written_as_they_are(
    evaluated: tuple[ProbeSet, ProbeEvaluation], tmp_path: Path
) -> None:
    probe, evaluation = evaluated
    context = dict(epoch=2, step=5)
    alone = [FileSink(tmp_path / "alone")]
    assert publish.publish(alone, evaluation, probe, **context) == 0
    shared = [FileSink(tmp_path / "shared")]
    formats = picture_formats(shared)
    assert formats.encoders == (PngEncoder(1, caption_band=True, text_chunks=True),)
    assert not formats.pixels
    assert formats.dpis == ()
    drawn = drawn_on(probe, evaluation, shared, 2, **context)
    # No pixels travel for a sink that takes PNG files: only the files.
    assert all(p.image is None and not p.pictures and p.png for p in drawn)
    assert publish.publish(shared, evaluation, probe, drawn=drawn, **context) == 0
    written = sorted(
        p.relative_to(tmp_path / "shared") for p in (tmp_path / "shared").rglob("*.png")
    )
    assert written == sorted(
        p.relative_to(tmp_path / "alone") for p in (tmp_path / "alone").rglob("*.png")
    )
    for name in written:  # byte for byte what the sink encodes itself
        assert (tmp_path / "shared" / name).read_bytes() == (tmp_path / "alone" / name).read_bytes()
    pairs = next(p for p in drawn if p.job == RenderJob("pairs", "gradcam"))
    with Image.open(tmp_path / "shared" / written[0].parent / "gradcam.png") as img:
        assert img.text["Title"] == "explain/gradcam/pairs"
        assert img.text["Step"] == "5"
        assert img.text["Description"] == pairs.caption


def test_a_sink_with_a_png_encoder_gets_the_bytes_it_would_encode(
    evaluated: tuple[ProbeSet, ProbeEvaluation],
) -> None:
    probe, evaluation = evaluated

    class Encoding(Recording):
        """Takes PNG files at level 3, no caption band: records what it is handed."""

        @property
        def png_encoder(self) -> PngEncoder:
            return PngEncoder(3)

        def log_png(self, key: str, png: bytes, step: int, caption: str | None = None) -> None:
            self.calls.append(("png", key, step, png, caption))

    sinks: list[Any] = [Encoding(80.0), Recording()]
    drawn = drawn_on(probe, evaluation, sinks, 3, step=4)
    assert publish.publish(sinks, evaluation, probe, step=4, drawn=drawn) == 0
    by_key = {call[1]: call for call in sinks[0].calls}
    seen = {call[1]: call for call in sinks[1].calls}
    assert set(by_key) == set(seen)
    for key, call in by_key.items():
        if call[0] == "table":
            continue
        assert call[0] == "png", call[:2]  # curves through the default log_png_curves
        pixels = seen[key][3] if seen[key][0] == "image" else None
        if pixels is None:  # the curves: the Recording sink draws them at its own dpi
            with Image.open(io.BytesIO(call[3])) as img:
                assert img.size[0] == pytest.approx(80 / 100 * seen[key][4].shape[2], abs=1)
            continue
        assert call[3] == PngEncoder(3).encode(key, pixels, 4, seen[key][4])
        assert call[4] == seen[key][4]  # the caption


def test_tensorboard_gets_from_other_ranks_the_png_files_add_image_would_make(
    evaluated: tuple[ProbeSet, ProbeEvaluation], tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    from lightning_explain.sinks import TensorBoardSink

    probe, evaluation = evaluated

    def images(logger: TensorBoardLogger) -> dict[str, list[tuple[int, int, int, bytes]]]:
        logger.experiment.flush()
        events = EventAccumulator(logger.log_dir, size_guidance={IMAGES: 0})
        events.Reload()
        return {
            tag: [(e.step, e.width, e.height, e.encoded_image_string) for e in events.Images(tag)]
            for tag in events.Tags()[IMAGES]
        }

    alone = TensorBoardLogger(tmp_path / "alone")
    assert publish.publish([TensorBoardSink(alone)], evaluation, probe, step=3, epoch=1) == 0
    shared = TensorBoardLogger(tmp_path / "shared")
    sinks: list[Any] = [TensorBoardSink(shared)]
    assert picture_formats(sinks).encoders == (PngEncoder(6),)
    drawn = drawn_on(probe, evaluation, sinks, 2, step=3, epoch=1)
    assert all(p.image is None and not p.pictures and p.png for p in drawn)
    assert publish.publish(sinks, evaluation, probe, step=3, epoch=1, drawn=drawn) == 0
    expected = images(alone)
    assert len(expected) == 3 * 2 + 1  # grid and curves of 3 methods, the match grid
    assert images(shared) == expected  # byte for byte the files add_image made
