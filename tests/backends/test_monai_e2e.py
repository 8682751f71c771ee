"""Real MONAI on CPU: tiny local bundle -> two-stage fine-tuning of every fold -> resume -> inference on the input grid.

Six 24^3 training cases in two folds, a SegResNet with init_filters 8 (the bundle's structure) and one epoch
per stage keep the whole module well under two minutes on two cores; every step runs MONAI for real.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _monai_bundle import make_bundle

from segkit import api
from segkit.backends.base import PredictRequest
from segkit.backends.monai_bundle import MonaiBundleBackend, MonaiOptions
from segkit.backends.monai_bundle.backend import _checkpoint_for
from segkit.config import load_config
from segkit.data.inputs import resolve_inputs
from segkit.data.nnunet_dataset import dataset_case_ids
from segkit.data.splits import write_splits
from segkit.data.synth import write_cohort
from segkit.errors import ConfigError, DataError
from segkit.io import read_volume, write_volume
from segkit.progress import NullProgress, RecordingProgress
from segkit.testing import BackendContract, ContractModel

pytestmark = pytest.mark.slow

DATASET = "Dataset501_BraTSPostTx"
ENCODER = ("convInit.", "down_layers.")


def monai_flags(root: Path, **extra) -> dict:
    return {
        "nnunet.raw": root / "raw",
        "nnunet.preprocessed": root / "pre",
        "nnunet.results": root / "res",
        "train.backend": "monai",
        "train.device": "cpu",
        "infer.backend": "monai",
        "infer.device": "cpu",
        "backends.monai.bundle_dir": root / "bundles",
        "backends.monai.split_json": root / "splits_2fold.json",
        "backends.monai.output_root": root / "out",
        "backends.monai.stage1_epochs": 1,
        "backends.monai.stage2_epochs": 1,
        "backends.monai.patch_size": [24, 24, 24],
        "backends.monai.batch_size": 1,
        "backends.monai.num_samples": 1,
        "backends.monai.stage1_accum": 2,
        "backends.monai.sw_batch_size": 1,
        **extra,
    }


def cli_args(root: Path) -> list[str]:
    """Flags every CLI call of these tests shares: CPU and the dataset's nnU-Net folders."""
    return ["--device", "cpu", "--set", f"nnunet.raw={root / 'raw'}", "--set", f"nnunet.preprocessed={root / 'pre'}"]


@pytest.fixture(scope="module", autouse=True)
def _offline() -> Iterator[None]:
    """No test may reach a model hub (the module-scoped fixtures load bundles too)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("SEGKIT_OFFLINE", raising=False)
        yield


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, cohort_template: Path) -> Path:
    root = tmp_path_factory.mktemp("monai_e2e")
    shutil.copytree(cohort_template, root / "training_data")
    # test cases on another grid: LAS affine, anisotropic spacing, a shape that is no multiple of 8
    write_cohort(root / "validation_data", cases=2, shape=(30, 34, 26), spacing=(1.0, 0.9, 1.2), seed=3, start=90)
    make_bundle(root / "bundles")
    cfg = load_config(
        flags={
            **monai_flags(root),
            "prepare.train_sources": [root / "training_data"],
            "prepare.test_sources": [root / "validation_data"],
            "prepare.workers": 1,
        }
    )
    api.prepare(cfg)
    write_splits(dataset_case_ids(root / "raw" / DATASET), root / "splits_2fold.json", n_folds=2)
    return root


@pytest.fixture(scope="module")
def trained(prepared: Path) -> Path:
    progress = RecordingProgress()
    results = api.train(load_config(flags=monai_flags(prepared, **{"train.fold": "all"})), progress=progress)
    assert [r.fold for r in results] == [0, 1]
    logs = [e[1] for e in progress.events if e[0] == "log"]
    assert (
        "bundle brats_mri_segmentation 0.5.2-test: 81 of 83 tensors loaded; head conv_final.2 new (5 classes)" in logs
    )
    assert any(line.startswith("fold 1 stage 2 epoch 1/1  loss ") and " Dice NETC " in line for line in logs), logs
    # no nnU-Net plans in this dataset (prepared, not planned): the given patch size, the default spacing
    assert "fold 0: patch size 24 24 24 (given), spacing 1 1 1 mm (default)" in logs
    for result in results:
        assert result.checkpoint == prepared / "out" / f"fold{result.fold}" / "checkpoints" / "stage2_best.pt"
        assert 0.0 <= result.metrics["validation_dice"] <= 1.0
    bars = [e for e in progress.events if e[0] == "advance"]
    assert any("loss" in e[2] for e in bars)
    assert any("wt_dice" in e[2] for e in bars)
    starts = [e[1] for e in progress.events if e[0] == "start"]
    assert "fold 0 stage 1 epoch 1/1" in starts
    assert "fold 0 stage 1 epoch 1: validation" in starts
    return prepared


def test_outputs_of_a_fold(trained: Path) -> None:
    fold = trained / "out" / "fold0"
    assert sorted(p.name for p in (fold / "checkpoints").iterdir()) == [
        "stage1_best.pt",
        "stage1_epoch1.pt",
        "stage2_best.pt",
        "stage2_epoch1.pt",
    ]
    assert "backend: monai" in (fold / "segkit_config.yaml").read_text()
    log = json.loads((fold / "metrics" / "training_log.json").read_text())
    assert [(e["stage"], e["epoch"]) for e in log["epochs"]] == [(1, 1), (2, 1)]
    assert set(log["epochs"][0]["dice"]) == {"NETC", "SNFH", "ET", "RC"}
    # 3 training cases, batch 1: stage 1 accumulates 2 batches (one full group, one partial), stage 2 none
    assert [e["optimizer_steps"] for e in log["epochs"]] == [2, 3]
    assert log["tensors_loaded"] == [81, 83]
    assert log["geometry"] == {
        "patch_size": [24, 24, 24],
        "patch_size_source": "given",
        "spacing": [1.0, 1.0, 1.0],
        "spacing_source": "default",
    }


def test_checkpoints_load_weights_only_with_json_metadata(trained: Path) -> None:
    path = trained / "out" / "fold1" / "checkpoints" / "stage2_best.pt"
    payload = torch.load(path, map_location="cpu", weights_only=True)
    meta = payload["meta"]
    json.dumps(meta, allow_nan=False)
    assert (meta["stage"], meta["epoch"], meta["fold"], meta["kind"]) == (2, 1, 1, "best")
    assert meta["network"] == {"name": "SegResNet", "args": {**meta["network"]["args"], "out_channels": 5}}
    assert meta["network"]["args"]["init_filters"] == 8
    assert meta["channel_order"] == ["t1c", "t1n", "t2w", "t2f"]
    assert meta["labels"] == {"0": "background", "1": "NETC", "2": "SNFH", "3": "ET", "4": "RC"}
    assert meta["segkit_version"]
    assert meta["dataset"] == DATASET
    assert json.loads((trained / "out" / "fold1" / "metrics" / "training_log.json").read_text())["dataset"] == DATASET
    assert meta["best_metric_name"] == "mean_dice"
    weights = trained / "bundles" / "brats_mri_segmentation" / "models" / "model.pt"
    assert meta["bundle"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert set(payload) >= {"model", "optimizer", "scheduler", "scaler"}


def test_stage1_trains_only_decoder_and_head(trained: Path) -> None:
    bundle = torch.load(trained / "bundles" / "brats_mri_segmentation" / "models" / "model.pt", weights_only=True)
    ckpt = trained / "out" / "fold0" / "checkpoints"
    stage1 = torch.load(ckpt / "stage1_best.pt", weights_only=True)["model"]
    stage2 = torch.load(ckpt / "stage2_best.pt", weights_only=True)["model"]
    weights = [k for k in stage1 if k.endswith(".weight") and k in bundle and bundle[k].shape == stage1[k].shape]
    encoder = [k for k in weights if k.startswith(ENCODER)]
    decoder = [k for k in weights if not k.startswith(ENCODER)]
    assert encoder
    assert decoder
    assert all(torch.equal(stage1[k], bundle[k]) for k in encoder), "stage 1 changed the frozen encoder"
    assert any(not torch.equal(stage1[k], bundle[k]) for k in decoder), "stage 1 did not train the decoder"
    assert any(not torch.equal(stage2[k], stage1[k]) for k in encoder), "stage 2 did not train the encoder"
    assert stage1["conv_final.2.conv.weight"].shape == (5, 8, 1, 1, 1)


def test_resume_from_a_stage1_checkpoint(trained: Path) -> None:
    first = torch.load(trained / "out" / "fold0" / "checkpoints" / "stage1_epoch1.pt", weights_only=True)
    flags = monai_flags(
        trained,
        **{
            "train.fold": 0,
            "backends.monai.stage1_epochs": 2,
            "backends.monai.output_root": trained / "resumed",
            "backends.monai.resume": trained / "out" / "fold{fold}" / "checkpoints" / "stage1_epoch1.pt",
        },
    )
    progress = RecordingProgress()
    api.train(load_config(flags=flags), progress=progress)
    logs = [e[1] for e in progress.events if e[0] == "log"]
    assert any(line.startswith("fold 0: resuming from ") and "(stage 1 epoch 1)" in line for line in logs)
    assert not any(line.startswith("fold 0 stage 1 epoch 1/2") for line in logs)
    assert any(line.startswith("fold 0 stage 1 epoch 2/2") for line in logs)
    assert any(line.startswith("fold 0 stage 2 epoch 1/1") for line in logs)
    log = json.loads((trained / "resumed" / "fold0" / "metrics" / "training_log.json").read_text())
    assert [(e["stage"], e["epoch"]) for e in log["epochs"]] == [(1, 1), (1, 2), (2, 1)]
    second = torch.load(trained / "resumed" / "fold0" / "checkpoints" / "stage1_epoch2.pt", weights_only=True)
    # AdamW's step counters continue from the checkpoint: 2 steps in epoch 1, 2 more in epoch 2
    steps = {float(s["step"]) for s in second["optimizer"]["state"].values()}
    assert {float(s["step"]) for s in first["optimizer"]["state"].values()} == {2.0}
    assert steps == {4.0}
    assert second["scheduler"]["last_epoch"] == 2
    assert second["meta"]["best_epoch"] in (1, 2)
    # the resumed epoch follows the 2-epoch cosine of this run (torch's CosineAnnealingLR, uninterrupted),
    # not the 1-epoch one the checkpoint was saved with (which is at lr 0 by then)
    reference = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=2)
    reference.step()
    schedule.step()
    assert log["epochs"][1]["lr"] == pytest.approx(reference.param_groups[0]["lr"], rel=1e-9)
    assert log["epochs"][1]["lr"] == pytest.approx(5e-4)


def test_bad_resume_and_weights_fail_before_training(trained: Path, run_cli, tmp_path: Path) -> None:
    ckpt = trained / "out" / "fold0" / "checkpoints"
    base = ["train", "--backend", "monai", *cli_args(trained), "--bundle-dir", str(trained / "bundles")]
    base += ["--split-json", str(trained / "splits_2fold.json"), "--patch-size", "24", "24", "24"]
    base += ["--output-root", str(trained / "out")]
    result = run_cli(*base, "--fold", "0", "--resume", ckpt / "stage2_best.pt", "--resume-stage", "1")
    assert result.code == 2, result.err
    assert result.err.splitlines()[0] == (
        f"error: {ckpt / 'stage2_best.pt'} is a stage-2 checkpoint; --resume-stage 1 needs a stage-1 one"
    )
    result = run_cli(*base, "--fold", "all", "--resume", ckpt / "stage1_best.pt")
    assert result.code == 2
    assert result.err.splitlines()[0] == f"error: {ckpt / 'stage1_best.pt'} was trained on fold 0, not fold 1"
    assert "put {fold} in --resume" in result.err
    # weights of another architecture: the first mismatching tensor is named
    from segkit.backends.monai_bundle import network as nw
    from segkit.backends.monai_bundle.bundle import BUNDLE_NETWORK_ARGS

    other = nw.build_network(nw.network_args(BUNDLE_NETWORK_ARGS, {}))
    torch.save(other.state_dict(), tmp_path / "other.pt")
    result = run_cli(*base, "--fold", "0", "--load-weights", tmp_path / "other.pt")
    assert result.code == 1
    assert result.err.splitlines()[0].startswith(
        f"error: {tmp_path / 'other.pt'}: checkpoint does not fit this network: "
    )
    assert "convInit.conv.weight has shape (16, 4, 3, 3, 3) in the checkpoint but (8, 4, 3, 3, 3) here" in result.err, (
        result.err
    )
    assert not (trained / "out" / "fold0" / "checkpoints" / "stage1_epoch2.pt").exists()


def test_an_earlier_run_is_refused_or_replaced(trained: Path, run_cli, tmp_path: Path) -> None:
    root = tmp_path / "again"
    shutil.copytree(trained / "out" / "fold0", root / "fold0")
    checkpoints = root / "fold0" / "checkpoints"
    (checkpoints / "my_notes.txt").write_text("not segkit's")
    args = ["train", "--backend", "monai", *cli_args(trained), "--bundle-dir", str(trained / "bundles")]
    args += ["--split-json", str(trained / "splits_2fold.json"), "--patch-size", "24", "24", "24"]
    args += ["--output-root", str(root), "--fold", "0", "--stage1-epochs", "1", "--stage2-epochs", "0"]
    args += ["--batch-size", "1", "--option", "num_samples=1"]
    before = {p.name: p.stat().st_mtime_ns for p in checkpoints.iterdir()}
    result = run_cli(*args)
    assert result.code == 1
    assert result.err.splitlines()[0] == (
        f"error: {root / 'fold0'} holds an earlier run (stage1_best.pt, stage1_epoch1.pt, stage2_best.pt, ...); "
        "refusing to mix this run into it"
    )
    assert {p.name: p.stat().st_mtime_ns for p in checkpoints.iterdir()} == before
    result = run_cli(*args, "--overwrite")
    assert result.code == 0, result.err
    # the old stage-2 checkpoints are gone: inference picks this run's stage-1 best
    assert sorted(p.name for p in checkpoints.iterdir()) == ["my_notes.txt", "stage1_best.pt", "stage1_epoch1.pt"]
    log = json.loads((root / "fold0" / "metrics" / "training_log.json").read_text())
    assert [(e["stage"], e["epoch"]) for e in log["epochs"]] == [(1, 1)]
    assert _checkpoint_for(MonaiOptions(output_root=root), 0) == checkpoints / "stage1_best.pt"


def test_resumed_into_another_root_stage2_starts_from_the_resumed_best(trained: Path, tmp_path: Path) -> None:
    source = tmp_path / "first" / "fold0" / "checkpoints"
    shutil.copytree(trained / "out" / "fold0", tmp_path / "first" / "fold0")
    # mark the first run's best stage-1 weights with a head bias no training here would produce
    best = torch.load(source / "stage1_best.pt", map_location="cpu", weights_only=True)
    best["model"]["conv_final.2.conv.bias"] = torch.full_like(best["model"]["conv_final.2.conv.bias"], 7.0)
    torch.save(best, source / "stage1_best.pt")
    flags = monai_flags(
        trained,
        **{
            "train.fold": 0,
            "backends.monai.output_root": tmp_path / "second",
            # the last stage-1 epoch: this run trains no stage-1 epoch, so it writes no stage1_best.pt itself
            "backends.monai.resume": source / "stage1_epoch1.pt",
            "backends.monai.stage2_lr": 1e-12,  # stage 2 leaves its starting weights (practically) alone
        },
    )
    progress = RecordingProgress()
    api.train(load_config(flags=flags), progress=progress)
    logs = [e[1] for e in progress.events if e[0] == "log"]
    copied = tmp_path / "second" / "fold0" / "checkpoints" / "stage1_best.pt"
    assert any("no epoch beat the resumed best" in line and str(source / "stage1_best.pt") in line for line in logs)
    assert f"fold 0: stage 2 starts from {copied}" in logs
    stage2 = torch.load(copied.parent / "stage2_epoch1.pt", weights_only=True)["model"]["conv_final.2.conv.bias"]
    assert torch.allclose(stage2, torch.full_like(stage2, 7.0), atol=1e-4)
    assert sorted(p.name for p in copied.parent.iterdir()) == ["stage1_best.pt", "stage2_best.pt", "stage2_epoch1.pt"]


def test_bad_labels_found_while_caching_leave_nothing(prepared: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(prepared / "training_data", data)
    seg = read_volume(sorted(data.glob("*/*-seg.nii.gz"))[0])
    labels = seg.data.copy()
    labels[0, 0, 0] = 5
    write_volume(seg.path, labels, seg.affine)
    flags = monai_flags(
        prepared,
        **{
            "train.fold": 0,
            "backends.monai.data_root": [data],
            "backends.monai.output_root": tmp_path / "o" / "runs",
        },
    )
    with pytest.raises(DataError, match=r"label values \[0.0, .*5.0\] are not the BraTS 2024 labels 0-4"):
        api.train(load_config(flags=flags))
    assert not (tmp_path / "o").exists(), "a refused run left folders behind"


def test_bad_inputs_are_one_line_errors(prepared: Path, run_cli, tmp_path: Path) -> None:
    base = ["train", "--backend", "monai", *cli_args(prepared), "--bundle-dir", str(prepared / "bundles")]
    base += ["--split-json", str(prepared / "splits_2fold.json"), "--output-root", str(tmp_path / "o")]
    result = run_cli(*base, "--class-weights", "1", "2", "3")
    assert result.code == 2
    assert result.err.splitlines()[0].startswith(
        "error: backends.monai.class_weights: expected exactly 5 values (background NETC SNFH ET RC), got 3"
    )
    result = run_cli(*base, "--patch-size", "24", "24", "20")
    assert result.code == 2
    assert "backends.monai.patch_size: patch size 24 24 20: every size must be a positive multiple of 8" in result.err
    result = run_cli(*base, "--amp")
    assert result.code == 2
    assert result.err.splitlines()[0] == "error: --amp needs CUDA, but the device is cpu"
    # a data root that lacks some of the split's cases
    partial = tmp_path / "partial"
    partial.mkdir()
    first = next(p for p in sorted((prepared / "training_data").iterdir()) if p.is_dir())
    shutil.copytree(first, partial / first.name)
    result = run_cli(*base, "--fold", "0", "--data-root", partial)
    assert result.code == 1
    line = result.err.splitlines()[0]
    assert line.startswith("error: BraTS-GLI-")
    assert f"case named in splits_2fold.json fold 0 not found under the data roots ({partial})" in line
    result = run_cli(*base, "--stage1-epochs", "1", "--epochs", "3")
    assert result.code == 2
    assert (
        result.err.splitlines()[0] == "error: --epochs is an option of the nnunet and umamba2 backends, not of 'monai'"
    )
    result = run_cli(*base, "--spacing", "0", "1", "1")
    assert result.code == 2, result.err
    assert result.err.splitlines()[0] == (
        "error: backends.monai.spacing: spacing 0 1 1: every value must be a positive number of mm"
    )
    assert "Traceback" not in result.err
    everything = ["convInit", "down_layers", "up_samples", "up_layers", "conv_final"]
    prefixes = [arg for prefix in everything for arg in ("--encoder-prefix", prefix)]
    result = run_cli(*base, "--fold", "0", "--patch-size", "24", "24", "24", *prefixes)
    assert result.code == 2, result.err
    assert result.err.splitlines()[0] == (
        f"error: --encoder-prefix {', '.join(everything)} freezes every parameter, so stage 1 would train nothing"
    )
    # a case whose modalities lie on different grids, found from the headers before anything is written
    data = tmp_path / "data"
    shutil.copytree(prepared / "training_data", data)
    t2w = sorted(data.glob("*/*-t2w.nii.gz"))[0]
    write_volume(t2w, np.zeros((24, 24, 16), np.float32), read_volume(t2w).affine)
    result = run_cli(*base, "--fold", "0", "--patch-size", "24", "24", "24", "--data-root", data)
    assert result.code == 1, result.err
    line = result.err.splitlines()[0]
    assert line.startswith(f"error: {t2w.parent.name}: {t2w}: grid of t2w differs from "), line
    assert line.endswith(": shape (24, 24, 16) vs (24, 24, 24)"), line
    assert "Traceback" not in result.err
    assert not (tmp_path / "o").exists(), "something was trained"


def test_freezing_everything_is_refused_after_a_bundle_download(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check` cannot build the network of a bundle still to download; training refuses before caching."""
    from segkit.backends.monai_bundle import backend

    monkeypatch.setattr(backend, "_planned_network", lambda opts: None)
    flags = monai_flags(
        prepared,
        **{
            "train.fold": 0,
            "backends.monai.output_root": tmp_path / "o" / "runs",
            "backends.monai.encoder_prefix": ["convInit", "down_layers", "up_samples", "up_layers", "conv_final"],
        },
    )
    progress = RecordingProgress()
    with pytest.raises(ConfigError, match="freezes every parameter, so stage 1 would train nothing"):
        api.train(load_config(flags=flags), progress=progress)
    assert not [e for e in progress.events if e[0] == "start" and "caching" in e[1]]
    assert not (tmp_path / "o").exists()


def test_bundle_without_weights_offline(prepared: Path, run_cli, tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", weights=False)
    args = ["train", "--backend", "monai", *cli_args(prepared), "--bundle-dir", str(tmp_path / "b")]
    args += ["--split-json", str(prepared / "splits_2fold.json"), "--output-root", str(tmp_path / "o")]
    result = run_cli(*args)
    assert result.code == 1
    weights = tmp_path / "b" / "brats_mri_segmentation" / "models" / "model.pt"
    lines = result.err.splitlines()
    assert lines[0] == (
        f"error: bundle 'brats_mri_segmentation' has no weights: {weights} is missing and HF_HUB_OFFLINE is set"
    )
    assert lines[1].startswith(f"hint: copy {tmp_path / 'b' / 'brats_mri_segmentation'}/ from a machine where")
    assert not (tmp_path / "o").exists()


def test_bundle_with_expressions_needs_trust(prepared: Path, run_cli, tmp_path: Path) -> None:
    from _monai_bundle import TINY_NETWORK

    make_bundle(tmp_path / "b", network_def={**TINY_NETWORK, "dropout_prob": "$0.1 * 2"})
    args = ["train", "--backend", "monai", *cli_args(prepared), "--bundle-dir", str(tmp_path / "b")]
    args += ["--split-json", str(prepared / "splits_2fold.json"), "--stage1-epochs", "0", "--stage2-epochs", "1"]
    result = run_cli(*args, "--output-root", tmp_path / "o")
    assert result.code == 1
    assert result.err.splitlines()[0] == (
        f"error: {tmp_path / 'b' / 'brats_mri_segmentation' / 'configs' / 'inference.json'}#network_def#dropout_prob "
        "is the expression '$0.1 * 2'; segkit does not evaluate bundle code unless --trust-bundle is given"
    )
    assert not (tmp_path / "o").exists()


def test_infer_every_fold_into_templated_folders(trained: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(trained)
    args = ["infer", "--backend", "monai", *cli_args(trained), "--split-json", str(trained / "splits_2fold.json")]
    args += ["--output-root", "out"]
    result = run_cli(
        *args,
        "--data-root",
        "validation_data",
        "--fold",
        "all",
        "--checkpoint",
        "out/fold{fold}/checkpoints/stage2_best.pt",
        "-o",
        "preds/fold{fold}",
    )
    assert result.code == 0, result.err
    for fold in (0, 1):
        out = trained / "preds" / f"fold{fold}"
        assert sorted(p.name for p in out.glob("*.nii.gz")) == [
            "BraTS-GLI-00090-000.nii.gz",
            "BraTS-GLI-00091-000.nii.gz",
        ]
        manifest = json.loads((out / "segkit_predict.json").read_text())
        assert manifest["folds"] == [fold]
        for case in resolve_inputs([trained / "validation_data"]):
            pred = read_volume(out / f"{case.case_id}.nii.gz")
            ref = read_volume(case.images["t1c"])
            # the file is written with the input's header; that the voxels land in the right place is
            # checked against a known answer in test_monai_unit.py::test_prediction_lands_on_the_input_grid
            assert pred.shape == ref.shape == (30, 34, 26)
            assert np.allclose(pred.affine, ref.affine, atol=1e-4)
            assert pred.data.dtype == np.uint8
            assert set(np.unique(pred.data)) <= {0, 1, 2, 3, 4}
        assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_model_of_another_dataset_is_refused(trained: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(trained)
    args = ["infer", "--backend", "monai", *cli_args(trained), "--split-json", str(trained / "splits_2fold.json")]
    args += ["--output-root", "out", "-i", "validation_data", "--fold", "0", "-o", "p777"]
    result = run_cli(*args, "-d", "Dataset777_X")
    assert result.code == 2, result.err
    assert result.err.splitlines()[0] == (
        f"error: {Path('out/fold0/checkpoints/stage2_best.pt')} was trained on {DATASET}, not Dataset777_X"
    )
    assert not (trained / "p777").exists()


def test_fold_templates_are_required(trained: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(trained)
    args = ["infer", "--backend", "monai", *cli_args(trained), "--split-json", str(trained / "splits_2fold.json")]
    args += ["-i", "validation_data", "--fold", "all"]
    fixed = "out/fold0/checkpoints/stage2_best.pt"
    result = run_cli(*args, "--checkpoint", fixed, "-o", "p/fold{fold}")
    assert result.code == 2
    assert result.err.splitlines()[0] == f"error: {fixed} was trained on fold 0, so it cannot stand for fold 1"
    result = run_cli(*args, "--checkpoint", fixed, "-o", "p/ens", "--ensemble")
    assert result.code == 2
    assert result.err.splitlines()[0] == f"error: 2 folds but --checkpoint {fixed} has no '{{fold}}'"
    result = run_cli(*args, "-o", "p/plain")
    assert result.code == 2
    assert "2 folds but no '{fold}' in the output folder" in result.err
    assert not (trained / "p").exists()


def test_ensemble_of_the_dataset_test_cases(trained: Path) -> None:
    raw = trained / "raw" / DATASET
    flags = monai_flags(
        trained,
        **{
            "infer.fold": "all",
            "infer.ensemble": True,
            "infer.input": [raw / "imagesTs"],
            "infer.output": trained / "ensemble",
            "infer.save_probabilities": True,
            "backends.monai.dataset_json": raw / "dataset.json",
        },
    )
    (result,) = api.predict(load_config(flags=flags))
    assert sorted(p.name for p in result.files) == ["BraTS-GLI-00090-000.nii.gz", "BraTS-GLI-00091-000.nii.gz"]
    manifest = json.loads((trained / "ensemble" / "segkit_predict.json").read_text())
    assert manifest["ensemble"] == "mean of softmax probabilities"
    assert len(manifest["checkpoints"]) == 2
    probs = np.load(trained / "ensemble" / "BraTS-GLI-00090-000.npz")["probabilities"]
    assert probs.shape == (5, 30, 34, 26)
    assert np.allclose(probs.astype(np.float32).sum(0), 1.0, atol=1e-2)
    labels = read_volume(trained / "ensemble" / "BraTS-GLI-00090-000.nii.gz").data
    top2 = np.sort(probs.astype(np.float32), axis=0)[-2:]
    clear = top2[1] - top2[0] > 2e-3  # float16 storage can swap near-ties
    assert clear.mean() > 0.5
    assert np.array_equal(labels[clear], probs.astype(np.float32).argmax(0)[clear])


def test_dataset_json_test_case_missing_from_inputs(trained: Path, tmp_path: Path) -> None:
    only = tmp_path / "only"
    only.mkdir()
    first = next(p for p in sorted((trained / "validation_data").iterdir()) if p.is_dir())
    shutil.copytree(first, only / first.name)
    raw = trained / "raw" / DATASET
    flags = monai_flags(
        trained,
        **{"infer.fold": 0, "infer.input": [only], "backends.monai.dataset_json": raw / "dataset.json"},
    )
    with pytest.raises(DataError, match=r"BraTS-GLI-00091-000: test case of .*dataset.json not found in the inputs"):
        api.predict(load_config(flags=flags))


def test_resume_refuses_an_epoch_beyond_the_schedule(trained: Path) -> None:
    flags = monai_flags(
        trained,
        **{
            "train.fold": 0,
            "backends.monai.stage2_epochs": 0,
            "backends.monai.resume": trained / "out" / "fold0" / "checkpoints" / "stage2_best.pt",
        },
    )
    with pytest.raises(ConfigError, match="is a stage-2 checkpoint but --stage2-epochs is 0"):
        api.train(load_config(flags=flags))


class TestMonaiContract(BackendContract):
    def make_backend(self) -> MonaiBundleBackend:
        return MonaiBundleBackend()

    @pytest.fixture
    def contract_model(self, trained: Path) -> ContractModel:
        cfg = load_config(flags=monai_flags(trained))
        options = MonaiOptions.model_validate(
            {
                **cfg.backends["monai"],
                "checkpoint": str(trained / "out" / "fold{fold}" / "checkpoints" / "stage2_best.pt"),
            }
        )
        cases = tuple(resolve_inputs([trained / "validation_data"]))
        return ContractModel(MonaiBundleBackend(), options, api.dataset_ref(cfg), cases, (0, 1))

    def test_skip_existing_keeps_predictions(self, contract_model: ContractModel, tmp_path: Path) -> None:
        m = contract_model
        request = PredictRequest(m.dataset, m.cases, tmp_path, (0,), m.device)
        first = m.backend.predict(request, m.options, progress=NullProgress())
        manifest = (tmp_path / "segkit_predict.json").read_text()
        again = PredictRequest(m.dataset, m.cases, tmp_path, (0,), m.device, overwrite=False)
        second = m.backend.predict(again, m.options, progress=NullProgress())
        assert len(first.files) == 2
        assert second.files == ()
        assert sorted(second.skipped) == sorted(c.case_id for c in m.cases)
        # nothing was predicted: the manifest still describes the run that wrote the files
        assert (tmp_path / "segkit_predict.json").read_text() == manifest
        assert json.loads(manifest)["cases"] == [f"{c.case_id}.nii.gz" for c in m.cases]
