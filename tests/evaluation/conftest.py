"""Small reference/prediction folders for the evaluation tests (32^3 synthetic cases, perturbed predictions)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from _helpers import write_nifti

from segkit.data.synth import generate_case

SHAPE = (32, 32, 32)


def perturb(labels: np.ndarray, seed: int) -> np.ndarray:
    """A plausible prediction: the labels shifted by a voxel, some speckle, one label partly swapped."""
    rng = np.random.default_rng(seed)
    pred = np.roll(labels, int(rng.integers(-1, 2)), axis=int(rng.integers(0, 3))).astype(np.uint8)
    speckle = rng.random(labels.shape) > 0.995
    pred[speckle] = rng.integers(1, 5, int(speckle.sum()))
    swap = (pred == 3) & (rng.random(labels.shape) > 0.7)
    pred[swap] = 1
    return pred


write_label = write_nifti


@pytest.fixture(scope="session")
def label_pairs_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``gt/<case>.nii.gz`` and ``pred/<case>.nii.gz`` for four synthetic 32^3 cases (copy before modifying)."""
    root = tmp_path_factory.mktemp("eval_template")
    for number in range(4):
        case = generate_case(number, shape=SHAPE, seed=11)
        write_label(root / "gt" / f"{case.case_id}.nii.gz", case.labels, case.affine)
        write_label(root / "pred" / f"{case.case_id}.nii.gz", perturb(case.labels, number), case.affine)
    return root


@pytest.fixture
def label_pairs(tmp_path: Path, label_pairs_template: Path) -> tuple[Path, Path]:
    """A private copy of the template: (gt folder, prediction folder)."""
    shutil.copytree(label_pairs_template, tmp_path / "data")
    return tmp_path / "data" / "gt", tmp_path / "data" / "pred"
