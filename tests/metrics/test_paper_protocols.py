"""The authors' protocol variants of the metrics: their insertion/deletion tie order
(``ties="paper"``) and their max-sensitivity noise for Averaged Transforms (``noise_at="mixed"``),
each against a brute-force reference."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lightning_explain import explain
from lightning_explain.metrics import Deletion, Insertion, deletion, evaluate, insertion
from lightning_explain.metrics.functional._common import pixel_ranks
from lightning_explain.metrics.functional.sensitivity import max_sensitivity
from tests.helpers import TinyCNN, images
from tests.metrics.reference import centered_cnn, curve_ref

TOL = 1e-5


def _tied_maps(b: int, h: int, w: int, seed: int) -> tuple[Tensor, Tensor]:
    """Maps with many exact ties: a few levels and a zero half, as clamped CAMs have."""
    g = torch.Generator().manual_seed(seed)
    maps = []
    for _ in range(2):
        m = torch.randint(0, 4, (b, h, w), generator=g).float() / 3
        m[:, :, : w // 2] = 0
        maps.append(m)
    return maps[0], maps[1]


def test_paper_ranks_are_the_flipped_default_argsort() -> None:
    h1, _ = _tied_maps(3, 16, 20, seed=0)
    ranks = pixel_ranks(h1, "paper")
    order = torch.flip(h1.flatten(1).argsort(), dims=[-1])
    expected = torch.empty_like(order)
    expected.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    assert torch.equal(ranks, expected)
    # Descending saliency whatever the tie order.
    values = torch.gather(h1.flatten(1), 1, order)
    assert (values[:, :-1] >= values[:, 1:]).all()
    assert not torch.equal(ranks, pixel_ranks(h1, "raster"))  # ties are broken differently


@pytest.mark.parametrize(("mode", "direction"), [("simultaneous", "both"), ("conditional", "x2")])
@pytest.mark.parametrize("kind", ["insertion", "deletion"])
def test_paper_ties_match_the_brute_force_reference(kind: str, mode: str, direction: str) -> None:
    model = centered_cnn(3, 3)
    x1, x2 = images(2, 3, 16, 16, seed=5), images(2, 3, 16, 16, seed=6)
    h1, h2 = _tied_maps(2, 16, 16, seed=7)
    fn = insertion if kind == "insertion" else deletion
    got, curve = fn(
        model, x1, x2, h1, h2, mode=mode, direction=direction, n_steps=16, ties="paper",
        return_curve=True,
    )  # fmt: skip
    ref, ref_curves = curve_ref(
        model.eval(), x1, x2, h1, h2, kind=kind, mode=mode, n_steps=16, direction=direction,
        ties="paper",
    )  # fmt: skip
    torch.testing.assert_close(curve.double(), torch.tensor(ref_curves).double(), atol=TOL, rtol=0)
    torch.testing.assert_close(got.double(), torch.tensor(ref).double(), atol=TOL, rtol=0)
    _, raster = fn(
        model, x1, x2, h1, h2, mode=mode, direction=direction, n_steps=16, return_curve=True
    )
    assert (curve - raster).abs().max() > 1e-4  # the tie order matters on these maps


def test_ties_do_not_matter_without_ties_and_reach_every_entry_point() -> None:
    model = centered_cnn(4, 3)
    x1, x2 = images(2, 3, 16, 16, seed=8), images(2, 3, 16, 16, seed=9)
    g = torch.Generator().manual_seed(1)
    h1, h2 = torch.rand(2, 16, 16, generator=g), torch.rand(2, 16, 16, generator=g)
    a = insertion(model, x1, x2, h1, h2, n_steps=8)
    b = insertion(model, x1, x2, h1, h2, n_steps=8, ties="paper")
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    t1, t2 = _tied_maps(2, 16, 16, seed=10)
    keys = ["insertion_simultaneous", "deletion_conditional"]
    scores = evaluate(model, x1, x2, (t1, t2), keys, n_steps=8, ties="paper")
    direct = deletion(model, x1, x2, t1, t2, mode="conditional", n_steps=8, ties="paper")
    torch.testing.assert_close(scores["deletion_conditional"], direct)
    metric = Insertion(n_steps=8, ties="paper")
    metric.update(model, x1, x2, t1, t2)
    expected = insertion(model, x1, x2, t1, t2, n_steps=8, ties="paper").mean()
    torch.testing.assert_close(metric.compute(), expected)
    assert Deletion(ties="paper").ties == "paper"
    with pytest.raises(ValueError, match=r"ties.*'raster'.*'paper'"):
        insertion(model, x1, x2, t1, t2, ties="reverse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ties"):
        Insertion(ties="stable")


def _sensitivity_reference(
    model: TinyCNN, x1: Tensor, x2: Tensor, *, n_samples: int, radius: float, seed: int
) -> Tensor:
    """Per pair, batch-1 explanations; the paper's protocol for Averaged Transforms: the noise of
    each draw on every mixed image; relative L2 change; max over draws; mean of the images."""
    g = torch.Generator().manual_seed(seed)
    noises = [(torch.rand(x1.shape, generator=g) * 2 - 1) * radius for _ in range(n_samples)]
    out = []
    for p in range(x1.shape[0]):
        a, b = x1[p : p + 1], x2[p : p + 1]
        ref = explain(model, a, b, method="averaged_transforms", steps=3)
        worst = [0.0, 0.0]
        for noise in noises:
            e = explain(
                model, a, b, method="averaged_transforms", steps=3, path_noise=noise[p : p + 1]
            )
            for i, (r, n) in enumerate(((ref.h1, e.h1), (ref.h2, e.h2))):
                worst[i] = max(worst[i], float((r - n).norm() / r.norm()))
        out.append(0.5 * (worst[0] + worst[1]))
    return torch.tensor(out)


def test_noise_on_the_mixed_images_matches_the_reference() -> None:
    model = TinyCNN().eval()
    x1, x2 = images(3, seed=11), images(3, seed=12)
    options = {"steps": 3}
    got = max_sensitivity(
        model, x1, x2, "averaged_transforms", n_samples=3, radius=0.1, noise_at="mixed",
        options=options,
    )  # fmt: skip
    ref = _sensitivity_reference(model, x1, x2, n_samples=3, radius=0.1, seed=0)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    on_inputs = max_sensitivity(
        model, x1, x2, "averaged_transforms", n_samples=3, radius=0.1, options=options
    )
    assert not torch.allclose(got, on_inputs, atol=1e-3)  # T(x + e) is not T(x) + e


def test_noise_at_mixed_is_inputs_for_methods_without_a_path() -> None:
    model = TinyCNN().eval()
    x1, x2 = images(2, seed=13), images(2, seed=14)
    a = max_sensitivity(model, x1, x2, "input_x_gradient", n_samples=2, noise_at="mixed")
    b = max_sensitivity(model, x1, x2, "input_x_gradient", n_samples=2)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"noise_at.*'inputs'.*'mixed'"):
        max_sensitivity(model, x1, x2, "input_x_gradient", noise_at="path")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sets `path_noise` itself"):
        max_sensitivity(
            model, x1, x2, "averaged_transforms", n_samples=1, path_noise=torch.zeros_like(x1)
        )
