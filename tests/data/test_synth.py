"""The synthetic cohort: deterministic, varied, anatomically and radiologically plausible."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segkit.data.synth import SYNTH_MANIFEST, generate_case, write_cohort
from segkit.errors import ConfigError, OutputError


def test_same_seed_same_case_independent_of_cohort_size() -> None:
    a = generate_case(3, shape=(24, 24, 24), seed=1)
    b = generate_case(3, shape=(24, 24, 24), seed=1)
    c = generate_case(3, shape=(24, 24, 24), seed=2)
    assert np.array_equal(a.labels, b.labels)
    assert all(np.array_equal(a.images[m], b.images[m]) for m in a.images)
    assert not all(np.array_equal(a.images[m], c.images[m]) for m in a.images)


def test_cases_vary() -> None:
    kinds = [generate_case(i, shape=(32, 32, 32)).features["kind"] for i in range(30)]
    assert {"full", "no_rc", "cavity_only", "none"} <= set(kinds)
    with_rc = [i for i in range(30) if 4 in np.unique(generate_case(i, shape=(32, 32, 32)).labels)]
    assert 0 < len(with_rc) < 30


def test_labels_are_plausible_and_inside_the_head() -> None:
    for i in range(12):
        case = generate_case(i, shape=(48, 48, 48))
        assert set(np.unique(case.labels)) <= {0, 1, 2, 3, 4}
        head = case.images["t1n"] > 0
        assert not np.any(case.labels[~head])
        if np.any(case.labels == 1):
            # NETC sits inside the enhancing rim: every NETC voxel is close to an ET voxel
            from scipy import ndimage

            near_et = ndimage.binary_dilation(case.labels == 3, iterations=3)
            assert np.all(near_et[case.labels == 1])


def test_contrasts_make_labels_learnable() -> None:
    """Mean intensities per tissue follow the radiological rules the model must learn."""
    found = {1: False, 2: False, 3: False, 4: False}
    for i in range(12):
        case = generate_case(i, shape=(48, 48, 48))
        img, lab = case.images, case.labels
        white = (lab == 0) & (img["t1n"] > 0.72) & (img["t2w"] < 0.55)

        def mean(mod, mask, img=img):
            return float(img[mod][mask].mean())

        if (lab == 2).sum() > 20:
            found[2] = True
            assert mean("t2f", lab == 2) > mean("t2f", white) + 0.3
            assert mean("t2w", lab == 2) > mean("t2w", white) + 0.3
        if (lab == 3).sum() > 20:
            found[3] = True
            assert mean("t1c", lab == 3) > mean("t1c", white) + 0.3
        if (lab == 1).sum() > 5:
            found[1] = True
            assert mean("t1n", lab == 1) < mean("t1n", white) - 0.3
        if (lab == 4).sum() > 20:
            found[4] = True
            assert mean("t2f", lab == 4) < mean("t2f", white) - 0.2
            assert mean("t2w", lab == 4) > mean("t2w", white) + 0.4
    assert all(found.values()), found


def test_write_cohort_layout(tmp_path: Path) -> None:
    result = write_cohort(
        tmp_path / "root", cases=3, shape=(16, 20, 24), spacing=(1.0, 1.5, 2.0), without_labels=1, start=7
    )
    assert result.case_ids == ("BraTS-GLI-00007-000", "BraTS-GLI-00008-000", "BraTS-GLI-00009-000")
    assert result.labelled == result.case_ids[:2]
    folder = tmp_path / "root" / "BraTS-GLI-00007-000"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"BraTS-GLI-00007-000-{s}.nii.gz" for s in ("seg", "t1c", "t1n", "t2f", "t2w")]
    assert not (tmp_path / "root" / "BraTS-GLI-00009-000" / "BraTS-GLI-00009-000-seg.nii.gz").exists()
    img = nib.load(folder / "BraTS-GLI-00007-000-t1c.nii.gz")
    assert img.shape == (16, 20, 24)
    assert np.allclose(img.header.get_zooms(), (1.0, 1.5, 2.0))
    assert img.get_data_dtype() == np.int16
    seg = nib.load(folder / "BraTS-GLI-00007-000-seg.nii.gz")
    assert seg.get_data_dtype() == np.uint8
    assert np.allclose(seg.affine, img.affine)
    assert img.affine[0, 0] < 0  # LAS, like the MNI grid
    manifest = json.loads((tmp_path / "root" / SYNTH_MANIFEST).read_text())
    assert manifest["seed"] == 0
    assert (folder / "BraTS-GLI-00007-000-t1c.nii.gz").stat().st_mode & 0o044  # readable by others


def test_refuses_non_empty_output(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "keep.txt").write_text("precious")
    with pytest.raises(OutputError, match="exists and is not empty"):
        write_cohort(tmp_path / "root", cases=1, shape=(8, 8, 8))
    with pytest.raises(OutputError, match="not a synthetic cohort written by segkit"):
        write_cohort(tmp_path / "root", cases=1, shape=(8, 8, 8), overwrite=True)
    assert (tmp_path / "root" / "keep.txt").read_text() == "precious"


def test_overwrite_replaces_an_earlier_cohort(tmp_path: Path) -> None:
    write_cohort(tmp_path / "root", cases=3, shape=(8, 8, 8))
    write_cohort(tmp_path / "root", cases=1, shape=(8, 8, 8), overwrite=True)
    assert len([p for p in (tmp_path / "root").iterdir() if p.is_dir()]) == 1


def test_bad_counts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="more than --cases"):
        write_cohort(tmp_path / "root", cases=1, without_labels=2, shape=(8, 8, 8))
    assert not (tmp_path / "root").exists()


def test_cli_synth(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    result = run_cli("data", "synth", out, "--cases", "2", "--shape", "12", "12", "12", "--seed", "3", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert len(data["cases"]) == 2
    result = run_cli("data", "synth", out, "--cases", "2")
    assert result.code == 1
    assert "exists and is not empty" in result.err
