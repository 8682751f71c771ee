"""Every number the official BraTS 2024 scorer produced on the golden cases, reproduced.

`golden/brats2024/` holds GT/prediction pairs and the official ``get_LesionWiseResults`` output for each
(see its README). The official code uses the HD95 penalty 337 on every grid, so these tests pass 337.
Tolerances: counts exact, Dice/sensitivity/specificity/volumes within 1e-6, HD95 within 1e-3 mm.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from segkit.evaluation.cases import prediction_spacing
from segkit.io import as_labels, read_volume
from segkit.metrics.lesionwise import OFFICIAL_KEYS, score_case

GOLDEN = Path(__file__).parent / "golden" / "brats2024"
NAMES = sorted(p.stem for p in (GOLDEN / "expected").glob("*.json"))
PENALTY = 337.0


def _tolerance(key: str) -> float:
    if key.startswith("Num_"):
        return 0.0
    return 1e-3 if "HD95" in key or key.startswith("hd95") else 1e-6


def _score(name: str):
    gt = read_volume(GOLDEN / "cases" / f"{name}_gt.nii.gz")
    pred = read_volume(GOLDEN / "cases" / f"{name}_pred.nii.gz")
    spacing = prediction_spacing(pred)
    return score_case(as_labels(gt).data, as_labels(pred).data, spacing, penalty=PENALTY)


def test_there_are_twenty_golden_cases() -> None:
    assert len(NAMES) == 20
    assert all((GOLDEN / "cases" / f"{n}_{side}.nii.gz").is_file() for n in NAMES for side in ("gt", "pred"))


@pytest.mark.parametrize("name", NAMES)
def test_golden_case_matches_official_scorer(name: str) -> None:
    expected = json.loads((GOLDEN / "expected" / f"{name}.json").read_text())
    result = _score(name)
    problems = []
    compared = 0
    assert list(result.regions) == ["WT", "TC", "NETC", "SNFH", "ET", "RC"]
    for region, values in expected["regions"].items():
        assert set(values) == set(OFFICIAL_KEYS)
        for key, want in values.items():
            got = result.regions[region][key]
            compared += 1
            if not abs(got - want) <= _tolerance(key):
                problems.append(f"{region} {key}: official {want!r}, segkit {got!r}")

    rows = result.lesions
    assert len(rows) == len(expected["lesions"]), "per-lesion table length"
    for want, got in zip(expected["lesions"], rows, strict=True):
        where = f"{want['Label']} GT lesion {want['gt_lesion_numbers']}"
        compared += 5
        if (got.region, got.gt_lesion) != (want["Label"], int(want["gt_lesion_numbers"])):
            problems.append(f"{where}: row is {got.region} lesion {got.gt_lesion}")
        if list(got.predicted_lesions) != [int(v) for v in want["predicted_lesion_numbers"]]:
            problems.append(f"{where}: matches {want['predicted_lesion_numbers']} vs {list(got.predicted_lesions)}")
        for key, value in (("gt_lesion_vol", got.volume), ("dice_lesionwise", got.dice), ("hd95_lesionwise", got.hd95)):
            if not abs(value - want[key]) <= _tolerance(key):
                problems.append(f"{where} {key}: official {want[key]!r}, segkit {value!r}")
    assert not problems, "\n".join(problems)
    assert compared >= 60


def test_golden_per_lesion_counts_follow_threshold() -> None:
    # The "counted" flag is what drives the means: rows at or below the threshold never count.
    result = _score("c04_tiny_lesions")
    thresholds = {"ET": 10.0}
    for row in result.lesions:
        assert row.counted == (row.volume > thresholds.get(row.region, 20.0))


def test_golden_penalty_is_a_parameter() -> None:
    # c10: the prediction is empty, every GT lesion is a miss scored with the penalty.
    gt = read_volume(GOLDEN / "cases" / "c10_empty_pred_gt.nii.gz")
    pred = read_volume(GOLDEN / "cases" / "c10_empty_pred_pred.nii.gz")
    labels_gt, labels_pred = as_labels(gt).data, as_labels(pred).data
    for penalty in (337.0, 374.0):
        result = score_case(labels_gt, labels_pred, prediction_spacing(pred), penalty=penalty)
        assert result.regions["WT"]["LesionWise_Score_HD95"] == penalty
        assert result.regions["WT"]["Legacy_HD95"] == penalty
        assert all(row.hd95 == penalty for row in result.lesions)
    assert not math.isnan(result.regions["RC"]["LesionWise_Score_Dice"])


def test_golden_volumes_are_uint8_on_the_sri_grid() -> None:
    volume = read_volume(GOLDEN / "cases" / "c01_identical_gt.nii.gz")
    assert volume.shape == (240, 240, 155)
    assert volume.data.dtype == np.uint8
