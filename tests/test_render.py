"""Rendering: overlays, pair grids and figures look like what they claim to show."""

from __future__ import annotations

import io
import sys

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from torchvision.transforms import Normalize

from lightning_explain import render
from tests.helpers import images

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def ramp(b: int, h: int, w: int) -> torch.Tensor:
    """``(b, h, w)`` maps covering [0, 1], including both ends."""
    return torch.linspace(0, 1, b * h * w).view(b, h, w)


# --------------------------------------------------------------------------------------------------
# to_rgb / overlay


def test_to_rgb_inverts_torchvision_normalize() -> None:
    x = images(3, 3, 16, 20)
    normalised = Normalize(MEAN, STD)(x)
    assert not torch.allclose(normalised, x)
    out = render.to_rgb(normalised, MEAN, STD)
    assert out.shape == (3, 3, 16, 20)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


def test_to_rgb_clamps_and_accepts_tensor_stats() -> None:
    x = torch.full((1, 3, 4, 4), 2.0)
    out = render.to_rgb(x, torch.tensor([0.0, -5.0, 0.1]), [0.5])
    assert out[0, 0].eq(1.0).all()  # 2 * 0.5 + 0 = 1
    assert out[0, 1].eq(0.0).all()  # 2 * 0.5 - 5 < 0 -> 0
    torch.testing.assert_close(out[0, 2], torch.full((4, 4), 1.0))


def test_grey_images_become_rgb() -> None:
    x = images(2, 1, 8, 8)
    out = render.to_rgb(Normalize([0.5], [0.25])(x), [0.5], [0.25])
    assert out.shape == (2, 3, 8, 8)
    for c in range(3):
        torch.testing.assert_close(out[:, c], x[:, 0], atol=1e-6, rtol=0)
    blended = render.overlay(x, torch.zeros(2, 8, 8), alpha=0.0)
    assert blended.shape == (2, 3, 8, 8)
    torch.testing.assert_close(blended[:, 1], x[:, 0])


@pytest.mark.parametrize("cmap", ["jet", "viridis", "gray", "inferno"])
def test_colormap_matches_matplotlib(cmap: str) -> None:
    # Bin edges, the ends, and random values.
    edges = torch.tensor([0.0, 1 / 256, 1 / 256 - 1e-4, 0.5, 0.5 + 1e-4, 255 / 256, 1.0])
    values = torch.cat([edges, torch.rand(200, generator=torch.Generator().manual_seed(0))])
    h = values.view(1, 1, -1)
    out = render.overlay(torch.zeros(1, 3, 1, values.numel()), h, cmap=cmap, alpha=1.0)
    expected = matplotlib.colormaps[cmap](values.double().numpy())[:, :3]
    got = out[0, :, 0].T.double().numpy()
    np.testing.assert_allclose(got, expected, atol=1 / 255)


def test_colormap_lut_is_matplotlibs_table() -> None:
    lut = render.colormap_lut("jet")
    assert lut.shape == (256, 3)
    np.testing.assert_allclose(
        lut.numpy(), matplotlib.colormaps["jet"](np.arange(256))[:, :3], atol=1e-6
    )
    custom = matplotlib.colors.ListedColormap(["red", "blue"])
    out = render.overlay(
        torch.zeros(1, 3, 1, 2), torch.tensor([[[0.2, 0.9]]]), cmap=custom, alpha=1
    )
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(out[0, :, 0, 1], torch.tensor([0.0, 0.0, 1.0]))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_zero_map_blends_image_with_the_zero_colour(alpha: float) -> None:
    x = images(2, 3, 12, 10, seed=3)
    out = render.overlay(
        Normalize(MEAN, STD)(x), torch.zeros(2, 12, 10), mean=MEAN, std=STD, alpha=alpha
    )
    zero = torch.tensor(matplotlib.colormaps["jet"](0.0)[:3], dtype=torch.float32)
    expected = (1 - alpha) * x + alpha * zero.view(1, 3, 1, 1)
    assert out.shape == (2, 3, 12, 10)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_overlay_upsamples_small_maps_and_accepts_channel_dim() -> None:
    x = images(2, 3, 16, 16)
    small = torch.zeros(2, 4, 4)
    small[:, :, 2:] = 1.0  # right half hot
    out = render.overlay(x, small, alpha=1.0)
    hot = torch.tensor(matplotlib.colormaps["jet"](1.0)[:3], dtype=torch.float32)
    cold = torch.tensor(matplotlib.colormaps["jet"](0.0)[:3], dtype=torch.float32)
    torch.testing.assert_close(out[:, :, :, -1], hot.view(1, 3, 1).expand(2, 3, 16))
    torch.testing.assert_close(out[:, :, :, 0], cold.view(1, 3, 1).expand(2, 3, 16))
    torch.testing.assert_close(render.overlay(x, small.unsqueeze(1), alpha=1.0), out)


def test_overlay_rejects_bad_input() -> None:
    x = images(2, 3, 8, 8)
    h = torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match=r"C = 1 \(grey\) or 3"):
        render.overlay(torch.rand(2, 4, 8, 8), h)
    with pytest.raises(TypeError, match=r"x\.float\(\) / 255"):
        render.overlay((x * 255).to(torch.uint8), h)
    with pytest.raises(ValueError, match="B=2"):
        render.overlay(x, torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="finite"):
        render.overlay(x, torch.full((2, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="alpha"):
        render.overlay(x, h, alpha=1.5)
    with pytest.raises(ValueError, match="unknown colormap 'no-such-map'"):
        render.overlay(x, h, cmap="no-such-map")
    with pytest.raises(ValueError, match="1 or 3 finite numbers"):
        render.overlay(x, h, mean=(0.5, 0.5))


# --------------------------------------------------------------------------------------------------
# pair_grid


def test_pair_grid_layout() -> None:
    b, height, width, pad = 3, 10, 14, 2
    x1, x2 = images(b, 3, height, width, seed=1), images(b, 3, height, width, seed=2)
    h1, h2 = ramp(b, height, width), 1 - ramp(b, height, width)
    grid = render.pair_grid(
        Normalize(MEAN, STD)(x1), Normalize(MEAN, STD)(x2), h1, h2, mean=MEAN, std=STD, padding=pad
    )
    assert grid.dtype == torch.uint8
    assert grid.device.type == "cpu"
    assert grid.shape == (3, b * height + (b + 1) * pad, 4 * width + 5 * pad)

    def tile(row: int, col: int) -> torch.Tensor:
        top, left = pad + row * (height + pad), pad + col * (width + pad)
        return grid[:, top : top + height, left : left + width].float() / 255

    for i in range(b):
        expected = [
            x1[i],
            render.overlay(x1[i : i + 1], h1[i : i + 1])[0],
            x2[i],
            render.overlay(x2[i : i + 1], h2[i : i + 1])[0],
        ]
        for j, want in enumerate(expected):
            torch.testing.assert_close(tile(i, j), want, atol=1 / 255 + 1e-4, rtol=0)
    # Padding is white.
    assert grid[:, :pad].eq(255).all()
    assert grid[:, :, :pad].eq(255).all()


def test_pair_grid_grey_and_no_padding() -> None:
    x = images(2, 1, 8, 6)
    grid = render.pair_grid(x, x, torch.zeros(2, 8, 6), torch.ones(2, 8, 6), padding=0)
    assert grid.shape == (3, 16, 24)
    with pytest.raises(ValueError, match="padding"):
        render.pair_grid(x, x, torch.zeros(2, 8, 6), torch.ones(2, 8, 6), padding=-1)
    with pytest.raises(ValueError, match="same shape"):
        render.pair_grid(x, images(2, 1, 8, 8), torch.zeros(2, 8, 6), torch.ones(2, 8, 6))


# --------------------------------------------------------------------------------------------------
# Figures


def test_pair_figure_rows_and_captions() -> None:
    x1, x2 = images(3, 3, 16, 16, seed=1), images(3, 3, 16, 16, seed=2)
    h = ramp(3, 16, 16)
    captions = ["sim 0.83 | ins 0.71 del 0.22", "sim 0.10", "sim -0.20"]
    fig = render.pair_figure(x1, x2, h, h, captions=captions)
    assert isinstance(fig, Figure)
    rows = fig.subfigs
    assert [row.get_suptitle() for row in rows] == captions
    assert [len(row.axes) for row in rows] == [4, 4, 4]
    # The second column of a row shows the overlay of x1 with h1.
    shown = rows[1].axes[1].get_images()[0].get_array()
    want = render.overlay(x1[1:2], h[1:2])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(np.asarray(shown), want, atol=1e-6)
    picture = render.figure_to_image(fig)
    assert picture.dtype == torch.uint8
    assert picture.shape[0] == 3
    assert picture.shape[1:] == (
        round(fig.get_figheight() * fig.dpi),
        round(fig.get_figwidth() * fig.dpi),
    )

    default = render.pair_figure(x1, x2, h, h)
    assert [row.get_suptitle() for row in default.subfigs] == ["pair 0", "pair 1", "pair 2"]
    with pytest.raises(ValueError, match="list of 3 strings"):
        render.pair_figure(x1, x2, h, h, captions=["only one"])


def test_curves_figure_plots_mean_and_auc() -> None:
    g = torch.Generator().manual_seed(0)
    insertion = torch.rand(5, 11, generator=g).sort(dim=1).values
    deletion = torch.rand(5, 21, generator=g).sort(dim=1, descending=True).values
    fig = render.curves_figure(
        {"insertion": insertion, "deletion": deletion}, title="gradcam", band="std"
    )
    ax = fig.axes[0]
    assert ax.get_title() == "gradcam"
    lines = ax.get_lines()
    assert len(lines) == 2
    np.testing.assert_allclose(lines[0].get_xdata(), np.linspace(0, 1, 11), atol=1e-6)
    np.testing.assert_allclose(lines[0].get_ydata(), insertion.mean(0).numpy(), atol=1e-6)
    np.testing.assert_allclose(lines[1].get_ydata(), deletion.mean(0).numpy(), atol=1e-6)
    auc = float(torch.trapezoid(insertion, dx=1 / 10, dim=1).mean())  # mean of per-pair AUCs
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == f"insertion (AUC {auc:.3f})"
    assert labels[1].startswith("deletion (AUC ")
    assert len(ax.collections) == 2  # one band per curve

    single = render.curves_figure({"x": torch.tensor([0.0, 1.0])}, band="minmax")
    assert single.axes[0].get_legend().get_texts()[0].get_text() == "x (AUC 0.500)"
    assert len(single.axes[0].collections) == 0  # no band for a single pair
    with pytest.raises(ValueError, match="non-empty mapping"):
        render.curves_figure({})
    with pytest.raises(ValueError, match="band"):
        render.curves_figure({"x": insertion}, band="iqr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(B, T \+ 1\)"):
        render.curves_figure({"x": torch.rand(2, 3, 4)})


def test_curves_figure_labels_fit_in_the_figure() -> None:
    # The layout is fixed (not constrained): negative two-decimal ticks, the axis labels, the
    # title and the legend must still lie inside the figure.
    g = torch.Generator().manual_seed(0)
    curves = {"insertion_conditional": torch.rand(4, 33, generator=g) * 2 - 1}
    for title in ("", "interaction_cam"):
        fig = render.curves_figure(curves, title=title)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        ax = fig.axes[0]
        texts = [ax.xaxis.label, ax.yaxis.label, ax.title, ax.get_legend()]
        low, high = ax.get_ylim()
        texts += [t for t in ax.get_yticklabels() if low <= t.get_position()[1] <= high]
        texts += [t for t in ax.get_xticklabels() if 0 <= t.get_position()[0] <= 1]
        for text in texts:
            box = text.get_window_extent(renderer)
            inside = (box.x0 >= 0, box.y0 >= 0, box.x1 <= fig.bbox.width, box.y1 <= fig.bbox.height)
            assert all(inside), (text, box)


def test_figure_to_image_is_the_png_savefig_would_write() -> None:
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    x, h = images(2, 3, 8, 8), torch.rand(2, 8, 8)
    for fig in (render.pair_figure(x, x, h, h), render.curves_figure({"a": torch.rand(2, 5)})):
        fig.patch.set_alpha(0.5)  # a translucent background is composited on white
        fig.savefig(io.BytesIO(), format="png")  # constrained layout settles on its first draw
        for dpi in (None, 37.0):
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi="figure" if dpi is None else dpi)
            with Image.open(buffer) as img:
                rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255
            want = np.round((rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:]) * 255)
            got = render.figure_to_image(fig, dpi=dpi).permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(got, want.astype(np.uint8))
        assert fig.dpi == 100.0  # the figure's own dpi is kept
    # A figure on another canvas is drawn with Agg and given its canvas back.
    svg = FigureCanvasSVG(render.curves_figure({"a": torch.rand(2, 5)}))
    assert render.figure_to_image(svg.figure).shape == (3, 360, 500)
    assert svg.figure.canvas is svg


def test_picture_figure_saves_and_rasterises_to_the_pixels_it_shows() -> None:
    curves = {"insertion": torch.rand(4, 9), "deletion": torch.rand(4, 9)}
    for dpi in (100.0, 72.0, 133.3):
        original = render.curves_figure(curves, title="gradcam, epoch 3")
        buffer = io.BytesIO()
        original.savefig(buffer, format="png", dpi=dpi)
        with Image.open(buffer) as img:
            want = np.asarray(img.convert("RGB"))
        picture = render.figure_to_image(original, dpi=dpi)
        shown = render.picture_figure(picture, dpi=dpi)
        buffer = io.BytesIO()
        shown.savefig(buffer, format="png", dpi=dpi)  # what FileSink and MLflow do
        with Image.open(buffer) as img:
            np.testing.assert_array_equal(np.asarray(img.convert("RGB")), want)
        assert torch.equal(render.figure_to_image(shown), picture)  # what TensorBoard does
    with pytest.raises(TypeError, match=r"\(3, H, W\) uint8"):
        render.picture_figure(torch.zeros(3, 4, 4), dpi=100)
    with pytest.raises(ValueError, match="`dpi` > 0"):
        render.picture_figure(torch.zeros(3, 4, 4, dtype=torch.uint8), dpi=0)


def test_rendering_never_touches_pyplot(monkeypatch: pytest.MonkeyPatch) -> None:
    # If rendering imported pyplot (and so picked a GUI backend), it would reappear here.
    monkeypatch.delitem(sys.modules, "matplotlib.pyplot", raising=False)
    x, h = images(2, 3, 8, 8), torch.rand(2, 8, 8)
    render.pair_grid(x, x, h, h)
    render.figure_to_image(render.pair_figure(x, x, h, h))
    render.figure_to_image(render.curves_figure({"a": torch.rand(2, 5)}))
    assert "matplotlib.pyplot" not in sys.modules


def test_pair_grid_min_tile_enlarges_small_probes_by_an_integer_factor() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 24, generator=g)
    h = torch.rand(2, 16, 24, generator=g)
    native = render.pair_grid(x, x, h, h, padding=0)
    big = render.pair_grid(x, x, h, h, padding=0, min_tile=40)  # k = ceil(40 / 16) = 3
    assert tuple(big.shape) == (3, 2 * 48, 4 * 72)
    # The image tiles are enlarged nearest-neighbour: every 3x3 block repeats a native pixel.
    torch.testing.assert_close(big[:, :48:3, :72:3], native[:, :16, :24])
    assert torch.equal(render.pair_grid(x, x, h, h, min_tile=16), render.pair_grid(x, x, h, h))
    with pytest.raises(ValueError, match="min_tile"):
        render.pair_grid(x, x, h, h, min_tile=-1)
