"""The whole UMamba2 recipe on CPU through the commands: pretrain -> consistency -> pseudolabel -> infer.

Six labelled and three unlabelled 32^3 synthetic cases, a tiny 3-stage network (8-32 features, batch 2);
every stage trains 1 epoch of 2 micro-batches with accumulation 2. Every command is the installed
``segkit`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segkit.data.synth import write_cohort
from segkit.io import read_volume

pytestmark = pytest.mark.slow

DATASET = "Dataset501_BraTSPostTx"
PLANS = "nnUNetResEncUNetMPlans"
CONFIGURATION = "3d_fullres_umamba2"
BIN = Path(sys.executable).parent
SCHEDULE = "_segkit_e1_i2_a2"
TRAINERS = {
    "pretrain": f"nnUNetTrainerUMamba2Pretrain{SCHEDULE}",
    "consistency": f"nnUNetTrainerUMamba2Consistency{SCHEDULE}",
    "pseudolabel": f"nnUNetTrainerUMamba2PseudoLabel{SCHEDULE}",
}


def run(root: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    done = subprocess.run(
        [str(BIN / "segkit"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=1500, check=False
    )
    assert done.returncode == 0, f"segkit {' '.join(args)}\n{done.stdout[-4000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def paths(root: Path) -> list[str]:
    return ["--nnunet-raw", str(root / "raw"), "--nnunet-preprocessed", str(root / "pre"),
            "--nnunet-results", str(root / "res")]  # fmt: skip


def fold_dir(root: Path, stage: str) -> Path:
    return root / "res" / DATASET / f"{TRAINERS[stage]}__{PLANS}__{CONFIGURATION}" / "fold_0"


def test_recipe_runs_every_stage_in_order_then_skips_them_and_predicts(tmp_path: Path) -> None:
    root = tmp_path
    write_cohort(root / "training_data", cases=6, shape=(32, 32, 32), seed=5, unlabelled=3)
    write_cohort(root / "validation_data", cases=1, shape=(30, 34, 26), spacing=(1.0, 0.9, 1.2), seed=5, start=90)
    run(root, "data", "prepare", "--nnunet-raw", str(root / "raw"), "--train-sources", "training_data",
        "--unlabelled-sources", "training_data/unlabelled", "--test-sources", "validation_data")  # fmt: skip
    run(root, "data", "plan", "--backend", "umamba2", "-d", "501", "-j", "1", "--batch-size", "2", *paths(root),
        "--set", "backends.umamba2.headdim=32", "--set", "backends.umamba2.features_per_stage=[8,16,32]")  # fmt: skip
    train = ["train", "--backend", "umamba2", "-d", "501", "--fold", "0", "--device", "cpu", *paths(root),
             "--recipe", "stsr2025", "--epochs", "1", "--iterations-per-epoch", "2", "--accumulation-steps", "2",
             "--da-processes", "0", "-j", "1", "--no-final-validation"]  # fmt: skip
    out = run(root, *train)
    for i, stage in enumerate(("pretrain", "consistency", "pseudolabel")):
        assert f"stage {i + 1}/3 ({stage}): training" in out
        assert (fold_dir(root, stage) / "checkpoint_final.pth").is_file(), stage
    records = {s: json.loads((fold_dir(root, s) / "segkit_stage.json").read_text()) for s in TRAINERS}
    assert records["pretrain"]["started_from"] is None
    assert records["consistency"]["started_from"] == str(fold_dir(root, "pretrain") / "checkpoint_final.pth")
    assert records["pseudolabel"]["started_from"] == str(fold_dir(root, "consistency") / "checkpoint_final.pth")
    assert {r["recipe"] for r in records.values()} == {"stsr2025"}
    # stage 1 loads the pretrained encoder/decoder (heads fresh), stage 2 the whole stage-1 model
    log1 = next(fold_dir(root, "consistency").glob("training_log_*.txt")).read_text()
    assert "seg-head tensors re-initialised" in log1
    assert "consistency: " in log1
    assert "consistency loss" in log1 or "supervised loss" in log1
    assert "Pseudo dice" in log1
    log2 = next(fold_dir(root, "pseudolabel").glob("training_log_*.txt")).read_text()
    assert "(0 seg-head tensors re-initialised" in log2
    assert "Current learning rate: 0.001" in log2

    # again: every stage is complete, nothing is trained
    stamps = {s: (fold_dir(root, s) / "checkpoint_final.pth").stat().st_mtime_ns for s in TRAINERS}
    again = run(root, *train)
    assert again.count("already complete") == 3
    assert {s: (fold_dir(root, s) / "checkpoint_final.pth").stat().st_mtime_ns for s in TRAINERS} == stamps

    # the recipe's final model predicts, on each case's own grid
    run(root, "infer", "--backend", "umamba2", "--recipe", "stsr2025", "-d", "501", "-i", "validation_data",
        "-o", "pred", "--fold", "0", "--device", "cpu", "-j", "1", "--disable-tta", *paths(root))  # fmt: skip
    manifest = json.loads((root / "pred" / "segkit_predict.json").read_text())
    assert manifest["model"] == f"{TRAINERS['pseudolabel']}__{PLANS}__{CONFIGURATION}"
    case = next(p for p in (root / "validation_data").iterdir() if p.is_dir())
    image = read_volume(next(case.glob("*-t1n.nii.gz"))).data
    assert read_volume(root / "pred" / f"{case.name}.nii.gz").data.shape == image.shape
