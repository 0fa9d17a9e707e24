"""Side-by-side check of our methods and metrics against the authors' own code (explain-cl).

The authors' repository (``fawazsammani/explain-cl``, Sammani et al., "Visualizing and
Understanding Contrastive Learning", arXiv 2206.09753) is imported at run time from the directory
given with ``--explain-cl`` (its ``methods.py`` and ``evaluation.py``); nothing of it is copied
here. Both sides explain and score the same pairs with the same randomly initialised model:

* **model**: torchvision ``resnet18(weights=None)`` up to ``layer4`` as ``encoder.net`` (seed
  ``--seed``, nothing downloaded), global average pooling and an MLP ``contrastive_head``
  (512-512-128), so that the authors' ``GradCAM`` finds ``ssl_model.encoder.net`` and
  ``ssl_model.contrastive_head``; ``model(x)`` is the head output. Eval mode, ``--dtype``.
* **pairs**: scikit-image sample photos (``skimage.data``, bundled files only; generated smooth
  images if scikit-image is missing), ImageNet-normalised: ``x1`` a centre crop, ``x2`` another
  crop (flipped) of the same photo, and ``xt = T(x1)`` a pixel-aligned photometric transform of
  ``x1`` (brightness 1.2, contrast 0.8, saturation 0.5) for Averaged Transforms, whose paper
  design explains ``(x, T(x))``.

**Maps.** Ours are finished maps (``lightning_explain._core.finalize_maps``: clamp at 0, bilinear
upsampling to the input size, division by the max). The authors' raw maps (7x7 numpy arrays for
the CAMs, ``(1, H, W)`` tensors for the gradient methods) are put through the same
``finalize_maps`` before the comparison, so the comparison is ``|ours - finalize_maps(theirs)|``.
Compared: Grad-CAM; Interaction-CAM with each reduction (ours ``mean``/``max``/``attn``, theirs
``mean``/``max``/anything else) and ``grad_interact`` off/on; input x gradient (guided and not,
blurred and not); SmoothGrad with the same noise (theirs draws
``torch.zeros_like(img1).normal_(0, sigma)`` from the global RNG: here their module's ``torch``
is replaced by a proxy whose ``zeros_like(...).normal_(0, sigma)`` returns our k-th draw from
``smoothgrad_noise``, and our ``noise=`` is set to their ``sigma = 0.15 / (max(x1) - min(x1))``);
Averaged Transforms ``design="paper"`` against the authors' ``averaged_transforms`` on mixed
images ``lam * x1 + (1 - lam) * xt``, ``lam`` in ``np.arange(1, 0, -0.1)`` as their
``create_mixed_images`` builds them (its PIL path is bypassed). With ``noise=True`` our noise is
not injectable through the public API; the script rebuilds it from the seed (the method's
Gaussian stream, ``torch.randn`` of the batch shape in float32 with a generator seeded by
``seed``, one draw per interior mixed image in order) and adds it to the authors' mixed images.

**Metrics**, given the same maps (our Grad-CAM maps at full resolution): insertion/deletion,
simultaneous and conditional (the authors' ``*_batch`` functions, 224 px per step, blur
k=11/sigma=5 insertion substrate, zero deletion substrate, trapezoid over the steps; their
functions return the mean over the pairs, so the mean of ours is compared; their conditional
scores are computed in both directions in one batch, ``(x1 | x2)`` and ``(x2 | x1)``, which is
our ``direction="both"``). Ties: ours with ``ties="paper"`` (``flip(argsort(h))``, the authors'
order) must agree; our default ``ties="raster"`` is printed for information (INFO rows, with
``--full``), since clamped and bilinearly upsampled maps have many exactly equal pixels. Average drop/increase,
simultaneous and conditional (both directions, averaged). Max-sensitivity: the authors'
``max_sensitivity_cam`` / ``max_sensitivity`` with ``sample_eps_Inf`` patched to return our
noise draws in order (``(torch.rand(x1.shape, generator=g) * 2 - 1) * radius``, ``g`` seeded
with ``seed`` on the input device) and an ``exp_fn`` that returns our finished maps of the same
method, so what is compared is the protocol (noise on both images, relative L2 change, max over
draws, mean of the two images). For Averaged Transforms their noise goes on every mixed image;
the ``exp_fn`` passes it as our ``path_noise`` (``noise_at="mixed"``; with ``design="paper"``
noise on the inputs is the same up to rounding, shown with ``--full``).

**float32 and ReLU kinks.** Ours embeds both images of a pair in one ``(2, C, H, W)`` batch,
theirs one image per forward. In float32 the two orders of rounding differ by ~1e-6 relative,
and a ReLU pre-activation that close to 0 (seen: 1.3e-7 in float64, -5.3e-7 batched and +3.0e-7
single in float32, on a unit of ``layer2``) falls on the other side of the kink; every input
gradient below it changes (by up to 2 % of the map's max at 64 px). So a float32 map comparison
that fails is re-run in float64 (model and images cast; our maps are finished in float32 either
way): the float32 row becomes INFO and the float64 row is judged. ``--dtype float64`` runs
everything in float64.

**Sizes other than 224 px.** The authors' blur (k=11, sigma=5, output blur and insertion
substrate) is fixed; ours scales with the image side and equals theirs at 224 px only, so at
other sizes the blurred maps and insertion rows are INFO. Insertion/deletion walk the same pixels
at any size (:func:`paper_steps`).

Defaults keep a 224 px run with 2 pairs to a few minutes on 2 CPU cores: SmoothGrad with
``--smoothgrad-samples 10`` (the paper's 50; the comparison does not depend on the count, both
use the same noise) and max-sensitivity with ``--sens-samples 3`` (the paper's 10). ``--full``
adds the blurred SmoothGrad, blurred and guided+noisy Averaged Transforms, insertion/deletion with
our default tie order and through the functions :func:`insertion` / :func:`deletion` (the default
run uses :func:`evaluate`), and max-sensitivity of Averaged Transforms with noise on the inputs.

The authors' module reads ``device = cuda if available``; everything runs on that device. To
spare time, the authors' conditional insertion/deletion get a model wrapper that returns the
stored embedding of the intact condition batch (which they re-embed at every step) when it sees
that exact tensor again; the numbers are the same. Their deprecated guided-backprop hooks warn
under recent torch; those warnings are silenced.

Tolerances: 1e-5 (max |difference| of [0, 1] maps), 7e-6 (metric values). The summary table lists
every quantity with its max |difference|, tolerance and PASS/FAIL (INFO: printed, not judged).
Exit status 1 if any comparison fails, 2 if the authors' code cannot be found.

Example::

    git --git-dir=/work/.mirror/fawazsammani+explain-cl/repo archive HEAD | tar -x -C /tmp/explain-cl
    OMP_NUM_THREADS=2 python benchmarks/paper_side_by_side.py --explain-cl /tmp/explain-cl --pairs 2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import inspect
import math
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_explain import explain
from lightning_explain._core import finalize_maps
from lightning_explain.methods.gradients import smoothgrad_noise
from lightning_explain.metrics import evaluate
from lightning_explain.metrics.functional import (
    average_drop,
    average_increase,
    deletion,
    insertion,
    max_sensitivity,
)

MAP_TOL = 1e-5
METRIC_TOL = 7e-6
LAYER = "encoder.net"
REFERENCE_SIZE = 224  # the authors' fixed blur (k=11, sigma=5) is ours at this size only
PAPER_STEP_PIXELS = 224  # the authors' pixels per insertion/deletion step
AT_STEPS = 10  # the authors' np.arange(1, 0, -0.1)
NOISE_LEVEL = 0.15  # the paper's sigma numerator
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "motorcycle_left", "hubble_deep_field")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
INTERACTION = (("mean", "mean"), ("max", "max"), ("attn", "attention"))  # (ours, theirs)


# --------------------------------------------------------------------------------------------------
# Model and images


class PaperStyleModel(nn.Module):
    """``contrastive_head(encoder.net(x).mean([2, 3]))``: the layout the authors' GradCAM expects."""

    def __init__(self, net: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.net = net
        self.contrastive_head = head

    def forward(self, x: Tensor) -> Tensor:
        net = cast(nn.Module, self.encoder.net)
        feats: Tensor = net(x)
        z: Tensor = self.contrastive_head(feats.mean(dim=[2, 3]))
        return z


def build_model(
    seed: int = 0, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> PaperStyleModel:
    """Randomly initialised ResNet-18 trunk (``weights=None``) + MLP head, eval mode."""
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    trunk = resnet18(weights=None)
    net = nn.Sequential(*list(trunk.children())[:-2])  # conv1 .. layer4
    head = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128))
    model = PaperStyleModel(net, head).eval()
    return model.to(device=device, dtype=dtype)


def _photos() -> list[Tensor]:
    """Bundled scikit-image RGB photos as ``(3, H, W)`` floats in [0, 1]; [] without skimage."""
    try:
        import skimage.data
    except ImportError:
        return []
    images = []
    for name in PHOTOS:
        try:
            array = np.asarray(getattr(skimage.data, name)())
        except Exception:  # a photo that would need a download: skip it
            continue
        if array.ndim == 3 and array.shape[2] >= 3:
            images.append(torch.from_numpy(array[..., :3].copy()).permute(2, 0, 1).float() / 255)
    return images


def _generated(n: int, seed: int) -> list[Tensor]:
    """Smooth random ``(3, 256, 256)`` images in [0, 1] (upsampled low-resolution noise)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        low = torch.rand(1, 3, 8, 8, generator=g)
        out.append(F.interpolate(low, size=(256, 256), mode="bicubic").clamp(0, 1)[0])
    return out


def _square(img: Tensor, size: int, top: float, left: float, scale: float) -> Tensor:
    """A square crop (side ``scale`` x the shorter side, corner at fractions ``top``/``left`` of
    the free room) resized to ``size``."""
    _, h, w = img.shape
    side = max(8, int(min(h, w) * scale))
    y = int((h - side) * top)
    x = int((w - side) * left)
    crop = img[:, y : y + side, x : x + side].unsqueeze(0)
    return F.interpolate(
        crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0].clamp(0, 1)


def _photometric(img: Tensor) -> Tensor:
    """The deterministic pixel-aligned transform ``T`` of Averaged Transforms (on [0, 1] images)."""
    from torchvision.transforms.v2 import functional as TF

    out = TF.adjust_brightness(img, 1.2)
    out = TF.adjust_contrast(out, 0.8)
    out = TF.adjust_saturation(out, 0.5)
    result: Tensor = out.clamp(0, 1)
    return result


def make_pairs(
    n: int, size: int, seed: int = 0, source: str = "auto"
) -> tuple[Tensor, Tensor, Tensor, str]:
    """``(x1, x2, xt, source)``: ``(n, 3, size, size)`` ImageNet-normalised float32 images.

    ``x1``: a centre crop of a photo; ``x2``: another, flipped crop of the same photo; ``xt``: the
    photometric transform of ``x1`` (before normalisation). ``source``: ``"auto"`` (photos if
    scikit-image is installed, else generated), ``"skimage"`` or ``"generated"``.
    """
    photos = _photos() if source in ("auto", "skimage") else []
    if source == "skimage" and not photos:
        raise RuntimeError("scikit-image sample photos are not available")
    used = "skimage.data" if photos else "generated"
    if not photos:
        photos = _generated(max(1, n), seed)
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    x1, x2, xt = [], [], []
    for i in range(n):
        img = photos[i % len(photos)]
        a = _square(img, size, 0.5, 0.5, 0.9)
        top, left = (float(v) for v in torch.rand(2, generator=g))
        b = _square(img, size, top, left, 0.6).flip(-1)
        x1.append((a - mean) / std)
        x2.append((b - mean) / std)
        xt.append((_photometric(a) - mean) / std)
    return torch.stack(x1), torch.stack(x2), torch.stack(xt), used


def paper_steps(size: int) -> tuple[int, int]:
    """``(n_steps, pixels_per_step)`` matching the authors' 224-pixel steps at ``size`` px.

    The authors move ``step = 224`` pixels per step, ``ceil(H*W / step)`` steps; ours takes
    ``n_steps`` and moves ``ceil(H*W / n_steps)``. At 224 px both are 224; at other sizes the
    authors get ``step = ceil(H*W / n_steps)`` so that both walk the same pixels.
    """
    hw = size * size
    n_steps = math.ceil(hw / PAPER_STEP_PIXELS)
    step = math.ceil(hw / n_steps)
    if math.ceil(hw / step) != n_steps:  # pragma: no cover - holds for every size
        raise ValueError(f"no matching step for {size} px")
    return n_steps, step


def tied(maps: Tensor) -> list[int]:
    """Per map of ``(..., H, W)`` maps: how many pixels share their exact value with another."""
    counts = []
    for m in maps.reshape(-1, maps.shape[-2] * maps.shape[-1]):
        _, n = torch.unique(m, return_counts=True)
        counts.append(int(n[n > 1].sum()))
    return counts


def our_map_pair(model: nn.Module, x1: Tensor, x2: Tensor, method: str, **options: Any) -> Tensor:
    """Our finished maps as one ``(2, B, H, W)`` tensor (``h1``, ``h2``)."""
    e = explain(model, x1, x2, method=method, **options)
    return torch.stack([e.h1, e.h2])


# --------------------------------------------------------------------------------------------------
# Results


@dataclass
class Row:
    """One compared quantity. ``tol=None``: printed for information, not judged."""

    quantity: str
    diff: float
    tol: float | None
    note: str = ""

    @property
    def status(self) -> str:
        if self.tol is None:
            return "INFO"
        return "PASS" if math.isfinite(self.diff) and self.diff <= self.tol else "FAIL"


def max_abs(a: Tensor | np.ndarray | float, b: Tensor | np.ndarray | float) -> float:
    ta = torch.as_tensor(a).detach().double().cpu()
    tb = torch.as_tensor(b).detach().double().cpu()
    return float((ta - tb).abs().max())


def summary_table(rows: Sequence[Row]) -> str:
    lines = ["| quantity | max abs diff | tolerance | result |", "|---|---|---|---|"]
    for r in rows:
        tol = "-" if r.tol is None else f"{r.tol:.0e}"
        note = f" ({r.note})" if r.note else ""
        lines.append(f"| {r.quantity}{note} | {r.diff:.3e} | {tol} | {r.status} |")
    return "\n".join(lines)


def exit_code(rows: Sequence[Row]) -> int:
    return 1 if any(r.status == "FAIL" for r in rows) else 0


@dataclass
class Setup:
    model: PaperStyleModel
    x1: Tensor
    x2: Tensor
    xt: Tensor
    methods: Any  # the authors' methods module
    evaluation: Any  # the authors' evaluation module
    seed: int
    sens_samples: int
    rows: list[Row] = field(default_factory=list)
    _float64: Setup | None = field(default=None, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.x1.shape[-2]), int(self.x1.shape[-1])

    @property
    def batch(self) -> int:
        return int(self.x1.shape[0])

    def float64(self) -> Setup:
        """The same setup with the model and the images in float64 (built once)."""
        if self._float64 is None:
            if self.x1.dtype == torch.float64:
                return self
            self._float64 = Setup(
                copy.deepcopy(self.model).double(),
                self.x1.double(),
                self.x2.double(),
                self.xt.double(),
                self.methods,
                self.evaluation,
                self.seed,
                self.sens_samples,
            )
        return self._float64

    def add(
        self, quantity: str, diff: float, tol: float | None, note: str = "", extra: str = ""
    ) -> None:
        row = Row(quantity, diff, tol, note)
        self.rows.append(row)
        tail = f"  [{extra}]" if extra else ""
        tol_text = "" if tol is None else f" (tol {tol:.0e})"
        print(f"  {quantity}: max|diff| = {diff:.3e}{tol_text} {row.status}{tail}", flush=True)


# --------------------------------------------------------------------------------------------------
# Running the authors' code


def load_authors(path: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """Import ``methods.py`` and ``evaluation.py`` from the authors' checkout (by file path)."""
    modules = []
    for stem in ("methods", "evaluation"):
        file = path / f"{stem}.py"
        if not file.is_file():
            raise FileNotFoundError(
                f"{file} not found: --explain-cl must be an explain-cl checkout"
            )
        spec = importlib.util.spec_from_file_location(f"explain_cl_{stem}", file)
        if spec is None or spec.loader is None:  # pragma: no cover
            raise ImportError(f"cannot import {file}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    return modules[0], modules[1]


@contextlib.contextmanager
def patched(module: Any, name: str, value: Any) -> Iterator[None]:
    """Temporarily replace ``module.name``."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the deprecation warnings of the authors' ``register_backward_hook``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class _Pending:
    """What the proxy's ``zeros_like`` returns: ``.normal_(0, sigma)`` yields the next draw."""

    def __init__(self, feed: NoiseFeed, like: Tensor) -> None:
        self.feed, self.like = feed, like

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> Tensor:
        return self.feed.take(self.like, mean=mean, std=std)


class NoiseFeed:
    """Hands out prepared noise tensors in order, checking shape, mean and sigma."""

    def __init__(self, draws: Sequence[Tensor], sigma: float | None = None) -> None:
        self.draws = list(draws)
        self.sigma = sigma
        self.used = 0
        self.last: Tensor | None = None

    def take(
        self, like: Tensor | None = None, *, mean: float = 0.0, std: float | None = None
    ) -> Tensor:
        if self.used >= len(self.draws):
            raise RuntimeError(
                f"the authors' code asked for more than {len(self.draws)} noise draws"
            )
        draw = self.draws[self.used]
        if like is not None and tuple(like.shape) != tuple(draw.shape):
            raise RuntimeError(
                f"noise of shape {tuple(like.shape)} asked, {tuple(draw.shape)} prepared"
            )
        if mean != 0.0:
            raise RuntimeError(f"noise with mean {mean} asked")
        if (
            std is not None
            and self.sigma is not None
            and not math.isclose(std, self.sigma, rel_tol=1e-6)
        ):
            raise RuntimeError(f"noise with sigma {std} asked, prepared for {self.sigma}")
        self.used += 1
        self.last = draw
        return draw.clone()


class TorchProxy:
    """Stands for the ``torch`` module inside the authors' module: everything is torch's, except
    ``zeros_like(x)``, whose ``.normal_(0, sigma)`` returns the next draw of ``feed``."""

    def __init__(self, feed: NoiseFeed) -> None:
        self._feed = feed

    def zeros_like(self, x: Tensor, *args: Any, **kwargs: Any) -> _Pending:
        return _Pending(self._feed, x)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


class CachedCondition(nn.Module):
    """``model`` that returns stored embeddings for inputs bitwise equal to remembered ones (the
    intact condition batch the authors' conditional metrics re-embed at every step)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.memory: list[tuple[Tensor, Tensor]] = []

    def remember(self, x: Tensor) -> None:
        with torch.no_grad():
            self.memory.append((x.clone(), self.model(x)))

    def forward(self, x: Tensor) -> Tensor:
        for key, z in self.memory:
            if key.shape == x.shape and key.device == x.device and torch.equal(key, x):
                return z.clone()
        out: Tensor = self.model(x)
        return out


def _stack_raw(maps: Sequence[Any]) -> Tensor:
    """The authors' per-pair raw maps (numpy ``(h, w)`` or tensors ``(1, h, w)``) as ``(B, h, w)``."""
    parts = []
    for m in maps:
        t = torch.as_tensor(np.atleast_2d(m)) if isinstance(m, np.ndarray) else m.detach()
        parts.append(t.reshape(t.shape[-2], t.shape[-1]).cpu())
    return torch.stack(parts)


def _finished(maps: Sequence[Any], size: tuple[int, int], device: torch.device) -> Tensor:
    return finalize_maps(_stack_raw(maps), size).to(device)


def _theirs_per_pair(
    s: Setup, fn: Callable[[Tensor, Tensor, int], tuple[Any, Any]], a: Tensor, b: Tensor
) -> Tensor:
    """Run one of the authors' batch-1 methods on every pair; ``(2, B, H, W)`` finished maps."""
    raw1, raw2 = [], []
    for i in range(s.batch):
        with quiet():
            m1, m2 = fn(a[i : i + 1], b[i : i + 1], i)
        s.model.zero_grad(set_to_none=True)
        raw1.append(m1)
        raw2.append(m2)
    return torch.stack([_finished(raw1, s.size, a.device), _finished(raw2, s.size, a.device)])


def _blur_tol(s: Setup, blur: bool, tol: float) -> tuple[float | None, str]:
    """Blur k=11, sigma=5 is the authors' at every size; ours is scaled from 224 px."""
    if blur and s.size != (REFERENCE_SIZE, REFERENCE_SIZE):
        return None, f"our blur is scaled to {s.size[0]} px, theirs is the 224 px one"
    return tol, ""


def _has_option(fn: Callable[..., Any], name: str) -> bool:
    return name in inspect.signature(fn).parameters


# --------------------------------------------------------------------------------------------------
# Maps


MapDiff = Callable[["Setup"], float]
"""Computes ours and theirs on a setup and returns the max |difference| of the finished maps."""


def compare_map(
    s: Setup, quantity: str, diff_fn: MapDiff, tol: float | None, note: str = ""
) -> None:
    """One map comparison. A float32 failure is re-run in float64 (model and images cast): ours
    explains both images of a pair in one batch, theirs one image per forward, and in float32 the
    different rounding can put a ReLU pre-activation that is within ~1e-6 of 0 on the other side
    of the kink, which changes the gradient of everything below it. The float32 number is then
    kept as INFO and the float64 one is judged."""
    diff = diff_fn(s)
    if tol is None or diff <= tol or s.x1.dtype != torch.float32:
        s.add(quantity, diff, tol, note)
        return
    s.add(quantity, diff, None, "float32: see the float64 re-check" + (f", {note}" if note else ""))
    s.add(f"{quantity} [float64 re-check]", diff_fn(s.float64()), tol, note)


def compare_cams(s: Setup) -> None:
    print("CAMs (layer encoder.net = layer4 output):", flush=True)

    def gradcam(t: Setup) -> float:
        ours = our_map_pair(t.model, t.x1, t.x2, "gradcam", layer=LAYER)
        theirs = _theirs_per_pair(
            t, lambda a, b, i: t.methods.get_gradcam(t.model, a, b), t.x1, t.x2
        )
        return max_abs(ours, theirs)

    compare_map(s, "map gradcam", gradcam, MAP_TOL)
    for grad_interact in (False, True):
        for red_ours, red_theirs in INTERACTION:

            def icam(
                t: Setup, r_ours: str = red_ours, r: str = red_theirs, gi: bool = grad_interact
            ) -> float:
                ours = our_map_pair(
                    t.model,
                    t.x1,
                    t.x2,
                    "interaction_cam",
                    layer=LAYER,
                    reduction=r_ours,
                    grad_interact=gi,
                )
                theirs = _theirs_per_pair(
                    t,
                    lambda a, b, i: t.methods.get_interactioncam(
                        t.model, a, b, r, grad_interact=gi
                    ),
                    t.x1,
                    t.x2,
                )
                return max_abs(ours, theirs)

            compare_map(
                s,
                f"map interaction_cam reduction={red_ours} grad_interact={grad_interact}",
                icam,
                MAP_TOL,
            )


def compare_input_x_gradient(s: Setup) -> None:
    print("Input x gradient:", flush=True)
    for guided in (False, True):
        for blur in (False, True):

            def ixg(t: Setup, g: bool = guided, bl: bool = blur) -> float:
                ours = our_map_pair(t.model, t.x1, t.x2, "input_x_gradient", guided=g, blur=bl)
                theirs = _theirs_per_pair(
                    t, lambda a, b, i: t.methods.sailency(g, t.model, a, b, bl), t.x1, t.x2
                )
                return max_abs(ours, theirs)

            tol, note = _blur_tol(s, blur, MAP_TOL)
            compare_map(s, f"map input_x_gradient guided={guided} blur={blur}", ixg, tol, note)


def compare_smoothgrad(s: Setup, variants: Sequence[tuple[bool, bool]], n_samples: int) -> None:
    print(f"SmoothGrad ({n_samples} samples, our noise injected into theirs):", flush=True)
    for guided, blur in variants:

        def smooth(t: Setup, g: bool = guided, bl: bool = blur) -> float:
            diffs = []
            for i in range(t.batch):
                a, b = t.x1[i : i + 1], t.x2[i : i + 1]
                sigma = NOISE_LEVEL / (torch.max(a) - torch.min(a)).item()  # theirs, from img1
                options: dict[str, Any] = {"n_samples": n_samples, "noise": sigma, "seed": t.seed}
                ours = our_map_pair(t.model, a, b, "smoothgrad", guided=g, blur=bl, **options)
                noise = smoothgrad_noise(a, b, **options)  # (S, 1, C, H, W)
                feed = NoiseFeed(list(noise), sigma)
                with patched(t.methods, "torch", TorchProxy(feed)), quiet():
                    m1, m2 = t.methods.smooth_grad(g, t.model, a, b, bl, steps=n_samples)
                t.model.zero_grad(set_to_none=True)
                if feed.used != n_samples:
                    raise RuntimeError(f"smooth_grad used {feed.used} noise draws")
                theirs = torch.stack(
                    [_finished([m1], t.size, a.device), _finished([m2], t.size, a.device)]
                )
                diffs.append(max_abs(ours, theirs))
            return max(diffs)

        tol, note = _blur_tol(s, blur, MAP_TOL)
        compare_map(s, f"map smoothgrad guided={guided} blur={blur}", smooth, tol, note)


def authors_mixed(x: Tensor, xt: Tensor) -> list[Tensor]:
    """The authors' mixed images of one pair: ``lam * x + (1 - lam) * T(x)``, their lambdas."""
    return [lam * x + (1 - lam) * xt for lam in np.arange(1, 0, -1 / AT_STEPS)]


def our_path_noise(s: Setup) -> list[Tensor]:
    """The interior-image noise of our ``averaged_transforms(design="paper", noise=True)`` on the
    batch, rebuilt from the seed: draw ``k`` (mixed image ``k + 1``) is
    ``randn(x1.shape, generator=g, float32) * 0.15 / (max - min of each x1)``."""
    g = torch.Generator(device=s.x1.device).manual_seed(s.seed)
    flat = s.x1.float().flatten(1)
    span = flat.amax(dim=1) - flat.amin(dim=1)
    span = torch.where(span > 0, span, torch.ones_like(span)).view(-1, 1, 1, 1)
    sigma = NOISE_LEVEL / span
    draws = []
    for _ in range(AT_STEPS - 2):
        eps = torch.randn(tuple(s.x1.shape), generator=g, device=s.x1.device, dtype=torch.float32)
        draws.append((eps * sigma.float()).to(s.x1.dtype))
    return draws


def compare_averaged_transforms(s: Setup, variants: Sequence[tuple[bool, bool, bool]]) -> None:
    print("Averaged Transforms (ours design='paper' on (x1, T(x1))):", flush=True)
    for noise, guided, blur in variants:

        def averaged(t: Setup, nz: bool = noise, g: bool = guided, bl: bool = blur) -> float:
            ours = our_map_pair(
                t.model,
                t.x1,
                t.xt,
                "averaged_transforms",
                design="paper",
                steps=AT_STEPS,
                noise=nz,
                guided=g,
                blur=bl,
                seed=t.seed,
            )
            draws = our_path_noise(t) if nz else []

            def run(a: Tensor, b: Tensor, i: int) -> tuple[Any, Any]:
                mixed = authors_mixed(a, b)
                if draws:  # their create_mixed_images: im + noise on the interior images
                    mixed = [
                        im + draws[n - 1][i : i + 1] if 0 < n < len(mixed) - 1 else im
                        for n, im in enumerate(mixed)
                    ]
                result: tuple[Any, Any] = t.methods.averaged_transforms(g, t.model, mixed, bl)
                return result

            return max_abs(ours, _theirs_per_pair(t, run, t.x1, t.xt))

        tol, note = _blur_tol(s, blur, MAP_TOL)
        if noise:
            note = ", ".join(n for n in ("our noise rebuilt from the seed", note) if n)
        compare_map(
            s,
            f"map averaged_transforms noise={noise} guided={guided} blur={blur}",
            averaged,
            tol,
            note,
        )


# --------------------------------------------------------------------------------------------------
# Metrics


def compare_insertion_deletion(s: Setup, h1: Tensor, h2: Tensor, full: bool) -> None:
    E = s.evaluation
    n_steps, step = paper_steps(s.size[0])
    print(
        f"Insertion/deletion ({n_steps} steps of {step} px; means over {s.batch} pairs):",
        flush=True,
    )
    model = s.model
    h1, h2 = h1.contiguous(), h2.contiguous()
    b = s.batch
    theirs: dict[str, float] = {}
    for kind, mode in (("insertion", "ins"), ("deletion", "del")):
        with torch.no_grad():
            value = E.insertion_deletion_simult_batch(model, s.x1, s.x2, h1, h2, b, mode, step=step)
        theirs[f"{kind}_simultaneous"] = float(value)
        # Both directions in one batch: (x1 | x2) and (x2 | x1), our direction="both".
        images = torch.cat([s.x1, s.x2])
        conditions = torch.cat([s.x2, s.x1])
        cached = CachedCondition(model)
        cached.remember(conditions)
        with torch.no_grad():
            value = E.insertion_deletion_cond_batch(
                cached, images, conditions, torch.cat([h1, h2]), 2 * b, mode, step=step
            )
        theirs[f"{kind}_conditional"] = float(value)
    keys = list(theirs)
    has_ties = _has_option(evaluate, "ties")
    if not has_ties:
        print("  (ties='paper' is not available in this version: only the default tie order)")
    ties_options = (["paper", "raster"] if full else ["paper"]) if has_ties else ["raster"]
    for ties in ties_options:
        extra: dict[str, Any] = {"ties": ties} if has_ties else {}
        scores = evaluate(model, s.x1, s.x2, (h1, h2), keys, n_steps=n_steps, **extra)
        for key in keys:
            _add_curve_metric(s, f"{key} ties={ties}", scores[key], theirs[key], ties)
    if full and has_ties:  # the functions, not only evaluate
        for key in keys:
            kind, mode = key.split("_")
            fn: Callable[..., Tensor] = insertion if kind == "insertion" else deletion
            ours = fn(model, s.x1, s.x2, h1, h2, mode=mode, n_steps=n_steps, ties="paper")
            _add_curve_metric(s, f"{key} ties=paper ({kind}())", ours, theirs[key], "paper")


def _add_curve_metric(s: Setup, quantity: str, ours: Tensor, theirs: float, ties: str) -> None:
    mean = float(ours.double().mean())
    tol: float | None = METRIC_TOL if ties == "paper" else None
    note = "" if ties == "paper" else "default tie order, not the authors'"
    if quantity.startswith("insertion") and s.size != (REFERENCE_SIZE, REFERENCE_SIZE):
        tol, note = None, f"our blur substrate is scaled to {s.size[0]} px"
    per_pair = ", ".join(f"{v:.5f}" for v in ours.tolist())
    s.add(
        quantity,
        abs(mean - theirs),
        tol,
        note,
        extra=f"ours {mean:.7f} (per pair {per_pair}), theirs {theirs:.7f}",
    )


def compare_drop_increase(s: Setup, h1: Tensor, h2: Tensor) -> None:
    print("Average drop / increase:", flush=True)
    E = s.evaluation
    model = s.model
    drops: dict[str, list[float]] = {"simultaneous": [], "conditional": []}
    incs: dict[str, list[float]] = {"simultaneous": [], "conditional": []}
    for i in range(s.batch):
        a, b = s.x1[i : i + 1], s.x2[i : i + 1]
        e1, e2 = h1[i].cpu(), h2[i].cpu()
        d, n = E.average_drop_increase_simult(model, a, b, e1, e2)
        drops["simultaneous"].append(float(d))
        incs["simultaneous"].append(float(n))
        d1, n1 = E.average_drop_increase_cond(model, a, b, e1)  # x1 masked, x2 intact
        d2, n2 = E.average_drop_increase_cond(model, b, a, e2)  # x2 masked, x1 intact
        drops["conditional"].append(0.5 * (float(d1) + float(d2)))
        incs["conditional"].append(0.5 * (float(n1) + float(n2)))
    keys = []
    for mode in ("simultaneous", "conditional"):
        ours_d = average_drop(model, s.x1, s.x2, h1, h2, mode=mode)
        ours_i = average_increase(model, s.x1, s.x2, h1, h2, mode=mode)
        for name, ours, theirs in (
            ("average_drop", ours_d, drops[mode]),
            ("average_increase", ours_i, incs[mode]),
        ):
            keys.append((f"{name}_{mode}", theirs))
            s.add(
                f"{name}_{mode} (per pair)",
                max_abs(ours.double(), torch.tensor(theirs, dtype=torch.float64)),
                METRIC_TOL,
                extra=f"ours {[round(v, 7) for v in ours.tolist()]}, theirs "
                f"{[round(v, 7) for v in theirs]}",
            )
    scores = evaluate(model, s.x1, s.x2, (h1, h2), [k for k, _ in keys])
    diff = max(max_abs(scores[k].double(), torch.tensor(t, dtype=torch.float64)) for k, t in keys)
    s.add("average_drop/increase via evaluate", diff, METRIC_TOL)


def sensitivity_noise(s: Setup, radius: float) -> list[Tensor]:
    """Our max-sensitivity draws for the batch, in order: ``(rand * 2 - 1) * radius``."""
    g = torch.Generator(device=s.x1.device).manual_seed(s.seed)
    return [
        (torch.rand(tuple(s.x1.shape), generator=g, device=s.x1.device, dtype=s.x1.dtype) * 2 - 1)
        * radius
        for _ in range(s.sens_samples)
    ]


def _eps_feed(feed: NoiseFeed, radius: float) -> Callable[[np.ndarray, float, int], np.ndarray]:
    def sample_eps_inf(image: np.ndarray, epsilon: float, n: int) -> np.ndarray:
        if n != 1 or not math.isclose(epsilon, radius):
            raise RuntimeError(f"sample_eps_Inf called with epsilon={epsilon}, N={n}")
        draw = feed.take()
        if tuple(draw.shape) != tuple(image.shape):
            raise RuntimeError(f"noise of shape {image.shape} asked, {tuple(draw.shape)} prepared")
        return draw.detach().cpu().numpy()

    return sample_eps_inf


class _FloatTensorKeepsDtype:
    """``torch`` for the authors' evaluation module whose ``FloatTensor(array)`` keeps the array's
    dtype (only used with ``--dtype float64``, where their float32 cast would round our noise)."""

    def FloatTensor(self, array: np.ndarray) -> Tensor:
        return torch.as_tensor(array)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


def compare_sensitivity(s: Setup, full: bool, radius: float = 0.2) -> None:
    print(f"Max-sensitivity ({s.sens_samples} draws, radius {radius}, our noise fed to theirs):")
    E = s.evaluation
    model = s.model
    draws = sensitivity_noise(s, radius)
    common: dict[str, Any] = {"n_samples": s.sens_samples, "radius": radius, "seed": s.seed}
    float64 = s.x1.dtype != torch.float32
    cases: list[tuple[str, str, dict[str, Any], str | None]] = [
        ("gradcam", "gradcam", {"layer": LAYER}, None),
        ("interaction_cam mean", "interaction_cam", {"layer": LAYER, "reduction": "mean"}, "mean"),
        ("input_x_gradient", "input_x_gradient", {}, None),
        ("input_x_gradient guided", "input_x_gradient", {"guided": True}, None),
    ]
    for label, method, options, reduction in cases:
        reference = our_map_pair(model, s.x1, s.x2, method, **options)
        ours = max_sensitivity(model, s.x1, s.x2, method, **common, options=options)
        theirs = []
        for i in range(s.batch):
            feed = NoiseFeed([d[i : i + 1] for d in draws])
            a, b = s.x1[i : i + 1], s.x2[i : i + 1]
            with contextlib.ExitStack() as stack:
                stack.enter_context(patched(E, "sample_eps_Inf", _eps_feed(feed, radius)))
                if float64:
                    stack.enter_context(patched(E, "torch", _FloatTensorKeepsDtype()))
                if method in ("gradcam", "interaction_cam"):

                    def cam_fn(
                        m: nn.Module,
                        u: Tensor,
                        v: Tensor,
                        reduction: str | None = None,
                        method: str = method,
                        options: dict[str, Any] = options,
                    ) -> tuple[np.ndarray, np.ndarray]:
                        maps = our_map_pair(m, u, v, method, **options)
                        return maps[0, 0].cpu().numpy(), maps[1, 0].cpu().numpy()

                    value = E.max_sensitivity_cam(
                        model,
                        a,
                        b,
                        reference[0, i].cpu().numpy(),
                        reference[1, i].cpu().numpy(),
                        cam_fn,
                        reduction,
                        sen_N=s.sens_samples,
                        sen_r=radius,
                    )
                else:

                    def grad_fn(
                        guided: bool,
                        ssl_model: nn.Module,
                        img1: Tensor,
                        img2: Tensor,
                        blur_output: bool,
                        method: str = method,
                        options: dict[str, Any] = options,
                    ) -> tuple[Tensor, Tensor]:
                        maps = our_map_pair(ssl_model, img1, img2, method, **options)
                        return maps[0, 0], maps[1, 0]

                    value = E.max_sensitivity(
                        model,
                        a,
                        b,
                        None,
                        reference[0, i],
                        reference[1, i],
                        grad_fn,
                        bool(options.get("guided", False)),
                        sen_N=s.sens_samples,
                        sen_r=radius,
                    )
            theirs.append(float(value))
        s.add(
            f"max_sensitivity {label} (per pair)",
            max_abs(ours.double(), torch.tensor(theirs, dtype=torch.float64)),
            METRIC_TOL,
            extra=f"ours {[round(v, 6) for v in ours.tolist()]}, theirs {[round(v, 6) for v in theirs]}",
        )
    _sensitivity_averaged_transforms(s, draws, common, radius, full)


def _sensitivity_averaged_transforms(
    s: Setup, draws: list[Tensor], common: dict[str, Any], radius: float, full: bool
) -> None:
    E = s.evaluation
    model = s.model
    options: dict[str, Any] = {"design": "paper", "steps": AT_STEPS}
    reference = our_map_pair(model, s.x1, s.xt, "averaged_transforms", **options)
    theirs = []
    for i in range(s.batch):
        feed = NoiseFeed([d[i : i + 1] for d in draws])
        a, t = s.x1[i : i + 1], s.xt[i : i + 1]

        def at_fn(
            guided: bool,
            ssl_model: nn.Module,
            mixed_images: list[Tensor],
            blur_output: bool,
            feed: NoiseFeed = feed,
            a: Tensor = a,
            t: Tensor = t,
        ) -> tuple[Tensor, Tensor]:
            # Their mixed_images_noisy = [X + sample ...]: the draw just handed out, on every
            # mixed image, which is our path_noise.
            if feed.last is None:  # pragma: no cover
                raise RuntimeError("no noise drawn yet")
            maps = our_map_pair(
                ssl_model, a, t, "averaged_transforms", path_noise=feed.last, **options
            )
            return maps[0, 0], maps[1, 0]

        with contextlib.ExitStack() as stack:
            stack.enter_context(patched(E, "sample_eps_Inf", _eps_feed(feed, radius)))
            if s.x1.dtype != torch.float32:
                stack.enter_context(patched(E, "torch", _FloatTensorKeepsDtype()))
            value = E.max_sensitivity(
                model,
                a,
                t,
                authors_mixed(a, t),
                reference[0, i],
                reference[1, i],
                at_fn,
                False,
                sen_N=s.sens_samples,
                sen_r=radius,
            )
        theirs.append(float(value))
    targets = torch.tensor(theirs, dtype=torch.float64)
    has_noise_at = _has_option(max_sensitivity, "noise_at")
    at_options = (["mixed", "inputs"] if full else ["mixed"]) if has_noise_at else ["inputs"]
    for noise_at in at_options:
        extra: dict[str, Any] = {"noise_at": noise_at} if has_noise_at else {}
        ours = max_sensitivity(
            model, s.x1, s.xt, "averaged_transforms", **common, **extra, options=options
        )
        s.add(
            f"max_sensitivity averaged_transforms paper noise_at={noise_at} (per pair)",
            max_abs(ours.double(), targets),
            METRIC_TOL,
            extra=f"ours {[round(v, 6) for v in ours.tolist()]}, theirs {[round(v, 6) for v in theirs]}",
        )


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--explain-cl", type=Path, required=True, help="the authors' checkout")
    parser.add_argument("--size", type=int, default=224, help="image side (the paper's 224)")
    parser.add_argument("--pairs", type=int, default=2, help="number of image pairs")
    parser.add_argument("--seed", type=int, default=0, help="model, crop and noise seed")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument(
        "--images", choices=("auto", "skimage", "generated"), default="auto", help="pair source"
    )
    parser.add_argument(
        "--sens-samples", type=int, default=3, help="max-sensitivity draws (the paper's: 10)"
    )
    parser.add_argument(
        "--smoothgrad-samples", type=int, default=10, help="SmoothGrad samples (the paper's: 50)"
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="also: blurred SmoothGrad, blurred and guided+noisy Averaged Transforms, "
        "insertion/deletion with the default tie order and through the functions, "
        "max-sensitivity of Averaged Transforms with noise on the inputs",
    )
    args = parser.parse_args(argv)
    try:
        methods, evaluation = load_authors(args.explain_cl)
    except (FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = torch.device(methods.device)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    model = build_model(args.seed, dtype, device)
    x1, x2, xt, source = make_pairs(args.pairs, args.size, args.seed, args.images)
    x1, x2, xt = (t.to(device=device, dtype=dtype) for t in (x1, x2, xt))
    print(
        f"device: {device} (torch {torch.__version__}, threads: {torch.get_num_threads()}), "
        f"{args.dtype}; {args.pairs} pairs of {args.size} px from {source}; seed {args.seed}; "
        f"authors' code: {args.explain_cl}",
        flush=True,
    )
    s = Setup(model, x1, x2, xt, methods, evaluation, args.seed, args.sens_samples)
    smooth = [(False, False), (True, False)] + ([(False, True)] if args.full else [])
    averaged = [(False, False, False), (True, False, False), (False, True, False)]
    if args.full:
        averaged += [(False, False, True), (True, True, False)]
    timings: list[tuple[str, float]] = []

    def section(name: str, fn: Callable[[], None]) -> None:
        start = time.perf_counter()
        fn()
        timings.append((name, time.perf_counter() - start))
        print(f"  ({name}: {timings[-1][1]:.1f} s)", flush=True)

    section("cams", lambda: compare_cams(s))
    section("input_x_gradient", lambda: compare_input_x_gradient(s))
    section("smoothgrad", lambda: compare_smoothgrad(s, smooth, args.smoothgrad_samples))
    section("averaged_transforms", lambda: compare_averaged_transforms(s, averaged))
    maps = our_map_pair(model, x1, x2, "gradcam", layer=LAYER)
    print(f"metric maps: our gradcam maps; pixels sharing their value with another: {tied(maps)}")
    section(
        "insertion_deletion", lambda: compare_insertion_deletion(s, maps[0], maps[1], args.full)
    )
    section("drop_increase", lambda: compare_drop_increase(s, maps[0], maps[1]))
    section("max_sensitivity", lambda: compare_sensitivity(s, args.full))
    total = sum(t for _, t in timings)
    print(f"\ntime: {total:.1f} s (" + ", ".join(f"{n} {t:.1f} s" for n, t in timings) + ")")
    print("\n" + summary_table(s.rows))
    failed = [r for r in s.rows if r.status == "FAIL"]
    judged = [r for r in s.rows if r.tol is not None]
    print(f"\n{len(judged) - len(failed)}/{len(judged)} PASS, {len(failed)} FAIL")
    return exit_code(s.rows)


if __name__ == "__main__":
    sys.exit(main())
