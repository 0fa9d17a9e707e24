"""Size and speed of the HTML dashboard: the figures of ``docs/dashboard.md``.

Builds synthetic dashboards (``tests.cli.test_dashboard.synthetic_data``: smooth random images and
maps, per-pair scores and curves, a kNN accuracy; no training) of the given shapes and prints, per
shape, the file size and what it is made of (probe images, maps, per-pair curves, the page's
code, the rest), the time to render the page in Python, and, with ``--browser``, the time headless
Chromium takes to make the page interactive and to draw each tab. ``--live`` also times the
rank-0 cost of the live dashboard (``LiveDashboard.add``: encode one evaluation's maps, rewrite
the page) at the last evaluation of a run of that many evaluations.

Example::

    python benchmarks/bench_dashboard.py                       # the docs' shapes, 32 px images
    python benchmarks/bench_dashboard.py --shape 20x8x16 --size 96 --browser --live
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _parts(html: str) -> dict[str, int]:
    """Bytes of the page by kind (base64 pictures are counted as they are in the file)."""
    sys.path.insert(0, str(ROOT))
    from tests.cli.test_dashboard import page_data

    data = page_data(html)

    def pictures(grid: Any) -> int:
        return sum(
            len(a) + len(b) for row in grid for cell in row if cell is not None for a, b in cell
        )

    curves = sum(
        len(block["q"])
        for row in data["pairCurves"]
        for cell in row
        if cell is not None
        for block in cell
        if block is not None
    )
    images = sum(len(a) + len(b) for a, b in data["img"])
    maps = pictures(data["maps"]) + pictures(data["ov"])
    code = sum(
        len(m) for m in re.findall(r"<(?:script|style)>(.*?)</(?:script|style)>", html, re.S)
    )
    total = len(html.encode("utf-8"))
    return {
        "probe images": images,
        "maps": maps,
        "per-pair curves": curves,
        "page code (JS + CSS)": code,
        "other (numbers, tables)": total - images - maps - curves - code,
        "total": total,
    }


def _browser(path: Path) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from tests.cli._browser import open_page

    out: dict[str, float] = {}
    with open_page(path.resolve().as_uri(), width=1400, height=1000, timeout=120) as page:
        out["interactive"] = float(page.evaluate("dashboard.timings.ready"))
        page.evaluate("dashboard.idle()", await_promise=True)
        out["first screen"] = float(page.evaluate("performance.now()"))
        tabs = page.evaluate(
            "Array.from(document.querySelectorAll('nav.tabs button')).map(b => b.dataset.tab)"
        )
        for tab in tabs:
            t0 = page.evaluate("performance.now()")
            page.evaluate(f"document.querySelector('nav.tabs button[data-tab={tab}]').click()")
            page.evaluate("dashboard.idle()", await_promise=True)
            out[f"tab {tab}"] = float(page.evaluate("performance.now()")) - t0
        page.evaluate("document.querySelector('nav.tabs button[data-tab=pair]').click()")
        page.evaluate("dashboard.idle()", await_promise=True)
        t0 = page.evaluate("performance.now()")
        page.evaluate("dashboard.stepSlider(-1)")
        page.evaluate("dashboard.idle()", await_promise=True)
        out["slider step"] = float(page.evaluate("performance.now()")) - t0
        if page.errors():
            raise RuntimeError(f"the page reported errors: {page.errors()}")
    return out


def _live(n_ckpt: int, n_methods: int, n_pairs: int, size: int, folder: Path) -> dict[str, float]:
    """Seconds of the last ``LiveDashboard.add`` of ``n_ckpt`` evaluations (encode + rewrite)."""
    import torch
    import torch.nn.functional as F

    from lightning_explain.dashboard import MethodRecord, encode_image
    from lightning_explain.live_dashboard import LiveDashboard
    from tests.cli.test_dashboard import SYNTHETIC_METHODS

    g = torch.Generator().manual_seed(0)
    img = encode_image(torch.rand(3, size, size, generator=g))
    live = LiveDashboard(folder / "index.html", pairs=[(img, img)] * n_pairs)
    xs = torch.linspace(0, 1, 33)
    encode = write = 0.0
    for i in range(n_ckpt):
        # Smooth maps, like class-activation maps (as synthetic_data's).
        low = torch.rand(n_methods * 2 * n_pairs, 1, 5, 5, generator=g)
        maps = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        maps = maps.reshape(n_methods, 2, n_pairs, size, size)
        t0 = time.perf_counter()
        records = {
            m: MethodRecord.from_tensors(
                maps[j, 0],
                maps[j, 1],
                scores={"insertion_simultaneous": torch.rand(n_pairs, generator=g)},
                curves={"insertion_simultaneous": xs.expand(n_pairs, -1)},
            )
            for j, m in enumerate(SYNTHETIC_METHODS[:n_methods])
        }
        t1 = time.perf_counter()
        live.add(epoch=i, global_step=10 * i, methods=records, write=False)
        live.write()
        t2 = time.perf_counter()
        encode, write = t1 - t0, t2 - t1
    return {"encode maps": encode, "rewrite page": write}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--shape",
        nargs="+",
        default=["8x4x6", "20x8x16"],
        help="CHECKPOINTSxMETHODSxPAIRS, one dashboard each",
    )
    p.add_argument("--size", type=int, default=32, help="image and map side in pixels")
    p.add_argument("--browser", action="store_true", help="time the page in headless Chromium")
    p.add_argument("--live", action="store_true", help="time the live dashboard's last rewrite")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from lightning_explain.dashboard import render_html
    from tests.cli.test_dashboard import synthetic_data

    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shape:
            n_ckpt, n_methods, n_pairs = (int(v) for v in shape.split("x"))
            data = synthetic_data(n_ckpt, n_methods, n_pairs, args.size)
            t0 = time.perf_counter()
            html = render_html(data, static_scatter=False)
            took = time.perf_counter() - t0
            path = Path(tmp) / f"{shape}.html"
            path.write_text(html, encoding="utf-8")
            parts = _parts(html)
            print(
                f"\n{n_ckpt} checkpoints x {n_methods} methods x {n_pairs} pairs, "
                f"{args.size} px: {parts['total'] / 1e6:.2f} MB (rendered in {took:.2f} s)"
            )
            for key, value in parts.items():
                if key != "total":
                    print(f"  {key:26s} {value / 1e6:6.2f} MB")
            if args.browser:
                timings = _browser(path)
                print("  Chromium: " + ", ".join(f"{k} {v:.0f} ms" for k, v in timings.items()))
            if args.live:
                folder = Path(tmp) / f"live-{shape}"
                cost = _live(n_ckpt, n_methods, n_pairs, args.size, folder)
                print(
                    f"  live, evaluation {n_ckpt}: "
                    + ", ".join(f"{k} {v:.2f} s" for k, v in cost.items())
                    + f" ({(folder / 'index.html').stat().st_size / 1e6:.2f} MB)"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
