"""The slice viewer's server side, without Dash: a case index, a volume cache, rendering and probing.

The browser only ever sends a case id; `CaseIndex.resolve` accepts nothing but an id that is in the
index built at start-up, so no request can make the server open a file of its choosing. Volumes are
loaded on first use and kept in a small least-recently-used cache.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from segkit.conventions import LABELS, MODALITIES, OVERLAY_ALPHA, WINDOW_PERCENTILES
from segkit.data.cases import Case, discover_cases
from segkit.errors import DataError
from segkit.evaluation.matching import prediction_files
from segkit.viz.render import (
    AXIS_NUMBER,
    Axis,
    Box,
    OverlayStyle,
    RGBImage,
    display_to_ras,
    pixel_spacing,
    render_slice,
    stretched_to_display,
    tile,
)
from segkit.viz.volumes import CaseVolumes, load_case_volumes

PredMode = Literal["off", "beside", "errors"]
PanelKind = Literal["ground truth", "image", "prediction", "errors"]
ALL_MODALITIES = "all"
CASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
"""Shape of a case id as the browser may send it: a folder name, never a path."""


class UnknownCaseError(DataError):
    """A request named a case that is not in the index (or something that is not a case id)."""


@dataclass(frozen=True)
class CaseIndex:
    """Every case the viewer may show, found once at start-up.

    Attributes:
        roots: Data roots, in order.
        cases: Case id -> case (the first root wins when an id appears twice).
        predictions: Case id -> prediction file in `pred_dir`, for cases that have exactly one; files are
            matched to cases as ``segkit eval`` does (`segkit.evaluation.matching.prediction_files`).
        pred_dir: The prediction folder, or None.
        ambiguous: Case id -> its prediction files, for cases with several (none of them is shown).
    """

    roots: tuple[Path, ...]
    cases: Mapping[str, Case]
    predictions: Mapping[str, Path]
    pred_dir: Path | None = None
    ambiguous: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, roots: Sequence[Path], pred_dir: Path | None = None) -> CaseIndex:
        """Discover the cases under `roots` and the predictions in `pred_dir`.

        Raises:
            DataError: No roots, a missing root or prediction folder, or no case at all.
        """
        if not roots:
            msg = "no data roots given"
            raise DataError(msg, hint="pass --data-root DIR (repeatable)")
        found = discover_cases(list(roots))
        cases: dict[str, Case] = {}
        for case in found.cases:
            cases.setdefault(case.case_id, case)
        if not cases:
            msg = f"no case folders found in {', '.join(str(r) for r in roots)}"
            raise DataError(msg, hint="a data root holds one folder per case, e.g. BraTS-GLI-00001-000/")
        predictions: dict[str, Path] = {}
        ambiguous: dict[str, tuple[Path, ...]] = {}
        if pred_dir is not None:
            pred_dir = Path(pred_dir)
            if not pred_dir.is_dir():
                msg = f"{pred_dir}: prediction folder not found"
                raise DataError(msg)
            # The same file names as `segkit eval`: <case>.nii.gz, or with -seg, _seg, -pred, _pred.
            for case_id, paths in prediction_files(pred_dir).items():
                if case_id not in cases:
                    continue
                if len(paths) == 1:
                    predictions[case_id] = paths[0]
                else:
                    ambiguous[case_id] = tuple(paths)
        return cls(tuple(Path(r) for r in roots), dict(sorted(cases.items())), predictions, pred_dir, ambiguous)

    def resolve(self, case_id: object) -> Case:
        """The case with this id.

        Raises:
            UnknownCaseError: `case_id` is not a string shaped like a case id, or not in the index.
        """
        if not isinstance(case_id, str) or not CASE_ID_PATTERN.match(case_id) or ".." in case_id:
            shown = repr(case_id)[:80]
            msg = f"not a case id: {shown} (case ids are folder names from the index, never paths)"
            raise UnknownCaseError(msg)
        case = self.cases.get(case_id)
        if case is None:
            msg = f"unknown case {case_id!r}"
            raise UnknownCaseError(msg)
        return case

    def problems(self, case_id: str) -> list[str]:
        """Files the case lacks (shown in the page), e.g. ``["t2w image missing"]``."""
        case = self.resolve(case_id)
        out = [f"{case.expected_file(m).name} missing" for m in case.missing_modalities]
        if case.seg is None:
            out.append("no segmentation (unlabelled case)")
        if case.case_id in self.ambiguous:
            names = ", ".join(p.name for p in self.ambiguous[case.case_id])
            out.append(f"several predictions, none shown: {names}")
        return out


@dataclass(frozen=True)
class ViewRequest:
    """What the page asks to see (all values come from the browser and are validated).

    Attributes:
        case_id: A case id from the index.
        modality: A modality, or ``"all"`` for the case's modalities side by side.
        axis: Slice plane.
        index: RAS slice index (clamped to the volume).
        overlay: Draw the ground truth.
        alpha: Overlay opacity 0-1.
        style: Overlay style.
        pred_mode: ``"off"``, ``"beside"`` (prediction panels next to the ground truth) or ``"errors"``
            (TP/FP/FN colouring of the prediction against the ground truth).
    """

    case_id: str
    modality: str = ALL_MODALITIES
    axis: Axis = "axial"
    index: int = 0
    overlay: bool = True
    alpha: float = OVERLAY_ALPHA
    style: OverlayStyle = "fill"
    pred_mode: PredMode = "off"


@dataclass(frozen=True)
class PanelInfo:
    """One panel of a rendered view: where it is and what it shows."""

    box: Box
    modality: str
    kind: PanelKind


@dataclass(frozen=True)
class Rendered:
    """A rendered view.

    Attributes:
        image: (H, W, 3) uint8 canvas.
        panels: The panels on the canvas.
        index: RAS slice index actually shown.
        file_index: The same slice in the file's voxel grid.
        count: Slices along the axis.
    """

    image: RGBImage
    panels: tuple[PanelInfo, ...]
    index: int
    file_index: int
    count: int


class Viewer:
    """Loads, caches and renders cases of a `CaseIndex` (thread-safe; the web server is threaded)."""

    def __init__(
        self, index: CaseIndex, *, cache_cases: int = 4, percentiles: tuple[float, float] = WINDOW_PERCENTILES
    ):
        self.index = index
        self.percentiles = percentiles
        self._capacity = max(1, cache_cases)
        self._cache: OrderedDict[str, CaseVolumes] = OrderedDict()
        self._views: OrderedDict[ViewRequest, Rendered] = OrderedDict()  # hover re-uses the last renders
        self._lock = threading.Lock()

    def volumes(self, case_id: object) -> CaseVolumes:
        """The loaded case (from the cache when possible).

        Raises:
            UnknownCaseError: Not a case of the index.
            DataError: A file of the case is unreadable or the grids differ.
        """
        case = self.index.resolve(case_id)
        with self._lock:
            if case.case_id in self._cache:
                self._cache.move_to_end(case.case_id)
                return self._cache[case.case_id]
        present = tuple(m for m in MODALITIES if m in case.images)
        if not present:
            msg = f"{case.folder}: no image files (expected {case.case_id}-t1c.nii.gz, ...)"
            raise DataError(msg)
        volumes = load_case_volumes(
            case,
            present,
            labels="optional",
            prediction=self.index.predictions.get(case.case_id),
            percentiles=self.percentiles,
        )
        with self._lock:
            self._cache[case.case_id] = volumes
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return volumes

    def cached_ids(self) -> list[str]:
        """Case ids currently in memory, least recently used first."""
        with self._lock:
            return list(self._cache)

    def slice_count(self, case_id: object, axis: Axis) -> int:
        """Slices of the case along `axis`."""
        return self.volumes(case_id).ras_shape[AXIS_NUMBER[axis]]

    def _modalities(self, volumes: CaseVolumes, modality: str) -> list[str]:
        if modality == ALL_MODALITIES:
            return list(volumes.images)
        if modality not in MODALITIES:
            msg = f"unknown modality {modality!r}"
            raise DataError(msg)
        if modality not in volumes.images:
            msg = f"{volumes.case_id}: no {modality} image (file {volumes.case_id}-{modality}.nii.gz missing)"
            raise DataError(msg)
        return [modality]

    def render(self, request: ViewRequest) -> Rendered:
        """Render the requested view: one panel per modality, times two with predictions beside.

        Raises:
            UnknownCaseError, DataError: Bad case or modality, unreadable files, or a prediction view
                without a prediction or ground truth.
        """
        self.index.resolve(request.case_id)  # before anything else, even a cache lookup
        with self._lock:
            if request in self._views:
                self._views.move_to_end(request)
                return self._views[request]
        rendered = self._render(request)
        with self._lock:
            self._views[request] = rendered
            while len(self._views) > 8:
                self._views.popitem(last=False)
        return rendered

    def _render(self, request: ViewRequest) -> Rendered:
        volumes = self.volumes(request.case_id)
        if request.axis not in AXIS_NUMBER:
            msg = f"unknown axis {request.axis!r}"
            raise DataError(msg)
        modalities = self._modalities(volumes, request.modality)
        count = volumes.ras_shape[AXIS_NUMBER[request.axis]]
        index = int(min(max(finite_number(request.index, "slice"), 0), count - 1))
        alpha = min(max(finite_number(request.alpha, "opacity"), 0.0), 1.0)
        pred_mode = request.pred_mode
        if pred_mode != "off" and volumes.prediction is None:
            msg = f"{volumes.case_id}: no prediction in {self.index.pred_dir or '(no --pred-dir given)'}"
            raise DataError(msg)
        if pred_mode == "errors" and volumes.labels is None:
            msg = f"{volumes.case_id}: the error view needs the ground truth, and the case has no segmentation"
            raise DataError(msg)
        gt = volumes.labels if request.overlay else None
        # one row of panels per kind: (modality, labels drawn, reference for the error view, kind)
        rows: list[list[tuple[str, np.ndarray | None, np.ndarray | None, PanelKind]]] = [[]]
        for m in modalities:
            if pred_mode == "errors":
                rows[0].append((m, volumes.prediction, volumes.labels, "errors"))
            else:
                rows[0].append((m, gt, None, "ground truth" if gt is not None else "image"))
        if pred_mode == "beside":
            rows.append([(m, volumes.prediction, None, "prediction") for m in modalities])
        images = []
        infos: list[tuple[str, PanelKind]] = []
        for row in rows:
            for m, labels, reference, kind in row:
                images.append(
                    render_slice(
                        volumes.images[m],
                        request.axis,
                        index,
                        limits=volumes.limits[m],
                        labels_ras=labels,
                        reference_ras=reference,
                        alpha=alpha,
                        style=request.style,
                        spacing_ras=volumes.spacing_ras,
                    )
                )
                infos.append((m, kind))
        canvas, boxes = tile(images, columns=len(modalities), gap=4)
        panels = tuple(PanelInfo(box, m, kind) for box, (m, kind) in zip(boxes, infos, strict=True))
        file_index = volumes.orientation.file_index(request.axis, index)
        return Rendered(canvas, panels, index, file_index, count)

    def probe(self, request: ViewRequest, row: int, col: int) -> str:
        """Describe the voxel under canvas pixel (row, col) of `render(request)`: position, intensity, labels.

        Returns an empty string outside every panel.
        """
        rendered = self.render(request)
        volumes = self.volumes(request.case_id)
        panel = next((p for p in rendered.panels if p.box.contains(row, col)), None)
        if panel is None:
            return ""
        axis = request.axis
        shape2d = _display_shape(volumes.ras_shape, axis)
        r, c = stretched_to_display(
            pixel_spacing(volumes.spacing_ras, axis), shape2d, row - panel.box.top, col - panel.box.left
        )
        ras = display_to_ras(volumes.ras_shape, axis, rendered.index, r, c)
        voxel = volumes.orientation.file_voxel(ras)
        parts = [f"voxel ({voxel[0]}, {voxel[1]}, {voxel[2]})"]
        for m in volumes.images:
            parts.append(f"{m} {float(volumes.images[m][ras]):.6g}")
        if volumes.labels is not None:
            parts.append(f"label {_label_name(int(volumes.labels[ras]))}")
        if volumes.prediction is not None:
            parts.append(f"prediction {_label_name(int(volumes.prediction[ras]))}")
        return " · ".join(parts)


def finite_number(value: object, what: str) -> float:
    """`value` (a number or a numeric string from the page) as a finite float.

    Raises:
        DataError: Not a number, too large for a float, NaN or infinite; the message names `what`.
    """
    try:
        number = float(value)  # type: ignore[arg-type]  # anything may come from the browser
    except (TypeError, ValueError, OverflowError) as err:
        msg = f"{what} must be a number, got {str(value)[:40]!r}"
        raise DataError(msg) from err
    if not math.isfinite(number):
        msg = f"{what} must be a finite number, got {str(value)[:40]!r}"
        raise DataError(msg)
    return number


def _display_shape(ras_shape: Sequence[int], axis: Axis) -> tuple[int, int]:
    nx, ny, nz = ras_shape
    if axis == "axial":
        return (ny, nx)
    if axis == "coronal":
        return (nz, nx)
    return (nz, ny)


def _label_name(value: int) -> str:
    return f"{value} {LABELS[value]}" if value in LABELS else str(value)
