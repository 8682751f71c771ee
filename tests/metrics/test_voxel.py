"""nnU-Net voxel metrics: definitions, NaN rules, summary layout."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segkit.metrics.voxel import confusion_matrix, nnunet_summary, summarise, voxel_metrics

KEYS = (1, 2, 3, 4, (1, 2, 3), (1, 3))


def _direct(gt: np.ndarray, pred: np.ndarray, item) -> dict:
    members = (item,) if isinstance(item, int) else item
    ref, prd = np.isin(gt, members), np.isin(pred, members)
    tp, fp = int((ref & prd).sum()), int((~ref & prd).sum())
    fn, tn = int((ref & ~prd).sum()), int((~ref & ~prd).sum())
    return {"TP": tp, "FP": fp, "FN": fn, "TN": tn}


def test_counts_equal_direct_computation() -> None:
    rng = np.random.default_rng(0)
    gt = np.zeros((20, 22, 18), dtype=np.uint8)
    gt[4:15, 5:16, 3:12] = rng.integers(0, 5, (11, 11, 9))
    pred = np.zeros_like(gt)
    pred[6:17, 5:18, 3:14] = rng.integers(0, 5, (11, 13, 11))
    result = voxel_metrics(gt, pred, KEYS)
    for item in KEYS:
        got = result[str(item)]
        want = _direct(gt, pred, item)
        for name, value in want.items():
            assert got[name] == value, (item, name)
        assert got["n_pred"] == want["TP"] + want["FP"]
        assert got["n_ref"] == want["TP"] + want["FN"]
        assert got["Dice"] == pytest.approx(2 * want["TP"] / (2 * want["TP"] + want["FP"] + want["FN"]))
        assert got["IoU"] == pytest.approx(want["TP"] / (want["TP"] + want["FP"] + want["FN"]))
    assert sum(confusion_matrix(gt, pred, 5).ravel()) == gt.size


def test_dice_is_nan_when_empty_in_both() -> None:
    gt = np.zeros((5, 5, 5), dtype=np.uint8)
    gt[1, 1, 1] = 1
    result = voxel_metrics(gt, gt.copy(), (1, 4))
    assert result["1"]["Dice"] == 1.0
    assert math.isnan(result["4"]["Dice"])
    assert math.isnan(result["4"]["IoU"])
    assert result["4"]["TN"] == 125


def test_summary_layout_and_means() -> None:
    a = {"1": {"Dice": 0.5, "IoU": 1 / 3, "TP": 1, "FP": 1, "FN": 1, "TN": 5, "n_pred": 2, "n_ref": 2}}
    b = {"1": {"Dice": math.nan, "IoU": math.nan, "TP": 0, "FP": 0, "FN": 0, "TN": 8, "n_pred": 0, "n_ref": 0}}
    mean, foreground = summarise([a, b], ["1"])
    assert mean["1"]["Dice"] == 0.5  # nanmean
    assert mean["1"]["TN"] == 6.5
    assert foreground["Dice"] == 0.5
    summary = nnunet_summary([("gt/a.nii.gz", "pred/a.nii.gz", a), ("gt/b.nii.gz", None, b)], ["1"])
    assert list(summary) == ["foreground_mean", "mean", "metric_per_case"]
    assert list(summary["mean"]["1"]) == sorted(summary["mean"]["1"])
    assert summary["metric_per_case"][1]["prediction_file"] is None
    assert list(summary["metric_per_case"][0]) == ["metrics", "prediction_file", "reference_file"]
