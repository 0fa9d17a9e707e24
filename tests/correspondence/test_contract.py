"""Side-effect freedom (the guest guarantees), bad arguments, and the rendering."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_explain.correspondence import (
    PairInteraction,
    bilrp,
    explain_interactions,
    match_faithfulness,
    match_grid,
    point_to_point,
    random_views,
)
from tests.correspondence._models import bilinear_cnn
from tests.helpers import TinyCNN, hook_count, untouched, with_grads


def _pair(b: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, 3, size, size, generator=g), torch.rand(b, 3, size, size, generator=g)


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("point_to_point", {}),
        ("bilrp", {"grid": 4, "k": 3}),
        ("bilrp", {"grid": 4, "k": 3, "directions": "principal"}),
        ("bilrp", {"level": "layer", "k": 3}),
    ],
)
def test_methods_leave_the_model_as_found(method: str, options: dict[str, object]) -> None:
    # TinyCNN has BatchNorm (running statistics) and dropout; train mode with one frozen part.
    net = with_grads(TinyCNN())
    net.train()
    net.head.eval()
    x1, x2 = _pair()
    with untouched(net):  # .grad, flags, buffers, parameters, global RNG state, hooks
        r = explain_interactions(net, x1, x2, method=method, **options)
        f = match_faithfulness(net, x1, x2, r, k=2, n_random=2)
    assert torch.isfinite(r.interaction).all()
    assert torch.isfinite(f.matched).all()
    assert net.training
    assert not net.head.training


def test_eval_mode_is_used_inside() -> None:
    net = TinyCNN()
    net.train()
    x1, x2 = _pair()
    r = point_to_point(net, x1, x2, layer="features.6")
    net.eval()
    z1, z2 = net(x1), net(x2)
    torch.testing.assert_close(r.sim, nn.functional.cosine_similarity(z1, z2).detach())


class _Fails(nn.Module):
    """Runs its layer, then raises: the hook on the layer must still be removed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.conv(x)
        raise RuntimeError("model failed")


def test_hooks_are_removed_after_an_exception() -> None:
    net = _Fails()
    x1, x2 = _pair()
    before = hook_count(net)
    with pytest.raises(RuntimeError, match="model failed"):
        point_to_point(net, x1, x2, layer=net.conv)
    assert hook_count(net) == before


def test_inference_mode_callers_are_served() -> None:
    net = bilinear_cnn()
    x1, x2 = _pair()
    with torch.inference_mode():
        r = point_to_point(net, x1, x2, layer="0")
    assert torch.isfinite(r.interaction).all()


# --------------------------------------------------------------------------------------------------
# Bad arguments


def test_unknown_method_lists_the_valid_names() -> None:
    net = bilinear_cnn()
    x1, x2 = _pair()
    with pytest.raises(ValueError, match="Valid methods: bilrp, point_to_point"):
        explain_interactions(net, x1, x2, method="bilrpp")
    with pytest.raises(TypeError, match="`method`"):
        explain_interactions(net, x1, x2, method=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="directions"):
        explain_interactions(net, x1, x2, method="point_to_point", directions="random")


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"similarity": "neg_l2"}, ValueError, "not bilinear"),
        ({"k": 0}, ValueError, "`k`"),
        ({"k": 2.5}, TypeError, "`k`"),
        ({"grid": 0}, ValueError, "`grid`"),
        ({"grid": (4, 4, 4)}, TypeError, "`grid`"),
        ({"grid": 64}, ValueError, "`grid`"),
        ({"level": "patch"}, ValueError, "`level`"),
        ({"directions": "pca"}, ValueError, "`directions`"),
        ({"directions": torch.zeros(3)}, ValueError, "`directions`"),
        ({"directions": torch.zeros(2, 5)}, ValueError, r"shape \(k, 8\)"),
        ({"seed": -1}, ValueError, "`seed`"),
        ({"batch_size": 0}, ValueError, "`batch_size`"),
        ({"level": "layer", "layer": "nope"}, ValueError, "nope"),
        ({"level": "layer", "prefix_tokens": -1}, ValueError, "`prefix_tokens`"),
    ],
)
def test_bad_bilrp_options_name_the_argument(
    options: dict[str, object], error: type[Exception], match: str
) -> None:
    net = bilinear_cnn()
    x1, x2 = _pair()
    with pytest.raises(error, match=match):
        bilrp(net, x1, x2, **options)  # type: ignore[arg-type]


def test_bad_images_and_layers_are_explained() -> None:
    net = bilinear_cnn()
    x1, x2 = _pair()
    with pytest.raises(TypeError, match="`x1`"):
        point_to_point(net, x1.numpy(), x2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same shape"):
        point_to_point(net, x1, x2[:1])
    unused = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="did not run"):
        point_to_point(net, x1, x2, layer=unused)
    with pytest.raises(ValueError, match="`similarity`"):
        point_to_point(net, x1, x2, layer="0", similarity="l2")  # type: ignore[arg-type]


def test_result_type_checks_its_fields() -> None:
    r = torch.rand(2, 4, 6)
    with pytest.raises(ValueError, match=r"`interaction` of shape \(B, 4, 4\)"):
        PairInteraction(r, (2, 2), (2, 2), r.sum((1, 2)), (8, 8))
    with pytest.raises(ValueError, match="`grid2`"):
        PairInteraction(r, (2, 2), (0, 6), r.sum((1, 2)), (8, 8))
    with pytest.raises(ValueError, match="`sim`"):
        PairInteraction(r, (2, 2), (2, 3), torch.ones(3), (8, 8))
    ok = PairInteraction(r, (2, 2), (2, 3), r.sum((1, 2)), (8, 8))
    with pytest.raises(ValueError, match="`k`"):
        ok.top_matches(0)


# --------------------------------------------------------------------------------------------------
# Rendering


def test_match_grid_draws_lines_between_matched_cells() -> None:
    views = random_views(torch.rand(2, 3, 48, 48), size=32, seed=0)
    r = point_to_point(bilinear_cnn(relu=True), views.x1, views.x2, layer="0")
    plain = match_grid(views.x1, views.x2, r, k=1, padding=0, gap=4)
    assert plain.shape == (3, 64, 68)
    assert plain.dtype == torch.uint8
    # The gap between the views is white except where the lines cross it.
    assert plain[:, :, 32:36].float().mean() < 255
    big = match_grid(views.x1, views.x2, r, k=4, min_tile=64, heatmaps=True)
    assert big.shape[1] == 2 * 64 + 3 * 2
    with pytest.raises(ValueError, match="`x1` of shape"):
        match_grid(views.x1[:1], views.x2, r)
    with pytest.raises(TypeError, match="`interaction`"):
        match_grid(views.x1, views.x2, r.interaction)  # type: ignore[arg-type]
