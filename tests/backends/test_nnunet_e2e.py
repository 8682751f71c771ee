"""Real nnU-Net on CPU: synthetic cohort -> prepare -> plan -> train -> predict, resume, conformance.

Six 32^3 cases keep it to a few minutes on two cores; every stage runs nnU-Net for real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

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


def config(root: Path, **flags):
    base = {
        "nnunet.raw": root / "raw",
        "nnunet.preprocessed": root / "pre",
        "nnunet.results": root / "res",
        "prepare.train_sources": [root / "training_data"],
        "prepare.test_sources": [root / "validation_data"],
        "prepare.workers": 1,
        "plan.num_processes": 1,
    }
    return load_config(flags={**base, **FAST, **flags})


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


class TestNnUNetContract(BackendContract):
    def make_backend(self) -> NnUNetBackend:
        return NnUNetBackend()

    @pytest.fixture
    def contract_model(self, trained: Path) -> ContractModel:
        cfg = config(trained)
        options = NnUNetOptions.model_validate(cfg.backends["nnunet"])
        cases = tuple(resolve_inputs([trained / "validation_data"]))
        return ContractModel(NnUNetBackend(), options, api.dataset_ref(cfg), cases, folds_of(0))
