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


def _msd_images_folder(cohort: Path, dest: Path, *, with_dataset_json: bool) -> Path:
    """An nnU-Net images folder in MSD channel order (FLAIR, T1w, t1gd, T2w) made from the cohort's first case."""
    import json
    import shutil

    case = sorted(p for p in cohort.iterdir() if p.is_dir())[0]
    images = dest / "imagesTs"
    images.mkdir(parents=True)
    for channel, modality in enumerate(("t2f", "t1n", "t1c", "t2w")):
        shutil.copy(case / f"{case.name}-{modality}.nii.gz", images / f"BRATS_001_{channel:04d}.nii.gz")
    if with_dataset_json:
        names = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
        (dest / "dataset.json").write_text(json.dumps({"channel_names": names}))
    return images


def test_images_folder_is_read_with_its_own_dataset_json(cohort: Path, tmp_path: Path) -> None:
    images = _msd_images_folder(cohort, tmp_path / "Dataset001_BrainTumour", with_dataset_json=True)
    # the run's dataset (segkit's order) does not decide what the channels of another dataset mean
    (case,) = resolve_inputs([images], channel_names={"0": "t1n", "1": "t1c", "2": "t2w", "3": "t2f"})
    assert {m: p.name for m, p in case.images.items()} == {
        "t2f": "BRATS_001_0000.nii.gz",
        "t1n": "BRATS_001_0001.nii.gz",
        "t1c": "BRATS_001_0002.nii.gz",
        "t2w": "BRATS_001_0003.nii.gz",
    }


def test_images_folder_without_any_dataset_json_warns(cohort: Path, tmp_path: Path, caplog) -> None:
    images = _msd_images_folder(cohort, tmp_path / "loose", with_dataset_json=False)
    (case,) = resolve_inputs([images])
    assert case.images["t1n"].name == "BRATS_001_0000.nii.gz"
    assert "no dataset.json beside the images folder" in caplog.text


def test_modalities_on_different_grids_are_refused(cohort: Path, tmp_path: Path) -> None:
    import shutil

    import numpy as np
    from _helpers import write_nifti

    case = sorted(p for p in cohort.iterdir() if p.is_dir())[0]
    copy = tmp_path / case.name
    shutil.copytree(case, copy)
    bad = copy / f"{case.name}-t2f.nii.gz"
    write_nifti(bad, np.zeros((30, 32, 32), np.float32), np.eye(4))
    with pytest.raises(DataError, match=rf"^{case.name}: {bad}: grid differs from {case.name}-t1c.nii.gz's \(shape"):
        resolve_inputs([copy])
