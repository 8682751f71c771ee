"""Issue 10, data side: bad and unusual inputs through the CLI (message, exit code, no traceback, nothing
left behind, inputs byte-identical), .nii files, the BraTS 2021 layout, and concurrent `data prepare` runs."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _helpers import make_case, snapshot, write_nifti

DATASET = "Dataset501_BraTSPostTx"


def one_line_error(result, code: int, *fragments: str) -> str:
    """Assert an `error: ...` line (plus at most a hint line), no traceback; return the error line."""
    assert result.code == code, (result.code, result.out, result.err)
    assert "Traceback" not in result.out + result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert lines, result.err
    assert lines[0].startswith("error: "), result.err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def cases_of(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def prepare(run_cli, raw: Path, *args):
    return run_cli("data", "prepare", "--nnunet-raw", raw, "--workers", "1", *args)


# --- defect 3: the statistics cache never lands in a data root ------------------------------------------


def test_stats_cache_dir_inside_a_root_is_refused(cohort: Path, run_cli) -> None:
    before = snapshot(cohort)
    result = run_cli("data", "stats", cohort, "--cache-dir", cohort / "cache", "--workers", "1")
    one_line_error(result, 1, "overlaps the data root", "never writes into its inputs")
    assert snapshot(cohort) == before
    assert run_cli("data", "check", cohort, "--workers", "1").code == 0


def test_stats_default_cache_from_inside_a_root_is_refused(cohort: Path, run_cli, monkeypatch) -> None:
    monkeypatch.chdir(cohort)
    before = snapshot(cohort)
    result = run_cli("data", "stats", cohort, "--workers", "1")
    one_line_error(result, 1, "outputs/statistics_cache", "overlaps the data root")
    assert snapshot(cohort) == before
    # --no-cache writes nothing, so it works from anywhere
    assert run_cli("data", "stats", cohort, "--no-cache", "--workers", "1").code == 0
    assert snapshot(cohort) == before


# --- defect 4: concurrent prepare runs on one dataset number ---------------------------------------------


def _spawn_prepare(root: Path, raw: Path, dataset: str) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    args = ["data", "prepare", "--train-sources", str(root), "--nnunet-raw", str(raw), "-d", dataset, "-j", "1"]
    return subprocess.Popen(
        [sys.executable, "-m", "segkit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


@pytest.mark.parametrize("names", [("Dataset510_A", "Dataset510_B"), ("Dataset510_A", "Dataset510_A")])
def test_concurrent_prepare_runs_never_both_claim_a_number(tmp_path: Path, names: tuple[str, str]) -> None:
    root = tmp_path / "training_data"
    for i in range(2):
        make_case(root, f"BraTS-GLI-0000{i}-000", shape=(12, 12, 12), seed=i)
    before = snapshot(root)
    for round_ in range(3):
        raw = tmp_path / f"raw{round_}"
        procs = [_spawn_prepare(root, raw, name) for name in names]
        outcomes = [(p.wait(timeout=120), *p.communicate()) for p in procs]
        for _, out, err in outcomes:
            assert "Traceback" not in out + err, err
        codes = [code for code, _, _ in outcomes]
        assert 0 in codes, outcomes
        visible = sorted(p.name for p in raw.iterdir())
        if names[0] != names[1]:
            # exactly one wins; the other gets one line naming the conflict
            assert sorted(codes) == [0, 2] or sorted(codes) == [0, 1], outcomes
            loser = next(err for code, _, err in outcomes if code != 0)
            lines = [line for line in loser.splitlines() if line.strip()]
            assert lines[0].startswith("error: "), loser
            assert len(lines) <= 2, loser
            assert "already used by" in lines[0] or "being claimed by another segkit run" in lines[0], loser
            assert len(visible) == 1
            assert visible[0] in names
        else:
            # the same dataset: one after the other, or the second refused; never interleaved
            assert visible == [names[0]]
        dataset = raw / visible[0]
        assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == [
            "BraTS-GLI-00000-000.nii.gz",
            "BraTS-GLI-00001-000.nii.gz",
        ]
        assert len(list((dataset / "imagesTr").iterdir())) == 8
        assert (dataset / ".segkit_dataset.json").is_file()
    assert snapshot(root) == before


def test_a_stale_claim_of_a_dead_process_is_taken_over(cohort: Path, tmp_path: Path, run_cli) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    claim = raw / ".segkit-Dataset501.claim"
    claim.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "token": "x"}))
    assert prepare(run_cli, raw, "--train-sources", cohort).code == 0
    assert sorted(p.name for p in raw.iterdir()) == [DATASET]


def test_a_live_claim_makes_the_run_fail_at_once(cohort: Path, tmp_path: Path, run_cli) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    import socket

    claim = raw / ".segkit-Dataset501.claim"
    claim.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": "x"}))
    result = prepare(run_cli, raw, "--train-sources", cohort, "-d", "Dataset501_Other")
    one_line_error(result, 1, "dataset number 501 is being claimed by another segkit run", str(os.getpid()))
    assert sorted(p.name for p in raw.iterdir()) == [claim.name]  # the holder's claim is left alone


# --- defect 6: one-line usage errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["data", "synth", "{out}", "--seed", "-1"], "synth.seed: Input should be greater than or equal to 0"),
        (
            ["data", "synth", "{out}", "--spacing", "0", "1", "1"],
            "synth.spacing.0: Input should be greater than or equal to 0.001",
        ),
        (["data", "synth", "{out}", "--spacing", "inf", "1", "1"], "synth.spacing.0: Input should be a finite number"),
        (
            ["data", "synth", "{out}", "--spacing", "1e-300", "1", "1"],
            "synth.spacing.0: Input should be greater than or equal",
        ),
        (["data", "splits", "--seed", "-1"], "splits.seed: Input should be greater than or equal to 0"),
        (["data", "splits", "--seed", "4294967296"], "splits.seed: Input should be less than or equal to 4294967295"),
        (["data", "splits", "--set", "splits.seed=-5"], "splits.seed: Input should be greater than or equal to 0"),
    ],
)
def test_seed_and_spacing_ranges(tmp_path: Path, run_cli, monkeypatch, args: list[str], fragment: str) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cohort"
    result = run_cli(*(a.format(out=out) for a in args))
    one_line_error(result, 2, fragment)
    assert list(tmp_path.iterdir()) == []


def test_prepare_onto_a_regular_file(cohort: Path, tmp_path: Path, run_cli) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / DATASET).write_text("mine")
    before = snapshot(cohort, raw)
    result = prepare(run_cli, raw, "--train-sources", cohort)
    one_line_error(result, 1, f"{raw / DATASET}: exists and is a file, not a dataset folder")
    assert snapshot(cohort, raw) == before


# --- defect 8: messages that blame the right thing -------------------------------------------------------


def _nan_in_affine(path: Path) -> None:
    """Put a NaN into srow_x of a .nii.gz header (nibabel itself refuses to write one)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[280:284] = struct.pack("<f", float("nan"))
    path.write_bytes(gzip.compress(bytes(raw)))


def test_nan_affine_is_blamed_on_its_own_file(cohort: Path, run_cli) -> None:
    folder = cases_of(cohort)[0]
    _nan_in_affine(folder / f"{folder.name}-t1c.nii.gz")
    before = snapshot(cohort)
    result = run_cli("data", "check", cohort, "--workers", "1")
    assert result.code == 1
    assert "Traceback" not in result.out + result.err
    problems = [line for line in result.out.splitlines() if line.startswith("error:")]
    assert problems == [
        f"error: {folder.name}: {folder / folder.name}-t1c.nii.gz: "
        "the affine (voxel-to-world matrix) holds NaN or infinite values"
    ]
    assert snapshot(cohort) == before


def test_splits_output_is_a_folder(cohort: Path, tmp_path: Path, run_cli) -> None:
    raw = tmp_path / "raw"
    assert prepare(run_cli, raw, "--train-sources", cohort).code == 0
    folder = tmp_path / "somewhere"
    folder.mkdir()
    result = run_cli("data", "splits", "--nnunet-raw", raw, "-o", folder)
    one_line_error(result, 2, f"{folder}: is a folder; the output is the splits file itself")
    assert list(folder.iterdir()) == []


def test_corrupt_splits_file_is_named_as_such(cohort: Path, tmp_path: Path, run_cli) -> None:
    raw = tmp_path / "raw"
    assert prepare(run_cli, raw, "--train-sources", cohort).code == 0
    dest = tmp_path / "splits_final.json"
    dest.write_text("{not json")
    result = run_cli("data", "splits", "--nnunet-raw", raw, "-o", dest)
    line = one_line_error(result, 1, f"{dest}: exists but is not a usable splits file (not valid JSON")
    assert "different splits file" not in line
    assert dest.read_text() == "{not json"
    assert run_cli("data", "splits", "--nnunet-raw", raw, "-o", dest, "--overwrite").code == 0
    assert len(json.loads(dest.read_text())) == 5


def test_synth_onto_an_empty_regular_file(tmp_path: Path, run_cli) -> None:
    target = tmp_path / "cohort"
    target.write_bytes(b"")
    result = run_cli("data", "synth", target, "--cases", "1", "--shape", "8", "8", "8")
    one_line_error(result, 1, f"{target}: exists and is a file, not a folder")
    assert target.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


def test_an_image_with_an_empty_axis_reports_its_shape(cohort: Path, run_cli) -> None:
    folder = cases_of(cohort)[1]
    write_nifti(folder / f"{folder.name}-t2w.nii.gz", np.zeros((32, 32, 0), np.float32))
    result = run_cli("data", "check", cohort, "--workers", "1")
    assert result.code == 1
    assert "Traceback" not in result.out + result.err
    assert f"{folder.name}-t2w.nii.gz: the image has no voxels (shape (32, 32, 0))" in result.out
    assert "(0,)" not in result.out


@pytest.mark.parametrize("kind", ["folder", "dangling"])
def test_a_folder_or_dangling_link_is_not_a_missing_modality(cohort: Path, run_cli, kind: str) -> None:
    folder = cases_of(cohort)[2]
    path = folder / f"{folder.name}-t2w.nii.gz"
    path.unlink()
    if kind == "folder":
        path.mkdir()
        expected = "is a folder, not a NIfTI file"
    else:
        path.symlink_to(folder / "nowhere.nii.gz")
        expected = "is a dangling link (to "
    before = snapshot(cohort)
    result = run_cli("data", "check", cohort, "--workers", "1")
    assert result.code == 1
    assert "Traceback" not in result.out + result.err
    assert f"{path}: {expected}" in result.out
    assert "missing modality" not in result.out
    result = prepare(run_cli, cohort.parent / "raw", "--train-sources", cohort)
    one_line_error(result, 1, f"{folder.name}: {path}: {expected}")
    assert not (cohort.parent / "raw").exists()
    assert snapshot(cohort) == before


# --- uncompressed .nii case files ------------------------------------------------------------------------


def _decompress_case(folder: Path) -> None:
    for path in sorted(folder.glob("*.nii.gz")):
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()


def test_nii_case_files_work_in_check_prepare_stats_and_viz(cohort: Path, tmp_path: Path, run_cli) -> None:
    folder = cases_of(cohort)[0]
    originals = {p.name: np.asanyarray(nib.load(p).dataobj) for p in folder.glob("*.nii.gz")}
    _decompress_case(folder)
    before = snapshot(cohort)
    assert run_cli("data", "check", cohort, "--workers", "1", "--require-labels").code == 0
    raw = tmp_path / "raw"
    result = prepare(run_cli, raw, "--train-sources", cohort, "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["converted"] == 5
    assert out["links"] == 25
    ds = raw / DATASET
    for channel, modality in enumerate(("t1n", "t1c", "t2w", "t2f")):
        exported = ds / "imagesTr" / f"{folder.name}_{channel:04d}.nii.gz"
        assert exported.stat().st_nlink == 1  # a new compressed file, not a link to the .nii
        assert np.array_equal(nib.load(exported).get_fdata(), originals[f"{folder.name}-{modality}.nii.gz"])
    label = np.asanyarray(nib.load(ds / "labelsTr" / f"{folder.name}.nii.gz").dataobj)
    assert np.array_equal(label, originals[f"{folder.name}-seg.nii.gz"])
    stats = run_cli("data", "stats", cohort, "--no-cache", "--json", "--workers", "1")
    assert stats.code == 0, stats.err
    assert json.loads(stats.out)["summary"]["labelled"] == 6
    png = tmp_path / "case.png"
    viz = run_cli("viz", "static", "--case-dir", folder, "-o", png)
    assert viz.code == 0, viz.err
    assert png.stat().st_size > 0
    assert snapshot(cohort) == before


def test_a_lone_nii_seg_labels_the_case(cohort: Path, tmp_path: Path, run_cli) -> None:
    folder = cases_of(cohort)[0]
    seg = folder / f"{folder.name}-seg.nii.gz"
    seg.with_suffix("").write_bytes(gzip.decompress(seg.read_bytes()))
    seg.unlink()
    assert run_cli("data", "check", cohort, "--workers", "1", "--require-labels").code == 0
    assert prepare(run_cli, tmp_path / "raw", "--train-sources", cohort).code == 0
    assert (tmp_path / "raw" / DATASET / "labelsTr" / f"{folder.name}.nii.gz").is_file()


def test_both_nii_and_nii_gz_is_ambiguous(cohort: Path, run_cli) -> None:
    folder = cases_of(cohort)[0]
    path = folder / f"{folder.name}-t1n.nii.gz"
    path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
    result = run_cli("data", "check", cohort, "--workers", "1")
    assert result.code == 1
    assert f"both {folder.name}-t1n.nii and {folder.name}-t1n.nii.gz exist; keep one" in result.out


# --- the BraTS 2021 layout -------------------------------------------------------------------------------


def make_brats2021(root: Path, n: int = 2) -> list[Path]:
    folders = []
    rng = np.random.default_rng(0)
    for i in range(n):
        case = f"BraTS2021_{i:05d}"
        folder = root / case
        for token in ("flair", "t1", "t1ce", "t2"):
            write_nifti(folder / f"{case}_{token}.nii.gz", rng.random((12, 12, 12), dtype=np.float32) + 0.1)
        seg = np.zeros((12, 12, 12), np.uint8)
        seg[2:10, 2:10, 2:10] = 2
        seg[4:8, 4:8, 4:8] = 1
        seg[5:7, 5:7, 5:7] = 4
        write_nifti(folder / f"{case}_seg.nii.gz", seg)
        folders.append(folder)
    return folders


def test_brats2021_needs_the_flag(tmp_path: Path, run_cli) -> None:
    root = tmp_path / "brats21"
    make_brats2021(root)
    before = snapshot(root)
    result = run_cli("data", "check", root, "--workers", "1")
    assert result.code == 1
    assert "Traceback" not in result.out + result.err
    assert "holds the BraTS 2021 layout" in result.out
    assert "pass --layout brats2021" in result.out
    assert "labels 1 NCR, 2 ED, 4 ET" in result.out
    raw = tmp_path / "raw"
    result = prepare(run_cli, raw, "--train-sources", root)
    one_line_error(result, 1, "holds the BraTS 2021 layout", "pass --layout brats2021")
    assert not raw.exists()
    assert snapshot(root) == before


def test_brats2021_is_imported_with_its_label_map(tmp_path: Path, run_cli) -> None:
    root = tmp_path / "brats21"
    folders = make_brats2021(root)
    before = snapshot(root)
    checked = run_cli("data", "check", root, "--layout", "brats2021", "--workers", "1")
    assert checked.code == 0, checked.out
    assert "2 cases in" in checked.out
    assert "(BraTS 2021 layout)" in checked.out
    assert "0,1,2,4" in checked.out  # the labels as they are in the files
    raw = tmp_path / "raw"
    result = prepare(run_cli, raw, "--train-sources", root, "--layout", "brats2021", "-d", "Dataset521_BraTS2021")
    assert result.code == 0, result.err
    ds = raw / "Dataset521_BraTS2021"
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
    assert meta["segkit"]["label_convention"] == "brats2021"
    assert meta["segkit"]["label_map"] == {"0": 0, "1": 1, "2": 2, "4": 3}
    case = folders[0].name
    # flair -> t2f (channel 3), t1 -> t1n (0), t1ce -> t1c (1), t2 -> t2w (2); images are links
    for channel, token in enumerate(("t1", "t1ce", "t2", "flair")):
        assert os.path.samefile(ds / "imagesTr" / f"{case}_{channel:04d}.nii.gz", folders[0] / f"{case}_{token}.nii.gz")
    label = np.asanyarray(nib.load(ds / "labelsTr" / f"{case}.nii.gz").dataobj)
    source = np.asanyarray(nib.load(folders[0] / f"{case}_seg.nii.gz").dataobj)
    assert sorted(np.unique(label).tolist()) == [0, 1, 2, 3]
    assert np.array_equal(label == 3, source == 4)
    assert np.array_equal(label == 1, source == 1)
    assert snapshot(root) == before


def test_brats2021_regions_have_no_resection_cavity(tmp_path: Path, run_cli) -> None:
    root = tmp_path / "brats21"
    make_brats2021(root)
    raw = tmp_path / "raw"
    assert prepare(run_cli, raw, "--train-sources", root, "--layout", "brats2021", "--regions").code == 0
    meta = json.loads((raw / DATASET / "dataset.json").read_text())
    assert "resection_cavity" not in meta["labels"]
    assert meta["regions_class_order"] == [2, 1, 3]


def test_brats2021_label_3_is_an_error(tmp_path: Path, run_cli) -> None:
    root = tmp_path / "brats21"
    folder = make_brats2021(root, 1)[0]
    seg = np.zeros((12, 12, 12), np.uint8)
    seg[3:5, 3:5, 3:5] = 3
    write_nifti(folder / f"{folder.name}_seg.nii.gz", seg)
    result = prepare(run_cli, tmp_path / "raw", "--train-sources", root, "--layout", "brats2021")
    one_line_error(result, 1, "label(s) 3 are not in the BraTS 2021 layout")
    assert not (tmp_path / "raw").exists()


# --- __MACOSX, qform/sform -------------------------------------------------------------------------------


def test_macosx_folders_are_ignored(cohort: Path, tmp_path: Path, run_cli) -> None:
    (cohort / "__MACOSX" / "BraTS-GLI-00000-000").mkdir(parents=True)
    (cohort / "__MACOSX" / "BraTS-GLI-00000-000" / "._x-t1c.nii.gz").write_bytes(b"\0")
    folder = cases_of(cohort)[1]
    (folder / "__MACOSX").mkdir()
    result = run_cli("data", "check", cohort, "--workers", "1")
    assert result.code == 0, result.out
    assert "__MACOSX" not in result.out
    assert "warning" not in result.out
    assert prepare(run_cli, tmp_path / "raw", "--train-sources", cohort).code == 0


def test_qform_and_sform_that_disagree_are_a_warning(cohort: Path, tmp_path: Path, run_cli) -> None:
    folder = cases_of(cohort)[0]
    path = folder / f"{folder.name}-t1n.nii.gz"
    img = nib.load(path)
    shifted = img.affine.copy()
    shifted[0, 3] += 3.0
    new = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine)
    new.set_sform(img.affine, code=1)
    new.set_qform(shifted, code=1)
    nib.save(new, path)
    before = snapshot(cohort)
    result = run_cli("data", "check", cohort, "--workers", "1")
    assert result.code == 0, result.out
    assert f"warning: {folder.name}: {path}: qform and sform disagree: origin shifted by 3 mm" in result.out
    result = prepare(run_cli, tmp_path / "raw", "--train-sources", cohort)
    assert result.code == 0
    assert f"warning: {folder.name}: {path}: qform and sform disagree" in result.err
    assert snapshot(cohort) == before


# --- --clean only on folders segkit built ----------------------------------------------------------------


def test_clean_replaces_only_a_dataset_segkit_built(cohort: Path, tmp_path: Path, run_cli) -> None:
    raw = tmp_path / "raw"
    foreign = raw / DATASET
    (foreign / "imagesTr").mkdir(parents=True)
    (foreign / "dataset.json").write_text(json.dumps({"name": "theirs", "file_ending": ".nii.gz"}))
    (foreign / "imagesTr" / "X_0000.nii.gz").write_bytes(b"theirs")
    before = snapshot(raw)
    for extra in ([], ["--clean"]):
        result = prepare(run_cli, raw, "--train-sources", cohort, *extra)
        one_line_error(result, 1, "an nnU-Net dataset that segkit did not build (no .segkit_dataset.json)")
        assert "--force" in result.err
        assert snapshot(raw) == before
    result = prepare(run_cli, raw, "--train-sources", cohort, "--clean", "--force")
    assert result.code == 0, result.err
    assert (foreign / ".segkit_dataset.json").is_file()
    assert not (foreign / "imagesTr" / "X_0000.nii.gz").exists()
    # what segkit built it may clean again without --force
    assert prepare(run_cli, raw, "--train-sources", cohort, "--clean").code == 0


# --- issue 9 item 5: --train-sources validation_data without --test-sources ------------------------------


def test_training_on_the_default_test_root(tmp_path: Path, run_cli, monkeypatch) -> None:
    root = tmp_path / "validation_data"
    for i in range(2):
        make_case(root, f"BraTS-GLI-0010{i}-000", shape=(12, 12, 12), seed=i)
    monkeypatch.chdir(tmp_path)
    result = prepare(run_cli, tmp_path / "raw", "--train-sources", "validation_data", "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert len(out["training_cases"]) == 2
    assert out["test_cases"] == []
    # given explicitly as both, it says so
    result = prepare(run_cli, tmp_path / "raw2", "--train-sources", root, "--test-sources", "validation_data")
    one_line_error(result, 2, "given both as a training and as a test source")
    assert not (tmp_path / "raw2").exists()
    shutil.rmtree(tmp_path / "raw")
