"""`segkit train` / `segkit infer` / `segkit data plan` wiring, with the FakeBackend injected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import segkit.backends.registry as registry
from segkit.io import read_volume
from segkit.testing import fake_entry_points

REAL_DISCOVER = registry.discover


@pytest.fixture
def with_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "discover", lambda: {**REAL_DISCOVER(), **fake_entry_points()})


@pytest.fixture
def prepared(cohort: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    assert run_cli("data", "prepare", "--workers", "1").code == 0
    return tmp_path


def test_train_and_infer_with_fake_backend(with_fake, prepared: Path, run_cli) -> None:
    result = run_cli("train", "--backend", "fake", "--fold", "0", "1", "--device", "cpu", "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    assert [r["fold"] for r in rows] == [0, 1]
    result = run_cli(
        "infer", "--backend", "fake", "-i", "training_data", "-o", "preds", "--fold", "0", "1", "--device", "cpu"
    )
    assert result.code == 0, result.err
    files = sorted((prepared / "preds").glob("*.nii.gz"))
    assert len(files) == 6
    pred = read_volume(files[0])
    assert set(np.unique(pred.data)) <= {0, 2}


def test_backend_option_flag_and_yaml(with_fake, prepared: Path, run_cli) -> None:
    (prepared / "run.yaml").write_text(
        "train:\n  backend: fake\n  device: cpu\nbackends:\n  fake:\n    quantile: 0.5\n"
    )
    result = run_cli("train", "--config", prepared / "run.yaml", "--option", "modality=t1c", "--json")
    assert result.code == 0, result.err
    model = json.loads(
        (prepared / "outputs/nnunet/nnUNet_results/Dataset501_BraTSPostTx/fake/fold_0/model.json").read_text()
    )
    assert model["modality"] == "t1c"


def test_flag_of_another_backend_is_refused(with_fake, prepared: Path, run_cli) -> None:
    result = run_cli("train", "--backend", "fake", "--epochs", "3")
    assert result.code == 2
    assert (
        result.err.splitlines()[0] == "error: --epochs is an option of the nnunet and umamba2 backends, not of 'fake'"
    )


def test_bad_backend_option(with_fake, prepared: Path, run_cli) -> None:
    result = run_cli("train", "--backend", "fake", "--option", "quantil=0.5")
    assert result.code == 2
    assert "backends.fake.quantil: unknown key; did you mean 'quantile'?" in result.err


def test_unknown_backend_suggestion(run_cli) -> None:
    result = run_cli("train", "--backend", "nnunte")
    assert result.code == 2
    assert "did you mean 'nnunet'?" in result.err


def test_bad_fold_value(run_cli) -> None:
    result = run_cli("train", "--fold", "first")
    assert result.code == 2
    assert "--fold 'first'" in result.err


def test_cuda_requested_but_absent(with_fake, prepared: Path, run_cli) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_cli("train", "--backend", "nnunet", "--device", "cuda")
    assert result.code == 1
    assert result.err.splitlines()[0] == "error: CUDA was requested but no CUDA device is available"


def test_nnunet_dataset_not_planned(prepared: Path, run_cli) -> None:
    result = run_cli("train", "--backend", "nnunet", "--device", "cpu")
    assert result.code == 1
    assert "has no plans nnUNetPlans" in result.err


def test_nnunet_dataset_not_prepared(tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("data", "plan")
    assert result.code == 1
    assert "not a prepared nnU-Net dataset" in result.err


def test_run_evaluation_needs_ground_truth(with_fake, prepared: Path, run_cli) -> None:
    result = run_cli("infer", "--backend", "fake", "-i", "training_data", "--fold", "0", "--run-evaluation")
    assert result.code == 2
    assert "--ground-truth" in result.err


def test_infer_then_evaluate(with_fake, prepared: Path, run_cli) -> None:
    assert run_cli("train", "--backend", "fake", "--device", "cpu").code == 0
    args = (
        "infer",
        "--backend",
        "fake",
        "-i",
        "training_data",
        "-o",
        "preds",
        "--fold",
        "0",
        "--device",
        "cpu",
        "--run-evaluation",
        "--ground-truth",
        "training_data",
        "--set",
        "eval.skip_nnunet=true",
        "--json",
    )
    result = run_cli(*args)
    assert result.code == 0, result.err
    (row,) = json.loads(result.out)
    assert row["evaluation"]["cases"]["scored"] == 6
    # Beside the predictions, never inside them; a second run replaces the reports of the first.
    assert (prepared / "preds-evaluation" / "lesion_metrics.json").is_file()
    assert (prepared / "preds-evaluation" / "nnunet_metrics.json").is_file()
    assert not (prepared / "preds" / "evaluation").exists()
    again = run_cli(*args)
    assert again.code == 0, again.err


def test_run_evaluation_ground_truth_must_exist(with_fake, prepared: Path, run_cli) -> None:
    result = run_cli(
        "infer", "--backend", "fake", "-i", "training_data", "--fold", "0", "--run-evaluation", "--ground-truth", "nope"
    )
    assert result.code == 1
    assert "nope: ground-truth folder not found" in result.err
    assert not (prepared / "outputs" / "predictions").exists()


def test_infer_refuses_output_inside_an_input(with_fake, prepared: Path, run_cli) -> None:
    assert run_cli("train", "--backend", "fake", "--fold", "0", "--device", "cpu").code == 0
    before = sorted(p.name for p in (prepared / "training_data").iterdir())
    result = run_cli("infer", "--backend", "fake", "-i", "training_data", "-o", "training_data/preds", "--fold", "0")
    assert result.code == 1
    assert result.err.splitlines()[0] == (
        "error: training_data/preds: the output overlaps the input folder training_data; "
        "segkit never writes into its inputs"
    )
    assert sorted(p.name for p in (prepared / "training_data").iterdir()) == before
