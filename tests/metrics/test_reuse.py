"""evaluate() reuses what it knows: the intact embeddings (given or computed once) stand for the
unperturbed end of every insertion/deletion curve, and ``intact=`` skips their forwards."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lightning_explain.metrics import DEFAULT_METRICS, deletion, evaluate, insertion
from tests.helpers import images
from tests.metrics.reference import Counting, centered_cnn


def _setup(b: int = 3):
    g = torch.Generator().manual_seed(0)
    model = centered_cnn(0)
    x1, x2 = images(b, 3, 20, 20, seed=0), images(b, 3, 20, 20, seed=1)
    maps = (torch.rand(b, 20, 20, generator=g), torch.rand(b, 20, 20, generator=g))
    return model, x1, x2, maps


def _intact(model: nn.Module, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        return model.eval()(x1), model(x2)


@pytest.mark.parametrize("n_steps", [1, 5])
def test_forward_count_of_the_default_set(n_steps: int):
    model, x1, x2, maps = _setup()
    b = x1.shape[0]
    counting = Counting(model)
    evaluate(counting, x1, x2, maps, n_steps=n_steps)
    # 2 intact + 2 masked (average_*) + 4 tracks x n_steps (the intact end of each is known).
    assert counting.images == b * (4 + 4 * n_steps)
    counting.images = 0
    evaluate(counting, x1, x2, maps, n_steps=n_steps, intact=_intact(model, x1, x2))
    assert counting.images == b * (2 + 4 * n_steps)


def test_given_intact_embeddings_give_the_same_scores_and_curves():
    model, x1, x2, maps = _setup()
    keys = [*DEFAULT_METRICS, "deletion_simultaneous_corrected"]
    scores, curves = evaluate(model, x1, x2, maps, keys, n_steps=6, return_curves=True)
    scores2, curves2 = evaluate(
        model, x1, x2, maps, keys, n_steps=6, intact=_intact(model, x1, x2), return_curves=True
    )
    for key in keys:
        torch.testing.assert_close(scores2[key], scores[key], rtol=1e-5, atol=1e-6)
    for key in curves:
        torch.testing.assert_close(curves2[key], curves[key], rtol=1e-5, atol=1e-6)


def test_known_endpoints_match_the_functional_curves():
    """The functional forms embed every step; evaluate's curves agree with them, and the
    unperturbed end of each curve is exactly the similarity of the intact pair."""
    model, x1, x2, (h1, h2) = _setup()
    z1, z2 = _intact(model, x1, x2)
    base = torch.cosine_similarity(z1, z2)
    _, curves = evaluate(model, x1, x2, (h1, h2), n_steps=7, intact=(z1, z2), return_curves=True)
    torch.testing.assert_close(curves["insertion_simultaneous"][:, -1], base)
    torch.testing.assert_close(curves["insertion_conditional"][:, -1], base)
    torch.testing.assert_close(curves["deletion_simultaneous"][:, 0], base)
    torch.testing.assert_close(curves["deletion_conditional"][:, 0], base)
    _, ins = insertion(model, x1, x2, h1, h2, n_steps=7, return_curve=True)
    _, dele = deletion(model, x1, x2, h1, h2, n_steps=7, return_curve=True)
    torch.testing.assert_close(curves["insertion_simultaneous"], ins, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(curves["deletion_simultaneous"], dele, rtol=1e-5, atol=1e-5)


def test_bad_intact_is_refused_with_a_clear_message():
    model, x1, x2, maps = _setup()
    z1, z2 = _intact(model, x1, x2)
    with pytest.raises(TypeError, match="intact"):
        evaluate(model, x1, x2, maps, intact=z1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"intact\[1\]"):
        evaluate(model, x1, x2, maps, intact=(z1, "z2"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(3, D\)"):
        evaluate(model, x1, x2, maps, intact=(z1[:2], z2))
    with pytest.raises(ValueError, match="one shape"):
        evaluate(model, x1, x2, maps, intact=(z1, z2[:, :4]))
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(model, x1, x2, maps, intact=(z1, torch.full_like(z2, float("nan"))))


@pytest.mark.parametrize("direction", ["both", "x1", "x2"])
def test_forward_count_of_one_direction(direction: str):
    """A conditional key perturbs one image per direction: "x1"/"x2" walk one track, "both" two;
    with the simultaneous keys as well, their tracks serve every direction."""
    model, x1, x2, maps = _setup()
    b, n_steps = x1.shape[0], 4
    tracks = 2 if direction == "both" else 1
    counting = Counting(model)
    evaluate(counting, x1, x2, maps, ["deletion_conditional"], n_steps=n_steps, direction=direction)
    assert counting.images == b * (2 + tracks * n_steps)
    counting.images = 0
    evaluate(counting, x1, x2, maps, ["average_drop_conditional"], direction=direction)
    assert counting.images == b * (2 + tracks)
    counting.images = 0
    evaluate(counting, x1, x2, maps, n_steps=n_steps, direction=direction)
    assert counting.images == b * (4 + 4 * n_steps)  # as the default direction
    counting.images = 0
    deletion(counting, x1, x2, *maps, mode="conditional", direction=direction, n_steps=n_steps)
    assert counting.images == b * (2 + tracks * n_steps)  # the function: the same forwards
