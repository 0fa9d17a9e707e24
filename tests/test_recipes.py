"""The recipes of docs/recipes.md, run on small models of the same architecture: the settings they
give explain a layer with a grid of at least 4x4 and produce no degenerate map, where the naive
settings do not (a stock ResNet-18 at 32 px ends in 2x2 maps)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import Tensor, nn

from lightning_explain.callback import PairExplanationCallback
from tests.callback.helpers import TwoViewDataset, namespace

lightly_heads = pytest.importorskip("lightly.models.modules")
L = namespace("lightning.pytorch")


def resnet18_backbone(cifar_stem: bool) -> nn.Module:
    """lightly's recipe: torchvision's ResNet-18 without its classifier, optionally with the CIFAR
    stem (3x3 stride-1 first convolution, no max-pool) that lightly's CIFAR-10 benchmarks use."""
    resnet = torchvision.models.resnet18(weights=None)
    if cifar_stem:
        resnet.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        resnet.maxpool = nn.Identity()
    return nn.Sequential(*list(resnet.children())[:-1])


class SimCLR(L.LightningModule):  # type: ignore[misc, name-defined]
    """lightly's SimCLR example, reduced: a backbone and a projection head."""

    def __init__(self, cifar_stem: bool = True) -> None:
        super().__init__()
        self.backbone = resnet18_backbone(cifar_stem)
        self.projection_head = lightly_heads.SimCLRProjectionHead(512, 512, 128)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x).flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        (v1, v2), _ = batch
        return (self(v1) - self(v2)).pow(2).mean()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self) -> Any:
        return torch.utils.data.DataLoader(Views(), batch_size=4)


class DINO(SimCLR):
    """lightly's DINO example, reduced: student and teacher, each a backbone and a head."""

    def __init__(self, vit: bool = False) -> None:
        super().__init__()
        if vit:
            backbone = torchvision.models.VisionTransformer(
                image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
            )
            backbone.heads = nn.Identity()  # the class token's embedding
            dim = 32
        else:
            backbone, dim = resnet18_backbone(cifar_stem=True), 512
        del self.backbone, self.projection_head
        self.student_backbone = backbone
        self.student_head = lightly_heads.DINOProjectionHead(dim, 64, 16, 32)
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head = lightly_heads.DINOProjectionHead(dim, 64, 16, 32)

    def forward(self, x: Tensor) -> Tensor:
        return self.student_head(self.student_backbone(x).flatten(1))


class Views(TwoViewDataset):
    def __init__(self) -> None:
        super().__init__(8, size=32)


def _fit(callback: PairExplanationCallback, module: Any, root: Path) -> list[str]:
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[callback],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module)
    return [str(w.message) for w in caught]


FAST = {"probe": {"n_pairs": 2}, "n_steps": 4, "metrics": ["insertion_simultaneous"]}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "module", "options"),
    [
        ("simclr-32px-cifar-stem", lambda: SimCLR(cifar_stem=True), {"embedding": "backbone"}),
        (
            "simclr-32px-stock-stem",
            lambda: SimCLR(cifar_stem=False),
            {"embedding": "backbone", "layer": "backbone.5"},
        ),
        ("dino-resnet", lambda: DINO(), {"embedding": "teacher_backbone"}),
        ("dino-vit", lambda: DINO(vit=True), {"embedding": "teacher_backbone"}),
    ],
)
def test_recipes_explain_a_fine_enough_layer(
    tmp_path: Path,
    name: str,
    module: Any,
    options: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cb = PairExplanationCallback(
        ["gradcam", "interaction_cam"], log_images=False, **FAST, **options
    )
    with caplog.at_level("INFO"):
        messages = _fit(cb, module(), tmp_path)
    layers = [r.getMessage() for r in caplog.records if "explains layer" in r.getMessage()]
    assert len(layers) == 2, layers
    assert not [m for m in messages if "feature map is only" in m], messages
    assert not [m for m in messages if "maps are all zero or constant" in m], messages
    grid = layers[0].rsplit("a ", 1)[1]
    h, w = (int(v) for v in grid.split(" ")[0].split("x"))
    assert min(h, w) >= 4, layers


@pytest.mark.slow
def test_the_naive_setting_is_warned_about(tmp_path: Path) -> None:
    """A stock ResNet-18 at 32 px with layer='auto': the 2x2 map of its last stage that has one."""
    cb = PairExplanationCallback(["gradcam"], embedding="backbone", log_images=False, **FAST)
    messages = _fit(cb, SimCLR(cifar_stem=False), tmp_path)
    (coarse,) = [m for m in messages if "feature map is only" in m]
    assert "only 2x2" in coarse
