"""Ways to break one case of a cohort, shared by the check and prepare tests.

Each function damages a copy of a case folder in place and returns (file name fragment, expected message).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from _helpers import write_nifti


def _file(folder: Path, kind: str) -> Path:
    return folder / f"{folder.name}-{kind}.nii.gz"


def _rewrite(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    img = nib.load(path)
    write_nifti(path, data, img.affine if affine is None else affine)


def missing_modality(folder: Path) -> tuple[str, str]:
    _file(folder, "t2f").unlink()
    return "t2f", "missing modality t2f"


def missing_seg(folder: Path) -> tuple[str, str]:
    _file(folder, "seg").unlink()
    return "seg", "missing segmentation"


def truncated(folder: Path) -> tuple[str, str]:
    path = _file(folder, "t1n")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "t1n", "truncated or corrupt"


def not_nifti(folder: Path) -> tuple[str, str]:
    _file(folder, "t1c").write_bytes(b"this is not a nifti file")
    return "t1c", "not a readable NIfTI file"


def shape_mismatch(folder: Path) -> tuple[str, str]:
    path = _file(folder, "t2w")
    data = np.asanyarray(nib.load(path).dataobj)
    _rewrite(path, data[:-2])
    return "t2w", "grid differs from t1c: shape"


def affine_mismatch(folder: Path) -> tuple[str, str]:
    path = _file(folder, "t2w")
    img = nib.load(path)
    affine = img.affine.copy()
    affine[0, 3] += 2.5
    _rewrite(path, np.asanyarray(img.dataobj), affine)
    return "t2w", "grid differs from t1c: origin shifted by 2.5 mm"


def nan_voxels(folder: Path) -> tuple[str, str]:
    path = _file(folder, "t1c")
    data = np.asanyarray(nib.load(path).dataobj).astype(np.float32)
    data[1, 1, 1] = np.nan
    data[2, 2, 2] = np.inf
    _rewrite(path, data)
    return "t1c", "2 voxels are NaN or infinite"


def labels_out_of_range(folder: Path) -> tuple[str, str]:
    path = _file(folder, "seg")
    data = np.asanyarray(nib.load(path).dataobj).copy()
    data[0, 0, 0] = 7
    _rewrite(path, data)
    return "seg", "labels outside 0-4: 7"


def labels_not_integer(folder: Path) -> tuple[str, str]:
    path = _file(folder, "seg")
    data = np.asanyarray(nib.load(path).dataobj).astype(np.float32)
    data[0, 0, 0] = 1.5
    _rewrite(path, data)
    return "seg", "not integer-valued (e.g. 1.5)"


def four_d(folder: Path) -> tuple[str, str]:
    path = _file(folder, "t1n")
    data = np.asanyarray(nib.load(path).dataobj)
    _rewrite(path, np.stack([data, data], axis=-1))
    return "t1n", "expected a 3-D volume"


ALL = [
    missing_modality,
    truncated,
    not_nifti,
    shape_mismatch,
    affine_mismatch,
    nan_voxels,
    labels_out_of_range,
    labels_not_integer,
    four_d,
]


def duplicate_into(src_root: Path, dst_root: Path) -> str:
    """Copy the first case of `src_root` into `dst_root` (same id in two roots)."""
    first = sorted(p for p in src_root.iterdir() if p.is_dir())[0]
    shutil.copytree(first, dst_root / first.name)
    return first.name
