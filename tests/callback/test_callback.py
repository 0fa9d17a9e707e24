"""PairExplanationCallback inside real (tiny) Trainer runs: schedule, state, errors, precision,
namespaces, CLI, and what reaches trainer.callback_metrics and the loggers."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import lightning_explain
from lightning_explain.callback import PairExplanationCallback
from lightning_explain.embedding import resolve_embedding
from lightning_explain.evaluation import parse_methods
from tests.callback.helpers import (
    FAST,
    TwoViewDataset,
    make_module_class,
    namespace,
    trainer,
)

SSL = make_module_class("lightning.pytorch")


def _fit(cb: PairExplanationCallback, tmp_path: Path, *, model: Any = None, **kwargs: Any) -> Any:
    tr = trainer(callbacks=[cb], default_root_dir=tmp_path, **kwargs)
    tr.fit(model if model is not None else SSL())
    return tr


# --------------------------------------------------------------------------------------------------
# Constructor


def test_top_level_and_pl_exports() -> None:
    import lightning.pytorch as L
    import pytorch_lightning as pl

    from lightning_explain import pl as le_pl

    assert lightning_explain.PairExplanationCallback is PairExplanationCallback
    assert issubclass(PairExplanationCallback, L.Callback)
    assert issubclass(le_pl.PairExplanationCallback, pl.Callback)
    assert not issubclass(le_pl.PairExplanationCallback, L.Callback)


def test_method_entries_names_dicts_and_labels() -> None:
    specs = parse_methods(
        ["gradcam", "interaction_cam", {"name": "interaction_cam", "reduction": "max"}]
    )
    assert [s.label for s in specs] == ["gradcam", "interaction_cam", "interaction_cam-max"]
    assert specs[2].options == {"reduction": "max"}
    specs = parse_methods([{"name": "gradcam", "label": "cam4", "layer": "backbone.features.3"}])
    assert specs[0].label == "cam4"
    assert specs[0].options == {"layer": "backbone.features.3"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"methods": ["gradcm"]}, ValueError, "Did you mean 'gradcam'.*Valid methods"),
        ({"methods": []}, ValueError, "at least one entry"),
        (
            {"methods": [{"gradcam": {"layer": "x"}}]},
            ValueError,
            "Write it as \\{'name': 'gradcam'",
        ),
        ({"methods": [{"name": "gradcam", "windw": 3}]}, TypeError, "Valid options: layer"),
        ({"methods": ["gradcam", "gradcam"]}, ValueError, "same name \\['gradcam'\\]"),
        ({"metrics": ["insertion"]}, ValueError, "Valid metrics: .*insertion_simultaneous"),
        ({"metrics": []}, ValueError, "at least one metric"),
        ({"probe": {"n_pairs": 0}}, ValueError, "`n_pairs` >= 1"),
        ({"probe": {"n_pair": 2}}, TypeError, "Valid keys: \\['n_pairs'"),
        ({"probe": 8}, TypeError, "ProbeSettings or a mapping"),
        ({"knn": {"k": 0}}, ValueError, "`k` >= 1"),
        ({"knn": {"temperature": -1.0}}, ValueError, "`temperature` > 0"),
        ({"every_n_epochs": 2, "every_n_train_steps": 5}, ValueError, "mutually exclusive"),
        ({"on_error": "ignore"}, ValueError, "one of \\['warn', 'raise'\\]"),
        ({"hook": "on_epoch_end"}, ValueError, "\\['train_epoch_end', 'validation_epoch_end'\\]"),
        (
            {"probe": {"pairing": "views"}},
            ValueError,
            "one of \\['two_views', 'clean_vs_augmented', 'dataset'\\]",
        ),
        ({"probe": {"source": "/nonexistent/probe.pt"}}, ValueError, "'val', 'train' or the path"),
        ({"similarity": "euclid"}, ValueError, "one of \\['cosine'"),
        ({"probe": {"mean": [0.5, 0.5, 0.5]}}, ValueError, "given together"),
        ({"probe": {"std": [0.0], "mean": [0.1]}}, ValueError, "std` value > 0"),
        ({"embedding": "nomodule_xyz:fn"}, ValueError, "could not import `embedding="),
        ({"hook": "validation_epoch_end", "every_n_train_steps": 2}, ValueError, "needs hook"),
        ({"autocast": "half"}, ValueError, "`autocast`.*'bf16'"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        PairExplanationCallback(**kwargs)


# --------------------------------------------------------------------------------------------------
# Scores, callback_metrics, ModelCheckpoint


def test_scores_reach_callback_metrics_and_model_checkpoint(tmp_path: Path) -> None:
    L = namespace("lightning.pytorch")
    key = "explain/gradcam/insertion_simultaneous"
    ckpt = L.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor=key, mode="max", save_on_train_epoch_end=True
    )
    stop = L.callbacks.EarlyStopping(
        monitor=key, mode="max", patience=5, check_on_train_epoch_end=True, strict=True
    )
    cb = PairExplanationCallback(["gradcam"], log_images=False, **FAST)
    tr = trainer(callbacks=[cb, ckpt, stop], default_root_dir=tmp_path, enable_checkpointing=True)
    tr.fit(SSL())
    assert float(stop.best_score) == pytest.approx(float(ckpt.best_model_score))
    metrics = tr.callback_metrics
    assert set(metrics) >= {
        "explain/sim",
        "explain/errors",
        key,
        "explain/gradcam/deletion_simultaneous",
    }
    assert float(metrics["explain/errors"]) == 0
    assert 0.0 <= float(metrics[key]) <= 1.0 + 1e-6
    # ModelCheckpoint ranked both epochs by the callback's score and kept the better one.
    assert len(ckpt.best_k_models) == 1
    assert Path(ckpt.best_model_path).is_file()
    assert float(ckpt.best_model_score) >= float(metrics[key]) - 1e-7
    saved = torch.load(ckpt.best_model_path, weights_only=True)
    assert saved["callbacks"][ckpt.state_key]["monitor"] == key


def test_compute_scores_equals_the_logged_scalars(tmp_path: Path) -> None:
    cb = PairExplanationCallback(["gradcam", "input_x_gradient"], log_images=False, **FAST)
    model = SSL()
    tr = _fit(cb, tmp_path, model=model, max_epochs=1)
    scores = cb.compute_scores(model)
    assert set(scores) == {k for k in tr.callback_metrics if k.startswith("explain/")} - {
        "explain/errors"
    }
    for k, v in scores.items():
        assert v == pytest.approx(float(tr.callback_metrics[k]), abs=1e-6), k


def test_csv_logger_gets_scalars_at_global_steps_and_pngs_next_to_them(tmp_path: Path) -> None:
    L = namespace("lightning.pytorch")
    logger = L.loggers.CSVLogger(tmp_path, name="csv")
    cb = PairExplanationCallback(["gradcam"], **FAST)
    tr = _fit(cb, tmp_path, logger=logger, max_epochs=2)
    rows = list(csv.DictReader((Path(logger.log_dir) / "metrics.csv").read_text().splitlines()))
    explained = [r for r in rows if r.get("explain/gradcam/insertion_simultaneous")]
    assert [int(r["step"]) for r in explained] == [4, 8]  # 16 items / batch 4 per epoch
    assert tr.global_step == 8
    for epoch in (0, 1):
        folder = Path(logger.log_dir) / "explanations" / f"epoch={epoch:03d}"
        assert (folder / "gradcam.png").is_file()
        assert (folder / "gradcam_curves.png").is_file()
        assert (folder / "gradcam_scores.csv").is_file()


def test_without_logger_pngs_go_under_default_root_dir(tmp_path: Path) -> None:
    from PIL import Image

    cb = PairExplanationCallback(["gradcam"], **FAST)
    _fit(cb, tmp_path, max_epochs=1)
    png = tmp_path / "explanations" / "epoch=000" / "gradcam.png"
    img = Image.open(png)
    # Two pairs: two rows of four 16-px tiles with 2-px padding.
    tile = 96  # 16 px probes are enlarged 6x to the 96 px minimum tile
    width, height = img.size
    assert width == 4 * tile + 5 * 2
    assert height > 2 * tile + 3 * 2  # the grid, and the caption under it
    assert "pair 1" in img.text["Description"]
    assert "sim" in img.text["Description"]


def test_log_images_false_logs_scalars_only(tmp_path: Path) -> None:
    cb = PairExplanationCallback(["gradcam"], log_images=False, **FAST)
    tr = _fit(cb, tmp_path, max_epochs=1)
    assert "explain/gradcam/insertion_simultaneous" in tr.callback_metrics
    assert not (tmp_path / "explanations").exists()


# --------------------------------------------------------------------------------------------------
# Schedule


def test_every_n_epochs(tmp_path: Path) -> None:
    cb = PairExplanationCallback(["gradcam"], every_n_epochs=2, **FAST)
    _fit(cb, tmp_path, max_epochs=3)
    assert cb.state_dict()["evaluations"] == 1
    assert cb.state_dict()["last_step"] == 8
    assert sorted(p.name for p in (tmp_path / "explanations").iterdir()) == ["epoch=001"]


def test_every_n_train_steps(tmp_path: Path) -> None:
    L = namespace("lightning.pytorch")
    logger = L.loggers.CSVLogger(tmp_path, name="csv")
    cb = PairExplanationCallback(["gradcam"], every_n_train_steps=3, log_images=False, **FAST)
    _fit(cb, tmp_path, max_epochs=2, logger=logger)
    rows = list(csv.DictReader((Path(logger.log_dir) / "metrics.csv").read_text().splitlines()))
    steps = [int(r["step"]) for r in rows if r.get("explain/gradcam/insertion_simultaneous")]
    assert steps == [3, 6]


def test_sanity_check_and_fast_dev_run_are_skipped(tmp_path: Path) -> None:
    cb = PairExplanationCallback(["gradcam"], hook="validation_epoch_end", **FAST)
    _fit(cb, tmp_path / "a", max_epochs=1, num_sanity_val_steps=2)
    assert cb.state_dict()["evaluations"] == 1  # not the sanity check

    cb = PairExplanationCallback(["gradcam"], **FAST)
    _fit(cb, tmp_path / "b", fast_dev_run=True)
    assert cb.state_dict()["evaluations"] == 0
    assert not (tmp_path / "b" / "explanations").exists()


def test_validation_hook_in_fit_and_in_trainer_validate_with_inference_mode(tmp_path: Path) -> None:
    cb = PairExplanationCallback(
        ["gradcam", "input_x_gradient"], hook="validation_epoch_end", log_images=False, **FAST
    )
    model = SSL()
    tr = trainer(callbacks=[cb], default_root_dir=tmp_path, max_epochs=2, inference_mode=True)
    tr.fit(model)
    assert cb.state_dict()["evaluations"] == 2
    tr.validate(model, verbose=False)
    assert cb.state_dict()["evaluations"] == 3
    assert float(tr.callback_metrics["explain/errors"]) == 0
    assert torch.isfinite(tr.callback_metrics["explain/input_x_gradient/deletion_simultaneous"])

    # trainer.validate alone, with a fresh callback: the probe set is drawn from the loaded
    # validation data and the dry run happens in on_validation_start.
    fresh = PairExplanationCallback(["gradcam"], hook="validation_epoch_end", **FAST)
    tr = trainer(callbacks=[fresh], default_root_dir=tmp_path / "validate", inference_mode=True)
    tr.validate(model, verbose=False)
    assert fresh.state_dict()["evaluations"] == 1
    assert fresh.probe is not None
    assert fresh.probe.source == "val"
    assert (tmp_path / "validate" / "explanations" / "epoch=000" / "gradcam.png").is_file()


def test_bf16_mixed_precision_on_cpu(tmp_path: Path) -> None:
    cb = PairExplanationCallback(["gradcam", "input_x_gradient"], log_images=False, **FAST)
    tr = _fit(cb, tmp_path, max_epochs=1, precision="bf16-mixed")
    assert float(tr.callback_metrics["explain/errors"]) == 0
    for key in ("explain/sim", "explain/gradcam/insertion_simultaneous"):
        assert torch.isfinite(tr.callback_metrics[key]), key


def test_autocast_option_runs_the_perturbation_forwards_in_bf16(tmp_path: Path) -> None:
    cb = PairExplanationCallback(["gradcam"], log_images=False, autocast="bf16", **FAST)
    model = SSL()
    tr = _fit(cb, tmp_path, model=model, max_epochs=1)
    assert float(tr.callback_metrics["explain/errors"]) == 0
    seen: list[torch.dtype] = []  # one entry per image
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(lambda m, i, o: seen.extend([o.dtype] * len(o)))
    try:
        half = cb.compute_scores(model)
    finally:
        handle.remove()
    # The probe pair, Grad-CAM's forward/backward: float32; the metrics' perturbations: bf16.
    assert seen.count(torch.bfloat16) > seen.count(torch.float32) > 0
    full = PairExplanationCallback(["gradcam"], log_images=False, **FAST)
    cb.save_probe(tmp_path / "probe.pt")
    full.load_probe(tmp_path / "probe.pt")
    reference = full.compute_scores(model)
    assert set(half) == set(reference)
    for key, value in reference.items():
        assert half[key] == pytest.approx(value, abs=0.05), key


# --------------------------------------------------------------------------------------------------
# Embedding forms


@pytest.mark.parametrize(
    "embedding",
    [
        "forward",
        "backbone",
        "backbone.features",
        "tests.callback.helpers:backbone_embedding",
        "tests.callback.helpers.backbone_embedding",
    ],
)
def test_embedding_forms(tmp_path: Path, embedding: str) -> None:
    from lightning_explain.data import draw_probe_set

    path = draw_probe_set(TwoViewDataset(4), 2).save(tmp_path / "probe.pt")
    cb = PairExplanationCallback(["input_x_gradient"], embedding=embedding, **FAST)
    cb.load_probe(path)
    model = SSL()
    model.train()
    scores = cb.compute_scores(model)
    assert set(scores) == {
        "explain/sim",
        "explain/input_x_gradient/insertion_simultaneous",
        "explain/input_x_gradient/deletion_simultaneous",
        "explain/input_x_gradient/degenerate_maps",
    }
    assert all(torch.isfinite(torch.tensor(v)) for v in scores.values())
    assert all(m.training for m in model.modules())  # modes restored
    expected_dim = {"backbone.features": 8 * 8 * 8}.get(embedding, 8)
    fn = resolve_embedding(embedding, model, owner="test")
    assert fn(model, torch.rand(1, 3, 16, 16)).shape == (1, expected_dim)


def test_embedding_callable(tmp_path: Path) -> None:
    calls: list[tuple[int, ...]] = []

    def embed(module: Any, x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return module.backbone(x)

    cb = PairExplanationCallback(["gradcam"], embedding=embed, log_images=False, **FAST)
    _fit(cb, tmp_path, max_epochs=1)
    assert calls
    assert all(s[1:] == (3, 16, 16) for s in calls)


# --------------------------------------------------------------------------------------------------
# Namespaces and LightningCLI


def test_pytorch_lightning_trainer(tmp_path: Path) -> None:
    from lightning_explain.pl import PairExplanationCallback as PLCallback

    cb = PLCallback(["gradcam"], **FAST)
    tr = trainer("pytorch_lightning", callbacks=[cb], default_root_dir=tmp_path, max_epochs=1)
    tr.fit(make_module_class("pytorch_lightning")())
    assert float(tr.callback_metrics["explain/errors"]) == 0
    assert "explain/gradcam/deletion_simultaneous" in tr.callback_metrics
    assert (tmp_path / "explanations" / "epoch=000" / "gradcam.png").is_file()


_CLI_CONFIG = """
trainer:
  accelerator: cpu
  max_epochs: 1
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  enable_checkpointing: false
  num_sanity_val_steps: 0
  default_root_dir: {root}
  callbacks:
    - class_path: {cls}
      init_args:
        methods:
          - gradcam
          - name: interaction_cam
            reduction: max
          - name: interaction_cam
            reduction: mean
        metrics: [insertion_simultaneous]
        embedding: backbone
        {probe}
        n_steps: 4
        every_n_epochs: 1
        on_error: raise
"""


_PLAIN_PROBE = "probe: {n_pairs: 2, pairing: two_views, source: val}\n        knn: {k: 3, samples: 8, queries: 4}"
_NESTED_PROBE = """probe:
          class_path: lightning_explain.data.ProbeSettings
          init_args:
            n_pairs: 2
            pairing: two_views"""


@pytest.mark.parametrize(
    ("ns", "cls", "probe"),
    [
        ("lightning.pytorch", "lightning_explain.PairExplanationCallback", _PLAIN_PROBE),
        ("pytorch_lightning", "lightning_explain.pl.PairExplanationCallback", _PLAIN_PROBE),
        ("lightning.pytorch", "lightning_explain.PairExplanationCallback", _NESTED_PROBE),
    ],
)
def test_lightning_cli_builds_and_runs_the_callback(
    tmp_path: Path, ns: str, cls: str, probe: str
) -> None:
    pytest.importorskip("jsonargparse")
    cli_module = namespace(f"{ns}.cli")
    config = tmp_path / "config.yaml"
    config.write_text(_CLI_CONFIG.format(root=tmp_path, cls=cls, probe=probe))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = cli_module.LightningCLI(
            make_module_class(ns),
            args=["fit", f"--config={config}"],
            save_config_callback=None,
        )
    cbs = [c for c in cli.trainer.callbacks if type(c).__name__ == "PairExplanationCallback"]
    assert len(cbs) == 1
    cb = cbs[0]
    assert cb.methods == ["gradcam", "interaction_cam-max", "interaction_cam-mean"]
    assert cb.embedding == "backbone"
    assert cb.probe_settings.n_pairs == 2
    assert cb.probe is not None
    assert len(cb.probe) == 2
    assert "explain/interaction_cam-max/insertion_simultaneous" in cli.trainer.callback_metrics
    if "knn" in probe:
        assert cb.knn_settings is not None
        assert cb.knn_settings.samples == 8
        assert "explain/knn_accuracy" in cli.trainer.callback_metrics


def test_without_the_lightning_package_the_callback_uses_pytorch_lightning() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['lightning'] = None\n"
        "import pytorch_lightning as pl\n"
        "from lightning_explain.callback import PairExplanationCallback as A\n"
        "from lightning_explain.pl import PairExplanationCallback as B\n"
        "assert A is B and issubclass(A, pl.Callback), A.__mro__\n"
        "assert 'lightning.pytorch' not in sys.modules\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
