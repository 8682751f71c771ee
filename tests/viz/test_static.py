"""`segkit viz static`: formats, layouts, overlays, prediction rows and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _helpers import snapshot
from _vizdata import LABELLED, SHAPE, SPACING, UNLABELLED, write_misregistered

from segkit.data.cases import scan_case_folder
from segkit.viz import render as R  # noqa: N812
from segkit.viz.static import static_spec
from segkit.viz.volumes import load_case_volumes


@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_output_format_follows_the_suffix(run_cli, viz_root: Path, tmp_path: Path, suffix: str, magic: bytes) -> None:
    out = tmp_path / f"figure{suffix}"
    result = run_cli("viz", "static", "--case-dir", viz_root / LABELLED, "--output", out)
    assert result.code == 0, result.err
    assert out.read_bytes().startswith(magic)
    assert f"figure{suffix}" in result.out


def test_png_has_titles_legend_and_every_modality(viz_root: Path, tmp_path: Path, run_cli) -> None:
    import imageio.v3 as iio

    out = tmp_path / "m.png"
    result = run_cli("viz", "static", "--case-dir", viz_root / LABELLED, "-o", out, "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    assert info["slices"] == [{"axis": "axial", "index": 10, "count": 20}]  # fraction 0.5 of 20 axial slices
    image = iio.imread(out)
    assert image.shape[1] > image.shape[0]  # four panels side by side
    for colour in (R.BRATS_COLOURS[2], R.BRATS_COLOURS[4]):  # the legend swatches are drawn solid
        assert (image[..., :3] == colour).all(axis=-1).any()


def test_spec_rows_columns_and_overlay_colours(viz_root: Path) -> None:
    case = scan_case_folder(viz_root / LABELLED)
    volumes = load_case_volumes(case, labels="required")
    spec, slices = static_spec(volumes, axis="axial", index=12, alpha=1.0)
    assert len(spec.rows) == 1
    assert [p.title.split(" ")[0] for p in spec.rows[0]] == ["t1c", "t1n", "t2f", "t2w"]
    assert slices[0].file_index == 12
    # z is not flipped in the LAS grid: file index 12 is RAS index 12; 1.5 mm z does not affect axial pixels
    labels = R.display_slice(volumes.labels, "axial", 12)
    panel = spec.rows[0][0].image
    assert panel.shape == (SHAPE[1], SHAPE[0], 3)
    assert len(np.unique(labels[labels > 0])) >= 2  # the slice holds labels: the loop below checks something
    for value in np.unique(labels[labels > 0]):
        assert (panel[labels == value] == R.BRATS_COLOURS[int(value)]).all()
    ortho, slices = static_spec(volumes, layout="orthogonal", indices=(3, 4, 5), modality="t2f")
    assert [s.file_index for s in slices] == [3, 4, 5]
    assert [s.axis for s in slices] == ["sagittal", "coronal", "axial"]
    # coronal/sagittal panels are stretched vertically by the 1.5 mm slices: 20 * 1.5 = 30 rows
    assert ortho.rows[0][1].image.shape[:2] == (round(SHAPE[2] * SPACING[2]), SHAPE[0])
    assert ortho.rows[0][0].image.shape[:2] == (30, SHAPE[1])


def test_prediction_adds_prediction_and_error_rows(run_cli, viz_root: Path, tmp_path: Path) -> None:
    from segkit.io import read_volume, write_volume

    seg = read_volume(viz_root / LABELLED / f"{LABELLED}-seg.nii.gz")
    pred = np.roll(seg.data, 2, axis=0)  # shifted: TP, FP and FN all present
    pred_path = write_volume(tmp_path / "pred" / f"{LABELLED}.nii.gz", pred, seg.affine)
    out = tmp_path / "errors.png"
    result = run_cli("viz", "static", "--case-dir", viz_root / LABELLED, "--pred", pred_path, "-o", out)
    assert result.code == 0, result.err
    volumes = load_case_volumes(scan_case_folder(viz_root / LABELLED), prediction=pred_path)
    spec, slices = static_spec(volumes, alpha=1.0)
    assert len(spec.rows) == 3
    assert spec.row_titles == ("ground truth", "prediction", "errors vs ground truth")
    errors = spec.rows[2][0].image
    codes = R.error_codes(
        R.display_slice(volumes.labels, "axial", slices[0].ras_index),
        R.display_slice(volumes.prediction, "axial", slices[0].ras_index),
    )
    for code in (R.TP, R.FP, R.FN):
        assert (codes == code).any()
        assert (errors[codes == code] == R.ERROR_COLOURS[code]).all()
    assert ("false negative", R.ERROR_COLOURS[R.FN]) in spec.legend


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("shifted", "origin shifted by 30 mm"), ("rescaled", "voxel size 2x2x3 mm vs 1x1x1.5 mm")],
)
def test_misregistered_prediction_is_refused(run_cli, viz_root: Path, tmp_path: Path, kind: str, reason: str) -> None:
    # Same shape and orientation, but 30 mm away or twice the voxel size: error colours would be wrong.
    pred_path = write_misregistered(viz_root / LABELLED, tmp_path / "pred", kind)
    out = tmp_path / "x.png"
    result = run_cli("viz", "static", "--case-dir", viz_root / LABELLED, "--pred", pred_path, "-o", out)
    assert result.code == 1
    first = result.err.splitlines()[0]
    assert first.startswith(f"error: {pred_path}: grid differs from {LABELLED}-t1c.nii.gz (")
    assert reason in first
    assert not out.exists()


def test_orthogonal_layout_with_indices_from_the_cli(run_cli, viz_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.png"
    result = run_cli(
        "viz",
        "static",
        "--case-dir",
        viz_root / LABELLED,
        "--layout",
        "orthogonal",
        "--modality",
        "t2f",
        "--indices",
        "3",
        "4",
        "5",
        "--style",
        "contour",
        "-o",
        out,
        "--json",
    )
    assert result.code == 0, result.err
    assert [s["index"] for s in json.loads(result.out)["slices"]] == [3, 4, 5]


def test_missing_modality_fails_fast_naming_the_file(run_cli, viz_root: Path, tmp_path: Path) -> None:
    missing = viz_root / LABELLED / f"{LABELLED}-t2w.nii.gz"
    missing.unlink()
    result = run_cli("viz", "static", "--case-dir", viz_root / LABELLED, "-o", tmp_path / "x.png")
    assert result.code == 1
    assert result.err.splitlines()[0] == f"error: {missing}: file not found (case {LABELLED} has no t2w image)"
    assert not (tmp_path / "x.png").exists()


def test_unlabelled_case_needs_no_overlay(run_cli, viz_root: Path, tmp_path: Path) -> None:
    result = run_cli("viz", "static", "--case-dir", viz_root / UNLABELLED, "-o", tmp_path / "x.png")
    assert result.code == 1
    assert f"{UNLABELLED}-seg.nii.gz: file not found" in result.err
    assert "--no-overlay" in result.err
    result = run_cli("viz", "static", "--case-dir", viz_root / UNLABELLED, "--no-overlay", "-o", tmp_path / "x.png")
    assert result.code == 0, result.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--index", "20"], "axial slice index 20 is outside 0..19"),
        (["--index", "3", "--fraction", "0.5"], "either --fraction or --index"),
        (["--layout", "diagonal"], "viz.static.layout"),
        (["--axis", "oblique"], "viz.static.axis"),
        (["--fraction", "1.5"], "viz.static.fraction"),
        (["-o", "figure.jpg"], "unsupported figure format .jpg"),
        (["--layout", "orthogonal", "--indices", "1", "2"], "viz.static.indices"),
    ],
)
def test_bad_choices_are_usage_errors(run_cli, viz_root: Path, tmp_path: Path, args, message) -> None:
    if "-o" not in args:
        args = [*args, "-o", str(tmp_path / "x.png")]
    result = run_cli("viz", "static", "--case-dir", viz_root / LABELLED, *args)
    assert result.code == 2, result.err
    assert message in result.err
    assert len([line for line in result.err.splitlines() if line.strip()]) <= 2


def test_existing_output_needs_overwrite(run_cli, viz_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    out.write_bytes(b"keep")
    result = run_cli("viz", "static", "--case-dir", viz_root / LABELLED, "-o", out)
    assert result.code == 1
    assert out.read_bytes() == b"keep"
    assert run_cli("viz", "static", "--case-dir", viz_root / LABELLED, "-o", out, "--overwrite").code == 0
    assert out.read_bytes().startswith(b"\x89PNG")


def test_output_inside_the_case_folder_is_refused(run_cli, viz_root: Path) -> None:
    case_dir = viz_root / LABELLED
    result = run_cli("viz", "static", "--case-dir", case_dir, "-o", case_dir / "panel.png")
    assert result.code == 1
    assert "the output overlaps the case folder" in result.err.splitlines()[0]
    assert not (case_dir / "panel.png").exists()


def test_default_output_goes_under_outputs_figures(run_cli, viz_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("viz", "static", "--case-dir", viz_root / LABELLED, "--layout", "orthogonal")
    assert result.code == 0, result.err
    assert (tmp_path / "outputs" / "figures" / f"{LABELLED}_orthogonal.png").is_file()


def test_missing_case_dir(run_cli, tmp_path: Path) -> None:
    result = run_cli("viz", "static", "--case-dir", tmp_path / "nope")
    assert result.code == 1
    assert "case folder not found" in result.err
    assert run_cli("viz", "static").code == 2


def test_show_opens_a_window_and_still_writes(run_cli, viz_root: Path, tmp_path: Path, monkeypatch) -> None:
    import segkit.viz.export

    shown = []
    monkeypatch.setattr(segkit.viz.export, "show_figure", lambda fig: shown.append(fig))
    out = tmp_path / "shown.png"
    result = run_cli("viz", "static", "--case-dir", viz_root / LABELLED, "-o", out, "--show")
    assert result.code == 0, result.err
    assert len(shown) == 1
    assert out.is_file()


@pytest.mark.parametrize("where", ["name", "folder"])
def test_output_name_over_255_bytes_is_a_usage_error(run_cli, viz_root: Path, tmp_path: Path, where: str) -> None:
    # 256 bytes: 252 ASCII + ".png", or 130 two-byte characters as a folder name.
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / f"{'x' * 252}.png" if where == "name" else folder / ("é" * 130) / "fig.png"
    before = snapshot(viz_root)
    result = run_cli("viz", "static", "--case-dir", viz_root / LABELLED, "-o", out)
    assert result.code == 2
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert lines[0].startswith("error: ")
    assert "name too long (" in lines[0]
    assert "at most 255" in lines[0]
    assert list(folder.iterdir()) == []
    assert snapshot(viz_root) == before


def test_output_name_of_exactly_255_bytes_is_written(run_cli, viz_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / ("y" * 251 + ".png")
    result = run_cli("viz", "static", "--case-dir", viz_root / LABELLED, "-o", out)
    assert result.code == 0, result.err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == [out.name]
