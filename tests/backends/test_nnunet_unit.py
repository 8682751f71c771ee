"""nnU-Net backend: names, environment and the checks that run before any nnU-Net process starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segkit.backends.base import CaseImages, DatasetRef, PredictRequest, TrainRequest
from segkit.backends.nnunet import NnUNetBackend, NnUNetOptions, layout
from segkit.backends.nnunet.backend import _fingerprint_is_stale, input_lists, model_channel_order, nnunet_env
from segkit.errors import ConfigError, DataError, OutputError


def dataset(tmp_path: Path) -> DatasetRef:
    return DatasetRef("Dataset501_BraTSPostTx", tmp_path / "raw", tmp_path / "pre", tmp_path / "res")


def fake_planned(
    tmp_path: Path, n_cases: int = 6, configurations=("3d_fullres", "2d"), preprocessed=True
) -> DatasetRef:
    """Minimal files of a planned dataset (what the checks look at)."""
    ds = dataset(tmp_path)
    (ds.raw_dir / "imagesTr").mkdir(parents=True)
    (ds.raw_dir / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz", "channel_names": {}}))
    for i in range(n_cases):
        (ds.raw_dir / "imagesTr" / f"case{i}_0000.nii.gz").write_bytes(b"")
    plans = {
        "plans_name": "nnUNetPlans",
        "configurations": {c: {"data_identifier": f"nnUNetPlans_{c}"} for c in configurations},
    }
    ds.preprocessed_dir.mkdir(parents=True)
    (ds.preprocessed_dir / "nnUNetPlans.json").write_text(json.dumps(plans))
    if preprocessed:
        folder = ds.preprocessed_dir / "nnUNetPlans_3d_fullres"
        folder.mkdir()
        for i in range(n_cases):
            (folder / f"case{i}.pkl").write_bytes(b"")
    return ds


def test_derived_trainer_names() -> None:
    assert layout.derived_trainer_name(NnUNetOptions()) == "nnUNetTrainer"
    opts = NnUNetOptions(epochs=1, iterations_per_epoch=2, mirroring=False)
    assert layout.derived_trainer_name(opts) == "nnUNetTrainer_segkit_e1_i2_nomirror"
    assert layout.trainer_overrides(opts) == {
        "num_epochs": 1,
        "num_iterations_per_epoch": 2,
        "num_val_iterations_per_epoch": 1,
    }
    opts = NnUNetOptions(trainer="nnUNetTrainerDA5", epochs=50, checkpoint_every=5, val_iterations_per_epoch=7)
    assert layout.derived_trainer_name(opts) == "nnUNetTrainerDA5_segkit_e50_v7_s5"


def test_generated_trainer_module(tmp_path: Path) -> None:
    ds = dataset(tmp_path)
    name = layout.write_trainer_module(ds, NnUNetOptions(epochs=3))
    source = (layout.ext_trainer_dir(ds) / f"{name}.py").read_text()
    assert f"{name} = derive_trainer({name!r}, 'nnUNetTrainer', mirroring=True, num_epochs=3)" in source
    compile(source, "generated", "exec")


def test_plans_identifier_from_planner() -> None:
    assert NnUNetOptions(planner="resenc-m").plans_identifier == "nnUNetResEncUNetMPlans"
    assert NnUNetOptions(planner="resenc-l").planner_class == "nnUNetPlannerResEncL"
    with pytest.raises(ValueError, match="also set plans"):
        NnUNetOptions(planner="MyPlanner")
    assert NnUNetOptions(planner="MyPlanner", plans="MyPlans").plans_identifier == "MyPlans"


def test_model_dir_follows_nnunet_naming(tmp_path: Path) -> None:
    ds = dataset(tmp_path)
    opts = NnUNetOptions(planner="resenc-m", configuration="3d_fullres")
    assert layout.model_dir(ds, opts) == ds.results_dir / "nnUNetTrainer__nnUNetResEncUNetMPlans__3d_fullres"


def test_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_n_proc_DA", "9")
    monkeypatch.setenv("nnUNet_extTrainer", "/elsewhere")
    ds = dataset(tmp_path)
    env = nnunet_env(ds, processes=2)
    assert env["nnUNet_raw"] == str(ds.raw.resolve())
    assert env["nnUNet_results"] == str(ds.results.resolve())
    assert env["nnUNet_def_n_proc"] == "2"
    assert env["nnUNet_extTrainer"].split(":") == [str(layout.ext_trainer_dir(ds).resolve()), "/elsewhere"]
    assert env["nnUNet_n_proc_DA"] == "9"
    assert nnunet_env(ds, processes=1, da_processes=0)["nnUNet_n_proc_DA"] == "0"


def check_train(ds: DatasetRef, fold=0, **options) -> None:
    NnUNetBackend().check(TrainRequest(ds, fold, "cpu"), NnUNetOptions(**options))


def test_check_not_planned(tmp_path: Path) -> None:
    ds = dataset(tmp_path)
    with pytest.raises(DataError, match="has no plans nnUNetPlans") as info:
        check_train(ds)
    assert "segkit data plan" in (info.value.hint or "")


def test_check_configuration_not_in_plans(tmp_path: Path) -> None:
    ds = fake_planned(tmp_path)
    with pytest.raises(
        ConfigError, match=r"configuration '3d_lowres' is not in the plans .* \(available: 3d_fullres, 2d\)"
    ):
        check_train(ds, configuration="3d_lowres")


def test_check_not_preprocessed(tmp_path: Path) -> None:
    ds = fake_planned(tmp_path, preprocessed=False)
    with pytest.raises(DataError, match="planned but not preprocessed"):
        check_train(ds)


def test_check_fold_out_of_range(tmp_path: Path) -> None:
    ds = fake_planned(tmp_path)
    with pytest.raises(ConfigError, match=r"fold 5 is out of range"):
        check_train(ds, fold=5)
    ds.splits_file.write_text(json.dumps([{"train": ["a"], "val": ["b"]}] * 3))
    with pytest.raises(ConfigError, match=r"fold 3 is out of range: .* has 3 folds \(0-2\)"):
        check_train(ds, fold=3)
    check_train(ds, fold=2)


def test_check_fewer_than_five_cases(tmp_path: Path) -> None:
    ds = fake_planned(tmp_path, n_cases=3)
    with pytest.raises(DataError, match="needs at least 5 training cases; Dataset501_BraTSPostTx has 3") as info:
        check_train(ds, fold=0)
    assert "--fold all" in (info.value.hint or "")
    check_train(ds, fold="all")


def test_check_pretrained_and_continue(tmp_path: Path) -> None:
    ds = fake_planned(tmp_path)
    with pytest.raises(DataError, match="pretrained weights file not found"):
        check_train(ds, pretrained_weights=tmp_path / "nope.pth")
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(ConfigError, match="cannot be combined"):
        check_train(ds, pretrained_weights=tmp_path / "w.pth", continue_training=True)


def test_check_multi_gpu_needs_cuda(tmp_path: Path) -> None:
    ds = fake_planned(tmp_path)
    with pytest.raises(ConfigError, match="needs CUDA"):
        check_train(ds, num_gpus=2)


def test_check_predict_missing_model_and_checkpoint(tmp_path: Path) -> None:
    ds = fake_planned(tmp_path)
    case = CaseImages("c", {})
    request = PredictRequest(ds, (case,), tmp_path / "out", (0,), "cpu")
    with pytest.raises(DataError, match="no trained model nnUNetTrainer__nnUNetPlans__3d_fullres"):
        NnUNetBackend().check(request, NnUNetOptions())
    model = layout.model_dir(ds, NnUNetOptions())
    (model / "fold_0").mkdir(parents=True)
    (model / "plans.json").write_text(json.dumps({"plans_name": "nnUNetPlans"}))
    with pytest.raises(DataError, match=r"checkpoint_final\.pth: checkpoint not found"):
        NnUNetBackend().check(request, NnUNetOptions())
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    NnUNetBackend().check(request, NnUNetOptions())
    (model / "plans.json").write_text(json.dumps({"plans_name": "nnUNetResEncUNetMPlans"}))
    with pytest.raises(DataError, match="holds a model of plans nnUNetResEncUNetMPlans"):
        NnUNetBackend().check(request, NnUNetOptions())
    assert NnUNetBackend().trained_folds(ds, NnUNetOptions()) == (0,)


def test_check_continue_needs_a_checkpoint(tmp_path: Path) -> None:
    ds = fake_planned(tmp_path)
    with pytest.raises(DataError, match="nothing to continue"):
        check_train(ds, continue_training=True)


def test_check_refuses_to_retrain_a_trained_fold(tmp_path: Path) -> None:
    ds = fake_planned(tmp_path)
    fold = layout.fold_dir(layout.model_dir(ds, NnUNetOptions()), 0)
    fold.mkdir(parents=True)
    (fold / "checkpoint_final.pth").write_bytes(b"")
    with pytest.raises(OutputError, match="fold 0 is already trained or started") as info:
        check_train(ds)
    assert "--continue" in (info.value.hint or "")
    check_train(ds, continue_training=True)
    check_train(ds, overwrite=True)
    with pytest.raises(ConfigError, match="cannot be combined"):
        check_train(ds, continue_training=True, overwrite=True)


def test_prediction_channels_follow_the_models_dataset_json(tmp_path: Path) -> None:
    """A model trained on another channel order gets each modality in its own input (never implicit)."""
    model = tmp_path / "model"
    model.mkdir()
    assert model_channel_order(model) == ["t1n", "t1c", "t2w", "t2f"]
    (model / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "FLAIR", "1": "T1", "2": "t1ce", "3": "T2"}})
    )
    order = model_channel_order(model)
    assert order == ["t2f", "t1n", "t1c", "t2w"]
    case = CaseImages("c", {m: Path(f"/data/c-{m}.nii.gz") for m in ("t1c", "t1n", "t2f", "t2w")})
    assert [Path(p).name for p in input_lists([case], order)[0]] == [
        "c-t2f.nii.gz",
        "c-t1n.nii.gz",
        "c-t1c.nii.gz",
        "c-t2w.nii.gz",
    ]
    (model / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}}))
    with pytest.raises(DataError, match="not a BraTS modality"):
        model_channel_order(model)
    (model / "dataset.json").write_text("[]")  # not silently read as segkit's order
    with pytest.raises(DataError, match=r"dataset\.json: expected a JSON object"):
        model_channel_order(model)


def test_stale_fingerprint_is_recomputed(tmp_path: Path) -> None:
    ds = fake_planned(tmp_path)
    (ds.raw_dir / "dataset.json").write_text(json.dumps({"numTraining": 6}))
    fingerprint = ds.preprocessed_dir / "dataset_fingerprint.json"
    assert not _fingerprint_is_stale(ds)
    fingerprint.write_text(json.dumps({"shapes_after_crop": [[1, 1, 1]] * 6}))
    assert not _fingerprint_is_stale(ds)
    fingerprint.write_text(json.dumps({"shapes_after_crop": [[1, 1, 1]] * 5}))
    assert _fingerprint_is_stale(ds)


def test_trainer_must_be_a_class_name() -> None:
    with pytest.raises(ValueError, match="not a trainer class name"):
        NnUNetOptions(trainer="nnUNetTrainer'); import os; ('")
