"""Pixel-level tests of the pure renderer: colours, orientation, windowing, aspect, frames."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from segkit.viz import render as R  # noqa: N812 (short alias keeps the pixel tables readable)

# --- colours ---------------------------------------------------------------------------------------


def test_label_3_pixel_gets_the_et_colour() -> None:
    grey = np.full((5, 6, 3), 100, np.uint8)
    labels = np.zeros((5, 6), np.int16)
    labels[2, 3] = 3
    solid = R.blend_labels(grey, labels, alpha=1.0)
    assert tuple(solid[2, 3]) == R.BRATS_COLOURS[3] == (0, 0, 255)
    assert (solid[labels == 0] == 100).all()
    half = R.blend_labels(grey, labels, alpha=0.4)
    assert tuple(half[2, 3]) == (60, 60, 162)  # 0.6 * 100 + 0.4 * (0, 0, 255), rounded
    assert (grey == 100).all()  # input untouched


@pytest.mark.parametrize(("label", "name"), [(1, "NETC"), (2, "SNFH"), (3, "ET"), (4, "RC")])
def test_every_label_has_a_distinct_legend_colour(label: int, name: str) -> None:
    entries = dict(R.legend())
    assert entries[f"{label} {name}"] == R.BRATS_COLOURS[label]
    assert len(set(R.BRATS_COLOURS.values())) == 4


def test_unknown_labels_are_not_drawn() -> None:
    grey = np.zeros((3, 3, 3), np.uint8)
    labels = np.array([[0, 7, -1], [0, 0, 0], [0, 0, 0]])
    assert (R.blend_labels(grey, labels, alpha=1.0) == 0).all()


def test_contour_draws_only_the_boundary() -> None:
    labels = np.zeros((7, 7), np.int16)
    labels[1:6, 1:6] = 2
    edge = R.label_boundaries(labels)
    assert edge[1, 1]
    assert edge[1, 3]
    assert edge[5, 5]
    assert not edge[3, 3]
    assert not edge[0, 0]
    assert edge.sum() == 16  # perimeter of a 5x5 square
    out = R.blend_labels(np.zeros((7, 7, 3), np.uint8), labels, alpha=0.5, style="contour")
    assert tuple(out[1, 3]) == R.BRATS_COLOURS[2]
    assert tuple(out[3, 3]) == (0, 0, 0)
    both = R.blend_labels(np.zeros((7, 7, 3), np.uint8), labels, alpha=0.5, style="both")
    assert tuple(both[3, 3]) == (0, 128, 0)


def test_error_codes_and_colours() -> None:
    ref = np.array([[1, 1, 0, 0, 2]])
    pred = np.array([[1, 0, 3, 0, 3]])
    codes = R.error_codes(ref, pred)
    assert codes.tolist() == [[R.TP, R.FN, R.FP, 0, R.MISMATCH]]
    region = R.error_codes(ref, pred, region=(1, 2, 3))  # whole tumour: the label swap is a TP
    assert region.tolist() == [[R.TP, R.FN, R.FP, 0, R.TP]]
    rgb = R.blend_errors(np.zeros((1, 5, 3), np.uint8), codes, alpha=1.0)
    assert [tuple(p) for p in rgb[0]] == [
        R.ERROR_COLOURS[R.TP],
        R.ERROR_COLOURS[R.FN],
        R.ERROR_COLOURS[R.FP],
        (0, 0, 0),
        R.ERROR_COLOURS[R.MISMATCH],
    ]


# --- windowing -------------------------------------------------------------------------------------


def test_window_limits_ignore_background_and_map_to_0_255() -> None:
    volume = np.zeros((10, 10, 10), np.float32)
    volume[:, :, 5:] = np.arange(1, 501, dtype=np.float32).reshape(10, 10, 5)
    low, high = R.window_limits(volume, (0.0, 100.0))
    assert (low, high) == (1.0, 500.0)
    low, high = R.window_limits(volume, (10.0, 90.0))
    assert low == pytest.approx(np.percentile(np.arange(1, 501), 10))
    assert high == pytest.approx(np.percentile(np.arange(1, 501), 90))
    out = R.apply_window(np.array([[-5.0, 1.0, 250.5, 500.0, 900.0, np.nan]]), (1.0, 500.0))
    assert out.tolist() == [[0, 0, 128, 255, 255, 0]]


def test_window_of_a_constant_or_empty_volume() -> None:
    assert R.window_limits(np.full((4, 4, 4), 7.0)) == (7.0, 8.0)
    assert R.window_limits(np.zeros((4, 4, 4))) == (0.0, 1.0)
    with pytest.raises(ValueError, match="percentiles"):
        R.window_limits(np.ones(3), (90, 10))


# --- orientation -----------------------------------------------------------------------------------


def _affines() -> list[np.ndarray]:
    """Voxel-to-world affines: RAS, LAS (BraTS 2024 MNI), LPS-like, and a permuted, anisotropic one."""
    out = [np.eye(4), np.diag([-1.0, 1.0, 1.0, 1.0]), np.diag([-1.0, -1.0, 1.0, 1.0])]
    permuted = np.zeros((4, 4))
    permuted[2, 0] = -2.0  # stored axis 0 runs inferior (S flipped), 2 mm
    permuted[0, 1] = 1.0  # stored axis 1 runs right
    permuted[1, 2] = -1.5  # stored axis 2 runs posterior, 1.5 mm
    permuted[3, 3] = 1.0
    out.append(permuted)
    return out


def _phantom(affine: np.ndarray, shape=(20, 22, 18)) -> np.ndarray:
    """Voxel values from world position: 1 left-anterior, 2 right-superior, 3 posterior-inferior.

    Every affine is centred on the world origin, so the phantom is the same anatomy whatever the grid.
    """
    affine = affine.copy()
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    x, y, z = world.T
    values = np.zeros(len(world), np.int16)
    values[(x < -3) & (y > 3)] = 1
    values[(x > 3) & (z > 3)] = 2
    values[(y < -3) & (z < -3)] = 3
    return values.reshape(shape), affine


@pytest.mark.parametrize("affine", _affines(), ids=["RAS", "LAS", "LPS", "permuted"])
def test_orientation_of_an_asymmetric_phantom(affine: np.ndarray) -> None:
    volume, affine = _phantom(affine)
    orient = R.Orientation.from_affine(affine, volume.shape)
    ras = orient.to_ras(volume)
    mid = [n // 2 for n in ras.shape]

    def quadrants(image: np.ndarray, value: int) -> set[str]:
        h, w = image.shape
        rows, cols = np.nonzero(image == value)
        return {
            ("top" if r < h / 2 else "bottom") + "-" + ("left" if c < w / 2 else "right")
            for r, c in zip(rows, cols, strict=False)
        }

    axial = R.display_slice(ras, "axial", mid[2] + 1)  # just above the centre
    # anterior at the top; the patient's left on the image's right
    assert quadrants(axial, 1) == {"top-right"}
    coronal = R.display_slice(ras, "coronal", mid[1])
    # superior at the top; the patient's right on the image's left
    assert quadrants(coronal, 2) == {"top-left"}
    sagittal = R.display_slice(ras, "sagittal", mid[0])
    # superior at the top, anterior on the left: posterior-inferior is bottom-right
    assert quadrants(sagittal, 3) == {"bottom-right"}


@pytest.mark.parametrize("affine", _affines(), ids=["RAS", "LAS", "LPS", "permuted"])
def test_ras_index_zero_is_the_patients_left_posterior_inferior_edge(affine: np.ndarray) -> None:
    # What `--fraction 0` (and RAS index 0) means: the patient's left, posterior and inferior edge.
    shape = (20, 22, 18)
    _, affine = _phantom(affine, shape)
    orient = R.Orientation.from_affine(affine, shape)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]  # nibabel's world: +x right, +y anterior, +z superior
    for axis in R.AXES:
        ras = R.AXIS_NUMBER[axis]
        position = orient.to_ras(world[..., ras])
        first = np.take(position, R.slice_index(position.shape[ras], 0.0), axis=ras)
        last = np.take(position, R.slice_index(position.shape[ras], 1.0), axis=ras)
        assert first.max() < 0 < last.min(), axis  # left (x < 0), posterior (y < 0), inferior (z < 0) first


@pytest.mark.parametrize("affine", _affines(), ids=["RAS", "LAS", "LPS", "permuted"])
def test_display_pixels_map_back_to_file_voxels(affine: np.ndarray) -> None:
    volume = np.arange(20 * 22 * 18).reshape(20, 22, 18)
    orient = R.Orientation.from_affine(affine, volume.shape)
    ras = orient.to_ras(volume)
    for axis in R.AXES:
        index = 5
        image = R.display_slice(ras, axis, index)
        for row, col in [(0, 0), (3, 7), (image.shape[0] - 1, image.shape[1] - 1)]:
            voxel = orient.file_voxel(R.display_to_ras(ras.shape, axis, index, row, col))
            assert volume[voxel] == image[row, col]
        assert orient.ras_index(axis, orient.file_index(axis, index)) == index


def test_orientation_codes_and_spacing() -> None:
    permuted = _affines()[3]
    orient = R.Orientation.from_affine(permuted, (20, 22, 18))
    assert orient.codes() == "IRP"
    assert orient.ras_shape == (22, 18, 20)
    assert orient.ras_spacing((2.0, 1.0, 1.5)) == (1.0, 1.5, 2.0)
    assert R.pixel_spacing((1.0, 1.5, 2.0), "axial") == (1.5, 1.0)
    assert R.pixel_spacing((1.0, 1.5, 2.0), "sagittal") == (2.0, 1.5)
    assert R.Orientation.from_affine(np.diag([-1, 1, 1, 1]), (4, 4, 4)).codes() == "LAS"


def test_display_stack_equals_display_slice() -> None:
    ras = np.random.default_rng(0).random((6, 7, 8))
    for axis in R.AXES:
        n = ras.shape[R.AXIS_NUMBER[axis]]
        stack = R.display_stack(ras, axis, range(0, n, 2))
        for k, index in enumerate(range(0, n, 2)):
            np.testing.assert_array_equal(stack[k], R.display_slice(ras, axis, index))
    with pytest.raises(IndexError):
        R.display_slice(ras, "axial", 8)


# --- geometry --------------------------------------------------------------------------------------


def test_square_pixels_uses_the_spacing() -> None:
    image = np.arange(6).reshape(2, 3)
    assert R.square_pixels(image, (1.0, 1.0)) is image
    tall = R.square_pixels(image, (2.0, 1.0))
    assert tall.tolist() == [[0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5]]
    wide = R.square_pixels(image, (1.0, 3.0))
    assert wide.shape == (2, 9)
    assert R.stretched_to_display((2.0, 1.0), (2, 3), 3, 2) == (1, 2)
    assert R.stretched_to_display((1.0, 3.0), (2, 3), 1, 8) == (1, 2)


def test_slice_index_from_fraction() -> None:
    assert [R.slice_index(155, f) for f in (0.0, 0.5, 0.55, 1.0)] == [0, 77, 85, 154]
    with pytest.raises(ValueError, match="fraction"):
        R.slice_index(10, 1.5)


def test_tile_places_images_and_reports_boxes() -> None:
    a = np.full((4, 5, 3), 10, np.uint8)
    b = np.full((2, 3, 3), 20, np.uint8)
    canvas, boxes = R.tile([a, b, a], columns=2, gap=1, background=(1, 2, 3))
    assert canvas.shape == (4 + 1 + 4, 5 + 1 + 3, 3)  # column widths 5 and 3
    assert boxes[1] == R.Box(1, 6, 2, 3)  # centred vertically in its 4-pixel row
    assert (canvas[1:3, 6:9] == 20).all()
    assert tuple(canvas[0, 5]) == (1, 2, 3)
    assert boxes[2].contains(6, 2)
    assert not boxes[2].contains(6, 6)


# --- frames ----------------------------------------------------------------------------------------


def _sweep_frames(image_ras: np.ndarray, axis: R.Axis, *, step: int, **kwargs) -> list[np.ndarray]:
    """The oracle of `indexed_sweep`: every `step`-th RAS slice from 0, rendered one by one in RGB."""
    return [
        R.render_slice(image_ras, axis, index, **kwargs)
        for index in range(0, image_ras.shape[R.AXIS_NUMBER[axis]], step)
    ]


def test_indexed_sweep_matches_rgb_rendering_within_palette_precision() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((12, 14, 10)).astype(np.float32) * 100
    labels = np.zeros(image.shape, np.int16)
    labels[3:8, 4:9, 2:7] = 2
    labels[4:6, 5:7, 3:5] = 3
    limits = (10.0, 90.0)
    spacing = (1.0, 1.0, 2.5)
    for axis, style in itertools.product(R.AXES, ("fill", "both")):
        indexed = R.indexed_sweep(
            image, axis, limits=limits, labels_ras=labels, step=3, alpha=0.4, style=style, spacing_ras=spacing
        )
        rgb = _sweep_frames(
            image, axis, limits=limits, labels_ras=labels, step=3, alpha=0.4, style=style, spacing_ras=spacing
        )
        assert len(rgb) == len(indexed.frames) == len(range(0, image.shape[R.AXIS_NUMBER[axis]], 3))
        got = indexed.rgb().astype(int)
        want = np.stack(rgb).astype(int)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 6  # 120 grey levels; 32 levels under a label


def test_indexed_palette_is_distinct_and_black_twin_is_black() -> None:
    palette = R.overlay_palette(1.0)  # alpha 1 makes every blend of a label the same colour
    assert len({tuple(c) for c in palette}) == 256
    assert palette[R.BLACK_TWIN].max() <= 1
    assert tuple(palette[0]) == (0, 0, 0)
    assert [tuple(c) for c in palette[248:252]] == [R.BRATS_COLOURS[k] for k in (1, 2, 3, 4)]  # contours exact


def test_identical_slices_stay_separate_frames() -> None:
    image = np.zeros((8, 8, 6), np.float32)
    image[2:6, 2:6, 3] = 5.0  # slices 0-2 and 4-5 are empty and identical
    frames = R.indexed_sweep(image, "axial", limits=(0.0, 5.0)).frames
    assert len(frames) == 6
    for a, b in itertools.pairwise(frames):
        assert not np.array_equal(a, b)
    palette = R.overlay_palette(0.4)
    assert (palette[frames[0]] <= 1).all()  # still black to the eye
