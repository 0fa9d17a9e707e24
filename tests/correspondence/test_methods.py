"""The interaction methods: conservation, symmetry, the circular-shift check, chunking, tokens."""

from __future__ import annotations

import pytest
import torch

from lightning_explain.correspondence import (
    PairInteraction,
    bilrp,
    circular_shift,
    correspondence_scores,
    explain_interactions,
    interaction_method_info,
    list_interaction_methods,
    point_to_point,
)
from tests.correspondence._models import TokenModel, bilinear_cnn, circular_cnn, shifted_pair


def _rand(b: int = 3, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g), torch.rand(b, 3, size, size, generator=g)


# --------------------------------------------------------------------------------------------------
# Conservation: for a bilinear model with no biases the interactions sum to the similarity


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_point_to_point_conserves_the_similarity_of_a_bilinear_model(similarity: str) -> None:
    net = bilinear_cnn()
    x1, x2 = _rand()
    r = point_to_point(net, x1, x2, layer="0", similarity=similarity)
    assert r.interaction.shape == (3, 64, 64)
    assert r.grid1 == r.grid2 == (8, 8)
    z1, z2 = net(x1), net(x2)
    expected = (z1 * z2).sum(1)
    if similarity == "cosine":
        expected = torch.nn.functional.cosine_similarity(z1, z2)
    torch.testing.assert_close(r.sim, expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.total, r.sim, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("directions", ["random", "principal"])
@pytest.mark.parametrize("relu", [False, True])
def test_bilrp_with_a_full_basis_conserves_the_similarity(directions: str, relu: bool) -> None:
    # With ReLU the model is still positively homogeneous and bias-free, so gradient x input at
    # the pixels sums to the embedding exactly (Euler).
    net = bilinear_cnn(relu=relu)
    x1, x2 = _rand()
    r = bilrp(net, x1, x2, grid=4, k=8, directions=directions, similarity="dot")
    assert r.interaction.shape == (3, 16, 16)
    assert r.grid1 == (4, 4)
    torch.testing.assert_close(r.total, r.sim, rtol=1e-4, atol=1e-6)


def test_a_bias_makes_the_decomposition_a_linearisation() -> None:
    net = bilinear_cnn()
    net[0].bias = torch.nn.Parameter(torch.full((16,), 0.5))
    x1, x2 = _rand()
    r = point_to_point(net, x1, x2, layer="0", similarity="dot")
    # The bias is part of the conv output, so it is still decomposed: exact.
    torch.testing.assert_close(r.total, r.sim, rtol=1e-4, atol=1e-6)
    net[3].bias = torch.nn.Parameter(torch.full((8,), 1.0))  # a bias after the layer is not
    r = point_to_point(net, x1, x2, layer="0", similarity="dot")
    assert not torch.allclose(r.total, r.sim, rtol=1e-2)


def test_point_to_point_equals_bilrp_at_the_layer_with_all_directions() -> None:
    net = bilinear_cnn(relu=True)
    x1, x2 = _rand()
    a = point_to_point(net, x1, x2, layer="0")
    b = bilrp(net, x1, x2, level="layer", layer="0", k=8, directions="principal")
    torch.testing.assert_close(a.interaction, b.interaction, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Symmetry and chunking


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("point_to_point", {"layer": "0"}),
        ("bilrp", {"grid": 4, "k": 4}),
        ("bilrp", {"grid": 4, "k": 4, "directions": "principal"}),
    ],
)
def test_swapping_the_images_transposes_the_matrix(method: str, options: dict[str, object]) -> None:
    net = bilinear_cnn(relu=True)
    x1, x2 = _rand()
    a = explain_interactions(net, x1, x2, method=method, **options)
    b = explain_interactions(net, x2, x1, method=method, **options)
    torch.testing.assert_close(b.interaction, a.interaction.transpose(1, 2), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(a.swap().interaction, b.interaction, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(a.sim, b.sim)


@pytest.mark.parametrize("method", ["point_to_point", "bilrp"])
def test_chunks_do_not_change_the_result(method: str) -> None:
    net = bilinear_cnn(relu=True)
    x1, x2 = _rand(b=5)
    options = {"layer": "0"} if method == "point_to_point" else {"grid": 4, "k": 4}
    whole = explain_interactions(net, x1, x2, method=method, **options)
    chunked = explain_interactions(net, x1, x2, method=method, batch_size=2, **options)
    torch.testing.assert_close(chunked.interaction, whole.interaction, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(chunked.sim, whole.sim)


def test_random_directions_depend_on_the_seed_only() -> None:
    net = bilinear_cnn(relu=True)
    x1, x2 = _rand()
    torch.manual_seed(1)
    a = bilrp(net, x1, x2, grid=4, k=3, seed=5)
    torch.manual_seed(2)  # another global state: the same result, as no global RNG is drawn from
    b = bilrp(net, x1, x2, grid=4, k=3, seed=5)
    c = bilrp(net, x1, x2, grid=4, k=3, seed=6)
    torch.testing.assert_close(a.interaction, b.interaction)
    assert not torch.allclose(a.interaction, c.interaction)


def test_explicit_directions_are_used_as_given() -> None:
    net = bilinear_cnn()
    x1, x2 = _rand()
    v = torch.eye(8)[:2]  # the first two embedding coordinates
    r = bilrp(net, x1, x2, grid=4, directions=v, similarity="dot")
    z1, z2 = net(x1).detach(), net(x2).detach()
    torch.testing.assert_close(r.total, (z1[:, :2] * z2[:, :2]).sum(1), rtol=1e-4, atol=1e-6)


def test_token_layers_use_the_patch_grid_after_the_class_token() -> None:
    net = TokenModel()
    x1, x2 = _rand(b=2)
    r = point_to_point(net, x1, x2, layer="blocks", similarity="dot")
    assert r.grid1 == (4, 4)
    assert r.interaction.shape == (2, 16, 16)
    torch.testing.assert_close(r.total, r.sim, rtol=1e-4, atol=1e-6)
    explicit = point_to_point(net, x1, x2, layer="blocks", similarity="dot", prefix_tokens=1)
    torch.testing.assert_close(explicit.interaction, r.interaction)


# --------------------------------------------------------------------------------------------------
# The constructed case with an exact answer


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("point_to_point", {"layer": "2"}),
        ("bilrp", {"grid": 8, "k": 64}),
        ("bilrp", {"grid": 8, "level": "layer", "layer": "2", "k": 64}),
    ],
)
def test_circular_shift_best_matches_are_the_shifted_positions(
    method: str, options: dict[str, object]
) -> None:
    net = circular_cnn()
    b = 4 if method == "point_to_point" else 2
    x1, x2 = shifted_pair(b=b, shift=(8, 12))  # two and three cells of the stride-4 grid
    r = explain_interactions(net, x1, x2, method=method, similarity="dot", **options)
    assert r.grid1 == (8, 8)
    # By hand: view-2 cell (row, col) shows view-1 cell (row - 2, col - 3) mod 8.
    best = r.interaction.argmax(dim=1)  # (B, 64)
    j = torch.arange(64)
    truth = ((j // 8 - 2) % 8) * 8 + (j % 8 - 3) % 8
    hits = (best == truth).float().mean(dim=1)
    assert (hits >= 0.9).all(), hits
    # The metric says the same, exactly, at zero tolerance.
    scores = correspondence_scores(r, circular_shift((8, 12), (32, 32), batch=b), tolerance=0)
    torch.testing.assert_close(scores.accuracy, hits)


def test_a_model_without_the_shift_structure_fails_the_check() -> None:
    """The check can fail: with an unrelated second view, the best matches are near chance."""
    net = circular_cnn()
    x1, _ = shifted_pair(b=2)
    x2, _ = shifted_pair(b=2, seed=1)
    r = point_to_point(net, x1, x2, layer="2", similarity="dot")
    acc = correspondence_scores(r, circular_shift((8, 12), (32, 32), batch=2), tolerance=0)
    assert (acc.accuracy < 0.2).all(), acc.accuracy


# --------------------------------------------------------------------------------------------------
# The result type and the registry


def test_marginals_are_ordinary_heatmaps() -> None:
    net = bilinear_cnn(relu=True)
    x1, x2 = _rand()
    r = point_to_point(net, x1, x2, layer="0")
    e = r.marginals()
    assert e.h1.shape == e.h2.shape == (3, 32, 32)
    assert float(e.h1.min()) >= 0
    assert torch.allclose(e.h1.flatten(1).amax(1), torch.ones(3))
    m1, m2 = r.raw_marginals()
    torch.testing.assert_close(m1.sum((1, 2)), r.total)
    torch.testing.assert_close(m2.sum((1, 2)), r.total)


def test_top_matches_distinct_keeps_one_line_per_view2_position() -> None:
    r = torch.zeros(1, 3, 3)
    r[0, 0, 0], r[0, 1, 0], r[0, 2, 2] = 5.0, 4.0, 1.0
    inter = PairInteraction(r, (1, 3), (1, 3), r.sum((1, 2)), (3, 3))
    plain = inter.top_matches(2)
    assert plain.i2.tolist() == [[0, 0]]
    distinct = inter.top_matches(2, distinct=True)
    assert distinct.i1.tolist() == [[0, 2]]
    assert distinct.i2.tolist() == [[0, 2]]


def test_registry_lists_the_methods_with_their_facts() -> None:
    assert list_interaction_methods() == ["bilrp", "point_to_point"]
    info = interaction_method_info("bilrp")
    assert info.stochastic
    assert not info.needs_layer
    assert info.defaults()["k"] == 32
    assert info.defaults()["directions"] == "random"
    assert interaction_method_info("point_to_point").defaults()["layer"] == "auto"


def test_layer_auto_finds_the_last_feature_map() -> None:
    net = circular_cnn()
    x1, x2 = shifted_pair(b=2)
    auto = point_to_point(net, x1, x2)
    named = point_to_point(net, x1, x2, layer="2")
    torch.testing.assert_close(auto.interaction, named.interaction)


def test_batched_directions_and_the_fallback_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_explain.correspondence import methods

    net = bilinear_cnn(relu=True)
    x1, x2 = _rand()
    whole = point_to_point(net, x1, x2, layer="0")
    # A budget of 3 directions: blocks of 3, 3 and 2.
    per_direction = 4 * 6 * 16 * 8 * 8 * 4  # 4 x (both views of 3 pairs) x (16, 8, 8) float32
    monkeypatch.setattr(methods, "_VJP_BUDGET_BYTES", 3 * per_direction)
    assert methods._direction_block(8, [torch.zeros(6, 16, 8, 8)]) == 3
    blocks = point_to_point(net, x1, x2, layer="0")
    torch.testing.assert_close(blocks.interaction, whole.interaction, rtol=1e-4, atol=1e-7)

    original = torch.autograd.grad
    batched: list[bool] = []

    def no_vmap(*args: object, **kwargs: object) -> object:
        batched.append(bool(kwargs.get("is_grads_batched", False)))
        if batched[-1]:
            raise RuntimeError("vmap: unsupported operator")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.autograd, "grad", no_vmap)
    looped = point_to_point(net, x1, x2, layer="0")
    assert batched.count(False) >= 8  # one backward per direction after the failed batch
    torch.testing.assert_close(looped.interaction, whole.interaction, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method", ["point_to_point", "bilrp"])
def test_memory_is_bounded_by_the_chunk(method: str) -> None:
    net = bilinear_cnn(relu=True)
    seen: list[int] = []

    def model(x: torch.Tensor) -> torch.Tensor:
        seen.append(int(x.shape[0]))
        return net(x)

    x1, x2 = _rand(b=5)
    options = {"layer": net[0]} if method == "point_to_point" else {"grid": 4, "k": 2}
    explain_interactions(model, x1, x2, method=method, batch_size=4, **options)
    assert seen, "the model was not called"
    assert max(seen) <= 4, seen  # two pairs (both views) per forward, never all ten images
