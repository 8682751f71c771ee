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
    """The mask minus its erosion by the 6-neighbourhood cross, voxels outside the array counting as outside.

    What ``mask ^ scipy.ndimage.binary_erosion(mask)`` gives, with six shifted ANDs instead of the generic
    filter (several times faster).
    """
    inner = mask.copy(order="K")
    for axis in range(mask.ndim):
        head = [slice(None)] * mask.ndim
        tail = [slice(None)] * mask.ndim
        head[axis], tail[axis] = slice(1, None), slice(None, -1)
        inner[tuple(head)] &= mask[tuple(tail)]
        inner[tuple(tail)] &= mask[tuple(head)]
        head[axis], tail[axis] = slice(0, 1), slice(-1, None)
        inner[tuple(head)] = False
        inner[tuple(tail)] = False
    return mask & ~inner


def _offsets(source: np.ndarray, target: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """(n, 3) voxel offsets from each point of `source` to its nearest point of `target` at voxel size `steps`.

    panoptica takes the distances from a Euclidean distance transform of the pair's crop; the nearest target
    voxel is found here with a k-d tree over the border voxels only (the same minimum distance).
    """
    # A source voxel that is also a target voxel is its own nearest (offset 0): only the others need the
    # tree (identical or slightly shifted lesions share most of their border).
    extent = np.maximum(source.max(axis=0), target.max(axis=0)).astype(np.int64) + 1
    weights = np.array([extent[1] * extent[2], extent[2], 1], dtype=np.int64)
    shared = np.isin(source @ weights, target @ weights)
    offsets = np.zeros_like(source)
    rest = np.flatnonzero(~shared)
    if rest.size:
        from scipy.spatial import cKDTree

        tree = cKDTree(target * steps, balanced_tree=False, compact_nodes=False)
        _, nearest = tree.query(source[rest] * steps, k=1)
        offsets[rest] = target[nearest] - source[rest]
    return offsets


def _lengths(offsets: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Lengths (mm) of voxel offsets with the distance transform's arithmetic: per-axis offset times voxel size,
    squared, summed in axis order, square root (so that the NSD comparisons with the tolerance are the same)."""
    delta = offsets.astype(np.float64) * steps
    squared = np.zeros(len(offsets), dtype=np.float64)
    for axis in range(steps.size):
        squared += delta[:, axis] * delta[:, axis]
    return np.sqrt(squared)


def _reduce(to_pred: np.ndarray, to_ref: np.ndarray, tolerance: float) -> tuple[float, float]:
    """HD95 and NSD from the two directional border distances, as panoptica reduces them."""
    hd95 = float(np.percentile(np.hstack((to_pred, to_ref)), 95))
    near_ref = np.count_nonzero(to_pred <= tolerance) / len(to_pred)
    near_pred = np.count_nonzero(to_ref <= tolerance) / len(to_ref)
    far_ref = np.count_nonzero(to_pred > tolerance) / len(to_pred)
    far_pred = np.count_nonzero(to_ref > tolerance) / len(to_ref)
    nsd = (near_ref + near_pred) / (near_ref + near_pred + far_ref + far_pred + np.finfo(np.float64).tiny)
    return hd95, float(nsd)


def _surface(
    ref_points: np.ndarray, pred_points: np.ndarray, steps: np.ndarray, tolerance: float
) -> tuple[float, float]:
    """HD95 and NSD from the border voxels of two non-empty masks, as panoptica computes them."""
    to_pred = _lengths(_offsets(ref_points, pred_points, steps), steps)
    to_ref = _lengths(_offsets(pred_points, ref_points, steps), steps)
    return _reduce(to_pred, to_ref, tolerance)


def surface_metrics(
    reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float], tolerance: float
) -> tuple[float, float]:
    """HD95 (mm) and NSD at `tolerance` mm of two non-empty masks, as panoptica computes them."""
    steps = np.asarray(spacing, dtype=np.float64)
    ref, pred = np.ascontiguousarray(_border(reference)), np.ascontiguousarray(_border(prediction))
    ref_points = np.stack(np.unravel_index(np.flatnonzero(ref), ref.shape), axis=1)
    pred_points = np.stack(np.unravel_index(np.flatnonzero(pred), pred.shape), axis=1)
    return _surface(ref_points, pred_points, steps, tolerance)


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


@dataclass
class _Instances:
    """The connected components of one mask: count, sizes (index = component number), border voxels by number."""

    n: int
    labels: np.ndarray
    sizes: np.ndarray
    border_points: np.ndarray
    border_starts: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray, *, reverse: bool = False) -> _Instances:
        """Components of `mask`; with `reverse` the mask is the transpose of the volume and the border voxels
        are stored in the volume's axis order."""
        labels, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
        n = int(n)
        flat = labels.ravel(order="K")
        sizes = np.bincount(flat, minlength=n + 1).astype(np.int64) if n else np.zeros(1, np.int64)
        if n == 0:
            return cls(0, labels, sizes, np.zeros((0, mask.ndim), np.int64), np.zeros(1, np.int64))
        # A border voxel's 6-neighbours outside the mask cannot belong to another 26-connected component,
        # so the border of the whole mask, split by component, is each component's own border.
        flat_border = np.flatnonzero(_border(mask))  # C order: `labels` is C-contiguous like `mask`
        points = np.stack(np.unravel_index(flat_border, mask.shape), axis=1)  # 10x faster than argwhere
        owner = labels.reshape(-1)[flat_border]
        if reverse:
            points = points[:, ::-1]
        order = np.argsort(owner, kind="stable")
        counts = np.bincount(owner, minlength=n + 1)
        return cls(n, labels, sizes, points[order], np.concatenate(([0], np.cumsum(counts))))

    def border(self, number: int) -> np.ndarray:
        """(k, 3) border voxels of component `number`."""
        return self.border_points[self.border_starts[number] : self.border_starts[number + 1]]


def _match(ref: _Instances, pred: _Instances) -> tuple[dict[int, int], dict[tuple[int, int], int]]:
    """Reference -> prediction instance (one to one, maximum total DSC) and the overlap of every touching pair.

    The assignment decomposes over the connected parts of the overlap graph (a pair below the threshold
    costs the same constant in any assignment), so a part with a single pair is matched directly and only
    parts with several candidates go to `scipy.optimize.linear_sum_assignment`, on their own cost matrix.
    """
    if ref.n == 0 or pred.n == 0:
        return {}, {}
    a, b = ref.labels.ravel(order="K"), pred.labels.ravel(order="K")
    both = np.flatnonzero((a != 0) & (b != 0))
    if both.size == 0:
        return {}, {}
    ids, inter = np.unique(a[both].astype(np.int64) * (pred.n + 1) + b[both], return_counts=True)
    refs, preds = ids // (pred.n + 1), ids % (pred.n + 1)
    dsc = 2.0 * inter / (ref.sizes[refs] + pred.sizes[preds])
    overlaps = {(int(r), int(p)): int(c) for r, p, c in zip(refs, preds, inter, strict=True)}
    keep = dsc >= MATCHING_THRESHOLD
    refs, preds, dsc = refs[keep], preds[keep], dsc[keep]
    matches: dict[int, int] = {}
    for part in _parts(refs, preds):
        if len(part) == 1:
            matches[int(refs[part[0]])] = int(preds[part[0]])
            continue
        rows, cols = np.unique(refs[part]), np.unique(preds[part])
        cost = np.full((rows.size, cols.size), _UNMATCHED_COST)
        cost[np.searchsorted(rows, refs[part]), np.searchsorted(cols, preds[part])] = 1.0 - dsc[part]
        from scipy.optimize import linear_sum_assignment

        for i, j in zip(*linear_sum_assignment(cost), strict=True):
            if cost[i, j] < 1.0:
                matches[int(rows[i])] = int(cols[j])
    return matches, overlaps


def _parts(refs: np.ndarray, preds: np.ndarray) -> list[list[int]]:
    """Edge indices of each connected part of the bipartite graph with edges (refs[i], preds[i])."""
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def find(node: tuple[str, int]) -> tuple[str, int]:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for r, p in zip(refs.tolist(), preds.tolist(), strict=True):
        root_r, root_p = find(("r", r)), find(("p", p))
        if root_r != root_p:
            parent[root_p] = root_r
    groups: dict[tuple[str, int], list[int]] = {}
    for index, r in enumerate(refs.tolist()):
        groups.setdefault(find(("r", r)), []).append(index)
    return list(groups.values())


def score_region(
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float],
    *,
    tolerance: float | None = None,
    transposed: bool = False,
) -> RegionResult:
    """Scores of one region from its binary reference and prediction masks.

    Args:
        reference: Binary reference mask (any memory order: cc3d numbers instances in it).
        prediction: Binary prediction mask on the same grid.
        spacing: Voxel size in mm: the header zooms (float32 values, as `segkit.evaluation.cases.prediction_spacing`).
        tolerance: NSD tolerance in mm (default: the smallest voxel size, as the package).
        transposed: The masks are the transposes (``.T``) of the volume's (`spacing` stays the volume's).
    """
    sp = tuple(float(s) for s in spacing)
    steps = np.asarray(sp, dtype=np.float64)
    nsd_tol = min(sp) if tolerance is None else float(tolerance)
    # The package multiplies the header zooms as float32 (np.prod of float32 values): the same rounding here.
    voxel_volume = float(np.prod(np.asarray(sp, dtype=np.float32)))
    ref = _Instances.of(reference, reverse=transposed)
    pred = _Instances.of(prediction, reverse=transposed)
    matches, overlaps = _match(ref, pred)

    unit = np.ones_like(steps)
    # One instance on each side, matched, at an isotropic voxel size: the global masks are the pair's, and
    # the nearest voxels at unit size are those at the real size; the offsets serve both computations.
    shared = ref.n == pred.n == len(matches) == 1 and bool(np.all(steps == steps[0]))
    global_offsets = None
    matched: list[ReferenceInstance] = []
    for r in sorted(matches):
        p = matches[r]
        count = int(ref.sizes[r])
        dsc = 2.0 * overlaps[(r, p)] / (count + int(pred.sizes[p]))
        forward = _offsets(ref.border(r), pred.border(p), steps)
        backward = _offsets(pred.border(p), ref.border(r), steps)
        hd95, nsd = _reduce(_lengths(forward, steps), _lengths(backward, steps), nsd_tol)
        if shared:
            global_offsets = (forward, backward)
        matched.append(ReferenceInstance(count, count * voxel_volume, True, dsc, hd95, nsd))
    missed = [
        ReferenceInstance(int(ref.sizes[r]), int(ref.sizes[r]) * voxel_volume, False)
        for r in range(1, ref.n + 1)
        if r not in matches
    ]
    n_ref, n_pred, tp = ref.n, pred.n, len(matched)
    fp, fn = n_pred - tp, n_ref - tp
    values: dict[str, float] = {"n_ref_instances": n_ref, "n_pred_instances": n_pred, "tp": tp, "fp": fp, "fn": fn}
    values["prec"] = tp / n_pred if n_pred else math.nan
    values["rec"] = tp / n_ref if n_ref else math.nan
    values["rq"] = tp / (tp + 0.5 * fp + 0.5 * fn) if (tp + fp + fn) else math.nan
    for metric in ("dsc", "hd95", "nsd"):
        scores = np.array([getattr(m, metric) for m in matched], dtype=np.float64)
        if tp:
            values[f"sq_{metric}"], values[f"sq_{metric}_std"] = float(np.mean(scores)), float(np.std(scores))
        else:
            values[f"sq_{metric}"], values[f"sq_{metric}_std"] = _zero_tp(metric, n_ref, n_pred), math.nan
        if metric == "dsc":
            values["pq_dsc"] = values["sq_dsc"] * values["rq"]
    counts = [m.voxel_count for m in matched]
    values["instance_voxel_count_ref"] = float(np.mean(counts)) if counts else math.nan
    values["instance_volume_ref"] = float(np.mean([m.volume for m in matched])) if counts else math.nan
    n_ref_voxels, n_pred_voxels = int(ref.sizes[1:].sum()), int(pred.sizes[1:].sum())
    values["global_bin_volume_pred"] = n_pred_voxels
    values["global_bin_volume_ref"] = n_ref_voxels
    inter = sum(overlaps.values())
    if inter == 0:
        # No voxel in common: the package takes the zero-TP edge cases for the global metrics too.
        values |= {f"global_bin_{m}": _zero_tp(m, n_ref, n_pred) for m in ("dsc", "hd95", "nsd")}
    else:
        # The package computes the global metrics without the spacing: unit voxels, NSD tolerance 0.5.
        if global_offsets is not None:
            hd95, nsd = _reduce(_lengths(global_offsets[0], unit), _lengths(global_offsets[1], unit), 0.5)
        else:
            hd95, nsd = _surface(ref.border_points, pred.border_points, unit, 0.5)
        values |= {"global_bin_dsc": 2.0 * inter / (n_ref_voxels + n_pred_voxels), "global_bin_hd95": hd95}
        values["global_bin_nsd"] = nsd
    return RegionResult({key: values[key] for key in REGION_KEYS}, matched + missed)


def region_mask(labels: np.ndarray, group: Group) -> np.ndarray:
    """Binary mask of a group, C-ordered (the memory order decides cc3d's numbering)."""
    if len(group.labels) == 1:
        return np.equal(labels, group.labels[0], order="C")
    mask = np.equal(labels, group.labels[0], order="C")
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
    transposed = not gt.flags.c_contiguous and gt.T.flags.c_contiguous
    if transposed:
        # NIfTI arrays are Fortran-ordered: work on their C-ordered transposes (the same memory, so cc3d
        # numbers the components the same way) and keep the coordinates in the volume's axis order.
        gt, pred = gt.T, np.asarray(pred).T
    box = _foreground_box(gt, pred)
    if box is None:
        gt = pred = np.zeros((1, 1, 1), dtype=np.uint8)
    else:
        # Everything happens inside the box of the foreground plus the pair padding (clipped to the volume, as
        # panoptica's own crops are): cc3d numbers components in the same order there, distances are unchanged.
        gt, pred = np.ascontiguousarray(gt[box]), np.ascontiguousarray(pred[box])
    # Each region in its own box: the union of its labels' boxes on both sides (one pass per side for all).
    label_boxes = [ndimage.find_objects(gt), ndimage.find_objects(pred)]
    out = {}
    for g in groups:
        boxes = [b[v - 1] for b in label_boxes for v in g.labels if v <= len(b) and b[v - 1] is not None]
        if boxes:
            lo = [max(min(b[ax].start for b in boxes) - PAD, 0) for ax in range(gt.ndim)]
            hi = [min(max(b[ax].stop for b in boxes) + PAD, gt.shape[ax]) for ax in range(gt.ndim)]
            box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            gt_region, pred_region = region_mask(gt[box], g), region_mask(pred[box], g)
        else:
            gt_region = pred_region = np.zeros((1, 1, 1), dtype=bool)
        out[g.name] = score_region(gt_region, pred_region, spacing, tolerance=tolerance, transposed=transposed)
    return out


def _foreground_box(gt: np.ndarray, pred: np.ndarray) -> tuple[slice, ...] | None:
    """Box of the voxels labelled in either map, padded by `PAD` and clipped; None when both are empty."""
    either = (gt != 0) | (pred != 0)
    box = []
    for axis in range(either.ndim):
        others = tuple(a for a in range(either.ndim) if a != axis)
        hits = np.flatnonzero(either.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - PAD, 0), min(int(hits[-1]) + 1 + PAD, either.shape[axis])))
    return tuple(box)


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
