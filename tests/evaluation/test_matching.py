"""Pairing reference and prediction files by case id."""

from __future__ import annotations

from pathlib import Path

import pytest

from segkit.errors import DataError
from segkit.evaluation.matching import case_id_of, match_cases


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    ("name", "case"),
    [
        ("BraTS-GLI-00001-000.nii.gz", "BraTS-GLI-00001-000"),
        ("BraTS-GLI-00001-000-seg.nii.gz", "BraTS-GLI-00001-000"),
        ("BraTS-GLI-00001-000_seg.nii.gz", "BraTS-GLI-00001-000"),
        ("BraTS-GLI-00001-000_pred.nii.gz", "BraTS-GLI-00001-000"),
        ("case7.nii", "case7"),
        ("notes.txt", None),
        ("_seg.nii.gz", "_seg"),
    ],
)
def test_case_id_of(name: str, case: str | None) -> None:
    assert case_id_of(name) == case


def test_flat_folders_with_suffixes_missing_and_extra(tmp_path: Path) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for case in ("a", "b", "c", "d"):
        _touch(gt / f"{case}.nii.gz")
    _touch(pred / "a-seg.nii.gz")
    _touch(pred / "b_seg.nii.gz")
    _touch(pred / "c_pred.nii.gz")
    _touch(pred / "zzz.nii.gz")
    _touch(pred / "readme.txt")
    matching = match_cases(gt, pred)
    assert [p.case_id for p in matching.pairs] == ["a", "b", "c", "d"]
    assert [p.pred.name if p.pred else None for p in matching.pairs] == [
        "a-seg.nii.gz",
        "b_seg.nii.gz",
        "c_pred.nii.gz",
        None,
    ]
    assert matching.missing == ("d",)
    assert [p.name for p in matching.extra] == ["zzz.nii.gz"]
    assert not matching.problems


def test_brats_root_reference(tmp_path: Path) -> None:
    gt, pred = tmp_path / "root", tmp_path / "pred"
    _touch(gt / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-seg.nii.gz")
    _touch(gt / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1c.nii.gz")
    _touch(gt / "BraTS-GLI-00002-000" / "BraTS-GLI-00002-000-t1c.nii.gz")  # unlabelled
    _touch(pred / "BraTS-GLI-00001-000.nii.gz")
    matching = match_cases(gt, pred)
    assert [p.case_id for p in matching.pairs] == ["BraTS-GLI-00001-000"]
    assert any("without BraTS-GLI-00002-000-seg" in note for note in matching.notes)


def test_duplicate_ids_reference_problems_and_unusable_predictions(tmp_path: Path) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _touch(gt / "a.nii.gz")
    _touch(gt / "b.nii.gz")
    _touch(gt / "b" / "b-seg.nii.gz")  # the same id as a file and as a case folder
    _touch(pred / "a.nii.gz")
    _touch(pred / "a_pred.nii.gz")
    matching = match_cases(gt, pred)
    # A duplicate prediction id is an unusable prediction (scored as empty), not a missing one ...
    (pair,) = matching.pairs
    assert (pair.case_id, pair.pred) == ("a", None)
    assert "duplicate case id in the predictions" in (pair.pred_problem or "")
    assert matching.missing == ()
    # ... a duplicate reference id cannot be scored at all.
    assert list(matching.problems) == ["b"]
    assert "duplicate case id in the reference" in matching.problems["b"]


def test_empty_reference_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    with pytest.raises(DataError, match="no reference label files"):
        match_cases(tmp_path / "gt", tmp_path / "pred")


def test_missing_folders_are_errors(tmp_path: Path) -> None:
    _touch(tmp_path / "gt" / "a.nii.gz")
    with pytest.raises(DataError, match="prediction folder not found"):
        match_cases(tmp_path / "gt", tmp_path / "nope")
    with pytest.raises(DataError, match="reference folder not found"):
        match_cases(tmp_path / "nope", tmp_path / "gt")


def test_no_prediction_for_any_reference_case_is_an_error(tmp_path: Path) -> None:
    _touch(tmp_path / "gt" / "a.nii.gz")
    _touch(tmp_path / "gt" / "b.nii.gz")
    (tmp_path / "pred").mkdir()
    with pytest.raises(DataError, match=r"no prediction file matches any of the 2 reference case\(s\) \(0 prediction"):
        match_cases(tmp_path / "gt", tmp_path / "pred")
    _touch(tmp_path / "pred" / "c.nii.gz")
    with pytest.raises(DataError, match=r"pred: no prediction file .* \(1 prediction file\(s\) found\)"):
        match_cases(tmp_path / "gt", tmp_path / "pred")
    _touch(tmp_path / "pred" / "b_pred.nii.gz")
    matching = match_cases(tmp_path / "gt", tmp_path / "pred")
    assert matching.missing == ("a",)
    assert [p.name for p in matching.extra] == ["c.nii.gz"]
