"""Score one case: load and check both label files, then lesion-wise and voxel metrics.

`evaluate_case` never raises for bad data. Every reference case counts: a prediction that is missing or
cannot be used (unreadable, truncated, other grid, NaN, non-integer or out-of-range labels, duplicate
ids) is scored as an all-background prediction on the reference grid, the way a missing prediction is
scored, and comes back marked with its reason. Only a reference that cannot be used leaves a case
unscored (status ``"error"``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from segkit.conventions import MAX_LABEL
from segkit.errors import DataError
from segkit.evaluation.matching import CasePair
from segkit.evaluation.settings import protocol_regions, protocols_of, voxel_keys_of
from segkit.io import Volume, as_labels, grid_mismatch, read_labels, read_volume
from segkit.metrics.protocols import ProtocolScores
from segkit.metrics.voxel import voxel_metrics

if TYPE_CHECKING:
    from segkit.config.models import EvalConfig

Status = Literal["ok", "missing_prediction", "unusable_prediction", "error"]


@dataclass
class CaseResult:
    """Everything known about one case after scoring.

    Attributes:
        case_id: The case id.
        gt_file: Reference label file.
        pred_file: Prediction file, None when missing.
        status: ``ok``; ``missing_prediction`` or ``unusable_prediction`` (both scored as an empty
            prediction); ``error`` (the reference cannot be used: not scored).
        reason: One line saying what is wrong, for ``unusable_prediction`` and ``error``.
        shape: Voxels along X, Y, Z.
        spacing: Voxel size (mm) used for distances and volumes (the prediction's, as in the reference).
        penalty: HD95 penalty used (mm) by a protocol that has one (brats2024), else None.
        penalty_rule: Why that penalty (``"explicit"``, ``"182x218x182 1 mm grid"``, ``"volume diagonal"``, ...).
        scores: Protocol name -> its lesion-wise scores, in the order of the chosen protocols.
        labels_present: Labels (> 0) that occur in the reference.
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
    scores: dict[str, ProtocolScores] = field(default_factory=dict)
    labels_present: tuple[int, ...] = ()
    voxel: dict[str, dict[str, Any]] | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def lesion(self) -> ProtocolScores | None:
        """Scores of the first chosen protocol (None when not scored)."""
        return next(iter(self.scores.values()), None)

    @property
    def scored(self) -> bool:
        """Whether the case has scores (every status but ``error``)."""
        return self.status != "error"


def prediction_spacing(volume: Volume) -> tuple[float, float, float]:
    """Voxel size as the reference scorer sees it: the affine's column norms stored as float32 zooms."""
    sx, sy, sz = (float(np.float32(s)) for s in volume.spacing)
    return (sx, sy, sz)


def _load_prediction(pair: CasePair, reference: Volume, tolerance: float) -> Volume:
    """The prediction as a label map on the reference grid.

    Raises:
        DataError: The prediction cannot be used (the message says why and names the file).
    """
    if pair.pred_problem is not None:
        raise DataError(pair.pred_problem)
    assert pair.pred is not None
    pred_volume = read_volume(pair.pred)
    mismatch = grid_mismatch(pred_volume, reference, tolerance)
    if mismatch is not None:
        msg = f"prediction {pair.pred}: grid differs from the reference's ({mismatch})"
        raise DataError(msg)
    return as_labels(pred_volume, role="prediction")


def evaluate_case(pair: CasePair, settings: EvalConfig) -> CaseResult:
    """Load, check and score one case (module-level so that a process pool can run it).

    A missing or unusable prediction is scored as an all-background prediction on the reference grid.
    """
    start = time.perf_counter()
    result = CaseResult(pair.case_id, str(pair.gt), None if pair.pred is None else str(pair.pred), "ok")
    try:
        reference = read_labels(pair.gt, role="reference")
    except DataError as err:
        result.status, result.reason = "error", str(err)
        result.seconds = {"total": time.perf_counter() - start}
        return result
    gt = reference.data
    if pair.pred is None and pair.pred_problem is None:
        result.status = "missing_prediction"
        pred, spacing = np.zeros_like(gt), prediction_spacing(reference)
    else:
        try:
            pred_volume = _load_prediction(pair, reference, settings.affine_tolerance)
            pred, spacing = pred_volume.data, prediction_spacing(pred_volume)
        except DataError as err:
            # Scored exactly like a missing prediction: a broken file must not score better than no file.
            result.status, result.reason = "unusable_prediction", str(err)
            pred, spacing = np.zeros_like(gt), prediction_spacing(reference)
    loaded = time.perf_counter()
    result.shape = (int(gt.shape[0]), int(gt.shape[1]), int(gt.shape[2]))
    result.spacing = spacing
    result.labels_present = tuple(int(v) for v in np.flatnonzero(np.bincount(gt.ravel(order="K")))[1:])
    missing = result.status != "ok"
    for protocol in protocols_of(settings):
        # Each protocol scores the arrays decoded once above.
        scores = protocol.score(
            gt, pred, spacing, settings, protocol_regions(settings, protocol), missing_prediction=missing
        )
        result.scores[protocol.name] = scores
        if "hd95_penalty" in scores.info:
            result.penalty, result.penalty_rule = scores.info["hd95_penalty"], scores.info["penalty_rule"]
    scored = time.perf_counter()
    result.voxel = voxel_metrics(gt, pred, voxel_keys_of(settings), n_labels=MAX_LABEL + 1)
    end = time.perf_counter()
    result.seconds = {"load": loaded - start, "lesion": scored - loaded, "voxel": end - scored, "total": end - start}
    return result
