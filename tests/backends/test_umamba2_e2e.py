"""Real UMamba2 on CPU through the commands: plan -> train (accumulation 2) -> infer -> nnUNetv2_predict -> slim.

Six 32^3 cases; nnU-Net's ResEnc-M planner gives them 3 stages of 32-128 features, so the Mamba2 layer sees
7^3 = 343 tokens of 128 channels (headdim 64). Every command is the installed ``segkit`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segkit.data.synth import write_cohort
from segkit.io import read_volume

pytestmark = pytest.mark.slow

DATASET = "Dataset501_BraTSPostTx"
PLANS = "nnUNetResEncUNetMPlans"
CONFIGURATION = "3d_fullres_umamba2"
BIN = Path(sys.executable).parent


def run(root: Path, *args: str, env: dict[str, str] | None = None, tool: str = "segkit") -> str:
    full = {**os.environ, **(env or {})}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        if env is None or name not in env:
            full.pop(name, None)
    done = subprocess.run(
        [str(BIN / tool), *args], cwd=root, env=full, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, f"{tool} {' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def paths(root: Path) -> list[str]:
    return [
        "--nnunet-raw",
        str(root / "raw"),
        "--nnunet-preprocessed",
        str(root / "pre"),
        "--nnunet-results",
        str(root / "res"),
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("umamba2_e2e")
    write_cohort(root / "training_data", cases=6, shape=(32, 32, 32), seed=5)
    write_cohort(root / "validation_data", cases=2, shape=(30, 34, 26), spacing=(1.0, 0.9, 1.2), seed=5, start=90)
    run(root, "data", "prepare", "--nnunet-raw", str(root / "raw"), "--train-sources", "training_data",
        "--test-sources", "validation_data")  # fmt: skip
    run(root, "data", "plan", "--backend", "umamba2", "-d", "501", "-j", "1", *paths(root),
        "--set", "backends.umamba2.headdim=64")  # fmt: skip
    plans = json.loads((root / "pre" / DATASET / f"{PLANS}.json").read_text())
    arch = plans["configurations"][CONFIGURATION]["architecture"]
    assert arch["network_class_name"] == "segkit.backends.umamba2.network.UMambaBot2"
    assert arch["arch_kwargs"]["headdim"] == 64
    out = run(root, "train", "--backend", "umamba2", "-d", "501", "--fold", "0", "--device", "cpu", *paths(root),
              "--epochs", "1", "--iterations-per-epoch", "2", "--accumulation-steps", "2", "--da-processes", "0",
              "-j", "1", "--no-final-validation")  # fmt: skip
    assert "nnUNetTrainerUMamba2_segkit_e1_i2_a2" in out
    return root


def model_dir(root: Path) -> Path:
    return root / "res" / DATASET / f"nnUNetTrainerUMamba2_segkit_e1_i2_a2__{PLANS}__{CONFIGURATION}"


def labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read_volume(p).data for p in sorted(folder.glob("*.nii.gz"))}


def test_trained_with_accumulation_and_predicts_on_the_input_grid(trained: Path) -> None:
    log = next((model_dir(trained) / "fold_0").glob("training_log_*.txt")).read_text()
    assert "accumulation" in log.lower()
    run(trained, "infer", "--backend", "umamba2", "-d", "501", "-i", "validation_data", "-o", "pred",
        "--fold", "0", "--device", "cpu", "-j", "1", "--mirror-axes", "1", "2", *paths(trained))  # fmt: skip
    manifest = json.loads((trained / "pred" / "segkit_predict.json").read_text())
    assert manifest["mirror_axes"] == [1, 2]
    predicted = labels(trained / "pred")
    assert len(predicted) == 2
    for case in sorted((trained / "validation_data").iterdir()):
        if case.is_dir():
            image = read_volume(next(case.glob("*-t1n.nii.gz"))).data
            assert predicted[f"{case.name}.nii.gz"].shape == image.shape


def test_nnunet_predict_uses_the_same_model(trained: Path, tmp_path: Path) -> None:
    run(trained, "infer", "--backend", "umamba2", "-d", "501", "-i", "validation_data", "-o", str(tmp_path / "segkit"),
        "--fold", "0", "--device", "cpu", "-j", "1", "--disable-tta", *paths(trained))  # fmt: skip
    env = {
        "nnUNet_raw": str(trained / "raw"),
        "nnUNet_preprocessed": str(trained / "pre"),
        "nnUNet_results": str(trained / "res"),
        "nnUNet_extTrainer": str(trained / "res" / "segkit_trainers"),  # what docs/umamba2.md documents
    }
    images = trained / "raw" / DATASET / "imagesTs"
    run(trained, "-d", "501", "-c", CONFIGURATION, "-p", PLANS, "-tr", "nnUNetTrainerUMamba2_segkit_e1_i2_a2",
        "-f", "0", "-i", str(images), "-o", str(tmp_path / "nnunet"), "-device", "cpu", "--disable_tta",
        "-npp", "1", "-nps", "1", env=env, tool="nnUNetv2_predict")  # fmt: skip
    ours, theirs = labels(tmp_path / "segkit"), labels(tmp_path / "nnunet")
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        assert np.array_equal(ours[name], theirs[name]), name


def test_slim_model_predicts_identically(trained: Path, tmp_path: Path) -> None:
    import torch

    copy = tmp_path / "res"
    shutil.copytree(trained / "res", copy, symlinks=True)
    slim_model = copy / DATASET / model_dir(trained).name
    run(trained, "model", "slim", str(slim_model))
    checkpoint = slim_model / "fold_0" / "checkpoint_final.pth"
    assert checkpoint.stat().st_size < (model_dir(trained) / "fold_0" / "checkpoint_final.pth").stat().st_size
    torch.load(checkpoint, map_location="cpu", weights_only=True)
    common = ["infer", "--backend", "umamba2", "-d", "501", "-i", "validation_data", "--fold", "0", "--device", "cpu",
              "-j", "1", "--mirror-axes", "1", "2", "--nnunet-raw", str(trained / "raw"),
              "--nnunet-preprocessed", str(trained / "pre")]  # fmt: skip
    run(trained, *common, "-o", str(tmp_path / "full"), "--nnunet-results", str(trained / "res"))
    run(trained, *common, "-o", str(tmp_path / "slim"), "--nnunet-results", str(copy))
    full, slim = labels(tmp_path / "full"), labels(tmp_path / "slim")
    assert sorted(full) == sorted(slim)
    for name in full:
        assert np.array_equal(full[name], slim[name]), name
