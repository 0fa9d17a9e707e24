"""Grad-CAM and Interaction-CAM against brute-force per-pair references, and layer resolution.

The references run the feature extractor and the head of ``TinyCNN`` by hand for one pair at a time,
take the cosine gradient with respect to the feature map, and apply the paper's formulas with
explicit loops over channels and positions.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_explain import explain
from lightning_explain._core import finalize_maps
from lightning_explain.methods import cam
from lightning_explain.methods.cam import (
    capture_layer,
    gradcam,
    interaction_cam,
    list_feature_layers,
    resolve_layer,
)
from tests.helpers import TinyCNN, hook_count, images, untouched, with_grads

TOL: dict[str, Any] = {"atol": 1e-5, "rtol": 1e-5}
# Normalised maps divide by each map's peak, which scales the float32 noise of the batched forward.
NORM_TOL: dict[str, Any] = {"atol": 1e-4, "rtol": 1e-4}
VARIANTS = [
    ("mean", False),
    ("max", False),
    ("attn", False),
    ("mean", True),
    ("max", True),
    ("attn", True),
]


# --------------------------------------------------------------------------------------------------
# Brute-force references


def _reference_ag(
    model: TinyCNN, x1: Tensor, x2: Tensor
) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Per pair: ``(A1, A2, G1, G2)``, each ``(D, h, w)``, with G = d cos / d A by autograd."""
    model.eval()
    out = []
    for i in range(len(x1)):
        a1 = model.features(x1[i : i + 1]).detach().requires_grad_(True)
        a2 = model.features(x2[i : i + 1]).detach().requires_grad_(True)
        z1, z2 = model.head(model.pool(a1)), model.head(model.pool(a2))
        s = F.cosine_similarity(z1, z2, dim=1)[0]
        g1, g2 = torch.autograd.grad(s, (a1, a2))
        out.append((a1.detach()[0], a2.detach()[0], g1[0], g2[0]))
    return out


def _ref_gradcam(a: Tensor, g: Tensor) -> Tensor:
    """``sum_k A[k] * ReLU(G[k])`` with a loop over channels."""
    m = torch.zeros(a.shape[1:])
    for k in range(a.shape[0]):
        m += a[k] * torch.clamp(g[k], min=0)
    return m


def _ref_pool(a: Tensor, reduction: str) -> Tensor:
    d = a.shape[0]
    flat = a.reshape(d, -1)
    if reduction == "mean":
        return torch.stack([flat[k].mean() for k in range(d)])
    if reduction == "max":
        return torch.stack([flat[k].max() for k in range(d)])
    q = torch.stack([flat[k].mean() for k in range(d)])
    logits = torch.stack([torch.dot(q, flat[:, p]) for p in range(flat.shape[1])])
    e = torch.exp(logits - logits.max())
    alpha = e / e.sum()
    return torch.stack([torch.dot(alpha, flat[k]) for k in range(d)])  # sum_p alpha_p A[k, p]


def _ref_interaction(
    a1: Tensor, a2: Tensor, g1: Tensor, g2: Tensor, reduction: str, grad_interact: bool
) -> tuple[Tensor, Tensor]:
    """The digest's Interaction-CAM for one pair, literally."""
    d = a1.shape[0]
    omega = _ref_pool(a1, reduction) * _ref_pool(a2, reduction)
    at1 = torch.stack([a1[k] * omega[k] for k in range(d)])
    at2 = torch.stack([a2[k] * omega[k] for k in range(d)])
    if grad_interact:
        big1 = g1.reshape(d, -1).T  # (HW, D)
        big2 = g2.reshape(d, -1).T
        m = torch.empty(d, d)
        for k in range(d):
            for j in range(d):
                m[k, j] = torch.dot(big1[:, k], big2[:, j])
        row = torch.stack([m[k, :].max() for k in range(d)])
        col = torch.stack([m[:, j].max() for j in range(d)])
        t1 = row[:, None, None].expand_as(a1)
        t2 = col[:, None, None].expand_as(a2)
    else:
        t1, t2 = g1, g2
    return _ref_gradcam(at1, t1), _ref_gradcam(at2, t2)


# --------------------------------------------------------------------------------------------------
# Grad-CAM and Interaction-CAM against the references


@pytest.mark.parametrize(("b", "c", "h", "w"), [(2, 3, 32, 32), (1, 1, 24, 16), (2, 3, 16, 40)])
def test_gradcam_matches_brute_force(b: int, c: int, h: int, w: int) -> None:
    model = TinyCNN(in_channels=c)
    x1, x2 = images(b, c, h, w, seed=1), images(b, c, h, w, seed=2)
    ref = _reference_ag(model, x1, x2)

    cap = capture_layer(model, x1, x2, layer="features")
    assert cap.a1.shape == (b, 16, math.ceil(h / 2), math.ceil(w / 2))
    for i, (a1, a2, g1, g2) in enumerate(ref):
        for got, want in ((cap.a1[i], a1), (cap.a2[i], a2), (cap.g1[i], g1), (cap.g2[i], g2)):
            torch.testing.assert_close(got, want, **TOL)
        # raw maps, before any normalisation
        torch.testing.assert_close(cam._gradcam_map(cap.a1, cap.g1)[i], _ref_gradcam(a1, g1), **TOL)
        torch.testing.assert_close(cam._gradcam_map(cap.a2, cap.g2)[i], _ref_gradcam(a2, g2), **TOL)

    e = gradcam(model, x1, x2)
    raw1 = torch.stack([_ref_gradcam(a1, g1) for a1, _, g1, _ in ref])
    raw2 = torch.stack([_ref_gradcam(a2, g2) for _, a2, _, g2 in ref])
    torch.testing.assert_close(e.h1, finalize_maps(raw1, (h, w)), **NORM_TOL)
    torch.testing.assert_close(e.h2, finalize_maps(raw2, (h, w)), **NORM_TOL)
    with torch.no_grad():
        expected_sim = F.cosine_similarity(model(x1), model(x2), dim=1)
    torch.testing.assert_close(e.sim, expected_sim, **TOL)
    assert not torch.equal(e.h1, e.h2)


@pytest.mark.parametrize(("reduction", "grad_interact"), VARIANTS)
def test_interaction_cam_matches_brute_force(reduction: str, grad_interact: bool) -> None:
    model = TinyCNN()
    with torch.no_grad():  # larger activations, so that attention pooling is far from uniform
        model.features[6].weight.mul_(4)
    x1, x2 = images(2, 3, 16, 24, seed=3), images(2, 3, 16, 24, seed=4)
    ref = _reference_ag(model, x1, x2)
    refs = [_ref_interaction(*r, reduction, grad_interact) for r in ref]

    cap = capture_layer(model, x1, x2, layer="features")
    raw1, raw2 = cam._interaction_maps(cap, reduction, grad_interact)
    for i, (r1, r2) in enumerate(refs):
        torch.testing.assert_close(raw1[i], r1, **TOL)
        torch.testing.assert_close(raw2[i], r2, **TOL)

    e = interaction_cam(model, x1, x2, reduction=reduction, grad_interact=grad_interact)  # type: ignore[arg-type]
    torch.testing.assert_close(
        e.h1, finalize_maps(torch.stack([r[0] for r in refs]), (16, 24)), **NORM_TOL
    )
    torch.testing.assert_close(
        e.h2, finalize_maps(torch.stack([r[1] for r in refs]), (16, 24)), **NORM_TOL
    )
    assert e.h1.amax() > 0
    assert e.h2.amax() > 0


def test_interaction_cam_differs_from_gradcam_and_between_reductions() -> None:
    model = TinyCNN()
    with torch.no_grad():  # larger activations, so that attention pooling is not near-uniform
        model.features[6].weight.mul_(4)
    x1, x2 = images(2, seed=5), images(2, seed=6)
    maps = {"gradcam": gradcam(model, x1, x2).h1}
    for reduction, gi in VARIANTS:
        maps[f"{reduction}{gi}"] = interaction_cam(
            model,
            x1,
            x2,
            reduction=reduction,
            grad_interact=gi,  # type: ignore[arg-type]
        ).h1
    keys = list(maps)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert not torch.allclose(maps[a], maps[b], atol=1e-4), (a, b)


@pytest.mark.parametrize(("reduction", "grad_interact"), VARIANTS)
def test_interaction_cam_pair_symmetry(reduction: str, grad_interact: bool) -> None:
    model = TinyCNN()
    x1, x2 = images(3, 3, 24, 32, seed=7), images(3, 3, 24, 32, seed=8)
    kw = {"reduction": reduction, "grad_interact": grad_interact}
    e = interaction_cam(model, x1, x2, **kw)  # type: ignore[arg-type]
    s = interaction_cam(model, x2, x1, **kw)  # type: ignore[arg-type]
    torch.testing.assert_close(s.h1, e.h2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(s.h2, e.h1, atol=1e-5, rtol=1e-4)


def test_grad_interaction_in_blocks_equals_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    g1, g2 = torch.randn(3, 16, 5, 7), torch.randn(3, 16, 5, 7)
    whole = cam._grad_interaction(g1, g2)
    monkeypatch.setattr(cam, "_GRAD_INTERACT_BLOCK", 1)  # one channel row per block
    blocks = cam._grad_interaction(g1, g2)
    m = torch.einsum("bkp,blp->bkl", g1.flatten(2), g2.flatten(2))
    for got in (whole, blocks):
        torch.testing.assert_close(got[0], m.amax(2))
        torch.testing.assert_close(got[1], m.amax(1))


def test_frozen_parameters_still_give_gradients() -> None:
    model = TinyCNN()
    x1, x2 = images(2, seed=9), images(2, seed=10)
    ref = gradcam(model, x1, x2)
    for p in model.parameters():
        p.requires_grad_(False)
    with untouched(model):
        e = gradcam(model, x1, x2)
        f = interaction_cam(model, x1, x2, reduction="attn", grad_interact=True)
    torch.testing.assert_close(e.h1, ref.h1, **TOL)
    torch.testing.assert_close(e.h2, ref.h2, **TOL)
    assert e.h1.amax() == 1
    assert f.h1.amax() == 1


def test_in_place_op_after_the_layer_does_not_corrupt_activations() -> None:
    # features.1 (BatchNorm) is followed by ReLU(inplace=True): the captured map must be the
    # pre-ReLU BatchNorm output, which has negative values.
    model = TinyCNN().eval()
    x1, x2 = images(1, seed=11), images(1, seed=12)
    cap = capture_layer(model, x1, x2, layer="features.1")
    with torch.no_grad():
        bn_out = model.features[:2](x1)
    torch.testing.assert_close(cap.a1, bn_out, **TOL)
    assert (cap.a1 < 0).any()


# --------------------------------------------------------------------------------------------------
# Options and errors


def test_options_reach_the_method_through_explain() -> None:
    model = TinyCNN()
    x1, x2 = images(2, seed=13), images(2, seed=14)
    e = explain(
        model,
        x1,
        x2,
        method="interaction_cam",
        reduction="max",
        grad_interact=True,
        layer="features.5",
        similarity="dot",
    )
    f = interaction_cam(
        model,
        x1,
        x2,
        reduction="max",
        grad_interact=True,
        layer=model.features[5],
        similarity="dot",
    )
    torch.testing.assert_close(e.h1, f.h1)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(e.sim, (model(x1) * model(x2)).sum(1), **TOL)


def test_bad_options() -> None:
    model, x = TinyCNN(), images(1)
    with pytest.raises(
        ValueError, match=r"`reduction` to be one of \['mean', 'max', 'attn'\].*'avg'"
    ):
        interaction_cam(model, x, x, reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`grad_interact` to be a bool"):
        interaction_cam(model, x, x, grad_interact=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`layer` to be 'auto', a dotted module name"):
        gradcam(model, x, x, layer=3)  # type: ignore[arg-type]


def test_model_output_error_names_the_callers_batch() -> None:
    net = TinyCNN()
    x = images(3)
    with pytest.raises(
        ValueError, match=r"embeddings of shape \(3, D\), but got shape \(3, 16, 1, 1\)"
    ):
        interaction_cam(lambda t: net.pool(net.features(t)), x, x, layer="features")


# --------------------------------------------------------------------------------------------------
# Layer resolution


def test_layer_by_name_module_and_auto_agree() -> None:
    model = TinyCNN()
    x1, x2 = images(2, 3, 32, 40, seed=15), images(2, 3, 32, 40, seed=16)
    assert resolve_layer(model, "auto", x1) is model.features
    assert resolve_layer(model, "features.7", x1) is model.features[7]
    assert resolve_layer(model, model.features[3], x1) is model.features[3]
    auto = gradcam(model, x1, x2)
    for layer in ("features", "features.7", model.features[7]):
        e = gradcam(model, x1, x2, layer=layer)
        torch.testing.assert_close(e.h1, auto.h1, **TOL)
        torch.testing.assert_close(e.h2, auto.h2, **TOL)
    earlier = gradcam(model, x1, x2, layer="features.2")  # full-resolution map, a different layer
    assert not torch.allclose(earlier.h1, auto.h1, atol=1e-3)


def test_list_feature_layers_excludes_pooled_and_flat_outputs() -> None:
    model = TinyCNN()
    with untouched(model):
        names = list_feature_layers(model, images(1, 3, 24, 32))
        resolve_layer(model, "auto", images(1, 3, 24, 32))
    assert names == [f"features.{i}" for i in range(8)] + ["features"]


def test_unknown_layer_lists_candidates() -> None:
    model = TinyCNN()
    x = images(1)
    with pytest.raises(
        ValueError,
        match=r"unknown layer 'featurs\.7'\. Did you mean 'features\.7'\?"
        r" Layers with spatial outputs: features\.0, .*features\.7, features\.",
    ):
        gradcam(model, x, x, layer="featurs.7")
    assert hook_count(model) == 0


def test_layer_that_does_not_run() -> None:
    class WithUnused(TinyCNN):
        def __init__(self) -> None:
            super().__init__()
            self.unused = nn.Conv2d(3, 4, 3)

    model = WithUnused()
    x = images(1)
    with pytest.raises(ValueError, match="layer unused did not run during the model's forward"):
        gradcam(model, x, x, layer="unused")
    with pytest.raises(ValueError, match="did not run"):
        gradcam(model, x, x, layer=nn.Conv2d(3, 3, 1))
    assert hook_count(model) == 0


def test_layer_with_flat_output_is_rejected() -> None:
    model, x = TinyCNN(), images(2)
    with pytest.raises(ValueError, match=r"layer head outputs shape \(4, 16\).*\(B, C, h, w\)"):
        gradcam(model, x, x, layer="head")


def test_hooks_removed_when_model_raises_with_explicit_layer() -> None:
    class Exploding(TinyCNN):
        def forward(self, x: Tensor) -> Tensor:
            self.features(x)
            raise RuntimeError("boom")

    model = Exploding()
    x = images(2)
    with untouched(model), pytest.raises(RuntimeError, match="boom"):
        interaction_cam(model, x, x, layer="features.3")
    with untouched(model), pytest.raises(RuntimeError, match="boom"):
        list_feature_layers(model, x)


def test_tuple_output_uses_first_tensor() -> None:
    class TupleFeatures(nn.Module):
        def __init__(self, net: TinyCNN) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            a = self.net.features(x)
            return a, a.mean()

    class Model(nn.Module):
        def __init__(self, net: TinyCNN) -> None:
            super().__init__()
            self.feat = TupleFeatures(net)
            self.net = net

        def forward(self, x: Tensor) -> Tensor:
            a, _ = self.feat(x)
            return self.net.head(self.net.pool(a))

    net = TinyCNN()
    model = Model(net)
    x1, x2 = images(2, seed=17), images(2, seed=18)
    assert resolve_layer(model, "auto", x1) is model.feat
    e = gradcam(model, x1, x2, layer="feat")
    ref = gradcam(net, x1, x2, layer="features")
    torch.testing.assert_close(e.h1, ref.h1, **TOL)
    torch.testing.assert_close(e.h2, ref.h2, **TOL)


# --------------------------------------------------------------------------------------------------
# Callables, shared encoders and modules run several times


def test_siamese_callable_yields_two_distinct_maps() -> None:
    enc = TinyCNN()
    x1, x2 = images(2, seed=19), images(2, seed=20)

    def fn(x: Tensor) -> Tensor:
        return enc(x)

    e = gradcam(fn, x1, x2, layer="features")
    auto = gradcam(lambda x: enc(x), x1, x2)
    ref = gradcam(enc, x1, x2)
    for got in (e, auto):
        torch.testing.assert_close(got.h1, ref.h1, **TOL)
        torch.testing.assert_close(got.h2, ref.h2, **TOL)
    assert not torch.allclose(e.h1, e.h2, atol=1e-3)


def test_model_running_its_encoder_once_per_view() -> None:
    class PerView(nn.Module):
        """Runs the encoder on each half of the batch separately."""

        def __init__(self) -> None:
            super().__init__()
            self.enc = TinyCNN()

        def forward(self, x: Tensor) -> Tensor:
            n = len(x) // 2
            return torch.cat([self.enc(x[:n]), self.enc(x[n:])])

    model = PerView()
    x1, x2 = images(2, seed=21), images(2, seed=22)
    assert resolve_layer(model, "auto", torch.cat([x1, x2])) is model.enc.features
    e = gradcam(model, x1, x2)
    ref = gradcam(model.enc, x1, x2)
    torch.testing.assert_close(e.h1, ref.h1, **TOL)
    torch.testing.assert_close(e.h2, ref.h2, **TOL)


def test_module_applied_twice_explains_its_last_application() -> None:
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
    stem = nn.Conv2d(3, 4, 3, padding=1)
    tail = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 8)]
    shared = nn.Sequential(stem, nn.ReLU(), block, block, *tail)
    unrolled = nn.Sequential(stem, nn.ReLU(), block, copy.deepcopy(block), *tail)
    x1, x2 = images(2, 3, 16, 16, seed=23), images(2, 3, 16, 16, seed=24)
    e = gradcam(shared, x1, x2, layer="2")
    ref = gradcam(unrolled, x1, x2, layer="3")
    torch.testing.assert_close(e.h1, ref.h1, **TOL)
    torch.testing.assert_close(e.h2, ref.h2, **TOL)


def test_callable_name_resolution_errors() -> None:
    a, b = TinyCNN(seed=1), TinyCNN(seed=2)
    x = images(1)
    with pytest.raises(ValueError, match="names 2 different modules"):
        gradcam(lambda t: a(t) + b(t), x, x, layer="features")
    with pytest.raises(ValueError, match=r"without any reachable nn\.Module"):
        gradcam(lambda t: t.mean((2, 3)), x, x, layer="features")


# --------------------------------------------------------------------------------------------------
# Vision-transformer-like models


class TinyViT(nn.Module):
    """Patch-embed conv (stride 8) -> class token + patch tokens (B, N, D) -> encoder layers ->
    class token -> Linear. No positional embedding."""

    def __init__(self, depth: int = 2, dim: int = 16, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.patch_embed = nn.Conv2d(3, dim, 8, stride=8)
            self.cls_token = nn.Parameter(0.5 * torch.randn(1, 1, dim))
            self.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(dim, 2, 32, dropout=0.1, batch_first=True)
                for _ in range(depth)
            )
            self.head = nn.Linear(dim, 8)

    def tokens(self, x: Tensor) -> Tensor:
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(len(t), -1, -1), t], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        t = self.tokens(x)
        for blk in self.blocks:
            t = blk(t)
        return self.head(t[:, 0])


def _vit_reference(
    model: TinyViT, x1: Tensor, x2: Tensor, grid: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Grad-CAM on the output tokens of ``blocks[0]``, one pair at a time."""
    model.eval()
    maps: list[list[Tensor]] = [[], []]
    for i in range(len(x1)):
        ts = [
            model.blocks[0](model.tokens(x[i : i + 1])).detach().requires_grad_(True)
            for x in (x1, x2)
        ]
        zs = [model.head(model.blocks[1](t)[:, 0]) for t in ts]
        gs = torch.autograd.grad(F.cosine_similarity(zs[0], zs[1], dim=1)[0], ts)
        for j in range(2):
            a, g = ts[j].detach()[0, 1:], gs[j][0, 1:]  # drop the class token: (h*w, D)
            maps[j].append((a * g.clamp(min=0)).sum(1).reshape(grid))
    return torch.stack(maps[0]), torch.stack(maps[1])


@pytest.mark.parametrize(("h", "w"), [(32, 32), (32, 48), (40, 24)])
def test_vit_tokens_auto_layer_and_reference(h: int, w: int) -> None:
    model = TinyViT()
    x1, x2 = images(2, 3, h, w, seed=25), images(2, 3, h, w, seed=26)
    # The last block's tokens get no gradient outside the class token, so "auto" stops at the
    # output of the first block, the last token map the similarity depends on.
    assert resolve_layer(model, "auto", x1) is model.blocks[0]
    assert "blocks.0" in list_feature_layers(model, x1)
    with untouched(model):
        e = gradcam(model, x1, x2)
    named = gradcam(model, x1, x2, layer="blocks.0")
    raw1, raw2 = _vit_reference(model, x1, x2, (h // 8, w // 8))
    for got in (e, named):
        torch.testing.assert_close(got.h1, finalize_maps(raw1, (h, w)), **NORM_TOL)
        torch.testing.assert_close(got.h2, finalize_maps(raw2, (h, w)), **NORM_TOL)
    assert not torch.allclose(e.h1, e.h2, atol=1e-3)
    # Token maps are signed (no ReLU before the layer), so a map may clamp to all zeros; most do not.
    peaks = torch.cat([e.h1, e.h2]).flatten(1).amax(1)
    assert (peaks == 1).sum() >= 2
    f = interaction_cam(model, x1, x2, reduction="attn", grad_interact=True)
    assert f.h1.shape == (2, h, w)


def test_vit_single_block_auto_falls_back_to_patch_embedding() -> None:
    model = TinyViT(depth=1)
    x1, x2 = images(2, seed=27), images(2, seed=28)
    assert resolve_layer(model, "auto", x1) is model.patch_embed
    # The final tokens: only the class token reaches the embedding, so the patch maps are empty.
    cap = capture_layer(model, x1, x2, layer="blocks.0")
    assert cap.a1.shape == (2, 16, 4, 4)
    assert torch.count_nonzero(cap.g1) == 0
    assert gradcam(model, x1, x2).h1.amax() == 1


def test_torchvision_vit_auto_picks_last_pre_attention_norm() -> None:
    from torchvision.models.vision_transformer import VisionTransformer

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = VisionTransformer(
            image_size=32,
            patch_size=8,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            mlp_dim=32,
            num_classes=8,
        )
        nn.init.normal_(model.heads.head.weight)  # torchvision zero-initialises the head
    x1, x2 = images(2, seed=32), images(2, seed=33)
    layer = resolve_layer(model, "auto", x1)
    assert layer is model.encoder.layers.encoder_layer_1.ln_1
    e = gradcam(model, x1, x2)
    named = gradcam(model, x1, x2, layer="encoder.layers.encoder_layer_1.ln_1")
    torch.testing.assert_close(e.h2, named.h2, **TOL)
    cap = capture_layer(model, x1, x2)
    assert cap.a1.shape == (2, 16, 4, 4)
    assert cap.layer == "encoder.layers.encoder_layer_1.ln_1"
    assert torch.count_nonzero(cap.g1) > 0


def test_token_layer_without_a_grid_is_rejected() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(3, 8)
            self.head = nn.Linear(8, 4)

        def forward(self, x: Tensor) -> Tensor:
            t = self.proj(x.flatten(2)[:, :, :7].transpose(1, 2))  # (B, 7, 8) tokens
            return self.head(t.mean(1))

    x = images(1)
    with pytest.raises(ValueError, match=r"layer proj outputs tokens of shape \(2, 7, 8\)"):
        gradcam(Odd(), x, x, layer="proj")
    with pytest.raises(ValueError, match="`layer='auto'` found no module"):
        gradcam(Odd(), x, x)


def test_no_side_effects_on_training_model() -> None:
    model = with_grads(TinyViT())
    model.train()
    x1, x2 = images(2, seed=29), images(2, seed=30)
    with untouched(model):
        interaction_cam(model, x1, x2, reduction="max", grad_interact=True)
        list_feature_layers(model, x1)
