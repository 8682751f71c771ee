"""BraTS lesion-wise metrics, protocol ``brats2024``: the official 2024 GLI scorer, number for number.

The definition (with its quirks) is that of ``metrics_GLI.py`` at rachitsaluja/BraTS-2024-Metrics@9a0ab9c,
re-implemented on crops (see ``shared/reference/brats_metrics.md`` for the step-by-step specification):

* regions WT = {1,2,3}, TC = {1,3}, NETC = 1, SNFH = 2, ET = 3, RC = 4;
* per-region dilation ``d`` (NETC and RC 5, the rest 3 — SNFH too, because the reference spells it
  "SFNH") and size threshold ``t`` (ET 10, the rest 20);
* lesions by dilation merging, prediction lesions of at most ``t`` voxels deleted before anything else,
  cross-tissue merging for the four tissues (`segkit.metrics.lesions`);
* each GT lesion is matched by every prediction lesion reaching into its ``d``-dilation (many-to-many);
  its Dice and HD95 are against the union of those prediction lesions; HD95 is the surfel-weighted
  robust Hausdorff distance with the *prediction's* voxel spacing, ``inf`` (no match) becoming the penalty;
* GT lesions of at most ``t`` mm³ leave the means; prediction lesions matching no GT lesion are false
  positives scoring Dice 0 and HD95 = penalty; an empty denominator gives Dice 1 and HD95 0;
* "legacy" full-region Dice and HD95 and GaNDLF-style sensitivity/specificity are computed on the
  lesion *label maps*, as the reference does (its HD95 then sees label values modulo 256).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from segkit.metrics import lesions as _lesions
from segkit.metrics.morphology import Box, bounding_box, dilate, grow, relative, union
from segkit.metrics.surface import Spacing3, hausdorff95

OFFICIAL_KEYS: Final = (
    "Num_TP",
    "Num_FP",
    "Num_FN",
    "Sensitivity",
    "Specificity",
    "Legacy_Dice",
    "Legacy_HD95",
    "GT_Complete_Volume",
    "LesionWise_Score_Dice",
    "LesionWise_Score_HD95",
)
"""The ten per-region outputs of the official scorer, in its column order."""


@dataclass(frozen=True)
class RegionRule:
    """How one region is scored.

    Attributes:
        name: Region name (``WT``, ``ET``, ...).
        labels: Label values forming the region.
        dilation: Dilation steps for lesion merging and for matching.
        threshold: GT lesions of at most this volume (mm³) leave the means; prediction lesions of at most
            this many voxels are deleted.
        merge_by: Regions (tissues) whose original lesion maps regroup this one, in order; empty for none.
    """

    name: str
    labels: tuple[int, ...]
    dilation: int
    threshold: float
    merge_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Protocol:
    """A lesion-wise protocol: its regions in output order."""

    name: str
    regions: tuple[RegionRule, ...]

    def region(self, name: str) -> RegionRule:
        """The rule of region `name`."""
        for rule in self.regions:
            if rule.name == name:
                return rule
        msg = f"protocol {self.name} has no region {name!r}"
        raise KeyError(msg)

    @property
    def region_names(self) -> tuple[str, ...]:
        """Region names in output order."""
        return tuple(rule.name for rule in self.regions)


BRATS2024: Final = Protocol(
    "brats2024",
    (
        RegionRule("WT", (1, 2, 3), dilation=3, threshold=20),
        RegionRule("TC", (1, 3), dilation=3, threshold=20),
        RegionRule("NETC", (1,), dilation=5, threshold=20, merge_by=("ET", "RC")),
        # 3, not 5: the reference's table of 5-step regions names "SFNH", so SNFH falls back to 3.
        RegionRule("SNFH", (2,), dilation=3, threshold=20, merge_by=("ET", "RC", "NETC")),
        RegionRule("ET", (3,), dilation=3, threshold=10, merge_by=("NETC", "RC")),
        RegionRule("RC", (4,), dilation=5, threshold=20, merge_by=("ET", "NETC")),
    ),
)
PROTOCOLS: Final = {BRATS2024.name: BRATS2024}

KNOWN_GRID_PENALTIES: Final = {(182, 218, 182): 337.0, (240, 240, 155): 374.0}
"""HD95 penalty by grid: the rounded diagonal (mm) of the BraTS 2024 MNI grid and of the SRI grid (both 1 mm)."""

KNOWN_GRID_SPACING_TOLERANCE: Final = 0.01
"""How far (mm) each voxel size may be from 1 mm for a grid of a known shape to count as that grid."""


def auto_penalty(shape: Sequence[int], spacing: Sequence[float]) -> tuple[float, str]:
    """The HD95 penalty for a grid and a short note saying why.

    The BraTS values belong to the 1 mm grids they were computed for: the same shape at another voxel size
    (e.g. 240x240x155 at 0.5 mm) is a different extent and gets its own diagonal.

    Returns:
        337 on the 182x218x182 1 mm MNI grid, 374 on the 240x240x155 1 mm SRI grid (the values BraTS uses),
        else the volume diagonal in mm.
    """
    key = tuple(int(s) for s in shape)
    one_mm = all(abs(float(s) - 1.0) <= KNOWN_GRID_SPACING_TOLERANCE for s in spacing)
    if key in KNOWN_GRID_PENALTIES and one_mm:
        return KNOWN_GRID_PENALTIES[key], "x".join(map(str, key)) + " 1 mm grid"
    diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True)))
    return diagonal, "volume diagonal"


@dataclass(frozen=True)
class LesionRow:
    """One GT lesion of one region, as in the official per-lesion table.

    Attributes:
        region: Region name.
        gt_lesion: GT lesion number.
        predicted_lesions: Numbers of the prediction lesions matched to it (ascending).
        volume: GT lesion volume in mm³.
        dice: Dice of the GT lesion against the union of its matches.
        hd95: HD95 in mm against that union; the penalty when nothing matched.
        counted: Whether the lesion is above the region's threshold and so enters the means.
    """

    region: str
    gt_lesion: int
    predicted_lesions: tuple[int, ...]
    volume: float
    dice: float
    hd95: float
    counted: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with the official column names."""
        return {
            "Label": self.region,
            "gt_lesion_numbers": self.gt_lesion,
            "predicted_lesion_numbers": list(self.predicted_lesions),
            "gt_lesion_vol": self.volume,
            "dice_lesionwise": self.dice,
            "hd95_lesionwise": self.hd95,
            "counted": self.counted,
        }


@dataclass(frozen=True)
class CaseLesionScores:
    """Lesion-wise results of one case.

    Attributes:
        regions: Region -> the ten official keys (`OFFICIAL_KEYS`) -> value.
        lesions: Per-GT-lesion rows, region by region, by GT lesion number.
        penalty: The HD95 penalty used (mm).
    """

    regions: dict[str, dict[str, float]]
    lesions: list[LesionRow] = field(default_factory=list)
    penalty: float = 337.0


def _region_mask(labels: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    if len(values) == 1:
        return labels == values[0]
    return np.isin(labels, values)


def lesion_maps(
    labels: np.ndarray, protocol: Protocol, *, prediction: bool, regions: Sequence[str] | None = None
) -> dict[str, _lesions.LesionMap]:
    """Final lesion map of each region (steps 3 and 4 of the protocol).

    Args:
        labels: (X, Y, Z) integer label map (a crop holding every dilation in full).
        protocol: The protocol.
        prediction: Whether this is a prediction (small lesions are deleted) or the reference.
        regions: Regions wanted (default: all); tissues they are merged by are computed as needed.

    Returns:
        Region -> lesion map.
    """
    wanted = list(regions or protocol.region_names)
    needed = set(wanted)
    for name in wanted:
        needed.update(protocol.region(name).merge_by)
    original: dict[str, _lesions.LesionMap] = {}
    for rule in protocol.regions:
        if rule.name in needed:
            original[rule.name] = _lesions.merge_by_dilation(
                _region_mask(labels, rule.labels), rule.dilation, min_size=rule.threshold if prediction else None
            )
    merging = [protocol.region(name) for name in wanted if protocol.region(name).merge_by]
    partners = sorted({p for rule in merging for p in rule.merge_by} | {rule.name for rule in merging})
    pairs = _lesions.touching_pairs([original[p] for p in partners]) if merging else {}
    out: dict[str, _lesions.LesionMap] = {}
    for name in wanted:
        rule = protocol.region(name)
        lesions = original[name]
        if rule.merge_by:
            i = partners.index(name)
            steps = [pairs[(i, partners.index(other))] for other in rule.merge_by]
            mapping = _lesions.regroup_by_touching(lesions.numbers, steps)
            lesions = _lesions.relabel(lesions, mapping)
        out[name] = lesions
    return out


def _gandlf_sensitivity_specificity(
    gt: _lesions.LesionMap, pred: _lesions.LesionMap, n_voxels: int
) -> tuple[float, float]:
    """Sensitivity and specificity as the reference computes them on lesion label maps.

    ``TP`` counts voxels where both maps equal 1; ``FP``/``FN`` subtract it from the *sums of the label
    values*; ``TN`` counts voxels where neither map is 1 (over the whole volume of `n_voxels`).
    """
    sum_pred = sum(number * count for number, count in pred.counts.items())
    sum_gt = sum(number * count for number, count in gt.counts.items())
    box = union(gt.boxes.get(1), pred.boxes.get(1))
    if box is None:
        tp = either = 0
    else:
        pred_one, gt_one = pred.labels[box] == 1, gt.labels[box] == 1
        tp = int(np.count_nonzero(pred_one & gt_one))
        either = int(np.count_nonzero(pred_one | gt_one))
    tn = n_voxels - either
    fp = float(sum_pred) - tp
    fn = float(sum_gt) - tp
    tiny = sys.float_info.min
    sensitivity = 1.0 * tp / (tp + fn + tiny)
    specificity = 1.0 * tn / (tn + fp + tiny)
    if sum_pred == 0 and sum_gt == 0:
        sensitivity = 1.0
    return sensitivity, specificity


def score_region(
    gt_map: _lesions.LesionMap,
    pred_map: _lesions.LesionMap,
    rule: RegionRule,
    spacing: Spacing3,
    *,
    penalty: float,
    n_voxels: int,
) -> tuple[dict[str, float], list[LesionRow]]:
    """Official outputs of one region (steps 5 to 8 of the protocol).

    Args:
        gt_map: Final GT lesion map (numbers 1..K).
        pred_map: Final prediction lesion map.
        rule: The region's rule.
        spacing: The prediction's voxel size in mm.
        penalty: HD95 given to misses, false positives and one-sided empty legacy HD95 (mm).
        n_voxels: Voxel count of the whole volume (the maps may be a crop of it).

    Returns:
        The ten official values and the per-lesion rows.
    """
    gt_lesions, pred_lesions = gt_map.labels, pred_map.labels
    shape = gt_lesions.shape
    rows: list[LesionRow] = []
    matched: set[int] = set()
    for number in gt_map.numbers:
        box = gt_map.boxes[number]
        reach = grow(box, rule.dilation, shape)
        lesion_in_reach = gt_lesions[reach] == number
        zone = dilate(lesion_in_reach, rule.dilation)
        hits = pred_lesions[reach][zone]
        hits = np.unique(hits[hits != 0])
        matches = tuple(int(v) for v in hits)
        matched.update(matches)
        size = gt_map.counts[number]
        if matches:
            inner = relative(box, reach)
            lesion = lesion_in_reach[inner]
            overlap = int(np.count_nonzero(np.isin(pred_lesions[box][lesion], hits)))
            union_size = sum(pred_map.counts[m] for m in matches)
            dice = 2.0 * overlap / (size + union_size)
            around: Box | None = box
            for m in matches:
                around = union(around, pred_map.boxes[m])
            assert around is not None
            hd = hausdorff95(gt_lesions[around] == number, np.isin(pred_lesions[around], hits), spacing)
        else:
            dice, hd = 0.0, math.inf
        volume = size * spacing[0] * spacing[1] * spacing[2]
        rows.append(
            LesionRow(
                region=rule.name,
                gt_lesion=number,
                predicted_lesions=matches,
                volume=volume,
                dice=dice,
                hd95=penalty if math.isinf(hd) else hd,
                counted=volume > rule.threshold,
            )
        )
    n_fp = sum(1 for v in pred_map.numbers if v not in matched)
    kept = [row for row in rows if row.counted]
    denominator = len(kept) + n_fp
    if denominator:
        lesion_dice = float(np.sum(np.array([r.dice for r in kept], dtype=np.float64))) / denominator
        lesion_hd = (float(np.sum(np.array([r.hd95 for r in kept], dtype=np.float64))) + n_fp * penalty) / denominator
    else:
        lesion_dice, lesion_hd = 1.0, 0.0

    n_gt, n_pred = sum(gt_map.counts.values()), sum(pred_map.counts.values())
    if n_gt == 0 and n_pred == 0:
        legacy_dice, legacy_hd = 1.0, 0.0
    else:
        both = int(np.count_nonzero((gt_lesions != 0) & (pred_lesions != 0))) if n_gt and n_pred else 0
        legacy_dice = 2.0 * both / (n_gt + n_pred)
        if gt_map.numbers == [1] and pred_map.numbers == [1] and rows and rows[0].predicted_lesions == (1,):
            # One lesion on each side, both numbered 1: the label maps are the binary masks of the lesion
            # row just computed, so its HD95 is the legacy one (the most common case: one tumour).
            legacy_hd = rows[0].hd95
        else:
            # On the label maps, not on binary masks: the reference's quirk (see segkit.metrics.surface).
            legacy_hd = hausdorff95(gt_lesions, pred_lesions, spacing)
        if math.isinf(legacy_hd):
            legacy_hd = penalty
    sensitivity, specificity = _gandlf_sensitivity_specificity(gt_map, pred_map, n_voxels)
    values = {
        "Num_TP": sum(1 for r in kept if r.predicted_lesions),
        "Num_FP": n_fp,
        "Num_FN": sum(1 for r in kept if not r.predicted_lesions),
        "Sensitivity": sensitivity,
        "Specificity": specificity,
        "Legacy_Dice": legacy_dice,
        "Legacy_HD95": legacy_hd,
        "GT_Complete_Volume": n_gt * spacing[0] * spacing[1] * spacing[2],
        "LesionWise_Score_Dice": lesion_dice,
        "LesionWise_Score_HD95": lesion_hd,
    }
    return values, rows


def score_case(
    gt: np.ndarray,
    pred: np.ndarray,
    spacing: Sequence[float],
    *,
    penalty: float,
    protocol: Protocol = BRATS2024,
    regions: Sequence[str] | None = None,
) -> CaseLesionScores:
    """Lesion-wise scores of one case.

    Args:
        gt: (X, Y, Z) integer reference label map.
        pred: (X, Y, Z) integer predicted label map on the same grid.
        spacing: The prediction's voxel size in mm (the reference takes it from the prediction header).
        penalty: HD95 penalty in mm (the official scorer uses 337).
        protocol: Lesion-wise protocol.
        regions: Regions to score, in output order (default: all of the protocol's).

    Returns:
        Per-region official values and per-lesion rows.
    """
    if gt.shape != pred.shape:
        msg = f"shape mismatch: reference {gt.shape} vs prediction {pred.shape}"
        raise ValueError(msg)
    names = list(regions or protocol.region_names)
    sp: Spacing3 = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    n_voxels = int(gt.size)
    box = bounding_box((gt != 0) | (pred != 0))
    results: dict[str, dict[str, float]] = {}
    rows: list[LesionRow] = []
    if box is None:
        crop_gt = crop_pred = np.zeros((1, 1, 1), dtype=np.uint8)
    else:
        # Every dilation reaches at most max(d) voxels; one more keeps the touching test inside too.
        margin = max(rule.dilation for rule in protocol.regions) + 1
        crop = grow(box, margin, gt.shape)
        crop_gt = np.ascontiguousarray(gt[crop])
        crop_pred = np.ascontiguousarray(pred[crop])
    gt_maps = lesion_maps(crop_gt, protocol, prediction=False, regions=names)
    pred_maps = lesion_maps(crop_pred, protocol, prediction=True, regions=names)
    for name in names:
        values, region_rows = score_region(
            gt_maps[name], pred_maps[name], protocol.region(name), sp, penalty=penalty, n_voxels=n_voxels
        )
        results[name] = values
        rows.extend(region_rows)
    return CaseLesionScores(results, rows, penalty)


def summary_statistics(values: Sequence[float]) -> dict[str, float]:
    """Mean, median, min, max and sample standard deviation (ddof=1, as pandas' describe) of `values`.

    NaN entries are ignored; statistics of nothing are NaN, and std of a single value is NaN.
    """
    arr = np.asarray([v for v in values if not (isinstance(v, float) and math.isnan(v))], dtype=np.float64)
    if arr.size == 0:
        nan = float("nan")
        return {"mean": nan, "median": nan, "min": nan, "max": nan, "std": nan, "n": 0}
    with np.errstate(invalid="ignore"):  # infinite values (brats2025 HD95 without a match) give NaN spreads
        return {
            "mean": float(arr.mean()),
            "median": float(np.median(arr)),
            "min": float(arr.min()),
            "max": float(arr.max()),
            "std": float(arr.std(ddof=1)) if arr.size > 1 else float("nan"),
            "n": int(arr.size),
        }
