"""Real nnU-Net on CPU: synthetic cohort -> prepare -> plan -> train -> predict, resume, conformance.

Six 32^3 cases keep it to a few minutes on two cores; every stage runs nnU-Net for real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import Field

from segkit import api
from segkit.backends.base import folds_of
from segkit.backends.nnunet import NnUNetBackend, NnUNetOptions
from segkit.config import load_config
from segkit.data.inputs import resolve_inputs
from segkit.data.synth import write_cohort
from segkit.io import read_volume
from segkit.progress import RecordingProgress
from segkit.testing import BackendContract, ContractModel

pytestmark = pytest.mark.slow

FAST = {
    "backends.nnunet.epochs": 1,
    "backends.nnunet.iterations_per_epoch": 2,
    "backends.nnunet.mirroring": False,
    "backends.nnunet.data_augmentation_processes": 0,
    "backends.nnunet.num_processes": 1,
    "train.device": "cpu",
    "infer.device": "cpu",
}


def config(root: Path, *, fast: bool = True, **flags):
    base = {
        "nnunet.raw": root / "raw",
        "nnunet.preprocessed": root / "pre",
        "nnunet.results": root / "res",
        "prepare.train_sources": [root / "training_data"],
        "prepare.test_sources": [root / "validation_data"],
        "prepare.workers": 1,
        "plan.num_processes": 1,
    }
    schedule = FAST if fast else {"backends.nnunet.num_processes": 1, "infer.device": "cpu"}
    return load_config(flags={**base, **schedule, **flags})


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nnunet_e2e")
    write_cohort(root / "training_data", cases=6, shape=(32, 32, 32), seed=3)
    # test cases on another grid: anisotropic spacing and a different shape
    write_cohort(root / "validation_data", cases=2, shape=(30, 34, 26), spacing=(1.0, 0.9, 1.2), seed=3, start=90)
    cfg = config(root)
    api.prepare(cfg)
    result = api.plan(cfg)
    assert result.configurations == ("3d_fullres",)
    assert "3d_fullres" in json.loads(result.plans_file.read_text())["configurations"]
    return root


@pytest.fixture(scope="module")
def trained(planned: Path) -> Path:
    progress = RecordingProgress()
    results = api.train(config(planned, **{"train.fold": 0}), progress=progress)
    assert len(results) == 1
    assert results[0].checkpoint is not None
    assert results[0].checkpoint.name == "checkpoint_final.pth"
    assert "validation_dice" in results[0].metrics
    logs = [e[1] for e in progress.events if e[0] == "log"]
    assert any(line.startswith("fold 0 epoch 1/1  train_loss") for line in logs), logs
    assert (results[0].model_dir / "fold_0" / "segkit_config.yaml").is_file()
    return planned


def test_train_then_predict_on_the_input_grid(trained: Path) -> None:
    out = trained / "predictions"
    cfg = config(trained, **{"infer.input": [trained / "validation_data"], "infer.output": out})
    (result,) = api.predict(cfg)
    assert sorted(p.name for p in result.files) == ["BraTS-GLI-00090-000.nii.gz", "BraTS-GLI-00091-000.nii.gz"]
    for case in resolve_inputs([trained / "validation_data"]):
        pred = read_volume(out / f"{case.case_id}.nii.gz")
        ref = read_volume(case.images["t1c"])
        assert pred.shape == ref.shape == (30, 34, 26)
        assert np.allclose(pred.affine, ref.affine, atol=1e-4)
        assert set(np.unique(pred.data)) <= {0, 1, 2, 3, 4}
    manifest = json.loads((out / "segkit_predict.json").read_text())
    assert manifest["folds"] == [0]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_infer_finds_the_only_trained_model_without_its_trainer(trained: Path, tmp_path: Path) -> None:
    """`segkit train --epochs 1 --iterations-per-epoch 2` then `segkit infer` with no trainer options."""
    cfg = config(trained, fast=False, **{"infer.input": [trained / "validation_data"], "infer.output": tmp_path / "p"})
    (result,) = api.predict(cfg)
    assert result.folds == (0,)
    assert len(result.files) == 2
    manifest = json.loads((tmp_path / "p" / "segkit_predict.json").read_text())
    assert manifest["model"] == "nnUNetTrainer_segkit_e1_i2_nomirror__nnUNetPlans__3d_fullres"
    results = trained / "res" / "Dataset501_BraTSPostTx"
    other = results / "nnUNetTrainerDA5__nnUNetPlans__3d_fullres"
    shutil.copytree(results / manifest["model"], other)
    try:
        from segkit.errors import DataError

        with pytest.raises(DataError, match=r"^2 trained models of Dataset501_BraTSPostTx match: nnUNetTrainerDA5__"):
            api.predict(config(trained, fast=False, **{"infer.input": [trained / "validation_data"]}))
    finally:
        shutil.rmtree(other)


def test_interrupted_training_resumes_with_continue(planned: Path) -> None:
    flags = {
        "train.fold": 1,
        "backends.nnunet.epochs": 2,
        "backends.nnunet.checkpoint_every": 1,
        "backends.nnunet.final_validation": False,
    }

    class StopAfterFirstEpoch(RecordingProgress):
        def log(self, message: str) -> None:
            super().log(message)
            if message.startswith("fold 1 epoch 1/2"):
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.train(config(planned, **flags), progress=StopAfterFirstEpoch())
    fold_dir = next((planned / "res" / "Dataset501_BraTSPostTx").glob("*_e2_*")) / "fold_1"
    assert (fold_dir / "checkpoint_latest.pth").is_file()
    assert not (fold_dir / "checkpoint_final.pth").exists()
    progress = RecordingProgress()
    api.train(config(planned, **flags, **{"backends.nnunet.continue_training": True}), progress=progress)
    logs = [e[1] for e in progress.events if e[0] == "log"]
    assert "fold 1: resuming from checkpoint_latest.pth at epoch 1" in logs
    assert not any(line.startswith("fold 1 epoch 1/2") for line in logs)
    assert any(line.startswith("fold 1 epoch 2/2") for line in logs)
    assert (fold_dir / "checkpoint_final.pth").is_file()


def test_pretrained_weights_from_another_configuration_are_refused(trained: Path, tmp_path: Path) -> None:
    import torch

    ckpt_path = next((trained / "res" / "Dataset501_BraTSPostTx").glob("*_e1_i2_*")) / "fold_0" / "checkpoint_final.pth"
    saved = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    key = next(k for k in saved["network_weights"] if "seg_layers" not in k and k.endswith("weight"))
    saved["network_weights"][key] = torch.zeros(3, 3)
    bad = tmp_path / "other.pth"
    torch.save(saved, bad)
    flags = {"train.fold": 2, "backends.nnunet.pretrained_weights": bad}
    from segkit.errors import BackendError

    with pytest.raises(BackendError, match=r"does not fit this network: .* has shape \(3, 3\)"):
        api.train(config(trained, **flags))
    # The same refusal with --overwrite of a trained fold keeps the old model.
    before = ckpt_path.read_bytes()
    overwrite = {"train.fold": 0, "backends.nnunet.pretrained_weights": bad, "backends.nnunet.overwrite": True}
    with pytest.raises(BackendError, match="does not fit this network"):
        api.train(config(trained, **overwrite))
    assert ckpt_path.read_bytes() == before
    assert not [p.name for p in ckpt_path.parent.parent.iterdir() if p.name.startswith(".")]


def test_predict_writes_a_missing_derived_trainer_module(trained: Path, tmp_path: Path) -> None:
    # A model folder copied without segkit's trainer folder: nnU-Net must still find nnUNetTrainer_segkit_...
    shutil.rmtree(trained / "res" / "segkit_trainers")
    cfg = config(trained, **{"infer.input": [trained / "validation_data"], "infer.output": tmp_path / "p"})
    (result,) = api.predict(cfg)
    assert len(result.files) == 2


def test_a_slim_copy_predicts_exactly_what_the_full_model_predicts(trained: Path, tmp_path: Path) -> None:
    """`segkit model slim -o`: weights-only checkpoints, a model folder that stands alone, the same label maps."""
    import torch

    from segkit.backends.nnunet.slim import slim_model

    flags = {"infer.input": [trained / "validation_data"], "infer.save_probabilities": True}
    (full,) = api.predict(config(trained, **flags, **{"infer.output": tmp_path / "full"}))
    manifest = json.loads((tmp_path / "full" / "segkit_predict.json").read_text())
    model = trained / "res" / "Dataset501_BraTSPostTx" / manifest["model"]
    slim_results = tmp_path / "slim_results"  # no segkit_trainers/ folder: predict writes the trainer module
    report = slim_model(model, output=slim_results / model.parent.name / model.name)
    (final,) = [f for f in report.files if f.source.name == "checkpoint_final.pth"]
    assert final.size_after < 0.6 * final.size_before
    assert "optimizer_state" not in torch.load(final.target, weights_only=True)
    (slim,) = api.predict(
        config(trained, **flags, **{"nnunet.results": slim_results, "infer.output": tmp_path / "slim"})
    )
    assert sorted(p.name for p in slim.files) == sorted(p.name for p in full.files)
    for path in full.files:
        assert np.array_equal(read_volume(path).data, read_volume(tmp_path / "slim" / path.name).data), path.name
        # bit-identical probabilities, so the equality above is not that of two constant label maps
        case = path.name.removesuffix(".nii.gz")
        with np.load(tmp_path / "full" / f"{case}.npz") as a, np.load(tmp_path / "slim" / f"{case}.npz") as b:
            assert np.array_equal(a["probabilities"], b["probabilities"]), case


TINY_TRAINER = """
from pathlib import Path

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_SegkitTiny(nnUNetTrainer):
    def on_train_start(self):
        super().on_train_start()
        # proof that this class ran, with the batch size of the configuration the plans hook added
        Path(self.output_folder, "tiny_trainer_ran").write_text(str(self.configuration_manager.batch_size))
"""


class TinyOptions(NnUNetOptions):
    tiny_batch_size: int = Field(1, ge=1, description="Batch size of the added configuration.")


def test_a_subclass_plans_trains_and_predicts_with_its_own_trainer(planned: Path, tmp_path: Path) -> None:
    """A backend built on the nnU-Net adapter: its name, options, trainer folder and plans hook."""
    from segkit.backends.base import PredictRequest, PrepareRequest, TrainRequest

    folder = tmp_path / "tiny_trainers"
    folder.mkdir()
    (folder / "tiny_trainer.py").write_text(TINY_TRAINER)

    class TinyNnUNet(NnUNetBackend):
        name = "tiny-nnunet"
        Options = TinyOptions
        trainer_folders = (folder,)

        def edit_plans(self, plans: dict[str, Any], options: NnUNetOptions) -> dict[str, Any]:
            assert isinstance(options, TinyOptions)
            plans["configurations"]["3d_tiny"] = {"inherits_from": "3d_fullres", "batch_size": options.tiny_batch_size}
            return plans

    backend = TinyNnUNet()
    dataset = api.dataset_ref(config(planned))
    options = TinyOptions(
        configuration="3d_tiny",
        trainer="nnUNetTrainer_SegkitTiny",
        epochs=1,
        iterations_per_epoch=2,
        mirroring=False,
        final_validation=False,
        data_augmentation_processes=0,
        num_processes=1,
    )
    prepared = backend.prepare(
        PrepareRequest(dataset, configurations=("3d_tiny",), num_processes=1), options, progress=RecordingProgress()
    )
    assert prepared.configurations == ("3d_tiny",)
    assert json.loads(prepared.plans_file.read_text())["configurations"]["3d_tiny"]["batch_size"] == 1
    trained = backend.train(TrainRequest(dataset, 0, "cpu"), options, progress=RecordingProgress())
    assert trained.model_dir.name == "nnUNetTrainer_SegkitTiny_segkit_e1_i2_nomirror__nnUNetPlans__3d_tiny"
    assert (trained.model_dir / "fold_0" / "tiny_trainer_ran").read_text() == "1"
    assert trained.checkpoint is not None
    out = tmp_path / "predictions"
    cases = tuple(resolve_inputs([planned / "validation_data"]))
    result = backend.predict(PredictRequest(dataset, cases, out, (0,), "cpu"), options, progress=RecordingProgress())
    assert len(result.files) == 2
    for case in cases:
        assert read_volume(out / f"{case.case_id}.nii.gz").shape == (30, 34, 26)
    manifest = json.loads((out / "segkit_predict.json").read_text())
    assert manifest["backend"] == "tiny-nnunet"
    assert manifest["model"] == trained.model_dir.name


class TestNnUNetContract(BackendContract):
    def make_backend(self) -> NnUNetBackend:
        return NnUNetBackend()

    @pytest.fixture
    def contract_model(self, trained: Path) -> ContractModel:
        cfg = config(trained)
        options = NnUNetOptions.model_validate(cfg.backends["nnunet"])
        cases = tuple(resolve_inputs([trained / "validation_data"]))
        return ContractModel(NnUNetBackend(), options, api.dataset_ref(cfg), cases, folds_of(0))
