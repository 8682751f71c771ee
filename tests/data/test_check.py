"""`segkit data check`: every kind of bad input is found and reported with case and file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _helpers import snapshot
from corruptions import ALL, duplicate_into, missing_seg

from segkit.data.check import check_roots


def first_case(root: Path) -> Path:
    return sorted(p for p in root.iterdir() if p.is_dir())[0]


def test_clean_cohort_passes(cohort: Path, run_cli) -> None:
    before = snapshot(cohort)
    result = run_cli("data", "check", cohort, "--workers", "1")
    assert result.code == 0, result.out + result.err
    assert "all 6 cases passed" in result.out
    assert snapshot(cohort) == before


@pytest.mark.parametrize("corrupt", ALL, ids=lambda f: f.__name__)
def test_each_bad_input_is_reported(cohort: Path, run_cli, corrupt) -> None:
    folder = first_case(cohort)
    kind, message = corrupt(folder)
    before = snapshot(cohort)
    result = run_cli("data", "check", cohort, "--workers", "1", "--json")
    assert result.code == 1
    report = json.loads(result.out)
    assert not report["ok"]
    bad = [c for c in report["cases"] if not c["ok"]]
    assert [c["case_id"] for c in bad] == [folder.name]
    issue = next(i for i in bad[0]["issues"] if i["severity"] == "error")
    assert issue["file"].endswith(f"{folder.name}-{kind}.nii.gz")
    assert message in issue["message"]
    assert snapshot(cohort) == before


def test_table_output_names_case_and_file(cohort: Path, run_cli) -> None:
    folder = first_case(cohort)
    (folder / f"{folder.name}-t2f.nii.gz").unlink()
    result = run_cli("data", "check", cohort, "--workers", "1")
    assert result.code == 1
    assert f"error: {folder.name}: {folder / (folder.name + '-t2f.nii.gz')}: missing modality t2f" in result.out


def test_duplicate_ids_across_roots(cohort: Path, tmp_path: Path, run_cli) -> None:
    other = tmp_path / "training_data_additional"
    other.mkdir()
    case_id = duplicate_into(cohort, other)
    result = run_cli("data", "check", cohort, other, "--workers", "1")
    assert result.code == 1
    assert f"duplicate case id {case_id}" in result.out


def test_missing_seg_is_error_only_when_required(cohort: Path) -> None:
    missing_seg(first_case(cohort))
    report = check_roots([cohort], workers=1)
    assert report.ok
    assert any("have no segmentation" in i.message for i in report.issues)
    assert not check_roots([cohort], workers=1, require_labels=True).ok


def test_stray_files_are_warnings(cohort: Path) -> None:
    (first_case(cohort) / "notes.txt").write_text("x")
    (cohort / "README").write_text("x")
    report = check_roots([cohort], workers=1)
    assert report.ok
    warnings = [i for c in report.cases for i in c.issues] + list(report.issues)
    assert sum("stray file" in i.message for i in warnings) == 2


def test_empty_and_missing_roots(tmp_path: Path, run_cli) -> None:
    (tmp_path / "empty").mkdir()
    result = run_cli("data", "check", tmp_path / "empty")
    assert result.code == 1
    assert "no case folders found" in result.out
    result = run_cli("data", "check", tmp_path / "nope")
    assert result.code == 1
    assert result.err.startswith(f"error: {tmp_path / 'nope'}: data root not found")


def test_default_roots(cohort: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("data", "check", "--workers", "1")
    assert result.code == 0
    assert "6 cases in training_data" in result.out
    monkeypatch.chdir(cohort)
    result = run_cli("data", "check")
    assert result.code == 1
    assert "no data roots found" in result.err


def test_parallel_check_matches_serial(cohort: Path) -> None:
    (first_case(cohort) / f"{first_case(cohort).name}-t1c.nii.gz").unlink()
    serial = check_roots([cohort], workers=1)
    parallel = check_roots([cohort], workers=2)
    assert serial == parallel
