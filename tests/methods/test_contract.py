"""The call contract, checked for every registered method.

Shape, range and normalisation of the maps; no side effects on the model, the grads or the global
RNG; grad-mode independence; reproducible seeds; localisation on a model that only sees the left
half of the image.
"""

from __future__ import annotations

import pytest
import torch

from lightning_explain import PairExplanation, explain, list_methods, method_info
from tests.helpers import (
    CentredLeftHalfModel,
    InvariantLeftHalfModel,
    TinyCNN,
    images,
    left_mass,
    positive_pairs,
    untouched,
    with_grads,
)
from tests.methods.options import FAST, LOCALISATION

METHODS = list_methods()


def test_every_method_has_fast_options() -> None:
    assert set(FAST) == set(METHODS)


def _check_contract(e: PairExplanation, b: int, h: int, w: int) -> None:
    assert isinstance(e, PairExplanation)
    for m in (e.h1, e.h2):
        assert m.shape == (b, h, w)
        assert m.dtype == torch.float32
        assert torch.isfinite(m).all()
        assert (m >= 0).all()
        peak = m.flatten(1).amax(1)
        assert torch.all((peak - 1).abs() < 1e-5) or torch.all(peak[peak != 1] == 0)
        assert not m.requires_grad
    assert e.sim.shape == (b,)
    assert torch.isfinite(e.sim).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("c", "h", "w"), [(3, 32, 48), (1, 40, 32)])
def test_contract_and_no_side_effects(method: str, c: int, h: int, w: int) -> None:
    model = with_grads(TinyCNN(in_channels=c))
    model.train()
    model.head[1].eval()  # a mixed train/eval state must survive exactly
    x1, x2 = images(2, c, h, w, seed=1), images(2, c, h, w, seed=2)
    with untouched(model):
        e = explain(model, x1, x2, method=method, **FAST[method])
    _check_contract(e, 2, h, w)
    with torch.no_grad():
        expected_sim = torch.nn.functional.cosine_similarity(model.eval()(x1), model(x2), dim=1)
    torch.testing.assert_close(e.sim, expected_sim, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_grad_modes_and_batch_one(method: str) -> None:
    model = TinyCNN()
    x1, x2 = images(1, seed=3), images(1, seed=4)
    ref = explain(model, x1, x2, method=method, **FAST[method])
    with torch.no_grad():
        e_ng = explain(model, x1, x2, method=method, **FAST[method])
    with torch.inference_mode():
        xi1, xi2 = x1.clone(), x2.clone()  # inference tensors
        e_im = explain(model, xi1, xi2, method=method, **FAST[method])
    for e in (e_ng, e_im):
        _check_contract(e, 1, 32, 32)
        torch.testing.assert_close(e.h1, ref.h1, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(e.h2, ref.h2, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", [m for m in METHODS if method_info(m).stochastic])
def test_seeded_methods_are_reproducible(method: str) -> None:
    model = TinyCNN()
    x1, x2 = images(2, seed=5), images(2, seed=6)
    a = explain(model, x1, x2, method=method, seed=3, **FAST[method])
    torch.manual_seed(999)  # the global RNG must not matter
    b = explain(model, x1, x2, method=method, seed=3, **FAST[method])
    assert torch.equal(a.h1, b.h1)
    assert torch.equal(a.h2, b.h2)


@pytest.mark.parametrize("method", [m for m in METHODS if method_info(m).symmetric])
def test_pair_symmetry(method: str) -> None:
    model = TinyCNN()
    x1, x2 = images(2, seed=7), images(2, seed=8)
    e = explain(model, x1, x2, method=method, **FAST[method])
    s = explain(model, x2, x1, method=method, **FAST[method])
    torch.testing.assert_close(s.h1, e.h2, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(s.h2, e.h1, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(s.sim, e.sim, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_localisation_left_half(method: str) -> None:
    """A model that only sees the left half: most of each map's mass lies in the left half.

    The fair setting is the paper's: positive pairs (two views of one image) and a model whose
    embeddings are centred (see ``CentredLeftHalfModel``). Pixel invariance explains what the
    similarity is invariant to under colour jitter and erasing, so it assumes a model trained to be
    jitter-invariant: it gets ``InvariantLeftHalfModel``.
    """
    model = InvariantLeftHalfModel() if method == "pixel_invariance" else CentredLeftHalfModel()
    x1, x2 = positive_pairs(4, 3, 32, 32, seed=9)
    e = explain(model, x1, x2, method=method, **LOCALISATION[method])
    for h in (e.h1, e.h2):
        frac = left_mass(h)
        assert (frac > 0.5).all(), f"{method}: left-half mass fractions {frac.tolist()}"


@pytest.mark.parametrize("method", METHODS)
def test_hooks_removed_when_model_raises(method: str) -> None:
    class Exploding(TinyCNN):
        """Raises mid-forward, after the feature layers (and any hooks on them) have run."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.features(x)
            raise RuntimeError("boom")

    model = Exploding()
    model.train()
    x1, x2 = images(2, seed=11), images(2, seed=12)
    with untouched(model), pytest.raises(RuntimeError, match="boom"):
        explain(model, x1, x2, method=method, **FAST[method])
    assert model.training
