"""Known answers for the surfel-weighted surface distances (spheres, cubes, anisotropic grids, label maps)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _helpers import ball
from scipy import ndimage
from skimage import measure  # a dev dependency: this test must run, never skip

from segkit.metrics._surfel_table import NORMALS_X8
from segkit.metrics.surface import (
    hausdorff95,
    neighbour_codes,
    robust_hausdorff,
    surface_distances,
    surfel_area_table,
)


def _cube(shape=(32, 32, 32), lo=(8, 8, 8), size=10) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    out[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size] = True
    return out


def test_identical_masks_have_zero_distance() -> None:
    mask = ball((40, 40, 40), (20, 20, 20), 9)
    sd = surface_distances(mask, mask, (1.0, 1.0, 1.0))
    assert np.all(sd.distances_gt_to_pred == 0)
    assert np.all(sd.distances_pred_to_gt == 0)
    assert hausdorff95(mask, mask, (1.0, 1.0, 1.0)) == 0.0


@pytest.mark.parametrize("shift", [1, 2, 3, 5])
def test_shifted_cube_distance_is_the_shift(shift: int) -> None:
    # Shifting a cube along x: the x-faces of each cube are `shift` away from the other's surface; the
    # other faces are partly inside the other cube's faces (distance 0). The largest distance is exact.
    a = _cube()
    b = np.roll(a, shift, axis=0)
    sd = surface_distances(a, b, (1.0, 1.0, 1.0))
    assert sd.distances_gt_to_pred.max() == pytest.approx(shift)
    assert sd.distances_pred_to_gt.max() == pytest.approx(shift)
    assert robust_hausdorff(sd, 100) == pytest.approx(shift)
    assert hausdorff95(a, b, (1.0, 1.0, 1.0)) <= shift


def test_shifted_cube_with_anisotropic_spacing_scales_by_that_axis() -> None:
    a = _cube()
    b = np.roll(a, 2, axis=2)
    sd = surface_distances(a, b, (0.5, 0.7, 2.5))
    assert robust_hausdorff(sd, 100) == pytest.approx(2 * 2.5)
    sd = surface_distances(a, np.roll(a, 3, axis=1), (0.5, 0.7, 2.5))
    assert robust_hausdorff(sd, 100) == pytest.approx(3 * 0.7)


@pytest.mark.parametrize(("r1", "r2"), [(6, 10), (8, 12), (5, 14)])
def test_concentric_spheres_distance_is_radius_difference(r1: float, r2: float) -> None:
    inner = ball((40, 40, 40), (20, 20, 20), r1)
    outer = ball((40, 40, 40), (20, 20, 20), r2)
    hd = hausdorff95(inner, outer, (1.0, 1.0, 1.0))
    # Voxelised spheres: the surfaces sit within about one voxel of the ideal radii.
    assert abs(hd - (r2 - r1)) <= 1.0
    assert hausdorff95(outer, inner, (1.0, 1.0, 1.0)) == hd  # symmetric


def test_sphere_surface_area_is_close_to_analytic() -> None:
    r = 12
    mask = ball((40, 40, 40), (20, 20, 20), r)
    sd = surface_distances(mask, mask, (1.0, 1.0, 1.0))
    area = sd.surfel_areas_gt.sum()
    # Voxels with centres within r: the marching-cubes surface passes half a voxel further out.
    assert area == pytest.approx(4 * math.pi * (r + 0.5) ** 2, rel=0.03)


def test_anisotropic_sphere_in_mm() -> None:
    # A sphere of radius 10 mm sampled at 0.5 x 1 x 2 mm, against one of radius 14 mm.
    spacing = (0.5, 1.0, 2.0)
    shape = (80, 40, 20)
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    centre = [s / 2 for s in shape]
    dist = np.sqrt(sum(((g - c) * sp) ** 2 for g, c, sp in zip(grid, centre, spacing, strict=True)))
    hd = hausdorff95(dist <= 10, dist <= 14, spacing)
    assert abs(hd - 4.0) <= 2.0  # within one voxel along the coarsest axis


def test_empty_inputs() -> None:
    empty = np.zeros((8, 8, 8), dtype=bool)
    full = _cube((8, 8, 8), (2, 2, 2), 3)
    assert math.isinf(hausdorff95(empty, full, (1.0, 1.0, 1.0)))
    assert math.isinf(hausdorff95(full, empty, (1.0, 1.0, 1.0)))
    sd = surface_distances(empty, empty, (1.0, 1.0, 1.0))
    assert sd.distances_gt_to_pred.size == 0
    assert math.isinf(robust_hausdorff(sd))


def test_masks_touching_the_volume_border() -> None:
    a = np.zeros((10, 10, 10), dtype=bool)
    a[:4] = True
    b = np.zeros_like(a)
    b[:6] = True
    assert robust_hausdorff(surface_distances(a, b, (1.0, 1.0, 1.0)), 100) == pytest.approx(2.0)


def test_neighbour_codes_match_scipy_correlation_modulo_256() -> None:
    # The reference correlates a uint8 buffer with weights 128..1 and keeps the uint8 (wrapped) result.
    rng = np.random.default_rng(1)
    volume = rng.integers(0, 7, (9, 8, 7)).astype(np.uint8)
    kernel = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])
    padded = np.zeros(tuple(s + 1 for s in volume.shape), dtype=np.uint8)
    padded[:-1, :-1, :-1] = volume
    expected = ndimage.correlate(padded, kernel, mode="constant", cval=0)
    assert np.array_equal(neighbour_codes(volume), expected)


def test_label_map_quirk_differs_from_binary_masks() -> None:
    # Two lesions labelled 1 and 2: as a label map the interior of lesion 2 produces codes 2*255 mod 256
    # = 254, i.e. spurious surfels, which changes the HD95 (the reference's legacy HD95).
    gt = np.zeros((30, 30, 30), dtype=np.int32)
    gt[5:15, 5:15, 5:15] = 1
    gt[18:26, 18:26, 18:26] = 2
    pred = np.zeros_like(gt)
    pred[6:16, 5:15, 5:15] = 1
    pred[18:27, 18:26, 18:26] = 2
    as_labels = surface_distances(gt, pred, (1.0, 1.0, 1.0))
    as_masks = surface_distances(gt > 0, pred > 0, (1.0, 1.0, 1.0))
    assert len(as_labels.distances_gt_to_pred) > len(as_masks.distances_gt_to_pred)


def test_sparse_and_dense_paths_agree() -> None:
    # A large, mostly empty crop is processed cluster by cluster; the result must equal the dense path.
    rng = np.random.default_rng(3)
    gt = np.zeros((90, 90, 60), dtype=bool)
    pred = np.zeros_like(gt)
    for _ in range(6):
        c = rng.integers(8, 52, 3)
        r = rng.integers(2, 6)
        gt |= ball(gt.shape, tuple(c), r)
        pred |= ball(gt.shape, tuple(c + rng.integers(-2, 3, 3)), r + rng.integers(-1, 2))
    pred |= ball(gt.shape, (80, 80, 50), 3)
    sparse = surface_distances(gt, pred, (1.0, 1.0, 1.0))
    # The same objects in a crop small enough for the dense path (no surface crosses the cut).
    box = (slice(0, 90), slice(0, 90), slice(0, 60))
    assert gt[box].size > 200_000
    from segkit.metrics import surface

    saved = surface._DENSE_VOXELS
    try:
        surface._DENSE_VOXELS = 10**9
        dense = surface_distances(gt, pred, (1.0, 1.0, 1.0))
    finally:
        surface._DENSE_VOXELS = saved
    for field in ("distances_gt_to_pred", "surfel_areas_gt", "distances_pred_to_gt", "surfel_areas_pred"):
        assert np.array_equal(getattr(sparse, field), getattr(dense, field)), field


def test_surfel_table_areas() -> None:
    table = surfel_area_table((1.0, 1.0, 1.0))
    assert table[0] == 0
    assert table[255] == 0
    assert table[1] == pytest.approx(math.sqrt(3) / 8)  # one corner: a triangle across three edge midpoints
    assert table[0b00001111] == pytest.approx(1.0)  # half the cube inside: one flat unit face
    scaled = surfel_area_table((2.0, 3.0, 5.0))
    assert scaled[0b00001111] == pytest.approx(15.0)  # the face normal to axis 0 scales by sy * sz
    assert table.flags.writeable is False


def test_surfel_table_matches_marching_cubes() -> None:
    # The committed table is Lorensen's marching cubes on the minority corners of each 2x2x2 code.
    for code, expected in enumerate(NORMALS_X8):
        if code in (0, 255):
            assert expected == ()
            continue
        corners = code if bin(code).count("1") <= 4 else 255 - code
        cube = np.zeros((2, 2, 2))
        for i in range(2):
            for j in range(2):
                for k in range(2):
                    cube[i, j, k] = (corners >> (7 - (4 * i + 2 * j + k))) & 1
        verts, faces, _, _ = measure.marching_cubes(cube, 0.5, method="lorensen", allow_degenerate=True)
        verts = verts.astype(np.float64)
        got = [
            tuple(round(v) for v in np.abs(np.cross(verts[f[1]] - verts[f[0]], verts[f[2]] - verts[f[0]])) * 4)
            for f in faces
        ]
        assert sorted(got) == sorted(expected), code


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.9375, 0.9375, 1.5), (1.0, 1.2, 3.0)])
@pytest.mark.parametrize("engine", ["edt", "tree"])
def test_nearest_distances_equal_brute_force(spacing, engine, monkeypatch) -> None:
    from segkit.metrics import surface

    # Force one engine for the far points (the 3x3x3 lookup settles the near ones either way).
    monkeypatch.setattr(surface, "_EDT_SECONDS_PER_VOXEL", 0.0 if engine == "edt" else 1.0)
    rng = np.random.default_rng(7)
    source = rng.integers(0, 30, (400, 3))
    target = np.concatenate([rng.integers(0, 30, (150, 3)), source[:40] + rng.integers(-1, 2, (40, 3))])
    got = surface._nearest_distances(source, target, spacing)
    scale = np.asarray(spacing)
    brute = np.sqrt((((source[:, None, :] - target[None, :, :]) * scale) ** 2).sum(axis=2)).min(axis=1)
    np.testing.assert_allclose(got, brute, rtol=0, atol=1e-12)
    if spacing == (1.0, 1.0, 1.0):
        assert np.array_equal(got, brute)  # integer offsets: bit-identical
