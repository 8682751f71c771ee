"""Pure rendering: volumes and label maps in, RGB ``uint8`` images out. No I/O, inputs never modified.

Conventions (shared by the static figures, the GIFs and the Dash viewer):

* A stored volume is indexed (i, j, k) in its file's voxel grid. `Orientation` maps it onto a **RAS+
  view** (axis 0 towards patient Right, 1 towards Anterior, 2 towards Superior) using only axis
  permutations and flips (numpy views, no resampling), read from the affine.
* Slices are shown the way radiologists read them: anatomical superior (or anterior, on axial slices)
  is at the top, and on axial and coronal slices the patient's left is on the image's right. Sagittal
  slices have anterior on the left. A displayed slice is an (H, W) array, row 0 at the top.
* Slice indices of the public functions are RAS indices (0 = the patient's far left / posterior /
  inferior edge, since R, A and S grow away from it); `Orientation.file_index` converts them to the
  stored file's voxel index.
* Pixel aspect comes from the voxel spacing: `square_pixels` resamples (nearest neighbour) so that each
  output pixel covers the same millimetres in both directions.
* Intensities are windowed to ``uint8`` between two percentiles of the volume's non-zero voxels.
* Labels use the fixed BraTS 2024 legend `BRATS_COLOURS` (1 NETC, 2 SNFH, 3 ET, 4 RC).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from segkit.conventions import LABELS, OVERLAY_ALPHA, WINDOW_PERCENTILES

Axis: TypeAlias = Literal["sagittal", "coronal", "axial"]
"""Slice plane: sagittal (fixed x, left-right), coronal (fixed y, posterior-anterior), axial (fixed z)."""

OverlayStyle: TypeAlias = Literal["fill", "contour", "both"]
"""Labels as translucent fill, as solid one-pixel outlines, or both."""

RGB: TypeAlias = tuple[int, int, int]
RGBImage: TypeAlias = npt.NDArray[np.uint8]
"""(H, W, 3) uint8."""

AXES: Final[tuple[Axis, ...]] = ("sagittal", "coronal", "axial")
AXIS_NUMBER: Final[Mapping[str, int]] = MappingProxyType({"sagittal": 0, "coronal": 1, "axial": 2})
"""RAS axis held fixed by each slice plane."""

BRATS_COLOURS: Final[Mapping[int, RGB]] = MappingProxyType(
    {1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255), 4: (255, 255, 0)}
)
"""Label colours: 1 NETC red, 2 SNFH green, 3 ET blue, 4 RC yellow (ITK-SNAP's defaults for 1-4, which
is how most BraTS users first see these labels)."""

TP: Final = 1
FP: Final = 2
FN: Final = 3
MISMATCH: Final = 4
ERROR_NAMES: Final[Mapping[int, str]] = MappingProxyType(
    {TP: "true positive", FP: "false positive", FN: "false negative", MISMATCH: "wrong label"}
)
ERROR_COLOURS: Final[Mapping[int, RGB]] = MappingProxyType(
    {TP: (40, 200, 40), FP: (255, 50, 50), FN: (50, 140, 255), MISMATCH: (255, 165, 0)}
)
"""Error view colours: TP green, FP red, FN blue, both labelled but different labels orange."""

_PERCENTILE_SAMPLE = 4_000_000  # voxels; beyond this a strided subsample estimates the percentiles


def legend(colours: Mapping[int, RGB] = BRATS_COLOURS) -> list[tuple[str, RGB]]:
    """``(name, colour)`` for each label of the BraTS legend, e.g. ``("3 ET", (0, 0, 255))``."""
    return [(f"{value} {LABELS.get(value, str(value))}", colour) for value, colour in colours.items()]


# --- orientation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Orientation:
    """How a stored (i, j, k) voxel grid maps onto the RAS+ view.

    Attributes:
        axes: For each stored axis, the RAS axis it runs along (a permutation of 0, 1, 2).
        flips: For each stored axis, True when increasing the stored index moves away from R/A/S.
        file_shape: Voxels along the stored axes.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    file_shape: tuple[int, int, int]

    @classmethod
    def from_affine(cls, affine: npt.ArrayLike, shape: Sequence[int]) -> Orientation:
        """Read the orientation from a (4, 4) voxel-to-world affine (nibabel's RAS+ world).

        Each stored axis is assigned the world axis its direction is closest to (the same rule as
        nibabel's ``io_orientation``, which it uses), so oblique scans are shown along the nearest
        anatomical planes without resampling.

        Raises:
            ValueError: If the affine is singular or the shape is not 3-D.
        """
        from nibabel.orientations import io_orientation

        if len(shape) != 3:
            msg = f"expected a 3-D shape, got {tuple(shape)}"
            raise ValueError(msg)
        ornt = io_orientation(np.asarray(affine, dtype=np.float64))
        if np.isnan(ornt).any():
            msg = "affine is singular; cannot tell the orientation"
            raise ValueError(msg)
        axes = tuple(int(a) for a in ornt[:, 0])
        flips = tuple(bool(f < 0) for f in ornt[:, 1])
        return cls(axes, flips, (int(shape[0]), int(shape[1]), int(shape[2])))  # type: ignore[arg-type]

    @property
    def ras_shape(self) -> tuple[int, int, int]:
        """Voxels along R, A, S in the RAS view."""
        out = [0, 0, 0]
        for stored, ras in enumerate(self.axes):
            out[ras] = self.file_shape[stored]
        return (out[0], out[1], out[2])

    def to_ras(self, volume: np.ndarray) -> np.ndarray:
        """A RAS+ view of a stored (i, j, k) volume (flips and a transpose: no copy).

        Raises:
            ValueError: If `volume`'s shape differs from `file_shape`.
        """
        if tuple(volume.shape[:3]) != self.file_shape:
            msg = f"volume shape {tuple(volume.shape)} does not match {self.file_shape}"
            raise ValueError(msg)
        view = volume
        for stored, flip in enumerate(self.flips):
            if flip:
                view = np.flip(view, axis=stored)
        order = [self.axes.index(ras) for ras in range(3)]
        return np.transpose(view, order)

    def ras_spacing(self, spacing: Sequence[float]) -> tuple[float, float, float]:
        """Spacing of the stored axes (mm) reordered to R, A, S."""
        out = [0.0, 0.0, 0.0]
        for stored, ras in enumerate(self.axes):
            out[ras] = float(spacing[stored])
        return (out[0], out[1], out[2])

    def file_voxel(self, ras_voxel: Sequence[int]) -> tuple[int, int, int]:
        """Stored (i, j, k) of a voxel given by its RAS-view index."""
        out = []
        for stored, ras in enumerate(self.axes):
            r = int(ras_voxel[ras])
            out.append(self.file_shape[stored] - 1 - r if self.flips[stored] else r)
        return (out[0], out[1], out[2])

    def file_index(self, axis: Axis, ras_index: int) -> int:
        """The stored slice index (along the stored axis that `axis` cuts) of RAS slice `ras_index`."""
        ras = AXIS_NUMBER[axis]
        stored = self.axes.index(ras)
        return self.file_shape[stored] - 1 - ras_index if self.flips[stored] else ras_index

    def ras_index(self, axis: Axis, file_index: int) -> int:
        """Inverse of `file_index`: the RAS slice index of a stored slice index."""
        return self.file_index(axis, file_index)  # flipping is its own inverse

    def codes(self) -> str:
        """Orientation codes of the stored axes, e.g. ``"LAS"`` for the MNI grid of BraTS 2024."""
        pos, neg = "RAS", "LPI"
        return "".join(neg[ras] if flip else pos[ras] for ras, flip in zip(self.axes, self.flips, strict=True))


# --- slicing ---------------------------------------------------------------------------------------


def display_slice(volume_ras: np.ndarray, axis: Axis, index: int) -> np.ndarray:
    """One slice of a RAS-view volume as an (H, W) array in display orientation (a view, no copy).

    Axial: rows anterior -> posterior, columns patient right -> left. Coronal: rows superior ->
    inferior, columns right -> left. Sagittal: rows superior -> inferior, columns anterior -> posterior.

    Raises:
        IndexError: If `index` is outside the volume along `axis`.
    """
    n = volume_ras.shape[AXIS_NUMBER[axis]]
    if not 0 <= index < n:
        msg = f"{axis} slice {index} is outside 0..{n - 1}"
        raise IndexError(msg)
    if axis == "axial":
        return volume_ras[::-1, ::-1, index].T
    if axis == "coronal":
        return volume_ras[::-1, index, ::-1].T
    return volume_ras[index, ::-1, ::-1].T


def display_stack(volume_ras: np.ndarray, axis: Axis, indices: Sequence[int] | None = None) -> np.ndarray:
    """Several slices at once, (N, H, W); ``stack[n]`` equals ``display_slice(volume_ras, axis, indices[n])``."""
    a = AXIS_NUMBER[axis]
    idx = np.arange(volume_ras.shape[a]) if indices is None else np.asarray(indices, dtype=np.intp)
    if axis == "axial":
        return np.transpose(volume_ras[::-1, ::-1][:, :, idx], (2, 1, 0))
    if axis == "coronal":
        return np.transpose(volume_ras[::-1, :, ::-1][:, idx, :], (1, 2, 0))
    return np.transpose(volume_ras[:, ::-1, ::-1][idx], (0, 2, 1))


def pixel_spacing(spacing_ras: Sequence[float], axis: Axis) -> tuple[float, float]:
    """Millimetres per displayed pixel along (rows, columns) for slices of `axis`."""
    sx, sy, sz = (float(s) for s in spacing_ras)
    if axis == "axial":
        return (sy, sx)
    if axis == "coronal":
        return (sz, sx)
    return (sz, sy)


def display_to_ras(ras_shape: Sequence[int], axis: Axis, index: int, row: int, col: int) -> tuple[int, int, int]:
    """RAS-view voxel shown at (row, col) of slice `index` (coordinates before `square_pixels`)."""
    nx, ny, nz = (int(s) for s in ras_shape)
    if axis == "axial":
        return (nx - 1 - col, ny - 1 - row, index)
    if axis == "coronal":
        return (nx - 1 - col, index, nz - 1 - row)
    return (index, ny - 1 - col, nz - 1 - row)


def slice_index(n: int, fraction: float) -> int:
    """Index of the slice `fraction` of the way through `n` slices (0 -> first, 1 -> last)."""
    if not 0.0 <= fraction <= 1.0:
        msg = f"fraction must be between 0 and 1, got {fraction}"
        raise ValueError(msg)
    return min(n - 1, max(0, round(fraction * (n - 1))))


# --- intensities -----------------------------------------------------------------------------------


def window_limits(
    volume: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES, *, nonzero: bool = True
) -> tuple[float, float]:
    """Intensity window (low, high) at two percentiles of a volume.

    Args:
        volume: Any-shaped intensities.
        percentiles: Lower and upper percentile, 0-100.
        nonzero: Use only non-zero voxels (background outside the head would otherwise dominate).

    Returns:
        ``(low, high)`` with ``high > low`` (a constant image gets a window of width 1).
    """
    lo_p, hi_p = percentiles
    if not 0.0 <= lo_p < hi_p <= 100.0:
        msg = f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}"
        raise ValueError(msg)
    flat = np.asarray(volume).ravel()
    if flat.size > _PERCENTILE_SAMPLE:
        flat = flat[:: -(-flat.size // _PERCENTILE_SAMPLE)]  # deterministic stride keeps it fast on big scans
    values = flat[flat != 0] if nonzero else flat
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (0.0, 1.0)
    low, high = (float(v) for v in np.percentile(values, [lo_p, hi_p]))
    if high <= low:
        high = low + 1.0
    return (low, high)


def apply_window(image: np.ndarray, limits: tuple[float, float]) -> npt.NDArray[np.uint8]:
    """Map intensities linearly so that ``limits[0]`` -> 0 and ``limits[1]`` -> 255, clipped; NaN -> 0."""
    low, high = limits
    scaled = (np.asarray(image, dtype=np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def grey_rgb(grey: npt.NDArray[np.uint8]) -> RGBImage:
    """(H, W) uint8 -> (H, W, 3) uint8 grey."""
    return np.repeat(np.asarray(grey, dtype=np.uint8)[..., None], 3, axis=-1)


# --- labels ----------------------------------------------------------------------------------------


def label_boundaries(labels: np.ndarray) -> npt.NDArray[np.bool_]:
    """Pixels of non-zero labels that touch a different label (4-neighbourhood; outside counts as 0)."""
    lab = np.asarray(labels)
    padded = np.pad(lab, 1, mode="constant", constant_values=0)
    centre = padded[1:-1, 1:-1]
    differs = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    )
    return differs & (centre != 0)


def _colour_table(colours: Mapping[int, RGB]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    size = max([*colours.keys(), 0]) + 1
    table = np.zeros((size, 3), dtype=np.float32)
    known = np.zeros(size, dtype=bool)
    for value, colour in colours.items():
        table[value] = colour
        known[value] = True
    return table, known


def blend_labels(
    rgb: RGBImage,
    labels: np.ndarray,
    *,
    alpha: float = OVERLAY_ALPHA,
    style: OverlayStyle = "fill",
    colours: Mapping[int, RGB] = BRATS_COLOURS,
) -> RGBImage:
    """Draw a label map over an image.

    Args:
        rgb: (H, W, 3) uint8 background.
        labels: (H, W) integer labels; values without a colour (0 and unknown ones) are not drawn.
        alpha: Opacity of the fill, 0-1.
        style: ``"fill"`` (translucent), ``"contour"`` (solid outlines) or ``"both"``.
        colours: Label -> RGB.

    Returns:
        A new (H, W, 3) uint8 image.
    """
    if not 0.0 <= alpha <= 1.0:
        msg = f"alpha must be between 0 and 1, got {alpha}"
        raise ValueError(msg)
    lab = np.asarray(labels)
    if lab.shape != rgb.shape[:2]:
        msg = f"labels {lab.shape} and image {rgb.shape[:2]} differ in shape"
        raise ValueError(msg)
    table, known = _colour_table(colours)
    lab = np.where((lab >= 0) & (lab < table.shape[0]), lab, 0).astype(np.intp)
    drawn = known[lab]
    out = rgb.copy()
    if style in ("fill", "both") and alpha > 0 and drawn.any():
        base = rgb[drawn].astype(np.float32)
        out[drawn] = np.clip(base * (1.0 - alpha) + table[lab[drawn]] * alpha + 0.5, 0, 255).astype(np.uint8)
    if style in ("contour", "both"):
        edge = label_boundaries(lab) & drawn
        out[edge] = table[lab[edge]].astype(np.uint8)
    return out


def error_codes(
    reference: np.ndarray, prediction: np.ndarray, *, region: Sequence[int] | None = None
) -> npt.NDArray[np.uint8]:
    """Classify each pixel/voxel of a prediction against a reference label map.

    Args:
        reference: Ground-truth labels, any shape.
        prediction: Predicted labels, same shape.
        region: If given, both maps are first reduced to "label in `region`" (e.g. ``(1, 2, 3)`` for
            the whole tumour) and only TP/FP/FN are reported.

    Returns:
        uint8 codes: 0 background in both, `TP` same non-zero label, `FP` labelled only in the
        prediction, `FN` labelled only in the reference, `MISMATCH` labelled in both with different labels.
    """
    ref = np.asarray(reference)
    pred = np.asarray(prediction)
    if ref.shape != pred.shape:
        msg = f"reference {ref.shape} and prediction {pred.shape} differ in shape"
        raise ValueError(msg)
    if region is not None:
        ref = np.isin(ref, region)
        pred = np.isin(pred, region)
    r, p = ref != 0, pred != 0
    codes = np.zeros(ref.shape, dtype=np.uint8)
    codes[r & p] = TP
    codes[p & ~r] = FP
    codes[r & ~p] = FN
    if region is None:
        codes[r & p & (ref != pred)] = MISMATCH
    return codes


def blend_errors(rgb: RGBImage, codes: np.ndarray, *, alpha: float = 0.6) -> RGBImage:
    """Colour an image by `error_codes` (TP/FP/FN/mismatch), as a translucent fill."""
    return blend_labels(rgb, codes, alpha=alpha, style="fill", colours=ERROR_COLOURS)


# --- geometry of the output ------------------------------------------------------------------------


def square_pixels(image: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Stretch an (H, W, ...) image (nearest neighbour) so that pixels are square in millimetres.

    The axis with the coarser spacing is enlarged by ``coarse / fine``; with equal spacings the input is
    returned unchanged.
    """
    row_mm, col_mm = (float(v) for v in pixel_mm)
    if row_mm <= 0 or col_mm <= 0:
        msg = f"pixel spacing must be positive, got {pixel_mm}"
        raise ValueError(msg)
    ratio = row_mm / col_mm
    if abs(ratio - 1.0) < 1e-3:
        return image
    h, w = image.shape[:2]
    if ratio > 1:
        new_h = max(1, round(h * ratio))
        rows = np.minimum((np.arange(new_h) + 0.5) * h / new_h, h - 1).astype(np.intp)
        return image[rows]
    new_w = max(1, round(w / ratio))
    cols = np.minimum((np.arange(new_w) + 0.5) * w / new_w, w - 1).astype(np.intp)
    return image[:, cols]


def stretched_to_display(pixel_mm: tuple[float, float], shape: tuple[int, int], row: int, col: int) -> tuple[int, int]:
    """Undo `square_pixels` for one position: (row, col) in the stretched image -> the original (H, W)."""
    row_mm, col_mm = pixel_mm
    h, w = shape
    ratio = row_mm / col_mm
    if abs(ratio - 1.0) < 1e-3:
        return (row, col)
    if ratio > 1:
        new_h = max(1, round(h * ratio))
        return (min(int((row + 0.5) * h / new_h), h - 1), col)
    new_w = max(1, round(w / ratio))
    return (row, min(int((col + 0.5) * w / new_w), w - 1))


@dataclass(frozen=True)
class Box:
    """Where one image sits in a `tile` canvas, in pixels."""

    top: int
    left: int
    height: int
    width: int

    def contains(self, row: int, col: int) -> bool:
        """Whether canvas pixel (row, col) lies inside this image."""
        return self.top <= row < self.top + self.height and self.left <= col < self.left + self.width


def tile(
    images: Sequence[RGBImage], *, columns: int | None = None, gap: int = 4, background: RGB = (0, 0, 0)
) -> tuple[RGBImage, list[Box]]:
    """Lay images out on a grid, row by row, each centred in its cell.

    Args:
        images: (H, W, 3) uint8 images, possibly of different sizes.
        columns: Images per row (default: all on one row).
        gap: Pixels between cells.
        background: Fill colour.

    Returns:
        The canvas and, for each image, its `Box` on the canvas.
    """
    if not images:
        msg = "nothing to tile"
        raise ValueError(msg)
    ncols = len(images) if columns is None else max(1, min(columns, len(images)))
    nrows = -(-len(images) // ncols)
    heights = [max(im.shape[0] for im in images[r * ncols : (r + 1) * ncols]) for r in range(nrows)]
    widths = [max(images[i].shape[1] for i in range(c, len(images), ncols)) for c in range(ncols)]
    canvas = np.empty((sum(heights) + gap * (nrows - 1), sum(widths) + gap * (ncols - 1), 3), dtype=np.uint8)
    canvas[:] = background
    boxes = []
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        top = sum(heights[:r]) + gap * r + (heights[r] - im.shape[0]) // 2
        left = sum(widths[:c]) + gap * c + (widths[c] - im.shape[1]) // 2
        canvas[top : top + im.shape[0], left : left + im.shape[1]] = im
        boxes.append(Box(top, left, im.shape[0], im.shape[1]))
    return canvas, boxes


# --- one slice, end to end -------------------------------------------------------------------------


def render_slice(
    image_ras: np.ndarray,
    axis: Axis,
    index: int,
    *,
    limits: tuple[float, float],
    labels_ras: np.ndarray | None = None,
    reference_ras: np.ndarray | None = None,
    alpha: float = OVERLAY_ALPHA,
    style: OverlayStyle = "fill",
    spacing_ras: Sequence[float] | None = None,
    region: Sequence[int] | None = None,
) -> RGBImage:
    """Render one slice of a RAS-view volume with an optional label overlay or error view.

    Args:
        image_ras: (X, Y, Z) intensities in the RAS view (see `Orientation.to_ras`).
        axis: Slice plane.
        index: RAS slice index along `axis`.
        limits: Intensity window, e.g. from `window_limits`.
        labels_ras: (X, Y, Z) labels to draw (the ground truth, or a prediction), or None.
        reference_ras: If given with `labels_ras`, draw the error view of `labels_ras` (as the
            prediction) against this reference instead of the labels.
        alpha: Overlay opacity, 0-1.
        style: Overlay style for labels (the error view is always a fill).
        spacing_ras: Voxel size (mm) along R, A, S; when given, pixels are made square.
        region: Restrict the error view to a region (see `error_codes`).

    Returns:
        (H, W, 3) uint8.
    """
    rgb = grey_rgb(apply_window(display_slice(image_ras, axis, index), limits))
    if labels_ras is not None:
        labels = display_slice(labels_ras, axis, index)
        if reference_ras is not None:
            codes = error_codes(display_slice(reference_ras, axis, index), labels, region=region)
            rgb = blend_errors(rgb, codes, alpha=alpha)
        else:
            rgb = blend_labels(rgb, labels, alpha=alpha, style=style)
    if spacing_ras is not None:
        rgb = square_pixels(rgb, pixel_spacing(spacing_ras, axis))
    return rgb


# --- palette-indexed frames (GIF) ------------------------------------------------------------------

_GREY_LEVELS: Final = 120
_BLEND_LEVELS: Final = 32
_N_LABEL_COLOURS: Final = 4
_SOLID_BASE: Final = _GREY_LEVELS + _N_LABEL_COLOURS * _BLEND_LEVELS  # 248: solid label colours
BLACK_TWIN: Final = _SOLID_BASE + _N_LABEL_COLOURS  # 252: a second black, see `indexed_sweep`


@dataclass(frozen=True)
class IndexedFrames:
    """Palette-indexed animation frames.

    Attributes:
        frames: (N, H, W) uint8 palette indices.
        palette: (256, 3) uint8 colours.
        indices: RAS slice index of each frame.
    """

    frames: npt.NDArray[np.uint8]
    palette: npt.NDArray[np.uint8]
    indices: tuple[int, ...]

    def rgb(self) -> npt.NDArray[np.uint8]:
        """The frames as (N, H, W, 3) RGB."""
        out: npt.NDArray[np.uint8] = self.palette[self.frames]
        return out


def overlay_palette(alpha: float, colours: Mapping[int, RGB] = BRATS_COLOURS) -> npt.NDArray[np.uint8]:
    """The fixed 256-colour palette of `indexed_sweep`: grey ramp, label blends, solid labels, spare black.

    Layout: 0-119 greys (0 is black); then for labels 1-4, 32 blends each of the label colour over a grey
    ramp at opacity `alpha`; 248-251 the solid label colours (contours); 252 a second black. All 256
    entries are distinct colours (repeats are nudged by one blue level).
    """
    palette = np.zeros((256, 3), dtype=np.uint8)
    greys = np.round(np.arange(_GREY_LEVELS) * 255.0 / (_GREY_LEVELS - 1))
    palette[:_GREY_LEVELS] = greys[:, None].astype(np.uint8)
    under = (np.arange(_BLEND_LEVELS) * 8 + 4).astype(np.float32)  # grey value represented by each level
    for k in range(1, _N_LABEL_COLOURS + 1):
        colour = np.asarray(colours.get(k, (0, 0, 0)), dtype=np.float32)
        base = _GREY_LEVELS + (k - 1) * _BLEND_LEVELS
        blend = under[:, None] * (1.0 - alpha) + colour[None, :] * alpha
        palette[base : base + _BLEND_LEVELS] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
        palette[_SOLID_BASE + k - 1] = colour.astype(np.uint8)
    palette[BLACK_TWIN] = 0
    return _distinct(palette)


def _distinct(palette: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Nudge repeated colours (blue channel, by the smallest step) until all 256 entries differ.

    GIF writers look palette colours up by value, so repeated entries cost time and would merge the
    spare black (`BLACK_TWIN`) with black. Black, its twin (one blue level off) and the solid label
    colours are placed first and stay exact; a difference of a few blue levels elsewhere is invisible.
    """
    out = palette.copy()
    seen: set[tuple[int, int, int]] = set()
    first = [0, BLACK_TWIN, *range(_SOLID_BASE, _SOLID_BASE + _N_LABEL_COLOURS)]  # these keep exact colours
    order = [*first, *(i for i in range(len(out)) if i not in first)]
    for i in order:
        r, g, b = (int(v) for v in out[i])
        for step in range(512):
            candidate = b + (step + 1) // 2 * (1 if step % 2 else -1)
            if 0 <= candidate <= 255 and (r, g, candidate) not in seen:
                b = candidate
                break
        seen.add((r, g, b))
        out[i] = (r, g, b)
    return out


def indexed_sweep(
    image_ras: np.ndarray,
    axis: Axis,
    *,
    limits: tuple[float, float],
    labels_ras: np.ndarray | None = None,
    step: int = 1,
    alpha: float = OVERLAY_ALPHA,
    style: OverlayStyle = "fill",
    spacing_ras: Sequence[float] | None = None,
    colours: Mapping[int, RGB] = BRATS_COLOURS,
) -> IndexedFrames:
    """All frames of a slice sweep at once, as palette indices (fast path for GIFs).

    Composing indices over the whole stack in a few vectorised operations is what makes a 155-frame GIF
    take well under a second; frame by frame the colours match `render_slice` up to the palette's
    quantisation (120 grey levels, 32 levels under each label colour). Labels other than 1-4 are not drawn.

    Consecutive identical frames (e.g. empty slices outside the head) get one pixel switched to a
    second black palette entry: GIF writers merge identical frames, which would change the frame count.

    Args:
        image_ras: (X, Y, Z) intensities in the RAS view.
        axis: Sweep direction; frames go from RAS index 0 upwards.
        limits: Intensity window.
        labels_ras: Optional (X, Y, Z) labels to overlay.
        step: Take every `step`-th slice.
        alpha: Overlay opacity.
        style: Overlay style.
        spacing_ras: When given, frames are stretched to square pixels.
        colours: Colours of labels 1-4.
    """
    if step < 1:
        msg = f"step must be at least 1, got {step}"
        raise ValueError(msg)
    indices = tuple(range(0, image_ras.shape[AXIS_NUMBER[axis]], step))
    grey = apply_window(display_stack(image_ras, axis, indices), limits)
    frames = ((grey.astype(np.uint16) * (_GREY_LEVELS - 1) + 127) // 255).astype(np.uint8)
    if labels_ras is not None:
        labels = display_stack(labels_ras, axis, indices)
        drawn = (labels >= 1) & (labels <= _N_LABEL_COLOURS)
        if style in ("fill", "both") and alpha >= 1:
            # an opaque fill is the solid colour; the 32 blend entries would all be that colour
            frames = np.where(drawn, _SOLID_BASE + labels.astype(np.int16) - 1, frames).astype(np.uint8)
        elif style in ("fill", "both") and alpha > 0:
            blended = _GREY_LEVELS + (labels.astype(np.int16) - 1) * _BLEND_LEVELS + (grey >> 3)
            frames = np.where(drawn, blended, frames).astype(np.uint8)
        if style in ("contour", "both"):
            edges = np.stack([label_boundaries(frame) for frame in labels]) & drawn
            frames = np.where(edges, _SOLID_BASE + labels.astype(np.int16) - 1, frames).astype(np.uint8)
    frames = _keep_identical_frames(frames)
    if spacing_ras is not None:
        frames = square_pixels(frames.transpose(1, 2, 0), pixel_spacing(spacing_ras, axis)).transpose(2, 0, 1)
        frames = np.ascontiguousarray(frames)
    return IndexedFrames(frames, overlay_palette(alpha, colours), indices)


def _keep_identical_frames(frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Make each frame differ from the one before it by one black pixel, invisibly."""
    frames = np.array(frames, dtype=np.uint8, order="C")
    if len(frames) < 2:
        return frames
    flat = frames.reshape(len(frames), -1)
    candidates = np.flatnonzero((flat[1:] == flat[:-1]).all(axis=1)) + 1
    for n in candidates:
        # Re-check: toggling frame n-1 may already have made frame n different from it.
        if not np.array_equal(flat[n], flat[n - 1]):
            continue
        blacks = np.flatnonzero((flat[n] == 0) | (flat[n] == BLACK_TWIN))
        if blacks.size == 0:
            continue  # no black pixel to swap; the writer merges this frame (total duration is kept)
        p = blacks[0]
        flat[n, p] = BLACK_TWIN if flat[n, p] == 0 else 0
    return frames
