"""Every number ``brats-evaluation`` 0.0.10 (panoptica 2.1.7, config ``gli``) produced on the golden cases, reproduced.

The cases are those of `golden/brats2024/cases/`; `golden/brats2025/expected/` holds the package's output
(see its README). Tolerances: counts exact, ratios within 1e-6, distances within 1e-3 mm, the per-reference-lesion
list (`reference_instances`) in the package's order. A key the package leaves out, or writes as null, is NaN.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from _panoptica_oracle import compare_region

from segkit.io import read_labels
from segkit.metrics.panoptic import VARIANTS, challenge_row, score_case

GOLDEN = Path(__file__).parent / "golden"
CASES = GOLDEN / "brats2024" / "cases"
EXPECTED = GOLDEN / "brats2025" / "expected"
NAMES = sorted(p.stem for p in EXPECTED.glob("*.json"))
REGIONS = ["wt", "tc", "netc", "snfh", "et", "rc"]


def test_there_are_twenty_golden_cases() -> None:
    assert len(NAMES) == 20
    assert all((CASES / f"{n}_{side}.nii.gz").is_file() for n in NAMES for side in ("gt", "pred"))


@pytest.mark.parametrize("name", NAMES)
def test_golden_case_matches_the_package(name: str) -> None:
    expected = json.loads((EXPECTED / f"{name}.json").read_text())["result"]
    gt = read_labels(CASES / f"{name}_gt.nii.gz")
    pred = read_labels(CASES / f"{name}_pred.nii.gz")
    results = score_case(gt.data, pred.data, gt.spacing, groups=VARIANTS["gli"])
    assert list(results) == REGIONS
    problems = []
    for region in REGIONS:
        got = results[region]
        diff = compare_region(got.values, [i.to_dict() for i in got.instances], expected[region])
        problems += [f"{region} {line}" for line in diff]
    assert not problems, "\n".join(problems)


def test_challenge_row_applies_the_parser_rules() -> None:
    # c08: ET prediction beside the reference, no overlap: global HD95 inf -> 373, lesion-wise HD95 stays inf.
    gt = read_labels(CASES / "c08_adjacent_no_overlap_gt.nii.gz")
    pred = read_labels(CASES / "c08_adjacent_no_overlap_pred.nii.gz")
    results = score_case(gt.data, pred.data, gt.spacing)
    row = challenge_row(results)
    assert row["global_hd95_et"] == 373.0
    assert math.isinf(row["lesionwise_hd95_mean_et"])
    assert row["all_instance_f1_et"] == 0.0
    missing = challenge_row(results, missing_prediction=True)
    assert missing["lesionwise_hd95_mean_wt"] == 373.0
    assert missing["global_hd95_wt"] == 373.0
    assert missing["lesionwise_dsc_mean_wt"] == 0.0
    assert missing["all_instance_tp_wt"] == 0.0


@pytest.mark.slow
def test_segkit_eval_brats2025_reproduces_every_golden_case(run_cli, tmp_path: Path) -> None:
    # The whole command: file reading, header spacing, both protocols in one pass, the lesion reports.
    gt_dir, pred_dir, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    gt_dir.mkdir()
    pred_dir.mkdir()
    ids = {name: f"case{index:02d}" for index, name in enumerate(NAMES)}  # "c10_empty_pred" would lose "_pred"
    for name, case in ids.items():
        shutil.copy(CASES / f"{name}_gt.nii.gz", gt_dir / f"{case}.nii.gz")
        shutil.copy(CASES / f"{name}_pred.nii.gz", pred_dir / f"{case}.nii.gz")
    args = ("eval", gt_dir, pred_dir, "-o", out, "--protocol", "brats2025", "brats2024", "--skip-nnunet")
    result = run_cli(*args, "--no-figure", "--workers", "2", "--hd95-penalty", "337")
    assert result.code == 0, result.err
    report = json.loads((out / "lesion_metrics.json").read_text())
    assert report["protocol"] == "brats2025"
    assert report["regions"] == REGIONS
    problems = []
    for name in NAMES:
        expected = json.loads((EXPECTED / f"{name}.json").read_text())["result"]
        entry = report["cases"][ids[name]]
        for region in REGIONS:
            diff = compare_region(entry["metrics"][region], entry["reference_instances"][region], expected[region])
            problems += [f"{name} {region} {line}" for line in diff]
    assert not problems, "\n".join(problems)
    # The 2024 report of the same pass keeps the official 2024 numbers (the golden 2024 test checks them all).
    other = json.loads((out / "lesion_metrics_brats2024.json").read_text())
    official = json.loads((GOLDEN / "brats2024" / "expected" / "c14_realistic_s11.json").read_text())
    got = other["cases"][ids["c14_realistic_s11"]]["metrics"]["ET"]
    for key, want in official["regions"]["ET"].items():
        assert abs(got[key] - want) <= 1e-3, key
    header = (out / "per_case.csv").read_text().splitlines()[0].split(",")
    assert "lesionwise_dsc_mean_et" in header
    assert "ET_LesionWise_Score_Dice" in header
