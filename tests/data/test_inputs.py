"""Inputs of `segkit infer`: BraTS roots, case folders and nnU-Net images folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from segkit.data.inputs import channel_modalities, resolve_inputs
from segkit.data.nnunet_dataset import prepare_dataset
from segkit.errors import DataError


def test_root_and_case_folder(cohort: Path) -> None:
    cases = resolve_inputs([cohort])
    assert len(cases) == 6
    first = sorted(p for p in cohort.iterdir() if p.is_dir())[0]
    single = resolve_inputs([first])
    assert [c.case_id for c in single] == [first.name]
    assert single[0].images["t1c"] == first / f"{first.name}-t1c.nii.gz"


def test_nnunet_images_folder_maps_channels(cohort: Path, tmp_path: Path) -> None:
    prepare_dataset(dataset="Dataset501_X", nnunet_raw=tmp_path / "raw", train_sources=[cohort], workers=1)
    folder = tmp_path / "raw" / "Dataset501_X" / "imagesTr"
    cases = resolve_inputs([folder], channel_names={"0": "t1n", "1": "t1c", "2": "t2w", "3": "t2f"})
    case = cases[0]
    assert case.images["t1n"].name == f"{case.case_id}_0000.nii.gz"
    assert case.images["t2f"].name == f"{case.case_id}_0003.nii.gz"


def test_channel_aliases() -> None:
    assert channel_modalities({"0": "T1", "1": "T1C", "2": "T2W", "3": "FLAIR"}) == ["t1n", "t1c", "t2w", "t2f"]
    with pytest.raises(DataError, match="not a BraTS modality"):
        channel_modalities({"0": "CT"})


def test_errors(cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="input folder not found"):
        resolve_inputs([tmp_path / "nope"])
    first = sorted(p for p in cohort.iterdir() if p.is_dir())[0]
    (first / f"{first.name}-t2w.nii.gz").unlink()
    with pytest.raises(DataError, match=f"{first.name}: .*missing modality t2w"):
        resolve_inputs([cohort])
    with pytest.raises(DataError, match="appears twice"):
        resolve_inputs([first.parent / sorted(p.name for p in cohort.iterdir() if p.is_dir())[1]] * 2)
