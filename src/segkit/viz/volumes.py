"""Load a case's volumes for display: RAS views, spacing, intensity windows (the I/O edge of `render`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from segkit.conventions import MODALITIES, SEG_SUFFIX, WINDOW_PERCENTILES
from segkit.data.cases import Case
from segkit.errors import DataError
from segkit.io import Volume, grid_mismatch, read_labels, read_volume
from segkit.viz.render import Orientation, window_limits

LabelPolicy = Literal["required", "optional", "skip"]


@dataclass(frozen=True)
class CaseVolumes:
    """A case ready to render: every array is a RAS view (see `segkit.viz.render.Orientation`).

    Attributes:
        case_id: The case id.
        orientation: Stored grid -> RAS view mapping (shared by all files of the case).
        spacing_ras: Millimetres per voxel along R, A, S.
        images: Modality -> (X, Y, Z) intensities in the RAS view.
        limits: Modality -> intensity window.
        labels: Ground-truth labels in the RAS view, or None.
        prediction: Predicted labels in the RAS view, or None.
        files: Modality / ``"seg"`` / ``"pred"`` -> the file it was read from.
    """

    case_id: str
    orientation: Orientation
    spacing_ras: tuple[float, float, float]
    images: Mapping[str, np.ndarray]
    limits: Mapping[str, tuple[float, float]]
    labels: np.ndarray | None = None
    prediction: np.ndarray | None = None
    files: Mapping[str, Path] = field(default_factory=dict)

    @property
    def ras_shape(self) -> tuple[int, int, int]:
        """Voxels along R, A, S."""
        return self.orientation.ras_shape


def require_files(case: Case, modalities: Sequence[str], *, labels: bool, hint: str | None = None) -> None:
    """Fail fast, naming the first missing file, if `case` lacks a modality (or its label map).

    Raises:
        DataError: ``<expected file>: file not found (...)``.
    """
    for modality in modalities:
        if modality not in case.images:
            msg = f"{case.expected_file(modality)}: file not found (case {case.case_id} has no {modality} image)"
            raise DataError(msg)
    if labels and case.seg is None:
        msg = f"{case.expected_file(SEG_SUFFIX)}: file not found (case {case.case_id} has no segmentation)"
        raise DataError(msg, hint=hint)


def load_case_volumes(
    case: Case,
    modalities: Sequence[str] = MODALITIES,
    *,
    labels: LabelPolicy = "optional",
    prediction: Path | None = None,
    percentiles: tuple[float, float] = WINDOW_PERCENTILES,
    label_hint: str | None = None,
) -> CaseVolumes:
    """Read the requested modalities (and labels/prediction) of a case and put them in the RAS view.

    Args:
        case: The case (from `segkit.data.cases`).
        modalities: Modalities to read.
        labels: ``"required"`` (a missing label file is an error), ``"optional"`` or ``"skip"``.
        prediction: A predicted label map on the case's grid, or None.
        percentiles: Intensity window percentiles per modality.
        label_hint: Hint attached to the missing-label error.

    Raises:
        DataError: A missing or unreadable file, a label map that is not one (see `segkit.io.label_problem`),
            or files whose voxel grids differ (shape, voxel size, orientation or position; a prediction
            shifted or resampled would be drawn misregistered); the message names the file.
    """
    require_files(case, modalities, labels=labels == "required", hint=label_hint)
    volumes: dict[str, Volume] = {m: read_volume(case.images[m]) for m in modalities}
    files: dict[str, Path] = {m: case.images[m] for m in modalities}
    seg_volume: Volume | None = None
    if labels != "skip" and case.seg is not None:
        seg_volume = read_labels(case.seg)
        files["seg"] = case.seg
    pred_volume: Volume | None = None
    if prediction is not None:
        pred_volume = read_labels(Path(prediction))
        files["pred"] = Path(prediction)
    reference = next(iter(volumes.values()), None) or seg_volume
    if reference is None:
        msg = f"{case.folder}: nothing to load"
        raise DataError(msg)
    for other in [*volumes.values(), seg_volume, pred_volume]:
        if other is not None:
            _check_same_grid(reference, other)
    orientation = _orientation(reference)
    return CaseVolumes(
        case_id=case.case_id,
        orientation=orientation,
        spacing_ras=orientation.ras_spacing(reference.spacing),
        images={m: orientation.to_ras(v.data) for m, v in volumes.items()},
        limits={m: window_limits(v.data, percentiles) for m, v in volumes.items()},
        labels=orientation.to_ras(seg_volume.data) if seg_volume is not None else None,
        prediction=orientation.to_ras(pred_volume.data) if pred_volume is not None else None,
        files=files,
    )


def _orientation(volume: Volume) -> Orientation:
    try:
        return Orientation.from_affine(volume.affine, volume.shape)
    except ValueError as err:
        msg = f"{volume.path}: {err}"
        raise DataError(msg) from err


def _check_same_grid(reference: Volume, other: Volume) -> None:
    """Every file of a view must share one voxel grid, or overlays would be drawn in the wrong place."""
    mismatch = grid_mismatch(other, reference)
    if mismatch is not None:
        msg = f"{other.path}: grid differs from {reference.path.name} ({mismatch})"
        raise DataError(msg)
