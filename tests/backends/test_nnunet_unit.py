"""nnU-Net backend: names, environment and the checks that run before any nnU-Net process starts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

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
    assert f"{name} = derive_trainer(\n        {name!r}, 'nnUNetTrainer', mirroring=True, exclude=" in source
    assert "num_epochs=3" in source
    compile(source, "generated", "exec")


def test_derived_trainer_names_read_back() -> None:
    opts = NnUNetOptions()
    for trainer in ("nnUNetTrainer_segkit_e1_i2", "MyTrainer_segkit_e50_v7_s5_nomirror", "A_segkit_B_segkit_e3"):
        back = layout.options_for_trainer(opts, trainer)
        assert layout.derived_trainer_name(back) == trainer
    assert layout.options_for_trainer(opts, "nnUNetTrainer_segkit_e1_i2").trainer == "nnUNetTrainer"
    assert layout.options_for_trainer(opts, "nnUNetTrainer_segkit_e1_i2").epochs == 1
    # not a segkit name: the trainer itself, no overrides
    odd = layout.options_for_trainer(NnUNetOptions(epochs=4), "nnUNetTrainer_segkit_x9")
    assert (odd.trainer, odd.epochs) == ("nnUNetTrainer_segkit_x9", None)


TRAINER_MODULE = """
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_SegkitTiny(nnUNetTrainer):
    tiny = True
"""


def test_derived_trainer_from_a_trainer_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--epochs on top of a trainer that lives in a backend's trainer folder, found as nnU-Net finds trainers."""
    pytest.importorskip("nnunetv2")
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    folder = tmp_path / "tiny_trainers"
    folder.mkdir()
    (folder / "tiny_trainer_module.py").write_text(TRAINER_MODULE)
    ds = dataset(tmp_path)
    # a stale module of a trainer that cannot be found in this process must not break the lookup
    layout.write_trainer_module(ds, NnUNetOptions(trainer="nnUNetTrainer_Gone", epochs=1))
    name = layout.write_trainer_module(ds, NnUNetOptions(trainer="nnUNetTrainer_SegkitTiny", epochs=1))
    assert name == "nnUNetTrainer_SegkitTiny_segkit_e1"
    env = nnunet_env(ds, processes=1, trainer_folders=(folder,))
    monkeypatch.setenv("nnUNet_extTrainer", env["nnUNet_extTrainer"])
    cls = recursive_find_trainer_class_by_name(name)
    assert cls.__name__ == name
    assert [c.__name__ for c in cls.__mro__[:3]] == [name, "nnUNetTrainer_SegkitTiny", "nnUNetTrainer"]
    assert cls.tiny is True


class TinyOptions(NnUNetOptions):
    tiny_note: str = Field("plain", description="An option only this backend has.")


class TinyNnUNet(NnUNetBackend):
    name = "tiny-nnunet"
    Options = TinyOptions
    worker_module = "tiny_worker"
    network_modules = ("tiny_networks",)

    def edit_plans(self, plans: dict[str, Any], options: NnUNetOptions) -> dict[str, Any]:
        assert isinstance(options, TinyOptions)
        plans["configurations"]["3d_tiny"] = {"inherits_from": "3d_fullres", "batch_size": 1, "note": options.tiny_note}
        return plans


def test_subclass_options_env_and_plans_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segkit.backends.base import PrepareRequest
    from segkit.backends.nnunet import backend as backend_module
    from segkit.progress import NullProgress

    ds = fake_planned(tmp_path)
    folder = tmp_path / "tiny_trainers"
    monkeypatch.setattr(TinyNnUNet, "trainer_folders", (folder,))
    tiny = TinyNnUNet()
    opts = tiny.options_of({"tiny_note": "hello"})
    assert isinstance(opts, TinyOptions)
    converted = tiny.options_of(NnUNetOptions(epochs=2))
    assert isinstance(converted, TinyOptions)
    assert (converted.epochs, converted.tiny_note, converted.model_fields_set) == (2, "plain", {"epochs"})
    with pytest.raises(ConfigError, match="expected tiny-nnunet options"):
        tiny.options_of(3)
    assert str(folder.resolve()) in tiny.env(ds, processes=1)["nnUNet_extTrainer"].split(os.pathsep)
    calls: list[tuple[str, str, dict[str, Any]]] = []

    def fake_worker(module: str, action: str, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        calls.append((module, action, payload))
        if action == "plan":
            return {"plans_file": str(ds.preprocessed_dir / "nnUNetPlans.json")}
        return {"preprocessed": payload["configurations"]}

    monkeypatch.setattr(backend_module, "run_worker", fake_worker)
    result = tiny.prepare(PrepareRequest(ds, configurations=("3d_tiny",)), opts, progress=NullProgress())
    plans = json.loads((ds.preprocessed_dir / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["3d_tiny"]["note"] == "hello"
    assert result.configurations == ("3d_tiny",)
    assert [(m, a) for m, a, _ in calls] == [("tiny_worker", "plan"), ("tiny_worker", "preprocess")]
    assert all(p["network_modules"] == ["tiny_networks"] for _, _, p in calls)
    # an unknown configuration is refused before any preprocessing
    calls.clear()
    with pytest.raises(ConfigError, match=r"configuration\(s\) 3d_huge not in the plans"):
        tiny.prepare(PrepareRequest(ds, configurations=("3d_huge",)), opts, progress=NullProgress())
    assert [a for _, a, _ in calls] == ["plan"]


def trained_model(ds: DatasetRef, trainer: str, fold: int = 0) -> Path:
    model = ds.results_dir / f"{trainer}__nnUNetPlans__3d_fullres"
    (model / f"fold_{fold}").mkdir(parents=True)
    (model / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(b"")
    (model / "plans.json").write_text(json.dumps({"plans_name": "nnUNetPlans"}))
    return model


def test_infer_finds_the_only_trained_model(tmp_path: Path) -> None:
    ds = fake_planned(tmp_path)
    backend = NnUNetBackend()
    trained_model(ds, "nnUNetTrainer_segkit_e1_i2", fold=1)
    opts = backend.model_options(ds, NnUNetOptions())
    assert (opts.trainer, opts.epochs, opts.iterations_per_epoch) == ("nnUNetTrainer", 1, 2)
    assert backend.trained_folds(ds, NnUNetOptions()) == (1,)
    request = PredictRequest(ds, (CaseImages("c", {}),), tmp_path / "out", (1,), "cpu")
    backend.check(request, NnUNetOptions())
    # a model of another trainer: --trainer picks, no --trainer lists both
    trained_model(ds, "nnUNetTrainerDA5")
    with pytest.raises(
        DataError, match=r"^2 trained models of Dataset501_BraTSPostTx match: nnUNetTrainerDA5__"
    ) as info:
        backend.model_options(ds, NnUNetOptions())
    assert "nnUNetTrainer_segkit_e1_i2__nnUNetPlans__3d_fullres" in str(info.value)
    assert backend.model_options(ds, NnUNetOptions(trainer="nnUNetTrainer")).epochs == 1
    assert backend.model_options(ds, NnUNetOptions(trainer="nnUNetTrainerDA5")).trainer == "nnUNetTrainerDA5"
    # an explicit schedule names its model exactly
    assert backend.model_options(ds, NnUNetOptions(epochs=7)).epochs == 7


def test_fold_indices(tmp_path: Path) -> None:
    ds = fake_planned(tmp_path)
    assert NnUNetBackend().fold_indices(ds, NnUNetOptions()) == (0, 1, 2, 3, 4)
    ds.splits_file.write_text(json.dumps([{"train": ["a"], "val": ["b"]}] * 3))
    assert NnUNetBackend().fold_indices(ds, NnUNetOptions()) == (0, 1, 2)


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


def test_worker_imports_the_network_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from segkit.backends.nnunet.worker import import_network_modules
    from segkit.errors import BackendError

    (tmp_path / "tiny_networks_ok.py").write_text("LOADED = True\n")
    (tmp_path / "tiny_networks_broken.py").write_text("raise ImportError('no mamba here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import_network_modules({"network_modules": ["tiny_networks_ok"]})
    assert sys.modules["tiny_networks_ok"].LOADED
    with pytest.raises(
        BackendError, match=r"^network module tiny_networks_broken cannot be imported \(ImportError: no"
    ):
        import_network_modules({"network_modules": ["tiny_networks_broken"]})
    import_network_modules({})
