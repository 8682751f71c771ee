"""``segkit eval`` on bad input: outputs never in GT or PRED, every reference case counts, earlier reports.

Each test goes through the CLI and checks the message, the exit code, that no traceback appears, what
is left behind and that the inputs are byte-identical.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _helpers import snapshot
from _helpers import write_nifti as write_label

REPORTS = ("lesion_metrics.json", "nnunet_metrics.json", "full_metrics.json", "per_case.csv", "lesion_metrics.png")


def _eval(run_cli, gt: Path, pred: Path, *extra: str | Path):
    return run_cli("eval", gt, pred, "--skip-nnunet", "--workers", "1", *extra)


def _cases(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.nii.gz"))


def _id(path: Path) -> str:
    return path.name[: -len(".nii.gz")]


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


# --- defect 1: outputs never land inside GT or PRED ------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ("--output-dir", "{pred}"),
        ("--output-dir", "{link}"),
        ("--output-dir", "{pred}/reports"),
        ("--output-dir", "{out}", "--lesion-output", "{pred}/x.json"),
        ("--output-dir", "{out}", "--lesion-output", "{pred}/{case}.nii.gz"),
        ("--output-dir", "{out}", "--nnunet-output", "{link}/nn.json"),
        ("--output-dir", "{out}", "--combined-output", "{gt}/all.json"),
        ("--output-dir", "{gtlink}"),
    ],
    ids=["pred", "symlink-to-pred", "below-pred", "lesion-in-pred", "lesion-over-a-prediction",
         "nnunet-via-symlink", "combined-in-gt", "symlink-to-gt"],
)  # fmt: skip
def test_outputs_inside_an_input_folder_are_refused_before_scoring(run_cli, label_pairs, tmp_path, flags) -> None:
    gt, pred = label_pairs
    (tmp_path / "link").symlink_to(pred, target_is_directory=True)
    (tmp_path / "gtlink").symlink_to(gt, target_is_directory=True)
    fill = {"pred": pred, "gt": gt, "link": tmp_path / "link", "gtlink": tmp_path / "gtlink", "out": tmp_path / "out"}
    fill["case"] = _id(_cases(pred)[0])
    before = snapshot(gt, pred)
    result = _eval(run_cli, gt, pred, *(f.format(**fill) for f in flags))
    assert result.code == 1, result.err
    line = _one_error_line(result.err)
    assert "segkit never writes into its inputs" in line
    assert "folder" in line
    assert "scoring" not in result.err  # refused before any case was read
    assert snapshot(gt, pred) == before
    assert not (tmp_path / "out").exists()


# --- defect 2: every reference case counts -------------------------------------------------------


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _rewrite(path: Path, change, dtype=None) -> None:
    img = nib.load(str(path))
    data = np.asarray(img.dataobj).astype(dtype or np.float32)
    change(data)
    write_label(path, data, img.affine)


def _nan(path: Path) -> None:
    _rewrite(path, lambda d: d.__setitem__((3, 3, 3), np.nan))


def _negative(path: Path) -> None:
    _rewrite(path, lambda d: d.__setitem__((3, 3, 3), -1), np.int16)


def _fraction(path: Path) -> None:
    _rewrite(path, lambda d: d.__setitem__((3, 3, 3), 2.5))


def _label5(path: Path) -> None:
    _rewrite(path, lambda d: d.__setitem__((3, 3, 3), 5), np.uint8)


UNUSABLE = {
    "zero-byte": (_zero_bytes, ""),
    "truncated": (_truncated, ""),
    "nan": (_nan, "NaN"),
    "negative": (_negative, "labels outside 0-4: -1"),
    "non-integer": (_fraction, "not integer-valued"),
    "label-5": (_label5, "labels outside 0-4: 5"),
}


@pytest.fixture
def missing_run(run_cli, label_pairs, tmp_path) -> dict:
    """The lesion report of a run where the third prediction is missing (what an unusable one must equal)."""
    gt, pred = label_pairs
    third = _cases(pred)[2]
    kept = third.read_bytes()
    third.unlink()
    out = tmp_path / "missing"
    assert _eval(run_cli, gt, pred, "--output-dir", out).code == 0
    third.write_bytes(kept)
    return {
        "lesion": json.loads((out / "lesion_metrics.json").read_text()),
        "nnunet": json.loads((out / "nnunet_metrics.json").read_text()),
        "case": _id(third),
    }


@pytest.mark.parametrize("kind", list(UNUSABLE))
def test_unusable_prediction_is_scored_exactly_like_a_missing_one(
    run_cli, label_pairs, tmp_path, missing_run, kind
) -> None:
    damage, reason = UNUSABLE[kind]
    gt, pred = label_pairs
    bad = _cases(pred)[2]
    damage(bad)
    before = snapshot(gt, pred)
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, "--output-dir", out)
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    assert snapshot(gt, pred) == before
    case = missing_run["case"]
    lesion = json.loads((out / "lesion_metrics.json").read_text())
    entry, expected = lesion["cases"][case], missing_run["lesion"]["cases"][case]
    assert entry["status"] == "unusable_prediction"
    assert str(bad) in entry["reason"]
    assert reason in entry["reason"]
    assert entry["metrics"] == expected["metrics"]
    assert entry["lesions"] == expected["lesions"]
    assert lesion["summary"] == missing_run["lesion"]["summary"]  # the same means: the case is in them
    assert lesion["unusable_predictions"] == {case: entry["reason"]}
    assert lesion["missing_predictions"] == []
    nnunet = json.loads((out / "nnunet_metrics.json").read_text())
    assert nnunet["mean"] == missing_run["nnunet"]["mean"]  # voxel metrics: an empty prediction too
    assert len(nnunet["metric_per_case"]) == 4
    row = next(r for r in csv.DictReader((out / "per_case.csv").open()) if r["case"] == case)
    assert (row["status"], row["reason"]) == ("unusable_prediction", entry["reason"])
    summary = json.loads((out / "full_metrics.json").read_text())["summary"]["cases"]
    assert (summary["scored"], summary["unusable_predictions"], summary["failed"]) == (4, 1, 0)
    assert "4 of 4 reference cases scored (0 without prediction and 1 with an unusable prediction" in result.out
    assert f"warning: {case}: " in result.err

    strict = _eval(run_cli, gt, pred, "--output-dir", tmp_path / "strict", "--strict")
    assert strict.code == 1
    assert _one_error_line(strict.err).startswith(f"error: {case}: ")
    assert not (tmp_path / "strict").exists()
    assert snapshot(gt, pred) == before


def test_label_5_in_three_empty_predictions_does_not_inflate_the_mean(run_cli, tmp_path) -> None:
    # The trial's case: four empty predictions give mean WT Dice 0.25 (only the empty reference scores 1);
    # a voxel of label 5 in three of them used to drop those cases and report 1.0 over "1 cases".
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for number in range(4):
        labels = np.zeros((24, 24, 24), np.uint8)
        if number:
            labels[4:12, 4:12, 4:12] = 2
        write_label(gt / f"c{number}.nii.gz", labels)
        write_label(pred / f"c{number}.nii.gz", np.zeros_like(labels))
    empty = _eval(run_cli, gt, pred, "--output-dir", tmp_path / "empty", "--json")
    assert json.loads(empty.out)["lesion"]["WT"]["Legacy_Dice"]["mean"] == 0.25
    for number in (1, 2, 3):
        labels = np.zeros((24, 24, 24), np.uint8)
        labels[0, 0, 0] = 5
        write_label(pred / f"c{number}.nii.gz", labels)
    result = _eval(run_cli, gt, pred, "--output-dir", tmp_path / "bad", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["lesion"]["WT"]["Legacy_Dice"] == json.loads(empty.out)["lesion"]["WT"]["Legacy_Dice"]
    assert summary["lesion"]["WT"]["Legacy_Dice"]["n"] == 4
    assert summary["cases"]["unusable_predictions"] == 3


# --- earlier reports in the output folder ---------------------------------------------------------


def test_earlier_reports_need_overwrite_and_leave_nothing_stale(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    out = tmp_path / "out"
    assert _eval(run_cli, gt, pred, "--output-dir", out).code == 0
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    refused = _eval(run_cli, gt, pred, "--output-dir", out, "--no-figure")
    assert refused.code == 1
    line = _one_error_line(refused.err)
    assert line.startswith(f"error: {out}: holds the reports of an earlier segkit eval (")
    assert "--overwrite" in refused.err
    assert snapshot(out) == before

    inputs = snapshot(gt, pred)
    result = _eval(run_cli, gt, pred, "--output-dir", out, "--no-figure", "--overwrite")
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == sorted([*REPORTS[:4], "notes.txt"])  # no old figure
    assert json.loads((out / "full_metrics.json").read_text())["outputs"]["figure"] is None
    assert (out / "notes.txt").read_text() == "mine"  # only segkit's reports are replaced
    assert snapshot(gt, pred) == inputs


def test_overwrite_replaces_reports_written_elsewhere_by_name(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    out, lw = tmp_path / "out", tmp_path / "elsewhere" / "lw.json"
    assert _eval(run_cli, gt, pred, "--output-dir", out, "--lesion-output", lw).code == 0
    again = _eval(run_cli, gt, pred, "--output-dir", tmp_path / "fresh", "--lesion-output", lw)
    assert again.code == 1
    assert "lw.json" in _one_error_line(again.err)
    assert not (tmp_path / "fresh").exists()
    # Reports at the default names in the folder count even when this run names its files differently.
    moved = _eval(run_cli, gt, pred, "--output-dir", out, "--lesion-output", tmp_path / "other.json", "--overwrite")
    assert moved.code == 0, moved.err
    assert not (out / "lesion_metrics.json").exists()  # the earlier set's lesion report is gone, not stale
    assert (tmp_path / "other.json").is_file()


# --- names over 255 bytes -------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--output-dir", "--lesion-output", "--combined-output"])
def test_output_name_over_255_bytes_is_a_usage_error(run_cli, label_pairs, tmp_path, flag) -> None:
    gt, pred = label_pairs
    long = tmp_path / ("é" * 130 + ".json")  # 260 bytes, 135 characters
    args = ["--output-dir", tmp_path / "out"] if flag != "--output-dir" else []
    result = _eval(run_cli, gt, pred, *args, flag, long)
    assert result.code == 2
    assert "is longer than 255 bytes" in _one_error_line(result.err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


# --- one source of settings -----------------------------------------------------------------------


def test_evaluation_reads_its_settings_from_the_config_model(label_pairs) -> None:
    import segkit.evaluation.cases
    import segkit.evaluation.run
    from segkit.config.models import EvalConfig
    from segkit.evaluation.run import evaluate_folders

    assert not hasattr(segkit.evaluation.run, "EvalSettings")
    assert not hasattr(segkit.evaluation.cases, "CaseOptions")
    gt, pred = label_pairs
    settings = EvalConfig(labels=[3, 3], omit_aggregates=True, skip_nnunet=True, workers=1)
    evaluation = evaluate_folders(gt, pred, settings)
    assert evaluation.settings is settings
    assert evaluation.regions == ("ET",)
    assert evaluation.voxel_keys == (3,)
    assert set(evaluation.cases[0].lesion.regions) == {"ET"}


@pytest.mark.slow
def test_nnunet_evaluator_agrees_when_predictions_are_unusable(run_cli, label_pairs, tmp_path) -> None:
    """nnU-Net's real evaluator scores unusable predictions as empty too (about 20-30 s)."""
    gt, pred = label_pairs
    files = _cases(pred)
    _zero_bytes(files[0])  # found from the header: staged as an empty prediction at once
    _label5(files[1])  # found only when the voxels are read: nnU-Net is rerun
    out = tmp_path / "out"
    result = run_cli("eval", gt, pred, "--output-dir", out, "--workers", "1", "--nnunet-cmd", "api")
    assert result.code == 0, result.err
    check = json.loads((out / "full_metrics.json").read_text())["nnunet_check"]
    assert check["status"] == "agreed", check
    assert check["compared_values"] == 4 * 6 * 8
