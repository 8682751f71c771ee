"""Atomic writes, staged folders and NIfTI reading errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _helpers import write_nifti

from segkit.errors import ConfigError, DataError, OutputError
from segkit.io import (
    NAME_MAX,
    Volume,
    as_labels,
    atomic_path,
    check_name_length,
    grid_mismatch,
    json_text,
    label_problem,
    output_dirs,
    read_volume,
    refuse_inside,
    split_suffix,
    staged_dir,
    write_json,
    write_volume,
)


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


def test_atomic_path_onto_a_folder_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "report.json").mkdir()
    match = r"report\.json: cannot write the file \(Is a directory\)"
    with pytest.raises(OutputError, match=match), atomic_path(tmp_path / "report.json") as tmp:
        tmp.write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left


def test_refuse_inside(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for dest in (root, root / "out", root / "case" / "x.png"):
        with pytest.raises(OutputError, match="overlaps the data root"):
            refuse_inside(dest, [root], what="data root")
    refuse_inside(tmp_path / "out", [root], what="data root")
    refuse_inside(tmp_path, [root], what="data root")  # a folder above the root is fine ...
    with pytest.raises(OutputError):  # ... unless the output may be removed as a whole
        refuse_inside(tmp_path, [root], what="data root", containing=True)


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


def _grid(shape=(4, 5, 6), affine=None) -> Volume:
    return Volume(Path("v.nii.gz"), np.zeros(shape, np.uint8), np.eye(4) if affine is None else affine)


def test_grid_mismatch_says_what_differs() -> None:
    base = np.diag([-1.0, 1.0, 1.5, 1.0])
    assert grid_mismatch(_grid(affine=base), _grid(affine=base + 1e-6)) is None
    assert grid_mismatch(_grid((4, 5, 7)), _grid()) == "shape (4, 5, 7) vs (4, 5, 6)"
    shifted = base.copy()
    shifted[:3, 3] = (30.0, 0.0, 0.0)
    assert grid_mismatch(_grid(affine=shifted), _grid(affine=base)) == (
        "origin shifted by 30 mm (largest affine difference 30 > tolerance 0.0001)"
    )
    scaled = np.diag([-2.0, 2.0, 3.0, 1.0])
    assert grid_mismatch(_grid(affine=scaled), _grid(affine=base)).startswith("voxel size 2x2x3 mm vs 1x1x1.5 mm (")
    flipped = np.diag([1.0, 1.0, 1.5, 1.0])
    assert grid_mismatch(_grid(affine=flipped), _grid(affine=base)).startswith("axis directions differ (")
    assert grid_mismatch(_grid(affine=shifted), _grid(affine=base), tol=31.0) is None
    nan = base.copy()
    nan[0, 3] = np.nan
    assert grid_mismatch(_grid(affine=nan), _grid(affine=base)) is not None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (np.array([0, 1, 4], np.uint8), None),
        (np.array([0.0, 3.0], np.float32), None),
        (np.array([True, False]), None),
        (np.array([0, 7], np.int16), "labels outside 0-4: 7"),
        (np.array([-1, 2], np.int16), "labels outside 0-4: -1"),
        (np.array([0.0, 1.5], np.float32), "label map is not integer-valued (e.g. 1.5)"),
        (np.array([0.0, np.nan], np.float32), "label map holds NaN or infinite values"),
        (np.array(["a"]), "label map has unsupported dtype <U1"),
    ],
)
def test_label_problem_one_rule(data: np.ndarray, problem: str | None) -> None:
    assert label_problem(data) == problem


def test_as_labels_names_the_role_and_file() -> None:
    volume = Volume(Path("p.nii.gz"), np.array([[[0, 9]]], np.int32), np.eye(4))
    with pytest.raises(DataError, match=r"^prediction p.nii.gz: labels outside 0-4: 9$"):
        as_labels(volume, role="prediction")
    ok = as_labels(Volume(Path("p.nii.gz"), np.array([[[0.0, 2.0]]]), np.eye(4)))
    assert ok.data.dtype == np.uint8


def test_json_text_converts_numpy_and_paths() -> None:
    text = json_text({"a": np.int64(3), "p": Path("x"), "f": float("nan")}, pretty=False)
    assert text == '{"a": 3, "p": "x", "f": NaN}\n'


def test_output_dirs_removes_only_the_empty_folders_it_made(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError), output_dirs([tmp_path / "new" / "deep", tmp_path / "kept"]):
        assert (tmp_path / "new" / "deep").is_dir()
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    with pytest.raises(RuntimeError), output_dirs([tmp_path / "a" / "b"]):
        (tmp_path / "a" / "b" / "written").write_text("x")
        raise RuntimeError
    assert (tmp_path / "a" / "b" / "written").is_file()  # something was written: nothing is removed
    with output_dirs([tmp_path / "c"]):
        pass
    assert (tmp_path / "c").is_dir()


@pytest.mark.parametrize("length", [200, 250, 255])
def test_atomic_path_temp_name_fits_the_name_limit(tmp_path: Path, length: int) -> None:
    name = "a" * (length - len(".nii.gz")) + ".nii.gz"
    dest = tmp_path / name
    with atomic_path(dest) as tmp:
        assert len(os.fsencode(tmp.name)) <= NAME_MAX
        assert tmp.name.endswith(".tmp.nii.gz")
        tmp.write_bytes(b"ok")
    assert dest.read_bytes() == b"ok"
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_atomic_path_multibyte_name_is_cut_on_a_character(tmp_path: Path) -> None:
    dest = tmp_path / ("é" * 125 + ".json")  # 255 bytes
    with atomic_path(dest) as tmp:
        assert len(os.fsencode(tmp.name)) <= NAME_MAX
        tmp.write_text("{}")
    assert dest.read_text() == "{}"


def test_names_over_the_limit_are_usage_errors(tmp_path: Path) -> None:
    for dest in (tmp_path / ("b" * 256), tmp_path / ("ü" * 128) / "x.json"):
        with pytest.raises(ConfigError, match="name too long"), atomic_path(dest):
            pass
    with pytest.raises(ConfigError, match=r"\(256 bytes; file names may have at most 255\)"):
        check_name_length(tmp_path / ("c" * 256))
    with pytest.raises(ConfigError, match="name too long"), staged_dir(tmp_path / ("d" * 300)):
        pass
    assert list(tmp_path.iterdir()) == []


def test_staged_dir_with_a_255_byte_name(tmp_path: Path) -> None:
    dest = tmp_path / ("s" * 255)
    for _ in range(2):  # the second time an existing folder is moved aside under a temporary name
        with staged_dir(dest) as staging:
            (staging / "f").write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]
    assert (dest / "f").read_text() == "x"
