"""Small builders shared by the tests: volumes, BraTS cases, data-root snapshots, CLI runs."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from segkit.conventions import MODALITIES


def ball(shape=(32, 32, 32), center=(16, 16, 16), radius=4.0) -> np.ndarray:
    """Boolean ball with the given centre and radius in voxels."""
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, center, strict=True)) <= radius**2


def spacing_phantom() -> tuple[np.ndarray, np.ndarray]:
    """Known-answer WT lesions (label 2) for spacing tests, far apart (no dilation merges them).

    Reference: A, 1000 voxels (10^3) and B, 100 voxels (5x5x4, not predicted). Prediction: A exactly, C of
    30 voxels and D of 15 voxels, both away from every reference lesion. Returns (reference, prediction).
    """
    gt = np.zeros((48, 40, 40), dtype=np.uint8)
    gt[2:12, 2:12, 2:12] = 2  # A
    gt[30:35, 2:7, 2:6] = 2  # B
    pred = np.zeros_like(gt)
    pred[2:12, 2:12, 2:12] = 2  # A
    pred[2:7, 28:31, 28:30] = 2  # C
    pred[30:35, 28:31, 35:36] = 2  # D
    return gt, pred


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write `data` as NIfTI (identity affine by default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def make_case(
    root: Path,
    case_id: str,
    *,
    shape=(16, 16, 16),
    labels: np.ndarray | None = None,
    labelled: bool = True,
    affine: np.ndarray | None = None,
    seed: int = 0,
) -> Path:
    """Write a small BraTS case folder with four random modalities and (optionally) a label map."""
    folder = root / case_id
    rng = np.random.default_rng(seed)
    for modality in MODALITIES:
        write_nifti(folder / f"{case_id}-{modality}.nii.gz", rng.random(shape, dtype=np.float32) + 0.1, affine)
    if labelled:
        if labels is None:
            labels = np.zeros(shape, np.uint8)
            labels[4:8, 4:8, 4:8] = 2
            labels[5:7, 5:7, 5:7] = 3
        write_nifti(folder / f"{case_id}-seg.nii.gz", labels.astype(np.uint8), affine)
    return folder


def snapshot(*roots: Path) -> dict[str, tuple[str, int, int, int]]:
    """Relative path -> (sha256, size, mode, mtime_ns) of every file and folder under the roots."""
    out: dict[str, tuple[str, int, int, int]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in sorted(dirnames + filenames):
                path = Path(dirpath) / name
                st = path.lstat()
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
                out[str(path)] = (digest, st.st_size if path.is_file() else 0, st.st_mode, st.st_mtime_ns)
    return out


def copy_root(src: Path, dst: Path) -> Path:
    """Copy a data root (tests corrupt copies, never the shared fixture)."""
    shutil.copytree(src, dst)
    return dst


@dataclass
class CliResult:
    """Outcome of one in-process CLI run."""

    code: int
    out: str
    err: str
