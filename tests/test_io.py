"""Atomic writes, staged folders and NIfTI reading errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _helpers import write_nifti

from segkit.errors import DataError, OutputError
from segkit.io import atomic_path, read_volume, split_suffix, staged_dir, write_json, write_volume


def test_split_suffix() -> None:
    assert split_suffix("case.nii.gz") == ("case", ".nii.gz")
    assert split_suffix("a.b.json") == ("a.b", ".json")
    assert split_suffix("README") == ("README", "")


def test_atomic_path_keeps_suffix_and_replaces(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "case.nii.gz"
    with atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent
        assert tmp.name.endswith(".tmp.nii.gz")
        tmp.write_bytes(b"data")
        assert not dest.exists()
    assert dest.read_bytes() == b"data"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["case.nii.gz"]
    assert dest.stat().st_mode & 0o044


def test_atomic_path_failure_leaves_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "report.json"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_atomic_path_unwritable_parent(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write here"), atomic_path(blocker / "x.json"):
        pass


def test_staged_dir_success_and_failure(tmp_path: Path) -> None:
    dest = tmp_path / "ds"
    with staged_dir(dest) as stage:
        (stage / "a").write_text("1")
    assert (dest / "a").read_text() == "1"
    with pytest.raises(ValueError, match="half-built"), staged_dir(dest) as stage:
        (stage / "b").write_text("2")
        raise ValueError("half-built")
    assert sorted(os.listdir(dest)) == ["a"]
    assert sorted(os.listdir(tmp_path)) == ["ds"]
    with staged_dir(dest) as stage:
        (stage / "c").write_text("3")
    assert sorted(os.listdir(dest)) == ["c"]
    assert sorted(os.listdir(tmp_path)) == ["ds"]


def test_write_json_nan(tmp_path: Path) -> None:
    path = write_json(tmp_path / "x.json", {"a": float("nan"), "b": np.float32(1.5), "c": Path("p")})
    assert path.read_text().split() == ["{", '"a":', "NaN,", '"b":', "1.5,", '"c":', '"p"', "}"]


def test_volume_roundtrip_keeps_dtype_and_affine(tmp_path: Path) -> None:
    affine = np.diag([-1.0, 1.2, 2.0, 1.0])
    affine[:3, 3] = (10, -5, 3)
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_volume(tmp_path / "v.nii.gz", data, affine)
    vol = read_volume(tmp_path / "v.nii.gz")
    assert vol.data.dtype == np.uint8
    assert np.array_equal(vol.data, data)
    assert np.allclose(vol.affine, affine)
    assert vol.spacing == pytest.approx((1.0, 1.2, 2.0))


def test_read_volume_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing.nii.gz: file not found"):
        read_volume(tmp_path / "missing.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"junk")
    with pytest.raises(DataError, match=r"bad.nii.gz: not a readable NIfTI file"):
        read_volume(bad)
    noise = np.random.default_rng(0).random((16, 16, 16), dtype=np.float32)
    good = write_nifti(tmp_path / "good.nii.gz", noise)
    trunc = tmp_path / "trunc.nii.gz"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"trunc.nii.gz: cannot read voxels"):
        read_volume(trunc)
