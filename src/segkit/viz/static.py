"""`segkit viz static`: a figure of one case (all modalities on one slice, or three orthogonal slices).

`static_spec` is pure (volumes in, a `FigureSpec` of RGB panels out); `render_static` loads the case,
builds the spec and writes the figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from segkit.conventions import MODALITIES, OVERLAY_ALPHA, WINDOW_PERCENTILES
from segkit.data.cases import scan_case_folder
from segkit.errors import ConfigError, DataError
from segkit.viz.export import FigureSpec, Panel
from segkit.viz.render import (
    AXES,
    AXIS_NUMBER,
    ERROR_COLOURS,
    ERROR_NAMES,
    Axis,
    OverlayStyle,
    legend,
    render_slice,
    slice_index,
)
from segkit.viz.volumes import CaseVolumes, load_case_volumes

Layout = Literal["modalities", "orthogonal"]
DEFAULT_FRACTION = 0.5


@dataclass(frozen=True)
class SliceChoice:
    """A slice of one plane: its RAS index and the file's voxel index."""

    axis: Axis
    ras_index: int
    file_index: int
    count: int


@dataclass(frozen=True)
class StaticResult:
    """What `render_static` wrote."""

    case_id: str
    output: Path | None
    slices: tuple[SliceChoice, ...]
    spec: FigureSpec


def choose_slice(
    volumes: CaseVolumes, axis: Axis, *, fraction: float | None = None, index: int | None = None
) -> SliceChoice:
    """Pick a slice by file voxel index or by fraction (default: the middle).

    Raises:
        ConfigError: Both given, or the index is outside the volume.
    """
    if fraction is not None and index is not None:
        msg = "give either --fraction or --index, not both"
        raise ConfigError(msg)
    count = volumes.ras_shape[AXIS_NUMBER[axis]]
    if index is not None:
        if not 0 <= index < count:
            msg = f"{axis} slice index {index} is outside 0..{count - 1} for case {volumes.case_id}"
            raise ConfigError(msg)
        ras = volumes.orientation.ras_index(axis, index)
    else:
        ras = slice_index(count, DEFAULT_FRACTION if fraction is None else fraction)
    return SliceChoice(axis, ras, volumes.orientation.file_index(axis, ras), count)


def static_spec(
    volumes: CaseVolumes,
    *,
    layout: Layout = "modalities",
    axis: Axis = "axial",
    fraction: float | None = None,
    index: int | None = None,
    modality: str = "t1c",
    indices: Sequence[int] | None = None,
    overlay: bool = True,
    style: OverlayStyle = "fill",
    alpha: float = OVERLAY_ALPHA,
) -> tuple[FigureSpec, tuple[SliceChoice, ...]]:
    """Build the panels of a static figure (pure).

    The modalities layout has one column per loaded modality; the orthogonal layout one column per plane
    (sagittal, coronal, axial) of `modality`. Rows: the images with the ground truth (when `overlay`),
    and with a prediction loaded, the prediction and its errors against the ground truth.

    Args:
        volumes: The loaded case (a prediction needs its ground truth).
        layout: ``"modalities"`` or ``"orthogonal"``.
        axis: Plane of the modalities layout.
        fraction: Slice position 0-1 (modalities layout; in the orthogonal layout, for every plane).
        index: Slice index in the file's voxel grid (modalities layout).
        modality: Modality of the orthogonal layout.
        indices: Orthogonal layout: sagittal, coronal, axial indices in the file's voxel grid.
        overlay: Draw the ground truth.
        style: Overlay style.
        alpha: Overlay opacity.

    Returns:
        The spec and the slices shown.
    """
    if layout == "modalities":
        if indices is not None:
            msg = "--indices applies to the orthogonal layout; use --index or --fraction with --layout modalities"
            raise ConfigError(msg)
        choice = choose_slice(volumes, axis, fraction=fraction, index=index)
        columns = [(m, choice) for m in volumes.images]
        slices: tuple[SliceChoice, ...] = (choice,)
    else:
        if index is not None:
            msg = "--index applies to the modalities layout; use --indices with --layout orthogonal"
            raise ConfigError(msg)
        if indices is not None and len(indices) != 3:
            msg = f"--indices needs three values (sagittal coronal axial), got {len(indices)}"
            raise ConfigError(msg)
        slices = tuple(
            choose_slice(volumes, plane, fraction=None if indices else fraction, index=indices[n] if indices else None)
            for n, plane in enumerate(AXES)
        )
        columns = [(modality, choice) for choice in slices]
    with_pred = volumes.prediction is not None
    if with_pred and volumes.labels is None:
        msg = "a prediction is compared with the ground truth, but the case has no segmentation"
        raise DataError(msg)
    rows: list[list[Panel]] = [[], [], []] if with_pred else [[]]

    def panel(m: str, c: SliceChoice, labels: np.ndarray | None, reference: np.ndarray | None) -> Panel:
        rgb = render_slice(
            volumes.images[m],
            c.axis,
            c.ras_index,
            limits=volumes.limits[m],
            labels_ras=labels,
            reference_ras=reference,
            alpha=alpha,
            style=style,
            spacing_ras=volumes.spacing_ras,
        )
        return Panel(rgb, f"{m} · {c.axis} {c.file_index}/{c.count - 1}")

    for m, c in columns:
        rows[0].append(panel(m, c, volumes.labels if overlay else None, None))
        if with_pred:
            rows[1].append(panel(m, c, volumes.prediction, None))
            rows[2].append(panel(m, c, volumes.prediction, volumes.labels))
    row_titles: tuple[str, ...] = ()
    entries = legend() if overlay or with_pred else []
    if with_pred:
        row_titles = ("ground truth" if overlay else "image", "prediction", "errors vs ground truth")
        entries = [*entries, *((ERROR_NAMES[k], ERROR_COLOURS[k]) for k in ERROR_NAMES)]
    title = volumes.case_id if layout == "modalities" else f"{volumes.case_id} · {modality}"
    spec = FigureSpec(rows=rows, title=title, row_titles=row_titles, legend=entries)
    return spec, slices


def render_static(
    case_dir: Path,
    *,
    output: Path | None,
    layout: Layout = "modalities",
    axis: Axis = "axial",
    fraction: float | None = None,
    index: int | None = None,
    modality: str = "t1c",
    indices: Sequence[int] | None = None,
    overlay: bool = True,
    style: OverlayStyle = "fill",
    alpha: float = OVERLAY_ALPHA,
    prediction: Path | None = None,
    percentiles: tuple[float, float] = WINDOW_PERCENTILES,
    dpi: int = 150,
    overwrite: bool = False,
    show: bool = False,
) -> StaticResult:
    """Render a static figure of the case in `case_dir` and write it (and/or show it).

    Raises:
        DataError: The folder, a modality or the segmentation (needed for the overlay or a prediction) is
            missing or unreadable; the message names the file.
        ConfigError: Bad slice choice or output format.
        OutputError: The output exists (without `overwrite`) or cannot be written.
    """
    from segkit.viz.export import check_new, check_suffix, panel_figure, save_figure, show_figure

    case_dir = Path(case_dir)
    if not case_dir.is_dir():
        msg = f"{case_dir}: case folder not found"
        raise DataError(msg)
    if output is not None:
        check_new(check_suffix(output), overwrite=overwrite)
    if prediction is not None and not Path(prediction).is_file():
        msg = f"{prediction}: prediction file not found"
        raise DataError(msg)
    case = scan_case_folder(case_dir)
    modalities = MODALITIES if layout == "modalities" else (modality,)
    volumes = load_case_volumes(
        case,
        modalities,
        labels="required" if overlay or prediction is not None else "skip",
        prediction=prediction,
        percentiles=percentiles,
        label_hint="pass --no-overlay to render the images alone",
    )
    spec, slices = static_spec(
        volumes,
        layout=layout,
        axis=axis,
        fraction=fraction,
        index=index,
        modality=modality,
        indices=indices,
        overlay=overlay,
        style=style,
        alpha=alpha,
    )
    fig = panel_figure(spec, pyplot=show)
    if output is not None:
        save_figure(fig, output, dpi=dpi)
    if show:
        show_figure(fig)
    return StaticResult(case.case_id, output, slices, spec)
