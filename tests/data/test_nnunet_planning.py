"""A dataset exported by `segkit data prepare` passes nnU-Net's own integrity check and planning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segkit.data.synth import write_cohort

pytestmark = pytest.mark.slow


def test_nnunet_verifies_and_plans_a_prepared_synthetic_dataset(tmp_path: Path, run_cli) -> None:
    write_cohort(tmp_path / "training_data", cases=5, shape=(24, 24, 24), seed=11)
    write_cohort(tmp_path / "validation_data", cases=1, shape=(24, 24, 24), seed=11, start=50)
    raw, pre = tmp_path / "raw", tmp_path / "preprocessed"
    result = run_cli(
        "data",
        "prepare",
        "--train-sources",
        tmp_path / "training_data",
        "--test-sources",
        tmp_path / "validation_data",
        "--nnunet-raw",
        raw,
        "--workers",
        "1",
    )
    assert result.code == 0, result.err
    env = {
        **os.environ,
        "nnUNet_raw": str(raw),
        "nnUNet_preprocessed": str(pre),
        "nnUNet_results": str(tmp_path / "results"),
        "nnUNet_def_n_proc": "1",
    }
    tool = Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"
    proc = subprocess.run(
        [str(tool), "-d", "501", "--verify_dataset_integrity", "--no_pp", "-npfp", "1", "-c", "3d_fullres"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "verify_dataset_integrity Done" in log
    plans = json.loads((pre / "Dataset501_BraTSPostTx" / "nnUNetPlans.json").read_text())
    assert "3d_fullres" in plans["configurations"]
    fingerprint = json.loads((pre / "Dataset501_BraTSPostTx" / "dataset_fingerprint.json").read_text())
    assert len(fingerprint["shapes_after_crop"]) == 5
