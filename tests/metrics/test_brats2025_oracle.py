"""brats2025 against panoptica itself, live, on generated cohorts, for every bundled config of the package.

Cohorts: several grids (at most 64 voxels a side), isotropic and anisotropic spacings, empty references and
predictions, many small components, touching lesions of different labels, a missing prediction. Every case
goes through panoptica (the oracle environment, `tests/_panoptica_oracle.py`) and through segkit, reading the
same NIfTI files; the results must agree with the golden tolerances (counts exact, ratios 1e-6, distances
1e-3 mm), reference lesions included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _helpers import write_nifti
from _panoptica_oracle import compare_region, run_oracle

from segkit.evaluation.cases import prediction_spacing
from segkit.io import read_labels
from segkit.metrics.panoptic import VARIANTS, score_case

GRIDS = [((40, 36, 30), (1.0, 1.0, 1.0)), ((48, 32, 24), (0.8, 1.2, 2.5)), ((64, 40, 20), (1.5, 0.7, 1.0))]
TASK_LABELS = {"gli": 4, "mets": 4, "ped": 4, "MenRT": 1, "MenPre": 3, "GoAT": 3}
"""Largest label each config defines (panoptica refuses labels outside the config's groups)."""


def _blob(shape: tuple[int, ...], rng: np.random.Generator, radius: float) -> np.ndarray:
    centre = [rng.uniform(radius, n - radius) if n > 2 * radius else n / 2 for n in shape]
    axes = [rng.uniform(0.6, 1.4) * radius for _ in shape]
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes, strict=True)) <= 1.0


def _case(shape: tuple[int, int, int], rng: np.random.Generator, top: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros(shape, dtype=np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        gt[_blob(shape, rng, float(rng.uniform(2, 7)))] = int(rng.integers(1, top + 1))
    if kind == "touching":
        # Two lesions of different labels side by side: one component of the merged regions, two of the labels.
        x, y, z = (n // 2 for n in shape)
        gt[x - 4 : x, y - 3 : y + 3, z - 3 : z + 3] = 1
        gt[x : x + 4, y - 3 : y + 3, z - 3 : z + 3] = min(3, top)
    if kind == "speckle":
        spots = rng.random(shape) > 0.996
        gt[spots] = rng.integers(1, top + 1, int(spots.sum()))
    pred = np.roll(gt, tuple(int(v) for v in rng.integers(-2, 3, 3)), axis=(0, 1, 2)).copy()
    pred[rng.random(shape) > 0.9] = 0
    spots = rng.random(shape) > 0.997
    pred[spots] = rng.integers(1, top + 1, int(spots.sum()))
    if rng.random() < 0.5:
        pred[_blob(shape, rng, 3.0)] = int(rng.integers(1, top + 1))  # a spurious lesion
    if kind == "empty_gt":
        gt[:] = 0
    if kind == "empty_pred":
        pred[:] = 0
    if kind == "both_empty":
        gt[:] = 0
        pred[:] = 0
    return gt, pred


KINDS = ["plain", "touching", "speckle", "empty_gt", "empty_pred", "both_empty", "missing"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """One case per grid and kind for every task, written as NIfTI with the grid's spacing."""
    root = tmp_path_factory.mktemp("oracle")
    rng = np.random.default_rng(2025)
    jobs = []
    for task, top in TASK_LABELS.items():
        for g, (shape, spacing) in enumerate(GRIDS):
            for kind in KINDS:
                gt, pred = _case(shape, rng, top, kind)
                affine = np.diag([*spacing, 1.0])
                case = f"{task}_{g}_{kind}"
                write_nifti(root / f"{case}_gt.nii.gz", gt, affine)
                pred_path = None
                if kind != "missing":
                    pred_path = root / f"{case}_pred.nii.gz"
                    write_nifti(pred_path, pred, affine)
                jobs.append({"id": case, "gt": str(root / f"{case}_gt.nii.gz"), "pred": pred_path, "task": task})
    for job in jobs:
        job["pred"] = None if job["pred"] is None else str(job["pred"])
    return jobs


@pytest.fixture(scope="module")
def oracle(cohort: list[dict[str, Any]]) -> dict[str, Any]:
    return run_oracle(cohort)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASK_LABELS))
def test_agrees_with_panoptica(task: str, cohort: list[dict[str, Any]], oracle: dict[str, Any]) -> None:
    problems = []
    jobs = [job for job in cohort if job["task"] == task]
    assert len(jobs) == len(GRIDS) * len(KINDS)
    matched = 0
    for job in jobs:
        gt = read_labels(Path(job["gt"]))
        pred = np.zeros_like(gt.data) if job["pred"] is None else read_labels(Path(job["pred"])).data
        results = score_case(gt.data, pred, prediction_spacing(gt), groups=VARIANTS[task])
        expected = oracle[job["id"]]["result"]
        assert sorted(results) == sorted(expected)
        for region, got in results.items():
            instances = [i.to_dict() for i in got.instances]
            matched += int(got.values["tp"])
            diff = compare_region(got.values, instances, expected[region], ordered=False)
            problems += [f"{job['id']} {region} {line}" for line in diff]
    assert not problems, "\n".join(problems[:30])
    assert matched > 0  # the cohort really exercises the matched-pair metrics
