"""Insertion and deletion against the brute-force loop reference, plus their documented behaviour."""

from __future__ import annotations

import pytest
import torch

from lightning_explain.metrics import deletion, evaluate, insertion
from lightning_explain.metrics.functional._common import pixel_ranks
from tests.helpers import LeftHalfModel, images
from tests.metrics.reference import Centered, centered_cnn, curve_ref

TOL = 1e-5

# (model seed, B, C, H, W, n_steps, map size): non-square, B = 1, 1 channel, 7x7 map, k not dividing
CASES = [
    (0, 3, 3, 24, 32, 12, None),
    (1, 1, 3, 20, 20, 7, None),
    (2, 2, 1, 16, 24, 10, None),
    (3, 2, 3, 28, 28, 9, (7, 7)),
]


def _inputs(seed: int, b: int, c: int, h: int, w: int, size: tuple[int, int] | None):
    g = torch.Generator().manual_seed(100 + seed)
    x1, x2 = images(b, c, h, w, seed=seed), images(b, c, h, w, seed=seed + 50)
    mh, mw = size or (h, w)
    h1, h2 = torch.rand(b, mh, mw, generator=g), torch.rand(b, mh, mw, generator=g)
    return x1, x2, h1, h2


MODES = [
    ("simultaneous", "both"),
    ("conditional", "both"),
    ("conditional", "x1"),
    ("conditional", "x2"),
]


@pytest.mark.parametrize(("seed", "b", "c", "h", "w", "n_steps", "size"), CASES)
@pytest.mark.parametrize(("mode", "direction"), MODES)
@pytest.mark.parametrize("kind", ["insertion", "deletion"])
def test_matches_brute_force_reference(seed, b, c, h, w, n_steps, size, mode, direction, kind):
    model = centered_cnn(seed, c)
    x1, x2, h1, h2 = _inputs(seed, b, c, h, w, size)
    fn = insertion if kind == "insertion" else deletion
    scores, curve = fn(
        model,
        x1,
        x2,
        h1,
        h2,
        mode=mode,
        direction=direction,
        n_steps=n_steps,
        batch_size=16,
        return_curve=True,
    )
    ref_scores, ref_curves = curve_ref(
        model.eval(), x1, x2, h1, h2, kind=kind, mode=mode, n_steps=n_steps, direction=direction
    )
    assert scores.shape == (b,)
    assert curve.shape == (b, n_steps + 1)
    assert torch.allclose(curve.double(), torch.tensor(ref_curves, dtype=torch.float64), atol=TOL)
    assert torch.allclose(scores.double(), torch.tensor(ref_scores, dtype=torch.float64), atol=TOL)


@pytest.mark.parametrize(("seed", "b", "c", "h", "w", "n_steps", "size"), CASES[:2] + CASES[3:])
def test_corrected_deletion_matches_reference(seed, b, c, h, w, n_steps, size):
    model = centered_cnn(seed, c)
    x1, x2, h1, h2 = _inputs(seed, b, c, h, w, size)
    scores = deletion(model, x1, x2, h1, h2, n_steps=n_steps, corrected=True)
    ref, _ = curve_ref(
        model.eval(),
        x1,
        x2,
        h1,
        h2,
        kind="deletion",
        mode="simultaneous",
        n_steps=n_steps,
        corrected=True,
    )
    assert torch.allclose(scores.double(), torch.tensor(ref, dtype=torch.float64), atol=TOL)


@pytest.mark.parametrize("kind", ["insertion", "deletion"])
def test_evaluate_conditional_is_mean_of_both_directions(kind):
    model = centered_cnn(4)
    x1, x2, h1, h2 = _inputs(4, 3, 3, 24, 20, None)
    fn = insertion if kind == "insertion" else deletion
    one = {"mode": "conditional", "direction": "x1", "n_steps": 8, "return_curve": True}
    forward, c12 = fn(model, x1, x2, h1, h2, **one)
    backward, c21 = fn(model, x2, x1, h2, h1, **one)
    key = f"{kind}_conditional"
    scores, curves = evaluate(
        model, x1, x2, (h1, h2), [key], n_steps=8, batch_size=7, return_curves=True
    )
    assert torch.allclose(scores[key], 0.5 * (forward + backward), atol=TOL)
    assert torch.allclose(curves[key], 0.5 * (c12 + c21), atol=TOL)
    # the two directions really differ here, so averaging is not vacuous
    assert (forward - backward).abs().max() > 1e-3
    # direction="x2" is the swapped call, and the functions' default is the mean of both
    other, c_other = fn(model, x1, x2, h1, h2, **{**one, "direction": "x2"})
    torch.testing.assert_close(other, backward, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c_other, c21, rtol=1e-5, atol=1e-6)
    both, c_both = fn(model, x1, x2, h1, h2, mode="conditional", n_steps=8, return_curve=True)
    torch.testing.assert_close(c_both, curves[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(both, scores[key], rtol=1e-5, atol=1e-6)


def test_evaluate_simultaneous_and_corrected_match_functional():
    model = centered_cnn(5)
    x1, x2, h1, h2 = _inputs(5, 2, 3, 24, 24, (6, 6))
    keys = ["insertion_simultaneous", "deletion_simultaneous", "deletion_simultaneous_corrected"]
    scores = evaluate(model, x1, x2, (h1, h2), keys, n_steps=6, batch_size=5)
    assert torch.allclose(scores[keys[0]], insertion(model, x1, x2, h1, h2, n_steps=6), atol=TOL)
    assert torch.allclose(scores[keys[1]], deletion(model, x1, x2, h1, h2, n_steps=6), atol=TOL)
    corrected = deletion(model, x1, x2, h1, h2, n_steps=6, corrected=True)
    assert torch.allclose(scores[keys[2]], corrected, atol=TOL)


def test_chunk_size_does_not_change_scores():
    model = centered_cnn(6)
    x1, x2, h1, h2 = _inputs(6, 3, 3, 16, 16, None)
    a = evaluate(model, x1, x2, (h1, h2), n_steps=10, batch_size=1)
    b = evaluate(model, x1, x2, (h1, h2), n_steps=10, batch_size=1000)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=TOL), key


def test_curve_endpoints():
    """Insertion starts at the blurred pair and ends intact; deletion the reverse, ending at 0s."""
    model = centered_cnn(7)
    x1, x2, h1, h2 = _inputs(7, 2, 3, 20, 20, None)
    with torch.no_grad():
        model.eval()
        intact = torch.cosine_similarity(model(x1), model(x2))
        zero = torch.cosine_similarity(model(0 * x1), model(0 * x2))
    _, ins = insertion(model, x1, x2, h1, h2, n_steps=5, return_curve=True)
    _, dele = deletion(model, x1, x2, h1, h2, n_steps=5, return_curve=True)
    assert torch.allclose(ins[:, -1], intact, atol=TOL)
    assert torch.allclose(dele[:, 0], intact, atol=TOL)
    assert torch.allclose(dele[:, -1], zero, atol=TOL)
    assert torch.allclose(dele[:, -1], torch.ones(2), atol=TOL)  # identical endpoints


def test_simultaneous_deletion_artifact_and_its_correction():
    """Once a left-half model sees only substrate in both images, simultaneous deletion reads
    similarity 1 for the rest of the curve (the artifact); the corrected variant does not."""
    model = Centered(LeftHalfModel(seed=3))
    b, h, w, n_steps = 2, 16, 24, 12
    x1, x2 = images(b, 3, h, w, seed=1), images(b, 3, h, w, seed=2)
    left = torch.zeros(b, h, w)
    left[..., : w // 2] = 1.0
    _, curve = deletion(model, x1, x2, left, left, n_steps=n_steps, return_curve=True)
    _, fixed = deletion(
        model, x1, x2, left, left, n_steps=n_steps, corrected=True, return_curve=True
    )
    half = n_steps // 2
    assert curve[:, 0].max() < 0.99
    assert torch.allclose(curve[:, half:], torch.ones(b, n_steps - half + 1), atol=TOL)
    assert (fixed[:, half:] < 0.99).all()


def test_substrates():
    model = centered_cnn(8)
    x1, x2, h1, h2 = _inputs(8, 2, 3, 16, 16, None)
    zero = deletion(model, x1, x2, h1, h2, n_steps=4)
    assert torch.allclose(deletion(model, x1, x2, h1, h2, n_steps=4, substrate=0.0), zero)
    _, mean_curve = deletion(model, x1, x2, h1, h2, n_steps=4, substrate="mean", return_curve=True)
    with torch.no_grad():
        model.eval()
        m1 = x1.mean(dim=(2, 3), keepdim=True).expand_as(x1)
        m2 = x2.mean(dim=(2, 3), keepdim=True).expand_as(x2)
        expected = torch.cosine_similarity(model(m1), model(m2))
    assert torch.allclose(mean_curve[:, -1], expected, atol=TOL)
    # insertion from zeros ends intact and starts at the all-zero pair
    _, ins = insertion(model, x1, x2, h1, h2, n_steps=4, substrate="zero", return_curve=True)
    assert torch.allclose(ins[:, 0], torch.ones(2), atol=TOL)


def test_n_steps_larger_than_pixels_and_single_step():
    model = centered_cnn(9)
    x1, x2, h1, h2 = _inputs(9, 1, 3, 6, 6, None)
    _, curve = insertion(model, x1, x2, h1, h2, n_steps=50, return_curve=True)
    _, ref_curve = curve_ref(
        model.eval(), x1, x2, h1, h2, kind="insertion", mode="simultaneous", n_steps=50
    )
    assert torch.allclose(curve.double(), torch.tensor(ref_curve, dtype=torch.float64), atol=TOL)
    one, c1 = deletion(model, x1, x2, h1, h2, n_steps=1, return_curve=True)
    assert c1.shape == (1, 2)
    assert torch.allclose(one, c1.mean(dim=1))


def test_scores_are_ordinary_tensors_under_inference_mode():
    model = centered_cnn(10)
    x1, x2, h1, h2 = _inputs(10, 2, 3, 16, 16, None)
    with torch.inference_mode():
        inside = insertion(model, x1, x2, h1, h2, n_steps=4)
    outside = insertion(model, x1, x2, h1, h2, n_steps=4)
    assert not outside.is_inference()
    assert torch.allclose(inside, outside)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 9, 13, 22, 30, 61, 1000])
def test_curves_match_reference_at_every_chunking(batch_size):
    # Chunks of the (pairs x steps) grid that start and end inside a pair, span whole pairs, or
    # hold all of them build the same perturbed images (checked against the brute-force loop).
    model = centered_cnn(7)
    x1, x2, h1, h2 = _inputs(7, 3, 3, 12, 20, (5, 4))
    n_steps = 7
    keys = [
        "insertion_simultaneous",
        "insertion_conditional",
        "deletion_simultaneous",
        "deletion_conditional",
    ]
    _, curves = evaluate(
        model, x1, x2, (h1, h2), keys, n_steps=n_steps, batch_size=batch_size, return_curves=True
    )
    for key in keys:
        kind, mode = key.split("_")
        _, ref = curve_ref(
            model.eval(), x1, x2, h1, h2, kind=kind, mode=mode, n_steps=n_steps, direction="both"
        )
        expected = torch.tensor(ref, dtype=torch.float64)
        assert torch.allclose(curves[key].double(), expected, atol=TOL), key


@pytest.mark.parametrize("batch_size", [3, 7, 1000])
def test_perturbed_pixels_are_exactly_the_image_or_the_substrate(batch_size):
    # Every pixel the model sees is bit for bit the image's pixel or the substrate value, as
    # torch.where would choose it: an arithmetic blend such as x + w * (fill - x) would round.
    seen: list[torch.Tensor] = []

    def model(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return torch.stack([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3))], dim=1)

    g = torch.Generator().manual_seed(3)
    x1, x2 = 3 * torch.randn(2, 3, 10, 10, generator=g), 3 * torch.randn(2, 3, 10, 10, generator=g)
    h1, h2 = torch.rand(2, 10, 10, generator=g), torch.rand(2, 10, 10, generator=g)
    fill = 0.1234567
    deletion(model, x1, x2, h1, h2, n_steps=6, substrate=fill, batch_size=batch_size)
    fed = torch.cat(seen)
    sources = torch.cat([x1, x2])  # each fed image comes from one of these
    kept = (fed[:, None] == sources[None]) | (fed[:, None] == torch.tensor(fill))
    exact = kept.flatten(2).all(dim=2).any(dim=1)
    assert exact.all(), f"{int((~exact).sum())} of {len(fed)} images hold blended pixels"
    deleted = (fed == torch.tensor(fill)).all(dim=1).flatten(1).sum(dim=1)
    assert deleted.max() == 100  # the whole track, start to finish
    assert deleted.min() == 0


@pytest.mark.parametrize(
    "maps",
    [
        pytest.param(lambda g: torch.rand(5, 9, 31, generator=g), id="distinct"),
        pytest.param(
            lambda g: torch.randint(-3, 4, (4, 16, 16), generator=g).float(), id="many-ties"
        ),
        pytest.param(
            lambda g: torch.tensor(
                [[[0.0, -0.0, 0.0, -0.0, 1.0], [-1.0, float("inf"), -float("inf"), 1e-45, -1e-45]]]
            ),
            id="signed-zeros-infinities",
        ),
        pytest.param(
            lambda g: torch.tensor([[[0.0, -0.0], [1e-45, -1e-45]], [[-0.0, 0.0], [-2.5, 2.5]]]),
            id="signed-zeros-subnormal",
        ),
        pytest.param(
            lambda g: torch.tensor([[[float("nan"), 1.0], [0.0, float("nan")]]]), id="nan"
        ),
        pytest.param(lambda g: torch.rand(2, 8, 8, generator=g).half(), id="float16"),
        pytest.param(lambda g: torch.rand(2, 8, 8, generator=g).bfloat16(), id="bfloat16-ties"),
        pytest.param(lambda g: torch.rand(2, 8, 8, generator=g, dtype=torch.float64), id="f64"),
    ],
)
def test_raster_ranks_are_the_stable_descending_sort(maps):
    """The ranks insertion/deletion perturb by are a stable descending sort of the map (ties in
    raster order), whichever sort computes them."""
    h = maps(torch.Generator().manual_seed(0))
    flat = h.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    expected = torch.empty_like(order).scatter_(
        1, order, torch.arange(flat.shape[1]).expand_as(order)
    )
    assert torch.equal(pixel_ranks(h, "raster"), expected)
