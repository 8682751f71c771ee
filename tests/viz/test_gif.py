"""`segkit viz gif`: frame count and size, naming, whole roots, bad input, speed."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from _helpers import snapshot
from _vizdata import LABELLED, SHAPE, SPACING, UNLABELLED

from segkit.progress import RecordingProgress
from segkit.viz import render as R  # noqa: N812


def _frames(path: Path) -> np.ndarray:
    return iio.imread(path, index=None)


@pytest.mark.parametrize(
    ("axis", "step", "frames", "size"),
    [
        ("axial", 1, SHAPE[2], (SHAPE[0], SHAPE[1])),  # (width, height)
        ("axial", 3, 7, (SHAPE[0], SHAPE[1])),  # ceil(20 / 3)
        ("coronal", 2, SHAPE[1] // 2, (SHAPE[0], round(SHAPE[2] * SPACING[2]))),  # 1.5 mm z stretched
        ("sagittal", 1, SHAPE[0], (SHAPE[1], round(SHAPE[2] * SPACING[2]))),
    ],
)
def test_frame_count_and_size(run_cli, viz_root: Path, tmp_path: Path, axis, step, frames, size) -> None:
    out = tmp_path / "gifs"
    result = run_cli(
        "viz",
        "gif",
        "--root",
        viz_root,
        "--case",
        LABELLED,
        "--axis",
        axis,
        "--step",
        step,
        "--overlay",
        "--modality",
        "t2f",
        "--output-dir",
        out,
        "--json",
    )
    assert result.code == 0, result.err
    path = out / f"{LABELLED}_t2f_{axis}.gif"
    info = json.loads(result.out)
    assert info == [
        {
            "case": LABELLED,
            "path": str(path),
            "frames": frames,
            "width": size[0],
            "height": size[1],
            "seconds": info[0]["seconds"],
        }
    ]
    data = _frames(path)
    assert data.shape[:3] == (frames, size[1], size[0])
    meta = iio.immeta(path, index=0)
    assert meta["duration"] == 80
    assert meta["loop"] == 0


def test_gif_pixels_are_the_rendered_overlay(run_cli, viz_root: Path, tmp_path: Path) -> None:
    from segkit.data.cases import scan_case_folder
    from segkit.viz.volumes import load_case_volumes

    result = run_cli(
        "viz",
        "gif",
        "--root",
        viz_root,
        "--case",
        LABELLED,
        "--overlay",
        "--alpha",
        "1",
        "--output-dir",
        tmp_path,
    )
    assert result.code == 0, result.err
    data = _frames(tmp_path / f"{LABELLED}_t1c_axial.gif")[..., :3]
    volumes = load_case_volumes(scan_case_folder(viz_root / LABELLED), ("t1c",), labels="required")
    for z in range(SHAPE[2]):
        labels = R.display_slice(volumes.labels, "axial", z)
        for value in (1, 2, 3, 4):
            assert (data[z][labels == value] == R.BRATS_COLOURS[value]).all()


def test_whole_root_with_max_cases_and_progress(viz_root: Path, tmp_path: Path) -> None:
    from segkit.viz.gif import make_gifs

    progress = RecordingProgress()
    outcomes = make_gifs(viz_root, tmp_path, max_cases=2, workers=1, progress=progress)
    assert [o.path.name for o in outcomes] == [
        "BraTS-GLI-00000-000_t1c_axial.gif",
        "BraTS-GLI-00001-000_t1c_axial.gif",
    ]
    assert progress.events[0] == ("start", "writing GIFs", 2)
    assert sum(1 for e in progress.events if e[0] == "advance") == 2
    everything = make_gifs(viz_root, tmp_path / "all", axis="sagittal", workers=2)
    assert len(everything) == 3  # the unlabelled case too: no overlay asked
    assert all(o.path.is_file() for o in everything)


def test_overlay_on_an_unlabelled_case_fails_before_any_work(run_cli, viz_root: Path, tmp_path: Path) -> None:
    result = run_cli("viz", "gif", "--root", viz_root, "--overlay", "--output-dir", tmp_path / "g")
    assert result.code == 1
    seg = viz_root / UNLABELLED / f"{UNLABELLED}-seg.nii.gz"
    assert result.err.splitlines()[0] == f"error: {seg}: file not found (case {UNLABELLED} has no segmentation)"
    assert not list((tmp_path).rglob("*.gif"))


def test_missing_modality_and_unknown_case(run_cli, viz_root: Path, tmp_path: Path) -> None:
    (viz_root / LABELLED / f"{LABELLED}-t1n.nii.gz").unlink()
    result = run_cli("viz", "gif", "--root", viz_root, "--modality", "t1n", "--output-dir", tmp_path)
    assert result.code == 1
    assert f"{LABELLED}-t1n.nii.gz: file not found" in result.err
    result = run_cli("viz", "gif", "--root", viz_root, "--case", "BraTS-GLI-0000-000", "--output-dir", tmp_path)
    assert result.code == 1
    assert "did you mean 'BraTS-GLI-0000" in result.err


def test_empty_or_missing_root(run_cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_cli("viz", "gif", "--root", tmp_path / "empty", "--output-dir", tmp_path / "g")
    assert result.code == 1
    assert "no case folders found" in result.err
    result = run_cli("viz", "gif", "--root", tmp_path / "nope", "--output-dir", tmp_path / "g")
    assert result.code == 1
    assert "data root not found" in result.err


def test_existing_gif_needs_overwrite(run_cli, viz_root: Path, tmp_path: Path) -> None:
    args = ("viz", "gif", "--root", viz_root, "--case", LABELLED, "--output-dir", tmp_path)
    assert run_cli(*args).code == 0
    result = run_cli(*args)
    assert result.code == 1
    assert "--overwrite" in result.err
    assert run_cli(*args, "--overwrite").code == 0


def test_a_brats_sized_sweep_with_overlay(tmp_path: Path) -> None:
    """155 frames of 240x240 with overlay, composed and written; speed lives in benchmarks/bench_gif.py."""
    from segkit.viz.export import write_gif

    rng = np.random.default_rng(0)
    image = rng.normal(500, 100, (240, 240, 155)).astype(np.float32)
    labels = np.zeros(image.shape, np.int16)
    labels[80:160, 90:150, 40:110] = 2
    labels[100:140, 100:140, 60:90] = 3
    frames = R.indexed_sweep(image, "axial", limits=R.window_limits(image), labels_ras=labels)
    write_gif(tmp_path / "big.gif", frames)
    assert frames.frames.shape == (155, 240, 240)
    assert _frames(tmp_path / "big.gif").shape[0] == 155


def test_one_unusable_case_does_not_stop_the_others(run_cli, viz_root: Path, tmp_path: Path) -> None:
    bad = viz_root / LABELLED / f"{LABELLED}-t2w.nii.gz"
    bad.write_bytes(b"not a nifti")
    out = tmp_path / "g"
    result = run_cli("viz", "gif", "--root", viz_root, "--modality", "t2w", "--output-dir", out, "-j", "1")
    assert result.code == 1
    lines = result.err.splitlines()
    assert lines[0].startswith(f"error: {bad}: ")
    assert "1 of 3 case(s) failed; the other 2 GIF(s) are in" in result.err
    assert sorted(p.name for p in out.iterdir()) == [
        "BraTS-GLI-00001-000_t2w_axial.gif",
        "BraTS-GLI-00002-000_t2w_axial.gif",
    ]


def test_output_inside_the_root_is_refused(run_cli, viz_root: Path) -> None:
    out = viz_root / LABELLED
    before = sorted(p.name for p in out.iterdir())
    result = run_cli("viz", "gif", "--root", viz_root, "--case", LABELLED, "--output-dir", out)
    assert result.code == 1
    assert result.err.splitlines()[0] == (
        f"error: {out}: the output overlaps the data root {viz_root}; segkit never writes into its inputs"
    )
    assert sorted(p.name for p in out.iterdir()) == before


def test_every_case_failing_leaves_no_folder(run_cli, viz_root: Path, tmp_path: Path) -> None:
    for case in sorted(p for p in viz_root.iterdir() if p.is_dir()):
        (case / f"{case.name}-t2w.nii.gz").write_bytes(b"not a nifti")
    before = snapshot(viz_root)
    out = tmp_path / "new" / "gifs"
    result = run_cli("viz", "gif", "--root", viz_root, "--modality", "t2w", "--output-dir", out, "-j", "1")
    assert result.code == 1
    assert "Traceback" not in result.err
    assert result.err.splitlines()[0].startswith("error: ")
    assert "all 3 cases failed; no GIF was written" in result.err
    assert "the other" not in result.err
    assert not (tmp_path / "new").exists()
    assert snapshot(viz_root) == before


def test_every_case_failing_keeps_an_existing_folder(run_cli, viz_root: Path, tmp_path: Path) -> None:
    bad = viz_root / LABELLED / f"{LABELLED}-t2w.nii.gz"
    bad.write_bytes(b"not a nifti")
    out = tmp_path / "mine"
    out.mkdir()
    result = run_cli("viz", "gif", "--root", viz_root, "--case", LABELLED, "--modality", "t2w", "--output-dir", out)
    assert result.code == 1
    assert "the case failed; no GIF was written" in result.err
    assert out.is_dir()
    assert not any(out.iterdir())
