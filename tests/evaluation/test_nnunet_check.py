"""Cross-check of the voxel metrics with nnU-Net's own evaluator (real runs are marked slow)."""

from __future__ import annotations

import json
import math
import stat
import sys
from pathlib import Path

import pytest

from segkit.evaluation.matching import CasePair
from segkit.evaluation.nnunet_check import RunningCheck, compare, find_command


def _eval(run_cli, gt: Path, pred: Path, out: Path, *extra: str):
    return run_cli("eval", gt, pred, "--output-dir", out, "--workers", "1", "--no-figure", *extra)


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_missing_command_is_reported_not_fatal(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, out, "--nnunet-cmd", "no-such-nnunet-evaluator")
    assert result.code == 0
    assert "no-such-nnunet-evaluator not found" in result.err
    assert "--skip-nnunet" in result.err
    check = json.loads((out / "full_metrics.json").read_text())["nnunet_check"]
    assert check["status"] == "unavailable"


def test_disagreeing_evaluator_is_recorded(run_cli, label_pairs, tmp_path) -> None:
    # A stand-in evaluator that reports every case with one wrong count.
    body = """
import json, sys, pathlib
gt, pred = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out = sys.argv[sys.argv.index("-o") + 1]
labels = sys.argv[sys.argv.index("-l") + 1 : sys.argv.index("-o")]
zero = {"Dice": 0.0, "IoU": 0.0, "TP": 0, "FP": 0, "FN": 0, "TN": 0, "n_pred": 0, "n_ref": 0}
cases = [{"reference_file": str(gt / p.name), "prediction_file": str(p), "metrics": {l: zero for l in labels}}
         for p in sorted(pred.iterdir())]
json.dump({"metric_per_case": cases, "mean": {}, "foreground_mean": {}}, open(out, "w"))
"""
    fake = _script(tmp_path / "fake_eval", body)
    gt, pred = label_pairs
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, out, "--nnunet-cmd", str(fake))
    assert result.code == 0
    check = json.loads((out / "full_metrics.json").read_text())["nnunet_check"]
    assert check["status"] == "disagreed"
    assert check["command"][0] == str(fake)
    assert check["mismatches"]
    assert check["max_abs_difference"] > 0
    assert "disagrees" in result.err
    assert "nnU-Net cross-check: disagreed" in result.out


def test_failing_evaluator_is_recorded(run_cli, label_pairs, tmp_path) -> None:
    fake = _script(tmp_path / "broken_eval", "import sys\nprint('boom: cannot evaluate')\nsys.exit(3)\n")
    gt, pred = label_pairs
    out = tmp_path / "out"
    assert _eval(run_cli, gt, pred, out, "--nnunet-cmd", str(fake)).code == 0
    check = json.loads((out / "full_metrics.json").read_text())["nnunet_check"]
    assert check["status"] == "failed"
    assert "exit 3" in check["message"]
    assert "boom" in check["message"]


def test_staging_failure_is_a_one_line_status_and_leaves_no_temp_folder(tmp_path, monkeypatch) -> None:
    # The reference is gone by the time the files are staged: no exception escapes, nothing leaks.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    pairs = [CasePair("a", tmp_path / "a.nii.gz", None)]
    check = RunningCheck(pairs, [1], [1], "nnUNetv2_evaluate_simple", 1)
    result = check.collect({})
    assert result.status == "failed"
    assert result.message.startswith("nnU-Net cross-check not run: cannot stage its files (")
    assert "a.nii.gz" in result.message
    assert "\n" not in result.message
    assert list(scratch.iterdir()) == []


def test_compare_counts_exact_and_nan_equal() -> None:
    ours = {
        "a": {"1": {"Dice": math.nan, "IoU": math.nan, "TP": 0, "FP": 0, "FN": 0, "TN": 9, "n_pred": 0, "n_ref": 0}}
    }
    theirs = {"metric_per_case": [{"prediction_file": "/x/a.nii.gz", "metrics": {"1": dict(ours["a"]["1"])}}]}
    assert compare(ours, theirs, ["1"]).status == "agreed"
    theirs["metric_per_case"][0]["metrics"]["1"]["TN"] = 10
    result = compare(ours, theirs, ["1"])
    assert result.status == "disagreed"
    assert result.mismatches == ["a / 1 / TN: segkit 9 vs nnU-Net 10"]


def test_find_command_prefers_the_running_environment() -> None:
    found = find_command("nnUNetv2_evaluate_simple")
    assert found is not None
    assert Path(found).parent == Path(sys.executable).parent


@pytest.mark.slow
@pytest.mark.parametrize("command", ["nnUNetv2_evaluate_simple", "api"])
def test_nnunet_evaluator_agrees_on_generated_cohort(run_cli, label_pairs, tmp_path, command) -> None:
    """Runs nnU-Net's real evaluator (about 20-30 s: it imports torch and spawns a pool)."""
    gt, pred = label_pairs
    first = sorted(pred.glob("*.nii.gz"))[0]
    first.rename(pred / first.name.replace(".nii.gz", "-seg.nii.gz"))  # names differ from the reference's
    sorted(pred.glob("*.nii.gz"))[-1].unlink()  # a missing prediction, staged as an empty one
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, out, "--nnunet-cmd", command)
    assert result.code == 0, result.err
    check = json.loads((out / "full_metrics.json").read_text())["nnunet_check"]
    assert check["status"] == "agreed", check
    keys = ["1", "2", "3", "4"] + (["(1, 2, 3)", "(1, 3)"] if command == "api" else [])
    assert check["keys"] == keys
    assert check["compared_values"] == 4 * len(keys) * 8
    assert check["max_abs_difference"] == 0.0
    assert "nnU-Net cross-check: agreed" in result.out
