"""BraTS 2025 lesion-wise metrics (protocol ``brats2025``): what ``brats-evaluation`` 0.0.10 computes with
panoptica 2.1.7, number for number, in segkit's own code.

Per region (a group of labels, merged into one binary mask):

* instances are the 26-connected components (cc3d), numbered as cc3d numbers them;
* reference and prediction instances are matched one to one by maximum bipartite matching on Dice: the
  cost of a pair is ``1 - DSC`` when its DSC reaches the matching threshold (1e-6), else ``1 + 1e-6``, solved
  by `scipy.optimize.linear_sum_assignment`; an assigned pair with cost below 1 is a match (a TP);
* each match scores DSC, HD95 and NSD on the two instance masks, with the header voxel spacing: the border
  of a mask is the mask minus its erosion by the 6-neighbourhood cross; the distances are those from each
  border voxel to the nearest border voxel of the other mask (exact Euclidean distance transform);
  HD95 is the 95th percentile (linear interpolation) of both directions pooled; NSD is the mean of the
  two directional fractions of border voxels within the tolerance (the smallest voxel size);
* ``sq_*`` are the mean and the population standard deviation over matches; with no match the edge cases
  of the config apply (DSC and NSD 0, HD95 inf; NaN when neither side has an instance; std NaN);
* ``global_bin_*`` are the same three metrics on the whole-region masks, computed as panoptica does it,
  *without* the voxel spacing (unit spacing, NSD tolerance 0.5): two masks that do not overlap at all take
  the edge-case values instead.

The challenge table (`challenge_row`) is that of the package's parser (``brats-parse-metrics seg``):
``global_bin_hd95`` inf becomes 373, a missing prediction gets 373 for every HD95 column and 0 elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import cc3d
import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

MATCHING_THRESHOLD: Final = 1e-6
"""Smallest DSC for a reference/prediction pair to be matched (every bundled config)."""

_UNMATCHED_COST: Final = 1.0 + 1e-6
"""Cost of a pair below the threshold in the assignment (panoptica's ``1 + small_number``)."""

PAD: Final = 2
"""Voxels of padding around an instance pair's box (any pad of at least one gives the same numbers)."""

WORST_HD95: Final = 373.0
"""The parser's HD95 for an infinite global HD95 and for every HD95 column of a missing prediction."""

REGION_KEYS: Final = (
    "n_ref_instances",
    "n_pred_instances",
    "tp",
    "fp",
    "fn",
    "prec",
    "rec",
    "rq",
    "sq_dsc",
    "sq_dsc_std",
    "pq_dsc",
    "sq_hd95",
    "sq_hd95_std",
    "sq_nsd",
    "sq_nsd_std",
    "instance_voxel_count_ref",
    "instance_volume_ref",
    "global_bin_volume_pred",
    "global_bin_volume_ref",
    "global_bin_dsc",
    "global_bin_hd95",
    "global_bin_nsd",
)
"""Per-region keys of the package's result (``to_dict``), in its order; ``reference_instances`` comes beside them."""

COUNT_KEYS: Final = frozenset(
    {"n_ref_instances", "n_pred_instances", "tp", "fp", "fn", "global_bin_volume_pred", "global_bin_volume_ref"}
)
DISTANCE_KEYS: Final = frozenset({"sq_hd95", "sq_hd95_std", "global_bin_hd95"})


@dataclass(frozen=True)
class Group:
    """One region of a config: the union of its labels."""

    name: str
    labels: tuple[int, ...]


VARIANTS: Final[dict[str, tuple[Group, ...]]] = {
    "gli": (
        Group("wt", (1, 2, 3)),
        Group("tc", (1, 3)),
        Group("netc", (1,)),
        Group("snfh", (2,)),
        Group("et", (3,)),
        Group("rc", (4,)),
    ),
    "mets": (Group("wt", (1, 2, 3)), Group("tc", (1, 3)), Group("et", (3,)), Group("rc", (4,))),
    "ped": (
        Group("wt", (1, 2, 3, 4)),
        Group("tc", (1, 2, 3)),
        Group("et", (1,)),
        Group("netc", (2,)),
        Group("cc", (3,)),
        Group("ed", (4,)),
    ),
    "MenRT": (Group("gtv", (1,)),),
    "MenPre": (Group("wt", (1, 2, 3)), Group("tc", (1, 3)), Group("et", (3,))),
    "GoAT": (Group("wt", (1, 2, 3)), Group("tc", (1, 3)), Group("et", (3,))),
}
"""The package's bundled configs (``--task``): regions and their labels."""


@dataclass(frozen=True)
class ReferenceInstance:
    """One reference lesion, as in the package's ``reference_instances`` (matched ones first)."""

    voxel_count: int
    volume: float
    matched: bool
    dsc: float = math.nan
    hd95: float = math.nan
    nsd: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """The package's keys (the three metrics only for a matched lesion)."""
        out: dict[str, Any] = {}
        if self.matched:
            out = {"sq_dsc": self.dsc, "sq_hd95": self.hd95, "sq_nsd": self.nsd}
        return out | {"voxel_count": self.voxel_count, "volume": self.volume, "is_matched": int(self.matched)}


@dataclass(frozen=True)
class RegionResult:
    """Results of one region: `values` by `REGION_KEYS` (undefined ratios NaN) and the reference lesions."""

    values: dict[str, float]
    instances: list[ReferenceInstance] = field(default_factory=list)


def _border(mask: np.ndarray) -> np.ndarray:
    return mask ^ ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def _distances(source: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance (mm) from each voxel of `source` to the nearest voxel of `target` (both border masks).

    panoptica takes them from a Euclidean distance transform of the whole crop; the nearest target voxel is
    found here with a k-d tree over the border voxels only (the same minimum), and the distance is then
    computed with the transform's arithmetic (per-axis offset times spacing, squared, summed in axis
    order, square root) so that the values, and the NSD comparisons with the tolerance, are the same.
    """
    steps = np.asarray(spacing, dtype=np.float64)
    src = np.argwhere(source)
    tgt = np.argwhere(target)
    _, nearest = cKDTree(tgt * steps).query(src * steps, k=1)
    delta = (tgt[nearest] - src).astype(np.float64) * steps
    squared = np.zeros(len(src), dtype=np.float64)
    for axis in range(steps.size):
        squared += delta[:, axis] * delta[:, axis]
    return np.sqrt(squared)


def surface_metrics(
    reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float], tolerance: float
) -> tuple[float, float]:
    """HD95 (mm) and NSD at `tolerance` mm of two non-empty masks, as panoptica computes them."""
    ref_border, pred_border = _border(reference), _border(prediction)
    to_pred = _distances(ref_border, pred_border, spacing)
    to_ref = _distances(pred_border, ref_border, spacing)
    hd95 = float(np.percentile(np.hstack((to_pred, to_ref)), 95))
    near_ref = np.count_nonzero(to_pred <= tolerance) / len(to_pred)
    near_pred = np.count_nonzero(to_ref <= tolerance) / len(to_ref)
    far_ref = np.count_nonzero(to_pred > tolerance) / len(to_pred)
    far_pred = np.count_nonzero(to_ref > tolerance) / len(to_ref)
    nsd = (near_ref + near_pred) / (near_ref + near_pred + far_ref + far_pred + np.finfo(np.float64).tiny)
    return hd95, float(nsd)


def _zero_tp(metric: str, n_ref: int, n_pred: int) -> float:
    """The config's value of a metric without any true positive."""
    if n_ref == 0 and n_pred == 0:
        return math.nan
    return math.inf if metric == "hd95" else 0.0


def _box_of(
    slices: tuple[slice, ...] | None, other: tuple[slice, ...] | None, shape: Sequence[int]
) -> tuple[slice, ...]:
    boxes = [b for b in (slices, other) if b is not None]
    return tuple(
        slice(max(min(b[ax].start for b in boxes) - PAD, 0), min(max(b[ax].stop for b in boxes) + PAD, shape[ax]))
        for ax in range(len(shape))
    )


def _match(
    ref_cc: np.ndarray, pred_cc: np.ndarray, n_ref: int, n_pred: int, ref_sizes: np.ndarray, pred_sizes: np.ndarray
) -> dict[int, int]:
    """Reference instance -> matched prediction instance (one to one, maximum total DSC)."""
    if n_ref == 0 or n_pred == 0:
        return {}
    both = (ref_cc != 0) & (pred_cc != 0)
    pair_ids = ref_cc[both].astype(np.int64) * (n_pred + 1) + pred_cc[both]
    ids, inter = np.unique(pair_ids, return_counts=True)
    refs, preds = ids // (n_pred + 1), ids % (n_pred + 1)
    dsc = 2.0 * inter / (ref_sizes[refs] + pred_sizes[preds])
    cost = np.full((n_ref, n_pred), _UNMATCHED_COST)
    keep = dsc >= MATCHING_THRESHOLD
    cost[refs[keep] - 1, preds[keep] - 1] = 1.0 - dsc[keep]
    if not keep.any():
        return {}
    rows, cols = linear_sum_assignment(cost)
    return {int(r) + 1: int(c) + 1 for r, c in zip(rows, cols, strict=True) if cost[r, c] < 1.0}


def score_region(
    reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float], *, tolerance: float | None = None
) -> RegionResult:
    """Scores of one region from its binary reference and prediction masks.

    Args:
        reference: Binary reference mask (any memory order: cc3d numbers instances in it).
        prediction: Binary prediction mask on the same grid.
        spacing: Voxel size in mm: the header zooms (float32 values, as `segkit.evaluation.cases.prediction_spacing`).
        tolerance: NSD tolerance in mm (default: the smallest voxel size, as the package).
    """
    sp = tuple(float(s) for s in spacing)
    nsd_tol = min(sp) if tolerance is None else float(tolerance)
    # The package multiplies the header zooms as float32 (np.prod of float32 values): the same rounding here.
    voxel_volume = float(np.prod(np.asarray(sp, dtype=np.float32)))
    ref_cc, n_ref = cc3d.connected_components(reference, connectivity=26, return_N=True)
    pred_cc, n_pred = cc3d.connected_components(prediction, connectivity=26, return_N=True)
    n_ref, n_pred = int(n_ref), int(n_pred)
    ref_stats = cc3d.statistics(ref_cc) if n_ref else None
    pred_stats = cc3d.statistics(pred_cc) if n_pred else None
    ref_sizes = np.asarray(ref_stats["voxel_counts"], dtype=np.int64) if ref_stats else np.zeros(1, np.int64)
    pred_sizes = np.asarray(pred_stats["voxel_counts"], dtype=np.int64) if pred_stats else np.zeros(1, np.int64)
    matches = _match(ref_cc, pred_cc, n_ref, n_pred, ref_sizes, pred_sizes)

    shape = reference.shape
    matched: list[ReferenceInstance] = []
    for r in sorted(matches):
        p = matches[r]
        assert ref_stats is not None
        assert pred_stats is not None
        box = _box_of(ref_stats["bounding_boxes"][r], pred_stats["bounding_boxes"][p], shape)
        ref_mask, pred_mask = ref_cc[box] == r, pred_cc[box] == p
        inter = int(np.count_nonzero(ref_mask & pred_mask))
        dsc = 2.0 * inter / (int(ref_sizes[r]) + int(pred_sizes[p]))
        hd95, nsd = surface_metrics(ref_mask, pred_mask, sp, nsd_tol)
        count = int(ref_sizes[r])
        matched.append(ReferenceInstance(count, count * voxel_volume, True, dsc, hd95, nsd))
    missed = [
        ReferenceInstance(int(ref_sizes[r]), int(ref_sizes[r]) * voxel_volume, False)
        for r in range(1, n_ref + 1)
        if r not in matches
    ]
    tp = len(matched)
    fp, fn = n_pred - tp, n_ref - tp
    values: dict[str, float] = {"n_ref_instances": n_ref, "n_pred_instances": n_pred, "tp": tp, "fp": fp, "fn": fn}
    values["prec"] = tp / n_pred if n_pred else math.nan
    values["rec"] = tp / n_ref if n_ref else math.nan
    values["rq"] = tp / (tp + 0.5 * fp + 0.5 * fn) if (tp + fp + fn) else math.nan
    for metric, pick in (("dsc", "dsc"), ("hd95", "hd95"), ("nsd", "nsd")):
        scores = np.array([getattr(m, pick) for m in matched], dtype=np.float64)
        if tp:
            values[f"sq_{metric}"], values[f"sq_{metric}_std"] = float(np.mean(scores)), float(np.std(scores))
        else:
            values[f"sq_{metric}"], values[f"sq_{metric}_std"] = _zero_tp(metric, n_ref, n_pred), math.nan
        if metric == "dsc":
            values["pq_dsc"] = values["sq_dsc"] * values["rq"]
    counts = [m.voxel_count for m in matched]
    values["instance_voxel_count_ref"] = float(np.mean(counts)) if counts else math.nan
    values["instance_volume_ref"] = float(np.mean([m.volume for m in matched])) if counts else math.nan
    n_ref_voxels = int(ref_sizes[1:].sum()) if n_ref else 0
    n_pred_voxels = int(pred_sizes[1:].sum()) if n_pred else 0
    values["global_bin_volume_pred"] = n_pred_voxels
    values["global_bin_volume_ref"] = n_ref_voxels
    values.update(_global_metrics(reference, prediction, n_ref, n_pred, n_ref_voxels + n_pred_voxels))
    return RegionResult({key: values[key] for key in REGION_KEYS}, matched + missed)


def _global_metrics(
    reference: np.ndarray, prediction: np.ndarray, n_ref: int, n_pred: int, total: int
) -> dict[str, float]:
    """``global_bin_*``: whole-region DSC, HD95, NSD, in voxel units (the package passes no spacing here)."""
    inter = int(np.count_nonzero(reference & prediction)) if n_ref and n_pred else 0
    if inter == 0:
        return {f"global_bin_{m}": _zero_tp(m, n_ref, n_pred) for m in ("dsc", "hd95", "nsd")}
    occupied = ndimage.find_objects((reference | prediction).view(np.uint8))[0]
    box = _box_of(occupied, None, reference.shape)
    hd95, nsd = surface_metrics(reference[box], prediction[box], (1.0,) * reference.ndim, 0.5)
    return {"global_bin_dsc": 2.0 * inter / total, "global_bin_hd95": hd95, "global_bin_nsd": nsd}


def region_mask(labels: np.ndarray, group: Group) -> np.ndarray:
    """Binary mask of a group (keeps the memory order of `labels`, which decides cc3d's numbering)."""
    if len(group.labels) == 1:
        return labels == group.labels[0]
    mask = labels == group.labels[0]
    for value in group.labels[1:]:
        mask |= labels == value
    return mask


def score_case(
    gt: np.ndarray,
    pred: np.ndarray,
    spacing: Sequence[float],
    *,
    groups: Sequence[Group] = VARIANTS["gli"],
    tolerance: float | None = None,
) -> dict[str, RegionResult]:
    """Region -> results for one case (`gt` and `pred` integer label maps on one grid)."""
    if gt.shape != pred.shape:
        msg = f"shape mismatch: reference {gt.shape} vs prediction {pred.shape}"
        raise ValueError(msg)
    occupied = ndimage.find_objects(((gt != 0) | (pred != 0)).view(np.uint8))
    if occupied:
        # Everything happens inside the box of the foreground plus the pair padding (clipped to the volume, as
        # panoptica's own crops are): cc3d numbers components in the same order there, distances are unchanged.
        box = _box_of(occupied[0], None, gt.shape)
        gt, pred = gt[box], pred[box]
    else:
        gt = pred = np.zeros((1, 1, 1), dtype=np.uint8)
    return {
        g.name: score_region(region_mask(gt, g), region_mask(pred, g), spacing, tolerance=tolerance) for g in groups
    }


CHALLENGE_METRICS: Final = (
    ("all_instance_tp", "tp"),
    ("all_instance_fp", "fp"),
    ("all_instance_fn", "fn"),
    ("all_instance_precision", "prec"),
    ("all_instance_recall", "rec"),
    ("all_instance_f1", "rq"),
    ("lesionwise_dsc_mean", "sq_dsc"),
    ("lesionwise_dsc_std", "sq_dsc_std"),
    ("lesionwise_hd95_mean", "sq_hd95"),
    ("lesionwise_hd95_std", "sq_hd95_std"),
    ("lesionwise_nsd_mean", "sq_nsd"),
    ("lesionwise_nsd_std", "sq_nsd_std"),
    ("pq_dsc", "pq_dsc"),
    ("global_dsc", "global_bin_dsc"),
    ("global_hd95", "global_bin_hd95"),
    ("global_nsd", "global_bin_nsd"),
)
"""Challenge-table column stems (``<stem>_<region>``) and the result key each comes from."""


SIZE_METRICS: Final = tuple(
    f"{size}_instance_{what}" for size in ("small", "large") for what in ("tp", "fp", "fn", "f1")
)
"""Stems of the METs parser's small/large-lesion detection columns (with a volume threshold only)."""


def _size_split(
    result: RegionResult, vol_threshold: float, overlap_threshold: float
) -> tuple[dict[str, float], dict[str, float]]:
    """The METs parser's columns of one region: small/large detection counts and large-lesion means.

    A reference lesion is small below `vol_threshold` mm³, large otherwise. A lesion counts as detected
    (TP) when it is matched with a DSC of at least `overlap_threshold`, else as FN; every false-positive
    prediction lesion of the region counts as FP for both sizes. The lesion-wise means are over the large
    lesions, a missed one scoring DSC 0, NSD 0 and HD95 373, each false positive adding the same; with no
    large lesion they are NaN, as are the small columns with no small lesion.
    """
    fp = float(result.values["fp"])
    table: dict[str, float] = {}
    lists: dict[str, list[float]] = {"dsc": [], "nsd": [], "hd95": []}
    for size in ("small", "large"):
        members = [i for i in result.instances if (i.volume < vol_threshold) == (size == "small")]
        tp = sum(1 for i in members if i.matched and i.dsc >= overlap_threshold)
        fn = len(members) - tp
        if members:
            f1 = 2.0 * tp / (2.0 * tp + fp + fn)
            values = {"tp": float(tp), "fp": fp, "fn": float(fn), "f1": f1}
        else:
            values = dict.fromkeys(("tp", "fp", "fn", "f1"), math.nan)
        table |= {f"{size}_instance_{k}": v for k, v in values.items()}
        if size == "large":
            for i in members:
                lists["dsc"].append(i.dsc if i.matched else 0.0)
                lists["nsd"].append(i.nsd if i.matched else 0.0)
                lists["hd95"].append(i.hd95 if i.matched else WORST_HD95)
            if members:
                for metric, worst in (("dsc", 0.0), ("nsd", 0.0), ("hd95", WORST_HD95)):
                    lists[metric] += [worst] * int(fp)
    means = {f"lesionwise_{m}_mean": float(np.mean(v)) if v else math.nan for m, v in lists.items()} | {
        f"lesionwise_{m}_std": float(np.std(v)) if v else math.nan for m, v in lists.items()
    }
    return table, means


def challenge_row(
    regions: Mapping[str, RegionResult],
    *,
    missing_prediction: bool = False,
    vol_threshold: float | None = None,
    overlap_threshold: float | None = None,
) -> dict[str, float]:
    """The parser's table row: ``<stem>_<region>`` -> value (373 rules applied).

    With `vol_threshold` (and `overlap_threshold`) the row is the METs parser's: small/large-lesion
    detection columns, and lesion-wise means over the large lesions (see `_size_split`).
    """
    row: dict[str, float] = {}
    for name, result in regions.items():
        values: dict[str, float] = {}
        for stem, key in CHALLENGE_METRICS:
            value = float(result.values[key])
            if key == "global_bin_hd95" and math.isinf(value):
                value = WORST_HD95
            values[stem] = value
        if vol_threshold is not None:
            sizes, means = _size_split(result, vol_threshold, overlap_threshold or 0.0)
            values |= means | sizes
        else:
            values |= dict.fromkeys(SIZE_METRICS, math.nan)
        if missing_prediction:
            values = {stem: WORST_HD95 if "hd95" in stem else 0.0 for stem in values}
        row |= {f"{stem}_{name}": v for stem, v in values.items()}
    return row
