"""Score one case: load and check both label files, then lesion-wise and voxel metrics.

`evaluate_case` never raises for bad data: a case whose files cannot be used comes back with status
``"error"`` and a one-line reason, so that one broken file does not stop a cohort.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from segkit.conventions import MAX_LABEL
from segkit.errors import DataError
from segkit.evaluation.matching import CasePair
from segkit.io import Volume, as_labels, grid_mismatch, read_labels, read_volume
from segkit.metrics.lesionwise import PROTOCOLS, CaseLesionScores, auto_penalty, score_case
from segkit.metrics.voxel import LabelOrRegion, voxel_metrics

Status = Literal["ok", "missing_prediction", "error"]


@dataclass(frozen=True)
class CaseOptions:
    """What to compute for every case (picklable, sent to worker processes).

    Attributes:
        protocol: Lesion-wise protocol name.
        regions: Lesion-wise regions to report, in order.
        voxel_keys: Labels and regions (label tuples) for the voxel metrics.
        penalty: HD95 penalty in mm, or None for the grid-dependent automatic value.
        affine_tolerance: Largest allowed difference between the reference and prediction affines.
    """

    protocol: str
    regions: tuple[str, ...]
    voxel_keys: tuple[LabelOrRegion, ...]
    penalty: float | None = None
    affine_tolerance: float = 1e-4


@dataclass
class CaseResult:
    """Everything known about one case after scoring.

    Attributes:
        case_id: The case id.
        gt_file: Reference label file.
        pred_file: Prediction file, None when missing.
        status: ``ok``, ``missing_prediction`` (scored as an empty prediction) or ``error`` (not scored).
        reason: One line saying what is wrong, for ``error``.
        shape: Voxels along X, Y, Z.
        spacing: Voxel size (mm) used for distances and volumes (the prediction's, as in the reference).
        penalty: HD95 penalty used (mm).
        penalty_rule: Why that penalty (``"explicit"``, ``"182x218x182 1 mm grid"``, ``"volume diagonal"``, ...).
        lesion: Lesion-wise scores.
        voxel: nnU-Net-style voxel metrics by key.
        seconds: Wall time per stage (``load``, ``lesion``, ``voxel``, ``total``).
    """

    case_id: str
    gt_file: str
    pred_file: str | None
    status: Status
    reason: str | None = None
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    penalty: float | None = None
    penalty_rule: str | None = None
    lesion: CaseLesionScores | None = None
    voxel: dict[str, dict[str, Any]] | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def scored(self) -> bool:
        """Whether the case has scores (``ok`` or ``missing_prediction``)."""
        return self.status != "error"


def prediction_spacing(volume: Volume) -> tuple[float, float, float]:
    """Voxel size as the reference scorer sees it: the affine's column norms stored as float32 zooms."""
    sx, sy, sz = (float(np.float32(s)) for s in volume.spacing)
    return (sx, sy, sz)


def _load(pair: CasePair, tolerance: float) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    gt_volume = read_labels(pair.gt, role="reference")
    if pair.pred is None:
        return gt_volume.data, np.zeros_like(gt_volume.data), prediction_spacing(gt_volume)
    pred_volume = read_volume(pair.pred)
    mismatch = grid_mismatch(pred_volume, gt_volume, tolerance)
    if mismatch is not None:
        msg = f"prediction {pair.pred}: grid differs from the reference's ({mismatch})"
        raise DataError(msg)
    pred_volume = as_labels(pred_volume, role="prediction")
    return gt_volume.data, pred_volume.data, prediction_spacing(pred_volume)


def evaluate_case(pair: CasePair, options: CaseOptions) -> CaseResult:
    """Load, check and score one case (module-level so that a process pool can run it).

    A missing prediction is scored as an all-background prediction on the reference grid.
    """
    start = time.perf_counter()
    result = CaseResult(pair.case_id, str(pair.gt), None if pair.pred is None else str(pair.pred), "ok")
    try:
        gt, pred, spacing = _load(pair, options.affine_tolerance)
    except DataError as err:
        result.status, result.reason = "error", str(err)
        result.seconds = {"total": time.perf_counter() - start}
        return result
    loaded = time.perf_counter()
    if pair.pred is None:
        result.status = "missing_prediction"
    result.shape = (int(gt.shape[0]), int(gt.shape[1]), int(gt.shape[2]))
    result.spacing = spacing
    if options.penalty is None:
        result.penalty, result.penalty_rule = auto_penalty(gt.shape, spacing)
    else:
        result.penalty, result.penalty_rule = float(options.penalty), "explicit"
    protocol = PROTOCOLS[options.protocol]
    result.lesion = score_case(gt, pred, spacing, penalty=result.penalty, protocol=protocol, regions=options.regions)
    scored = time.perf_counter()
    result.voxel = voxel_metrics(gt, pred, options.voxel_keys, n_labels=MAX_LABEL + 1)
    end = time.perf_counter()
    result.seconds = {"load": loaded - start, "lesion": scored - loaded, "voxel": end - scored, "total": end - start}
    return result
