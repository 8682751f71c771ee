"""Constants of the visualisation test cohort (shared by conftest and tests), and a prediction writer."""

from __future__ import annotations

from pathlib import Path

SHAPE = (24, 28, 20)
SPACING = (1.0, 1.0, 1.5)
LABELLED = "BraTS-GLI-00000-000"
UNLABELLED = "BraTS-GLI-00002-000"


def write_misregistered(case_dir: Path, dest_dir: Path, kind: str) -> Path:
    """The case's own labels as ``<dest_dir>/<case>.nii.gz``, 30 mm away (``shifted``) or at twice the voxel size."""
    from segkit.io import read_volume, write_volume

    seg = read_volume(case_dir / f"{case_dir.name}-seg.nii.gz")
    affine = seg.affine.copy()
    if kind == "shifted":
        affine[0, 3] += 30.0
    else:
        affine[:3, :3] *= 2.0
    return write_volume(dest_dir / f"{case_dir.name}.nii.gz", seg.data, affine)
