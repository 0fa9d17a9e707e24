"""Sinks: what each tracker receives, read back from what it wrote (offline, no network)."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from lightning_explain import render
from lightning_explain.sinks import (
    ExplanationSink,
    FileSink,
    register_sink,
    registered_sinks,
    sinks_for,
    unregister_sink,
)
from tests.helpers import images

KEY = "explain/gradcam/pairs"
COLUMNS = ["pair", "sim", "insertion", "deletion"]
ROWS: list[list[object]] = [[0, 0.83, 0.71, 0.22], [1, 0.5, 0.25, 0.125]]


def grid(b: int = 2, size: int = 12, seed: int = 0) -> torch.Tensor:
    x1, x2 = images(b, 3, size, size, seed=seed), images(b, 3, size, size, seed=seed + 1)
    h = torch.linspace(0, 1, size * size).view(1, size, size).expand(b, -1, -1)
    return render.pair_grid(x1, x2, h, h.flip(-1))


def figure() -> Figure:
    return render.curves_figure({"insertion": torch.rand(3, 6), "deletion": torch.rand(3, 6)})


def png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


class RecordingSink(ExplanationSink):
    """Only ``log_image``: the minimal sink a user writes."""

    def __init__(self, logger: object = None) -> None:
        self.logger = logger
        self.images: list[tuple[str, torch.Tensor, int, str | None]] = []

    def log_image(
        self, key: str, image: torch.Tensor, step: int, caption: str | None = None
    ) -> None:
        self.images.append((key, image, step, caption))


@pytest.fixture
def clean_registry() -> Iterator[None]:
    before = [match for match, _ in registered_sinks()]
    yield
    added = {id(match): match for match, _ in registered_sinks() if match not in before}
    for match in added.values():
        unregister_sink(match)


# --------------------------------------------------------------------------------------------------
# Interface and FileSink


def test_base_sink_defaults() -> None:
    sink = RecordingSink()
    fig = figure()
    sink.log_figure("explain/curves", fig, step=4)
    key, image, step, caption = sink.images[0]
    assert (key, step, caption) == ("explain/curves", 4, None)
    assert image.dtype == torch.uint8
    assert tuple(image.shape) == (
        3,
        round(fig.get_figheight() * fig.dpi),
        round(fig.get_figwidth() * fig.dpi),
    )
    sink.log_table("explain/scores", COLUMNS, ROWS, step=4)  # no table support: nothing happens
    sink.flush()
    assert len(sink.images) == 1
    with pytest.raises(TypeError, match="epoch"):
        sink.set_context(epoch="3")  # type: ignore[arg-type]


def test_file_sink_layout(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    image = grid()
    sink.log_image(KEY, image, step=7, caption="sim 0.83 | ins 0.71 del 0.22")
    by_step = tmp_path / "explanations" / "step=00000007" / "gradcam.png"
    assert by_step.is_file()
    pixels = png_pixels(by_step)  # the grid, then the caption written under it
    np.testing.assert_array_equal(pixels[: image.shape[1]], hwc(image))
    assert pixels.shape[0] > image.shape[1]
    with Image.open(by_step) as img:
        assert img.text["Description"] == "sim 0.83 | ins 0.71 del 0.22"
        assert img.text["Title"] == KEY
        assert img.text["Step"] == "7"

    sink.set_context(epoch=3)
    sink.log_image(KEY, image, step=12)
    fig = figure()
    sink.log_figure("explain/gradcam/curves", fig, step=12)
    sink.log_table(
        "explain/gradcam/scores", COLUMNS, [[0, torch.tensor(0.5), np.float32(0.25), 0.1]], step=12
    )
    folder = tmp_path / "explanations" / "epoch=003"
    assert sorted(p.name for p in folder.iterdir()) == [
        "gradcam.png",
        "gradcam_curves.png",
        "gradcam_scores.csv",
    ]
    assert png_pixels(folder / "gradcam_curves.png").shape == (
        round(fig.get_figheight() * 100),
        round(fig.get_figwidth() * 100),
        3,
    )
    with (folder / "gradcam_scores.csv").open() as f:
        assert list(csv.reader(f)) == [COLUMNS, ["0", "0.5", "0.25", "0.1"]]


def test_file_sink_compress_level_trades_size_for_speed_not_pixels(tmp_path: Path) -> None:
    image = grid()
    sizes = {}
    for level in (0, 9):
        sink = FileSink(tmp_path / str(level), compress_level=level)
        sink.log_image(KEY, image, step=1)
        sink.log_figure("explain/gradcam/curves", figure(), step=1)
        folder = tmp_path / str(level) / "explanations" / "step=00000001"
        np.testing.assert_array_equal(png_pixels(folder / "gradcam.png"), hwc(image))
        sizes[level] = sum(p.stat().st_size for p in folder.iterdir())
    assert sizes[9] < sizes[0]  # level 0 stores the pixels uncompressed
    assert FileSink(tmp_path).compress_level == 1
    for bad in (-1, 10, 1.5, True):
        with pytest.raises(ValueError, match="`compress_level` to be an int from 0"):
            FileSink(tmp_path, compress_level=bad)  # type: ignore[arg-type]


def test_sinks_reject_bad_input(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    with pytest.raises(TypeError, match="uint8 tensor of shape"):
        sink.log_image(KEY, grid().float() / 255, step=0)
    with pytest.raises(ValueError, match=r"x\.permute\(2, 0, 1\)"):
        sink.log_image(KEY, grid().permute(1, 2, 0), step=0)
    with pytest.raises(ValueError, match="row 1"):
        sink.log_table("t", ["a", "b"], [[1, 2], [3]], step=0)
    with pytest.raises(ValueError, match="distinct column names"):
        sink.log_table("t", ["a", "a"], [[1, 2]], step=0)
    with pytest.raises(ValueError, match="letters or digits"):
        sink.log_image("///", grid(), step=0)
    assert not (tmp_path / "explanations").exists()


def test_file_sink_writes_on_rank_zero_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_utilities.core.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)
    sink = FileSink(tmp_path)
    sink.log_image(KEY, grid(), step=0)
    sink.log_table("t", ["a"], [[1]], step=0)
    sink.log_figure("f", figure(), step=0)
    assert not (tmp_path / "explanations").exists()


# --------------------------------------------------------------------------------------------------
# Dispatch


@pytest.mark.parametrize("namespace", ["lightning.pytorch.loggers", "pytorch_lightning.loggers"])
def test_sinks_for_dispatches_in_both_namespaces(tmp_path: Path, namespace: str) -> None:
    pytest.importorskip("tensorboard")
    loggers = pytest.importorskip(namespace)
    from lightning_explain.sinks import TensorBoardSink

    class MyCSV(loggers.CSVLogger):  # type: ignore[misc,name-defined]
        """Subclasses are recognised too."""

    csv_logger = MyCSV(tmp_path / "csv")
    tb_logger = loggers.TensorBoardLogger(tmp_path / "tb")
    sinks = sinks_for([tb_logger, csv_logger, loggers.CSVLogger(tmp_path / "csv")])
    assert [type(s) for s in sinks] == [TensorBoardSink, FileSink]  # one FileSink per directory
    assert sinks[0].logger is tb_logger  # type: ignore[attr-defined]
    assert isinstance(sinks[1], FileSink)
    assert sinks[1].directory == Path(csv_logger.log_dir)


def test_sinks_for_fallback_and_unknown_loggers(tmp_path: Path) -> None:
    assert sinks_for([]) == []
    (sink,) = sinks_for([], fallback_dir=tmp_path)
    assert isinstance(sink, FileSink)
    assert sink.directory == tmp_path

    class CometLogger:
        pass

    with pytest.warns(UserWarning, match=r"register_sink\(CometLogger, factory\)"):
        (fallback,) = sinks_for([CometLogger()], fallback_dir=tmp_path)
    assert isinstance(fallback, FileSink)
    mine = RecordingSink()
    assert sinks_for([mine], fallback_dir=tmp_path) == [mine]
    with pytest.raises(TypeError, match="Wrap a single logger in a list"):
        sinks_for(CometLogger())  # type: ignore[arg-type]


@pytest.mark.usefixtures("clean_registry")
def test_register_sink(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger
    from pytorch_lightning.loggers import CSVLogger as LegacyCSVLogger

    class NeptuneLogger:
        pass

    class SubNeptune(NeptuneLogger):
        pass

    register_sink(NeptuneLogger, RecordingSink)
    (sink,) = sinks_for([SubNeptune()])
    assert isinstance(sink, RecordingSink)

    # A class name covers both namespaces and overrides the built-in CSV sink; None skips a logger.
    register_sink("CSVLogger", lambda logger: None)
    assert sinks_for([CSVLogger(tmp_path), LegacyCSVLogger(tmp_path)]) == []
    unregister_sink("CSVLogger")
    assert len(sinks_for([CSVLogger(tmp_path)])) == 1

    register_sink(NeptuneLogger, lambda logger: "not a sink")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="returned str"):
        sinks_for([NeptuneLogger()])
    with pytest.raises(ValueError, match="nothing is registered"):
        unregister_sink("CometLogger")
    with pytest.raises(TypeError, match="callable"):
        register_sink(NeptuneLogger, "RecordingSink")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sink_name", "module", "extra"),
    [("WandbSink", "wandb", "wandb"), ("MLflowSink", "mlflow", "mlflow")],
)
def test_missing_tracker_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, sink_name: str, module: str, extra: str
) -> None:
    import lightning_explain.sinks as sinks

    monkeypatch.setitem(sys.modules, module, None)  # makes the package unimportable
    with pytest.raises(ModuleNotFoundError, match=rf"pip install 'lightning-explain\[{extra}\]'"):
        getattr(sinks, sink_name)(object())


# --------------------------------------------------------------------------------------------------
# Trackers, read back offline


def test_csv_logger_gets_png_files(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path)
    (sink,) = sinks_for([logger])
    sink.set_context(epoch=2)
    image = grid(b=3, size=16)
    sink.log_image(KEY, image, step=30, caption="three pairs")
    x, h = images(3, 3, 16, 16), torch.rand(3, 16, 16)
    fig = render.pair_figure(x, x, h, h, captions=["a", "b", "c"])
    sink.log_figure("explain/gradcam/figure", fig, step=30)
    sink.log_table("explain/gradcam/scores", COLUMNS, ROWS, step=30)
    folder = Path(logger.log_dir) / "explanations" / "epoch=002"
    np.testing.assert_array_equal(png_pixels(folder / "gradcam.png")[: image.shape[1]], hwc(image))
    saved = matplotlib.image.imread(folder / "gradcam_figure.png")
    assert saved.shape[:2] == (round(fig.get_figheight() * 100), round(fig.get_figwidth() * 100))
    with (folder / "gradcam_scores.csv").open() as f:
        assert next(csv.reader(f)) == COLUMNS


def test_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = pytest.importorskip("wandb")
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp_path),
        "WANDB_CACHE_DIR": str(tmp_path / "cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "config"),
        "WANDB_DATA_DIR": str(tmp_path / "data"),
    }.items():
        monkeypatch.setenv(name, value)
    from lightning.pytorch.loggers import WandbLogger

    from lightning_explain.sinks import WandbSink

    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="lightning-explain-test")
    (sink,) = sinks_for([logger])
    assert isinstance(sink, WandbSink)
    first, second = grid(seed=0), grid(seed=5)
    try:
        sink.log_image(KEY, first, step=3, caption="epoch 0")
        sink.log_image(KEY, second, step=7, caption="epoch 1")
        sink.log_table("explain/gradcam/scores", COLUMNS, ROWS, step=7)
        fig = figure()
        sink.log_figure("explain/gradcam/curves", fig, step=7)
    finally:
        logger.experiment.finish()
        wandb.teardown()  # stop this test's wandb-core service; later runs start their own
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    media = run / "files" / "media"
    pngs = sorted((media / "images" / "explain" / "gradcam").glob("pairs_*.png"))
    assert len(pngs) == 2
    logged = [png_pixels(p) for p in pngs]
    assert any(np.array_equal(p, hwc(first)) for p in logged)
    assert any(np.array_equal(p, hwc(second)) for p in logged)
    (curves,) = (media / "images" / "explain" / "gradcam").glob("curves_*.png")
    assert png_pixels(curves).shape == (
        round(fig.get_figheight() * fig.dpi),
        round(fig.get_figwidth() * fig.dpi),
        3,
    )
    (table_file,) = (media / "table" / "explain" / "gradcam").glob("scores_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == COLUMNS
    assert table["data"] == ROWS


def test_tensorboard_read_back(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import (
        IMAGES,
        SCALARS,
        TENSORS,
        EventAccumulator,
    )

    from lightning_explain.sinks import TensorBoardSink

    logger = TensorBoardLogger(tmp_path)
    (sink,) = sinks_for([logger])
    assert isinstance(sink, TensorBoardSink)
    images_by_step = {2: grid(seed=0), 5: grid(seed=5)}
    for step, image in images_by_step.items():
        sink.log_image(KEY, image, step=step, caption=f"step {step}")
    sink.log_figure("explain/gradcam/curves", figure(), step=5)
    sink.log_table("explain/gradcam/scores", COLUMNS, ROWS, step=5)
    sink.flush()

    events = EventAccumulator(logger.log_dir, size_guidance={IMAGES: 0, SCALARS: 0, TENSORS: 0})
    events.Reload()
    logged = events.Images(KEY)
    assert [e.step for e in logged] == [2, 5]
    for event in logged:
        image = images_by_step[event.step]
        assert (event.height, event.width) == tuple(image.shape[1:])
        with Image.open(io.BytesIO(event.encoded_image_string)) as decoded:
            np.testing.assert_array_equal(np.asarray(decoded.convert("RGB")), hwc(image))
    assert [e.step for e in events.Images("explain/gradcam/curves")] == [5]
    text = events.Tensors("explain/gradcam/scores/text_summary")[0]
    assert text.step == 5
    markdown = text.tensor_proto.string_val[0].decode()
    assert markdown.splitlines()[0] == "| pair | sim | insertion | deletion |"
    assert "| 0 | 0.83 | 0.71 | 0.22 |" in markdown
    caption = events.Tensors(f"{KEY}/caption/text_summary")
    assert [(c.step, c.tensor_proto.string_val[0].decode()) for c in caption] == [
        (2, "step 2"),
        (5, "step 5"),
    ]


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")
def test_mlflow_read_back(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    from lightning_explain.sinks import MLflowSink

    logger = MLFlowLogger(
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_location=str(tmp_path / "artifacts"),
    )
    (sink,) = sinks_for([logger])
    assert isinstance(sink, MLflowSink)
    first, second = grid(seed=0), grid(seed=5)
    sink.log_image("explain/gradcam/pairs:val", first, step=1, caption="epoch 0")
    sink.log_image("explain/gradcam/pairs:val", second, step=4)
    sink.log_figure("explain/gradcam/curves", figure(), step=4)
    sink.log_table("explain/gradcam/scores", COLUMNS, ROWS, step=4)

    client: Any = logger.experiment
    run_id = logger.run_id
    names = [a.path for a in client.list_artifacts(run_id, "images")]
    for step, image in ((1, first), (4, second)):
        (name,) = [
            n
            for n in names
            if n.startswith(f"images/explain~gradcam~pairs_val+step+{step}+") and n.endswith(".png")
        ]
        local = client.download_artifacts(run_id, name, str(tmp_path / "download"))
        np.testing.assert_array_equal(png_pixels(Path(local)), hwc(image))
    folder = "explanations/step=00000004/explain/gradcam"
    assert {Path(a.path).name for a in client.list_artifacts(run_id, folder)} == {
        "curves.png",
        "scores.json",
    }
    table = client.download_artifacts(run_id, f"{folder}/scores.json", str(tmp_path / "download"))
    content = json.loads(Path(table).read_text())
    assert content["columns"] == COLUMNS
    assert content["data"] == ROWS
    caption = client.download_artifacts(
        run_id, "explanations/step=00000001/explain/gradcam/pairs_val.txt", str(tmp_path / "dl")
    )
    assert Path(caption).read_text() == "epoch 0"


def test_file_sink_writes_the_caption_on_the_png(tmp_path: Path) -> None:
    """The PNG a CSV-logger user opens shows the caption the trackers show beside the image."""
    from PIL import Image

    from lightning_explain.sinks import FileSink

    grid = torch.full((3, 40, 160), 200, dtype=torch.uint8)
    sink = FileSink(tmp_path)
    sink.log_image("explain/gradcam/pairs", grid, 4, caption="gradcam | epoch 0\npair 0, sim 0.912")
    sink.log_image("explain/plain/pairs", grid, 4)
    (png,) = tmp_path.rglob("gradcam.png")
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.shape[0] > 40
    assert pixels.shape[1] == 160
    np.testing.assert_array_equal(pixels[:40], 200)  # the grid itself is untouched
    band = pixels[40:]
    assert (band < 100).any()  # dark text pixels under the grid
    assert (band == 255).mean() > 0.5  # on a white band
    (plain,) = tmp_path.rglob("plain.png")
    assert np.asarray(Image.open(plain)).shape[0] == 40  # no caption, no band


# --------------------------------------------------------------------------------------------------
# Curves as data, figures only where they are shown

CURVES = {
    "insertion_simultaneous": torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.4, 1.0]]),
    "deletion_simultaneous": torch.tensor([[1.0, 0.5, 0.0, 0.0, 0.0], [1.0, 0.7, 0.3, 0.1, 0.0]]),
}


def _never_drawn() -> Figure:
    raise AssertionError("the figure was drawn for a sink that logs curves as data")


def test_curve_rows_against_a_loop() -> None:
    from lightning_explain.sinks.base import CURVE_COLUMNS, curve_rows

    rows = curve_rows(CURVES)
    assert CURVE_COLUMNS == ["curve", "fraction", "mean", "min", "max"]
    expected = []
    for name, c in CURVES.items():
        for t in range(c.shape[1]):
            col = [float(v) for v in c[:, t]]
            expected.append([name, t / (c.shape[1] - 1), sum(col) / 2, min(col), max(col)])
    assert len(rows) == len(expected) == 8
    for got, want in zip(rows, expected):
        assert got[:2] == want[:2]
        assert got[2:] == pytest.approx(want[2:])


def test_file_sink_writes_curves_as_csv_and_png(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    drawn = []

    def draw() -> Figure:
        drawn.append(1)
        return figure()

    sink.log_curves("explain/gradcam/curves", CURVES, step=3, draw=draw)
    folder = sink.folder(3)
    rows = list(csv.reader((folder / "gradcam_curves.csv").read_text().splitlines()))
    assert rows[0] == ["curve", "fraction", "mean", "min", "max"]
    assert rows[1][:2] == ["insertion_simultaneous", "0.0"]
    assert float(rows[1][2]) == pytest.approx(0.1)
    assert len(rows) == 1 + 3 + 5
    assert (folder / "gradcam_curves.png").is_file()
    assert drawn == [1]


def test_wandb_sink_logs_curves_as_a_native_chart_without_drawing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb = pytest.importorskip("wandb")
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp_path),
        "WANDB_CACHE_DIR": str(tmp_path / "cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "config"),
        "WANDB_DATA_DIR": str(tmp_path / "data"),
    }.items():
        monkeypatch.setenv(name, value)
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="lightning-explain-test")
    (sink,) = sinks_for([logger])
    try:
        sink.log_curves("explain/gradcam/curves", CURVES, step=9, draw=_never_drawn)
    finally:
        logger.experiment.finish()
        wandb.teardown()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    (table,) = (run / "files" / "media" / "table" / "explain" / "gradcam").glob("curves_*.json")
    data = json.loads(table.read_text())["data"]
    by_curve = {name: [(x, y) for x, n, y in data if n == name] for name in CURVES}
    for name, c in CURVES.items():
        xs = [x for x, _ in by_curve[name]]
        ys = [y for _, y in by_curve[name]]
        assert xs == pytest.approx([t / (c.shape[1] - 1) for t in range(c.shape[1])])
        assert ys == pytest.approx(c.mean(0).tolist())


def test_publish_draws_each_curves_figure_once_and_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightning_explain import evaluate_probe, publish
    from lightning_explain.sinks import ExplanationSink
    from tests.helpers import TinyCNN

    class Recording(ExplanationSink):
        def __init__(self, wants_figure: bool) -> None:
            self.wants_figure = wants_figure
            self.curves: list[str] = []
            self.figures: list[int] = []

        def log_image(
            self, key: str, image: torch.Tensor, step: int, caption: str | None = None
        ) -> None:
            pass

        def log_curves(self, key: str, curves: Any, step: int, *, draw: Any) -> None:
            self.curves.append(key)
            if self.wants_figure:
                self.figures.append(id(draw()))

    drawn: list[str] = []
    real = publish.curves_figure

    def counting(curves: Any, **kwargs: Any) -> Figure:
        drawn.append(kwargs.get("title", ""))
        return real(curves, **kwargs)

    monkeypatch.setattr(publish, "curves_figure", counting)
    x1, x2 = images(2, h=16, w=16, seed=0), images(2, h=16, w=16, seed=1)
    evaluation = evaluate_probe(
        TinyCNN(), (x1, x2), ["gradcam", "input_x_gradient"], ["insertion_simultaneous"], n_steps=4
    )
    from lightning_explain.data.probe import ProbeSet

    probe = ProbeSet(x1, x2, indices=(0, 1), seed=0, pairing="dataset", source="dataset")
    data_only = [Recording(False), Recording(False)]
    publish.publish(data_only, evaluation, probe, step=1)
    assert drawn == []  # no sink shows figures: none is drawn
    assert data_only[0].curves == ["explain/gradcam/curves", "explain/input_x_gradient/curves"]
    both = [Recording(True), Recording(False), Recording(True)]
    publish.publish(both, evaluation, probe, step=2)
    assert len(drawn) == 2  # once per method, shared by the two sinks that show figures
    assert both[0].figures == both[2].figures
