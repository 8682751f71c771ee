"""Voxel-wise metrics with nnU-Net's definitions (``nnunetv2.evaluation.evaluate_predictions``, 2.8.1).

For each label or region (a tuple of labels whose union is scored): ``TP``, ``FP``, ``FN``, ``TN`` voxel
counts, ``n_pred = TP + FP``, ``n_ref = TP + FN``, ``Dice = 2TP / (2TP + FP + FN)`` and
``IoU = TP / (TP + FP + FN)``, both NaN when ``TP + FP + FN == 0`` (empty in both). Across cases, ``mean``
is the NaN-ignoring mean per label/region and ``foreground_mean`` the plain mean of those means over all
keys except label 0. Keys are written as nnU-Net writes them: ``"1"`` for a label, ``"(1, 2, 3)"`` for a region.

Counts come from one confusion matrix per case, computed on the bounding box of the foreground, with the
voxels outside the box added to background/background, so the cost follows the objects.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from segkit.metrics.morphology import bounding_box

LabelOrRegion = int | tuple[int, ...]

METRIC_NAMES: Final = ("Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref")
"""Per-label metrics, in the order nnU-Net computes them."""


def key_of(label_or_region: LabelOrRegion) -> str:
    """nnU-Net's JSON key: ``"3"`` for a label, ``"(1, 3)"`` for a region."""
    return str(label_or_region)


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Voxel counts ``C[g, p]`` of reference label ``g`` and predicted label ``p``.

    Args:
        gt: (X, Y, Z) integer labels in ``0..n_labels-1``.
        pred: (X, Y, Z) integer labels in ``0..n_labels-1``, same shape.
        n_labels: Number of label values.

    Returns:
        (n_labels, n_labels) int64 counts over the whole volume.
    """
    box = bounding_box((gt != 0) | (pred != 0))
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    if box is not None:
        joint = gt[box].astype(np.int64) * n_labels + pred[box].astype(np.int64)
        matrix += np.bincount(joint.ravel(), minlength=n_labels * n_labels).reshape(n_labels, n_labels)
    matrix[0, 0] += gt.size - int(matrix.sum())
    return matrix


def metrics_from_confusion(matrix: np.ndarray, labels_or_regions: Sequence[LabelOrRegion]) -> dict[str, dict[str, Any]]:
    """nnU-Net's per-label/region metrics of one case from its confusion matrix.

    Returns:
        Key (``key_of``) -> metric name -> value (ints for counts, float or NaN for Dice/IoU).
    """
    out: dict[str, dict[str, Any]] = {}
    n = matrix.shape[0]
    for item in labels_or_regions:
        members = (item,) if isinstance(item, int) else tuple(item)
        inside = np.zeros(n, dtype=bool)
        inside[[m for m in members if 0 <= m < n]] = True
        tp = int(matrix[np.ix_(inside, inside)].sum())
        fp = int(matrix[np.ix_(~inside, inside)].sum())
        fn = int(matrix[np.ix_(inside, ~inside)].sum())
        tn = int(matrix[np.ix_(~inside, ~inside)].sum())
        if tp + fp + fn == 0:
            dice = iou = math.nan
        else:
            dice = 2 * tp / (2 * tp + fp + fn)
            iou = tp / (tp + fp + fn)
        out[key_of(item)] = {
            "Dice": dice,
            "IoU": iou,
            "FP": fp,
            "TP": tp,
            "FN": fn,
            "TN": tn,
            "n_pred": fp + tp,
            "n_ref": fn + tp,
        }
    return out


def voxel_metrics(
    gt: np.ndarray, pred: np.ndarray, labels_or_regions: Sequence[LabelOrRegion], n_labels: int = 5
) -> dict[str, dict[str, Any]]:
    """nnU-Net's per-label/region metrics of one case (see the module docstring)."""
    return metrics_from_confusion(confusion_matrix(gt, pred, n_labels), labels_or_regions)


def summarise(per_case: Sequence[Mapping[str, Mapping[str, Any]]], keys: Sequence[str]) -> tuple[dict, dict]:
    """nnU-Net's ``mean`` (NaN-ignoring mean over cases) and ``foreground_mean`` (mean over keys but "0").

    Args:
        per_case: One `voxel_metrics` result per case.
        keys: Label/region keys in output order.

    Returns:
        ``(mean, foreground_mean)``; means of nothing are NaN.
    """
    mean: dict[str, dict[str, float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-NaN is NaN, as in nnU-Net
        for key in keys:
            mean[key] = {
                name: float(np.nanmean([float(case[key][name]) for case in per_case])) if per_case else math.nan
                for name in METRIC_NAMES
            }
        foreground = [k for k in keys if k != "0"]
        foreground_mean = {
            name: float(np.mean([mean[k][name] for k in foreground])) if foreground else math.nan
            for name in METRIC_NAMES
        }
    return mean, foreground_mean


def nnunet_summary(
    cases: Sequence[tuple[str, str | None, Mapping[str, Mapping[str, Any]]]], keys: Sequence[str]
) -> dict[str, Any]:
    """A summary in the layout of nnU-Net's ``summary.json`` (keys sorted, as nnU-Net saves it).

    Args:
        cases: ``(reference_file, prediction_file or None, metrics)`` per case, in output order.
        keys: Label/region keys.
    """
    per_case = [metrics for _, _, metrics in cases]
    mean, foreground_mean = summarise(per_case, keys)
    return {
        "foreground_mean": dict(sorted(foreground_mean.items())),
        "mean": {k: dict(sorted(mean[k].items())) for k in sorted(keys)},
        "metric_per_case": [
            {
                "metrics": {k: dict(sorted(metrics[k].items())) for k in sorted(keys)},
                "prediction_file": pred,
                "reference_file": ref,
            }
            for ref, pred, metrics in cases
        ],
    }
