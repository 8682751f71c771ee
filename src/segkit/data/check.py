"""Validation of BraTS case folders: files present, readable, consistent and plausibly labelled.

The checks read every voxel (truncated gzip streams only show up when decompressing), so they run in
a process pool for large cohorts. Nothing here writes anything.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from segkit._parallel import map_cases
from segkit.conventions import MODALITIES, SEG_SUFFIX
from segkit.data.cases import Case, Discovery, discover_cases
from segkit.data.layouts import BRATS2024, Layout
from segkit.errors import DataError
from segkit.io import Volume, grid_mismatch, label_problem, read_volume
from segkit.progress import ProgressSink

Severity = Literal["error", "warning"]

DEFAULT_AFFINE_TOLERANCE = 1e-4
"""Largest allowed difference between the affines of one case's files (mm, and unitless for rotation)."""


@dataclass(frozen=True)
class Issue:
    """One problem found in a case or a root."""

    message: str
    file: str | None = None
    severity: Severity = "error"

    def describe(self) -> str:
        """``file: message`` (or just the message when no file is involved)."""
        return f"{self.file}: {self.message}" if self.file else self.message


@dataclass(frozen=True)
class CaseReport:
    """The result of checking one case folder."""

    case_id: str
    folder: str
    labelled: bool
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    labels: tuple[int, ...] | None = None
    issues: tuple[Issue, ...] = ()

    @property
    def ok(self) -> bool:
        """No error-level issue."""
        return not any(i.severity == "error" for i in self.issues)

    @property
    def errors(self) -> tuple[Issue, ...]:
        """Error-level issues only."""
        return tuple(i for i in self.issues if i.severity == "error")


@dataclass(frozen=True)
class CheckReport:
    """The result of checking data roots."""

    roots: tuple[str, ...]
    cases: tuple[CaseReport, ...]
    issues: tuple[Issue, ...] = field(default_factory=tuple)
    layout: str = BRATS2024.name
    nested: tuple[str, ...] = ()
    """Data roots inside the roots (e.g. ``<root>/unlabelled`` of ``data synth``): not checked here."""

    @property
    def ok(self) -> bool:
        """No error in any case and none at root level."""
        return all(c.ok for c in self.cases) and not any(i.severity == "error" for i in self.issues)

    def first_error(self) -> str | None:
        """One line describing the first error, prefixed by the case id, or None."""
        for issue in self.issues:
            if issue.severity == "error":
                return issue.describe()
        for case in self.cases:
            if case.errors:
                return f"{case.case_id}: {case.errors[0].describe()}"
        return None

    def n_errors(self) -> int:
        """Number of error-level issues, root level included."""
        root = sum(i.severity == "error" for i in self.issues)
        return root + sum(len(c.errors) for c in self.cases)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "roots": list(self.roots),
            "layout": self.layout,
            "n_cases": len(self.cases),
            "n_errors": self.n_errors(),
            "issues": [asdict(i) for i in self.issues],
            "cases": [{**asdict(c), "ok": c.ok} for c in self.cases],
            "nested_roots": list(self.nested),
        }


def _strip_path(err: DataError, path: Path) -> str:
    text = str(err)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def check_case(
    case: Case,
    *,
    require_label: bool = False,
    affine_tolerance: float = DEFAULT_AFFINE_TOLERANCE,
) -> CaseReport:
    """Check one case folder.

    Args:
        case: The case as discovered.
        require_label: A missing ``-seg`` file is an error (otherwise the case is just unlabelled).
        affine_tolerance: Largest allowed absolute difference between affine entries.

    Returns:
        A report listing every problem; this function never raises for bad data.
    """
    issues = [Issue(problem, str(path)) for path, problem in case.file_problems(require_label=require_label)]
    for path in case.stray:
        issues.append(Issue("stray file (not a BraTS modality or label file)", str(path), "warning"))

    reference: Volume | None = None
    reference_name = ""
    labels: tuple[int, ...] | None = None
    to_read = [(m, case.images[m]) for m in MODALITIES if m in case.images]
    if case.seg is not None:
        to_read.append((SEG_SUFFIX, case.seg))
    for kind, path in to_read:
        try:
            volume = read_volume(path)
        except DataError as err:
            issues.append(Issue(_strip_path(err, path), str(path)))
            continue
        if volume.form_mismatch:
            issues.append(Issue(volume.form_mismatch, str(path), "warning"))
        data = volume.data
        if kind == SEG_SUFFIX:
            problem = label_problem(data) or _layout_label_problem(data, case.layout)
            if problem:
                issues.append(Issue(problem, str(path)))
            else:
                labels = tuple(int(v) for v in np.unique(data))
        else:
            issues.extend(Issue(p, str(path)) for p in _check_intensities(data))
        if not np.all(np.isfinite(volume.affine)):
            # Blame this file, and keep it out of the comparisons so that the others are not blamed.
            issues.append(Issue("the affine (voxel-to-world matrix) holds NaN or infinite values", str(path)))
            continue
        if reference is None:
            reference, reference_name = volume, kind
            continue
        mismatch = grid_mismatch(volume, reference, affine_tolerance)
        if mismatch:
            issues.append(Issue(f"grid differs from {reference_name}: {mismatch}", str(path)))

    return CaseReport(
        case_id=case.case_id,
        folder=str(case.folder),
        labelled=case.labelled,
        shape=reference.shape if reference is not None else None,
        spacing=tuple(round(s, 6) for s in reference.spacing) if reference is not None else None,
        labels=labels,
        issues=tuple(issues),
    )


def _layout_label_problem(data: np.ndarray, layout: Layout) -> str | None:
    """Labels that are in 0-4 but not used by `layout` (BraTS 2021 has no label 3)."""
    values = {int(v) for v in np.unique(data)}
    foreign = sorted(values - set(layout.raw_labels))
    if not foreign:
        return None
    known = ", ".join(f"{v} {n}" for v, n in layout.raw_labels.items())
    return f"label(s) {', '.join(map(str, foreign))} are not in the {layout.title} ({known})"


def _check_intensities(data: np.ndarray) -> list[str]:
    problems = []
    if np.issubdtype(data.dtype, np.floating):
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            problems.append(f"{bad} voxels are NaN or infinite")
    if not np.any(data):
        problems.append("image is empty (all voxels are zero)")
    return problems


def check_discovery(
    discovery: Discovery,
    *,
    require_labels: bool = False,
    affine_tolerance: float = DEFAULT_AFFINE_TOLERANCE,
    workers: int = 0,
    progress: ProgressSink | None = None,
) -> CheckReport:
    """Check every discovered case, plus root-level problems (duplicates, stray files, empty roots)."""
    issues: list[Issue] = []
    for case_id, folders in discovery.duplicates.items():
        where = ", ".join(str(f) for f in folders)
        issues.append(Issue(f"duplicate case id {case_id} in {where}"))
    for path in discovery.stray:
        issues.append(Issue("stray file in data root (roots hold case folders only)", str(path), "warning"))
    for root in discovery.roots:
        in_root = [c for c in discovery.cases if c.root == root]
        if not in_root:
            issues.append(Issue("no case folders found", str(root)))
            continue
        unlabelled = sum(not c.labelled for c in in_root)
        if 0 < unlabelled < len(in_root) and not require_labels:
            msg = f"{unlabelled} of {len(in_root)} cases have no segmentation"
            issues.append(Issue(msg, str(root), "warning"))
    check = functools.partial(check_case, require_label=require_labels, affine_tolerance=affine_tolerance)
    reports = map_cases(check, list(discovery.cases), workers=workers, progress=progress, description="checking cases")
    layout = discovery.cases[0].layout.name if discovery.cases else BRATS2024.name
    nested = tuple(str(p) for p in discovery.nested)
    return CheckReport(tuple(str(r) for r in discovery.roots), tuple(reports), tuple(issues), layout, nested)


def check_roots(
    roots: Sequence[Path],
    *,
    require_labels: bool = False,
    affine_tolerance: float = DEFAULT_AFFINE_TOLERANCE,
    workers: int = 0,
    progress: ProgressSink | None = None,
    layout: Layout = BRATS2024,
) -> CheckReport:
    """Discover and check the cases under `roots`, named as `layout` names them (see `check_discovery`)."""
    return check_discovery(
        discover_cases(roots, layout=layout),
        require_labels=require_labels,
        affine_tolerance=affine_tolerance,
        workers=workers,
        progress=progress,
    )
