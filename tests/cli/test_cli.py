"""The ``lightning-explain`` command line: listings, probe export, compare, and helpful errors."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_explain.checkpoints import CheckpointError, resolve_class
from lightning_explain.data import ProbeSet
from lightning_explain.methods import list_methods, method_info
from lightning_explain.metrics import list_metrics, metric_info
from tests.cli.conftest import (
    COMPARE_METHODS,
    COMPARE_METRICS,
    MODEL_CLASS,
    Comparison,
    Run,
    run_cli,
)

# One pair, one cheap method, no metrics: the quickest compare run.
QUICK = ["--methods", "input_x_gradient", "--metrics", "none", "--pairs", "1"]

# --------------------------------------------------------------------------------------------------
# methods / metrics


def test_methods_command_runs_as_a_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_explain.cli", "methods"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines()[2:] if line.strip()]
    assert listed == list_methods()
    assert "layer='auto'" in proc.stdout  # gradcam's default is shown


def test_methods_json_matches_the_registry() -> None:
    code, out, _ = run_cli(["methods", "--json"])
    assert code == 0
    entries = {e["name"]: e for e in json.loads(out)}
    assert sorted(entries) == list_methods()
    for name, entry in entries.items():
        info = method_info(name)
        assert entry["family"] == info.family
        assert entry["cost"] == info.cost
        assert entry["needs_layer"] == info.needs_layer
        assert set(entry["defaults"]) == set(info.defaults())


def test_metrics_json_gives_each_direction() -> None:
    code, out, _ = run_cli(["metrics", "--json"])
    assert code == 0
    payload = json.loads(out)
    entries = {e["name"]: e for e in payload["metrics"]}
    assert sorted(entries) == list_metrics()
    for key, entry in entries.items():
        assert entry["higher_is_better"] is metric_info(key).higher_is_better
    assert payload["defaults"]["n_steps"] == 224


def test_metrics_table_shows_arrows() -> None:
    code, out, _ = run_cli(["metrics"])
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert "↑" in rows["insertion_simultaneous"]
    assert "↓" in rows["deletion_conditional"]


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_explain.cli import main

    assert main([]) == 2
    assert "usage" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# probe export


def test_probe_export_writes_the_callbacks_probe(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "exported.pt"
    code, out, err = run_cli(["probe", "export", str(run.epochs[1]), "--out", str(target)])
    assert code == 0, err
    assert "4 pairs of 3x32x32" in out
    exported = ProbeSet.load(target)
    saved = ProbeSet.load(run.probe)  # what the callback itself saves
    assert torch.equal(exported.x1, saved.x1)
    assert torch.equal(exported.x2, saved.x2)
    assert exported.indices == saved.indices


def test_probe_export_without_a_stored_probe_fails_clearly(run: Run, tmp_path: Path) -> None:
    code, _, err = run_cli(["probe", "export", str(run.plain), "--out", str(tmp_path / "p.pt")])
    assert code == 2
    assert "stores no probe set" in err
    assert "ModelCheckpoint" in err  # lists the callback states it found
    assert "Traceback" not in err
    assert not (tmp_path / "p.pt").exists()


# --------------------------------------------------------------------------------------------------
# compare: outputs


def test_compare_one_run_writes_dashboard_and_tables(one_run: Comparison, run: Run) -> None:
    assert one_run.code == 0, one_run.stderr
    html = (one_run.out / "index.html").read_text(encoding="utf-8")
    for ckpt in run.epochs:
        assert ckpt.name in html
    for method in COMPARE_METHODS:
        assert method in html
    assert 'data-tab="training"' in html  # one run: metric-vs-epoch plots
    payload = json.loads((one_run.out / "metrics.json").read_text(encoding="utf-8"))
    assert payload["one_run"] is True
    assert [c["epoch"] for c in payload["checkpoints"]] == [0, 1]
    assert [c["global_step"] for c in payload["checkpoints"]] == [2, 4]
    assert payload["probe"].startswith("stored in")
    for ckpt in payload["checkpoints"]:
        for method in COMPARE_METHODS:
            assert set(ckpt["scores"][method]) == set(COMPARE_METRICS)
            for key in COMPARE_METRICS:
                assert len(ckpt["per_pair"][method][key]) == 4
    rows = (one_run.out / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].split(",") == [
        "checkpoint",
        "path",
        "epoch",
        "global_step",
        "method",
        *COMPARE_METRICS,
    ]
    assert len(rows) == 1 + 2 * len(COMPARE_METHODS)


def test_compare_scores_match_the_library(one_run: Comparison, run: Run) -> None:
    """The dashboard's numbers are those of explain + evaluate on the same probe pairs."""
    from lightning_explain import explain
    from lightning_explain.metrics import evaluate
    from tests.cli.tiny_module import TinyContrastive

    module = TinyContrastive.load_from_checkpoint(run.epochs[1], map_location="cpu").eval()
    probe = ProbeSet.load(run.probe)
    expl = explain(module, probe.x1, probe.x2, method="input_x_gradient")
    scores = evaluate(module, probe.x1, probe.x2, expl, list(COMPARE_METRICS), n_steps=8)
    payload = json.loads((one_run.out / "metrics.json").read_text(encoding="utf-8"))
    reported = payload["checkpoints"][1]["scores"]["input_x_gradient"]
    for key in COMPARE_METRICS:
        assert reported[key] == pytest.approx(float(scores[key].mean()), abs=1e-5)
    assert payload["checkpoints"][1]["similarity"] == pytest.approx(expl.sim.tolist(), abs=1e-5)


def test_compare_logs_to_tensorboard(one_run: Comparison) -> None:
    from tensorboard.backend.event_processing.event_accumulator import (
        IMAGES,
        SCALARS,
        EventAccumulator,
    )

    assert one_run.code == 0, one_run.stderr
    (events,) = list((one_run.out / "tb").rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events.parent), size_guidance={SCALARS: 0, IMAGES: 0})
    acc.Reload()
    key = "compare/gradcam/insertion_simultaneous"
    assert [e.step for e in acc.Scalars(key)] == [2, 4]  # the checkpoints' global steps
    payload = json.loads((one_run.out / "metrics.json").read_text(encoding="utf-8"))
    expected = [c["scores"]["gradcam"]["insertion_simultaneous"] for c in payload["checkpoints"]]
    assert [e.value for e in acc.Scalars(key)] == pytest.approx(expected, abs=1e-5)
    assert "compare/input_x_gradient/pairs" in acc.Tags()["images"]


def test_compare_logs_to_wandb_offline(mixed: Comparison) -> None:
    assert mixed.code == 0, mixed.stderr
    runs = list((mixed.out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = list((runs[0] / "files" / "media").rglob("*.png"))
    # a pair grid and a curve figure per method and checkpoint
    assert len(media) >= 2 * len(COMPARE_METHODS) * 3
    tables = list((runs[0] / "files" / "media" / "table").rglob("*.json"))
    assert tables


def test_compare_without_probe_or_stored_probe_fails(run: Run, tmp_path: Path) -> None:
    code, _, err = run_cli(
        ["compare", str(run.plain), "--model-class", MODEL_CLASS, "--out", str(tmp_path)]
    )
    assert code == 2
    assert "No probe set" in err
    assert "--probe" in err


def test_compare_finds_class_path_recorded_by_lightning_cli(run: Run, tmp_path: Path) -> None:
    """LightningCLI records ``_class_path`` in the hyper-parameters: with --trust-checkpoint no
    --model-class is needed; without, the command asks for it, naming the recorded path."""
    ckpt = torch.load(run.epochs[0], weights_only=True)
    ckpt["hyper_parameters"]["_class_path"] = "tests.cli.tiny_module.TinyContrastive"
    for state in ckpt["callbacks"].values():
        state.pop("model_class", None)
    path = tmp_path / "cli.ckpt"
    torch.save(ckpt, path)
    code, _, err = run_cli(["compare", str(path), *QUICK, "--out", str(tmp_path / "out")])
    assert code == 2
    assert "tests.cli.tiny_module.TinyContrastive" in err
    args = ["compare", str(path), *QUICK, "--trust-checkpoint", "--out", str(tmp_path / "out")]
    code, _, err = run_cli(args)
    assert code == 0, err
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "1 probe pair(s)" in html


# --------------------------------------------------------------------------------------------------
# compare: errors (exit code 2, one paragraph, no traceback unless --debug)


def _fails(argv: list[str], *needles: str) -> str:
    code, _, err = run_cli(argv)
    assert code == 2, err
    assert "Traceback" not in err
    # Progress lines may come first; the error is the last paragraph, without blank lines.
    message = err[err.index("lightning-explain: error:") :].strip()
    assert "\n\n" not in message
    for needle in needles:
        assert needle in " ".join(message.split()), err
    return message


def _compare_args(run: Run, tmp_path: Path, *ckpts: Path) -> list[str]:
    paths = [str(p) for p in (ckpts or (run.epochs[0],))]
    return ["compare", *paths, "--model-class", MODEL_CLASS, "--out", str(tmp_path / "out")]


def test_missing_checkpoint(run: Run, tmp_path: Path) -> None:
    _fails(_compare_args(run, tmp_path, tmp_path / "nope.ckpt"), "nope.ckpt", "does not exist")


def test_corrupt_checkpoint(run: Run, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint" * 64)
    _fails(_compare_args(run, tmp_path, garbage), "garbage.ckpt", "corrupt")
    truncated = tmp_path / "truncated.ckpt"
    data = run.epochs[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    _fails(_compare_args(run, tmp_path, truncated), "truncated.ckpt", "corrupt")


def test_probe_file_is_not_a_checkpoint(run: Run, tmp_path: Path) -> None:
    _fails(_compare_args(run, tmp_path, run.probe), "not a Lightning checkpoint", "state_dict")


def test_debug_shows_the_traceback(run: Run, tmp_path: Path) -> None:
    code, _, err = run_cli([*_compare_args(run, tmp_path, tmp_path / "nope.ckpt"), "--debug"])
    assert code == 2
    assert "Traceback" in err
    assert "does not exist" in err


def test_probe_of_another_image_size(run: Run, tmp_path: Path) -> None:
    small = ProbeSet(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16), (0, 1), 0, "dataset", "t")
    path = small.save(tmp_path / "small.pt")
    _fails(
        [*_compare_args(run, tmp_path), "--probe", str(path)],
        "3x16x16",
        "3x32x32",  # the probe shape recorded in the checkpoint
        "probe export",
    )


def test_probe_of_another_channel_count(run: Run, tmp_path: Path) -> None:
    grey = ProbeSet(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32), (0, 1), 0, "dataset", "t")
    path = grey.save(tmp_path / "grey.pt")
    # run.plain stores no probe set, so only the dry forward can notice.
    _fails(
        [*_compare_args(run, tmp_path, run.plain), "--probe", str(path)],
        "1x32x32",
        "cannot embed the probe images",
        "channel count",
    )


@pytest.mark.parametrize(
    ("class_path", "needles"),
    [
        ("no_such_package.models:Model", ["no module 'no_such_package'"]),
        (
            "tests.cli.no_such_module:Model",
            ["no module 'tests.cli.no_such_module'", "its parent 'tests.cli' imported"],
        ),
        ("tests.cli.tiny_module:Missing", ["has no attribute 'Missing'", "TinyContrastive"]),
        ("tests.cli.tiny_module:TwoViews", ["not a LightningModule"]),
        ("justaname", ["malformed"]),
    ],
)
def test_class_path_that_does_not_import(
    run: Run, tmp_path: Path, class_path: str, needles: list[str]
) -> None:
    args = _compare_args(run, tmp_path)
    args[args.index("--model-class") + 1] = class_path
    _fails(args, class_path, *needles)
    with pytest.raises(CheckpointError):
        resolve_class(class_path)


def test_missing_model_class(run: Run, tmp_path: Path) -> None:
    # The callback records the class in its state; a checkpoint trained without it does not.
    _fails(
        ["compare", str(run.plain), "--probe", str(run.probe), "--out", str(tmp_path)],
        "does not record which LightningModule class",
        "--model-class",
    )


def test_layer_the_model_lacks_lists_candidates(run: Run, tmp_path: Path) -> None:
    err = _fails(
        [*_compare_args(run, tmp_path), "--methods", "gradcam", "--layer", "encoder.layer4"],
        "gradcam",
        "encoder.layer4",
        "backbone.",  # the candidate layers are named
    )
    assert "--layer" in err


def test_unknown_method_and_option(run: Run, tmp_path: Path) -> None:
    _fails([*_compare_args(run, tmp_path), "--methods", "gradcamm"], "gradcamm", "Did you mean")
    _fails([*_compare_args(run, tmp_path), "--metrics", "insertion"], "insertion", "Valid metrics")
    _fails(
        [*_compare_args(run, tmp_path), "--methods", "gradcam", "--option", "n_masks=10"],
        "n_masks",
        "no selected method",
    )


def test_bad_embedding(run: Run, tmp_path: Path) -> None:
    _fails([*_compare_args(run, tmp_path), "--embedding", "encoder"], "encoder", "backbone, head")
    _fails(
        [*_compare_args(run, tmp_path), "--embedding", "no_such_mod:embed"],
        "no_such_mod",
        "could not import",
    )


def test_embedding_attribute_is_explained(run: Run, tmp_path: Path) -> None:
    code, _, err = run_cli(
        [
            *_compare_args(run, tmp_path),
            "--embedding",
            "backbone",
            "--methods",
            "gradcam",
            "--layer",
            "backbone.0",
            "--metrics",
            "none",
            "--pairs",
            "2",
        ]
    )
    assert code == 0, err
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "layer=&#x27;backbone.0&#x27;" in html  # the Run tab lists the options used


def test_unsafe_checkpoint_needs_trust(run: Run, tmp_path: Path) -> None:
    ckpt = torch.load(run.epochs[0], weights_only=True)
    ckpt["hyper_parameters"]["data_dir"] = pathlib.Path("/data/images")
    path = tmp_path / "unsafe.ckpt"
    torch.save(ckpt, path)
    args = [*_compare_args(run, tmp_path, path), *QUICK]
    _fails(args, "pathlib.PosixPath", "--trust-checkpoint", "weights_only=False")
    code, _, err = run_cli([*args, "--trust-checkpoint"])
    assert code == 0, err


def test_cuda_device_without_cuda(run: Run, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _fails([*_compare_args(run, tmp_path), "--device", "cuda"], "CUDA", "--device cpu")


def test_compare_with_autocast_scores_close_to_float32(run: Run, tmp_path: Path) -> None:
    """--autocast bf16 runs the perturbation forwards in bfloat16; scores stay near float32."""
    common = ["--methods", "input_x_gradient", "--metrics", "deletion_conditional", "--pairs", "2"]
    payloads = []
    for name, extra in (("full", []), ("half", ["--autocast", "bf16"])):
        out = tmp_path / name
        code, _, err = run_cli([*_compare_args(run, out), *common, *extra])
        assert code == 0, err
        payloads.append(json.loads((out / "out" / "metrics.json").read_text(encoding="utf-8")))
        html = (out / "out" / "index.html").read_text(encoding="utf-8")
        assert ("bf16" in html) == bool(extra)
    full, half = (p["checkpoints"][-1]["scores"]["input_x_gradient"] for p in payloads)
    assert half["deletion_conditional"] == pytest.approx(full["deletion_conditional"], abs=0.02)
    code, _, err = run_cli([*_compare_args(run, tmp_path / "bad"), "--autocast", "fp8"])
    assert code == 2
    assert "--autocast" in err
    assert "'bf16'" in err
