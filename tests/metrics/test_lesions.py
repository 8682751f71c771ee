"""The lesion definition: dilation merging, numbering, size filter, touching and cross-tissue regrouping."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest
from _helpers import spacing_phantom
from scipy import ndimage

from segkit.metrics.lesions import LesionMap, merge_by_dilation, regroup_by_touching, relabel, touching_pairs
from segkit.metrics.lesionwise import BRATS2024, auto_penalty, lesion_maps, score_case


def _reference_merge(mask: np.ndarray, steps: int) -> np.ndarray:
    """The reference's definition on the whole array: cc3d of the full dilation, restricted to the mask."""
    dilated = ndimage.binary_dilation(mask, ndimage.generate_binary_structure(3, 2), iterations=steps)
    return np.where(mask, cc3d.connected_components(dilated, connectivity=26), 0)


def test_cc3d_numbers_components_in_c_order_of_first_voxel() -> None:
    # The official numbering (and so cross-tissue merging and the legacy HD95) relies on this.
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((15, 13, 11)) > 0.9
        labels = cc3d.connected_components(mask, connectivity=26)
        first = [np.flatnonzero(labels.ravel() == k)[0] for k in range(1, labels.max() + 1)]
        assert first == sorted(first)


@pytest.mark.parametrize("steps", [1, 3, 5])
def test_merge_by_dilation_equals_whole_array_definition(steps: int) -> None:
    rng = np.random.default_rng(steps)
    for _ in range(10):
        mask = rng.random((40, 36, 30)) > 0.995
        mask[0:3, 5:8, 2:4] = True  # against the border
        got = merge_by_dilation(mask, steps)
        assert np.array_equal(got.labels, _reference_merge(mask, steps))
        for number in got.numbers:
            assert got.counts[number] == int(np.count_nonzero(got.labels == number))
            assert np.count_nonzero(got.labels[got.boxes[number]] == number) == got.counts[number]


@pytest.mark.parametrize("steps", [2, 3, 5])
def test_lone_components_need_no_dilation_and_keep_the_numbering(steps: int) -> None:
    # Lone components take a short cut (no dilation): solid boxes (no background in their box), components
    # whose dilation the low or high border cuts, and single voxels must number as the definition does.
    mask = np.zeros((30, 28, 26), dtype=bool)
    mask[12:15, 4:9, 20:21] = True  # a solid 3x5x1 box
    mask[0, 14, 3] = True  # at the low border of axis 0: the dilation is cut there
    mask[22, 1, 25] = True  # near the low border of axis 1, at the high border of axis 2
    mask[29, 27, 0] = True
    mask[5, 20, 10] = True
    reference = _reference_merge(mask, steps)
    full = merge_by_dilation(mask, steps)
    assert np.array_equal(full.labels, reference)
    for n in full.numbers:
        assert full.counts[n] == int(np.count_nonzero(reference == n))
        assert full.boxes[n] == ndimage.find_objects((reference == n).astype(np.uint8))[0]
    kept = merge_by_dilation(mask, steps, min_size=1)  # single voxels deleted, numbers kept
    assert np.array_equal(kept.labels, np.where(np.isin(reference, kept.numbers), reference, 0))
    assert sorted(kept.counts) == [n for n in full.numbers if full.counts[n] > 1]


@pytest.mark.parametrize(("gap", "steps", "merged"), [(6, 3, True), (7, 3, False), (10, 5, True), (11, 5, False)])
def test_axis_aligned_gap_merges_up_to_twice_the_dilation(gap: int, steps: int, merged: bool) -> None:
    mask = np.zeros((40, 10, 10), dtype=bool)
    mask[5:8, 4:6, 4:6] = True
    mask[8 + gap : 11 + gap, 4:6, 4:6] = True
    assert len(merge_by_dilation(mask, steps).numbers) == (1 if merged else 2)


def test_small_lesions_are_deleted_and_numbers_keep_gaps() -> None:
    mask = np.zeros((40, 20, 20), dtype=bool)
    mask[2:5, 2:5, 2:5] = True  # 27 voxels: kept with t = 20
    mask[15:17, 2:4, 2:4] = True  # 8 voxels: deleted
    mask[30:34, 2:6, 2:6] = True  # 64 voxels: kept
    lesions = merge_by_dilation(mask, 3, min_size=20)
    assert lesions.numbers == [1, 3]
    assert np.count_nonzero(lesions.labels) == 27 + 64
    # a lesion of exactly t voxels is deleted (<= t)
    assert merge_by_dilation(mask, 3, min_size=27).numbers == [3]


def test_touching_pairs_uses_the_18_neighbourhood() -> None:
    a = LesionMap(np.zeros((6, 6, 6), dtype=np.int32), {}, {})
    b = LesionMap(np.zeros((6, 6, 6), dtype=np.int32), {}, {})
    a.labels[1, 1, 1] = 1
    b.labels[2, 2, 1] = 1  # edge neighbour (in the 18-neighbourhood)
    b.labels[4, 4, 4] = 2
    a.labels[3, 3, 3] = 2  # corner neighbour of b's lesion 2: not in the 18-neighbourhood
    for m in (a, b):
        for number in np.unique(m.labels)[1:]:
            m.counts[int(number)] = 1
            m.boxes[int(number)] = ndimage.find_objects(m.labels)[number - 1]
    pairs = touching_pairs([a, b])
    assert pairs[(0, 1)] == {(1, 1)}
    assert pairs[(1, 0)] == {(1, 1)}


def test_regrouping_is_keyed_by_the_smallest_touched_lesion_and_not_transitive() -> None:
    # Lesions 1 and 2 both touch other-tissue lesion 5; lesion 2 also touches 3, which is smaller, so
    # lesion 1 is keyed by 5 and lesion 2 by 3: they stay apart.
    assert regroup_by_touching([1, 2], [{(1, 5), (2, 5), (2, 3)}]) == {1: 1, 2: 2}
    # Moved lesions get labels above all current ones (so they sort after untouched lesion 2), handed
    # out in the order their keys first appear in the sorted pairs: key 9 (lesion 1) before key 2.
    assert regroup_by_touching([1, 2, 3], [{(1, 9), (3, 2)}]) == {1: 2, 2: 1, 3: 3}
    # Both touch 5 and nothing smaller: merged.
    assert regroup_by_touching([1, 2, 4], [{(1, 5), (2, 5)}]) == {1: 2, 2: 2, 4: 1}
    # A single touching pair changes nothing (the reference applies a step only with > 1 pairs).
    assert regroup_by_touching([1, 2], [{(2, 7)}]) == {1: 1, 2: 2}
    # Gaps are closed by the final renumbering.
    assert regroup_by_touching([2, 9], []) == {2: 1, 9: 2}


def test_relabel_merges_counts_and_boxes() -> None:
    labels = np.zeros((10, 10, 10), dtype=np.int32)
    labels[1:3, 1:3, 1:3] = 1
    labels[6:8, 6:8, 6:8] = 2
    lesion_map = merge_by_dilation(labels > 0, 1)
    assert lesion_map.numbers == [1, 2]
    merged = relabel(lesion_map, {1: 1, 2: 1})
    assert merged.numbers == [1]
    assert merged.counts[1] == 16
    assert merged.boxes[1] == (slice(1, 8), slice(1, 8), slice(1, 8))
    assert np.count_nonzero(merged.labels == 1) == 16


def test_cross_tissue_merging_joins_netc_fragments_around_one_et() -> None:
    # Two NETC blobs far apart, each touching the same ET rim and nothing else: one NETC lesion.
    labels = np.zeros((40, 20, 20), dtype=np.uint8)
    labels[5:35, 8:12, 8:12] = 3
    labels[5:10, 12:14, 8:12] = 1
    labels[30:35, 12:14, 8:12] = 1
    maps = lesion_maps(labels, BRATS2024, prediction=False)
    assert len(maps["ET"].numbers) == 1
    assert len(maps["NETC"].numbers) == 1
    # Without the ET rim the two NETC blobs (gap 20 > 2 * 5) are two lesions.
    alone = np.where(labels == 1, 1, 0).astype(np.uint8)
    assert len(lesion_maps(alone, BRATS2024, prediction=False)["NETC"].numbers) == 2


def test_score_case_on_empty_volumes() -> None:
    empty = np.zeros((12, 12, 12), dtype=np.uint8)
    result = score_case(empty, empty, (1.0, 1.0, 1.0), penalty=374.0)
    for values in result.regions.values():
        assert values["LesionWise_Score_Dice"] == 1.0
        assert values["LesionWise_Score_HD95"] == 0.0
        assert values["Legacy_Dice"] == 1.0
        assert values["Legacy_HD95"] == 0.0
        assert values["Sensitivity"] == 1.0
        assert values["Specificity"] == 1.0
    assert result.lesions == []


def test_score_case_regions_subset_gives_the_same_numbers() -> None:
    rng = np.random.default_rng(5)
    gt = np.zeros((30, 30, 30), dtype=np.uint8)
    gt[5:20, 5:20, 5:20] = 2
    gt[8:16, 8:16, 8:16] = 3
    gt[10:14, 10:14, 10:14] = 1
    pred = gt.copy()
    pred[rng.random(gt.shape) > 0.97] = 3
    full = score_case(gt, pred, (1.0, 1.0, 1.0), penalty=100.0)
    only_et = score_case(gt, pred, (1.0, 1.0, 1.0), penalty=100.0, regions=["ET"])
    assert list(only_et.regions) == ["ET"]
    assert only_et.regions["ET"] == full.regions["ET"]


def test_thresholds_at_half_millimetre_gt_in_mm3_prediction_in_voxels() -> None:
    # At 0.5 mm a voxel is 0.125 mm³: B (100 voxels) is 12.5 mm³ <= 20 mm³ and leaves the means, while the
    # prediction filter counts voxels: C (30 voxels, 3.75 mm³) stays a false positive, D (15 voxels) goes.
    gt, pred = spacing_phantom()
    scores = score_case(gt, pred, (0.5, 0.5, 0.5), penalty=100.0, regions=["WT"])
    wt = scores.regions["WT"]
    rows = {row.gt_lesion: row for row in scores.lesions}
    assert [(r.volume, r.counted) for r in rows.values()] == [(125.0, True), (12.5, False)]
    assert rows[1].dice == 1.0
    assert rows[1].hd95 == 0.0
    assert (wt["Num_TP"], wt["Num_FP"], wt["Num_FN"]) == (1, 1, 0)
    assert wt["LesionWise_Score_Dice"] == pytest.approx(1.0 / 2)  # A, plus C as a false positive
    assert wt["LesionWise_Score_HD95"] == pytest.approx((0.0 + 100.0) / 2)
    assert wt["GT_Complete_Volume"] == pytest.approx(1100 * 0.125)


def test_volumes_scale_with_anisotropic_voxels() -> None:
    # 0.9 x 1.2 x 2.5 mm: 2.7 mm³ per voxel, so B (270 mm³) now counts, as a missed lesion.
    gt, pred = spacing_phantom()
    scores = score_case(gt, pred, (0.9, 1.2, 2.5), penalty=100.0, regions=["WT"])
    wt = scores.regions["WT"]
    voxel = 0.9 * 1.2 * 2.5
    assert [(r.volume, r.counted) for r in scores.lesions] == [
        (pytest.approx(1000 * voxel), True),
        (pytest.approx(100 * voxel), True),
    ]
    assert wt["GT_Complete_Volume"] == pytest.approx(1100 * voxel)
    assert (wt["Num_TP"], wt["Num_FP"], wt["Num_FN"]) == (1, 1, 1)
    assert wt["LesionWise_Score_Dice"] == pytest.approx(1.0 / 3)
    assert wt["LesionWise_Score_HD95"] == pytest.approx((0.0 + 100.0 + 100.0) / 3)


def test_auto_penalty_keys_on_shape_and_one_millimetre_spacing() -> None:
    assert auto_penalty((182, 218, 182), (1.0, 1.0, 1.0)) == (337.0, "182x218x182 1 mm grid")
    assert auto_penalty((240, 240, 155), (1.0, 1.0, 1.0)) == (374.0, "240x240x155 1 mm grid")
    # float32 zooms of a 1 mm grid are still that grid
    assert auto_penalty((240, 240, 155), (1.0000001, 0.9999999, 1.0))[0] == 374.0
    # the same shape at 0.5 mm is half the extent: its own diagonal
    penalty, rule = auto_penalty((240, 240, 155), (0.5, 0.5, 0.5))
    assert rule == "volume diagonal"
    assert penalty == pytest.approx(0.5 * (240**2 + 240**2 + 155**2) ** 0.5)
    assert auto_penalty((32, 32, 32), (1.0, 1.0, 2.0))[0] == pytest.approx((32**2 + 32**2 + 64**2) ** 0.5)
