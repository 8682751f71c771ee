"""Pair reference label files with prediction files by case id.

The reference (GT) may be a folder of label files (``labelsTs/<case>.nii.gz``) or a BraTS data root of
case folders (``<root>/<case>/<case>-seg.nii.gz``), or both mixed. Predictions are files directly in the
prediction folder, named ``<case>.nii.gz`` or with one of the suffixes ``-seg``, ``_seg``, ``_pred``,
``-pred`` (``.nii`` works too). Nothing is opened here; only names are compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from segkit.conventions import SEG_SUFFIX
from segkit.errors import DataError
from segkit.io import NIFTI_SUFFIXES, split_suffix

CASE_SUFFIXES = ("-seg", "_seg", "_pred", "-pred")
"""File-name endings (before ``.nii.gz``) that are not part of the case id."""


def case_id_of(name: str) -> str | None:
    """The case id of a NIfTI file name, or None when the name is not a NIfTI file.

    >>> case_id_of("BraTS-GLI-00001-000-seg.nii.gz")
    'BraTS-GLI-00001-000'
    """
    stem, suffix = split_suffix(name)
    if suffix not in NIFTI_SUFFIXES or not stem:
        return None
    for ending in CASE_SUFFIXES:
        if stem.endswith(ending) and len(stem) > len(ending):
            return stem[: -len(ending)]
    return stem


@dataclass(frozen=True)
class CasePair:
    """One reference case and its prediction.

    Attributes:
        case_id: The case id.
        gt: Reference label file.
        pred: Prediction file; None when missing or unusable by name (see `pred_problem`).
        pred_problem: Why the prediction cannot be used although files exist (duplicate ids), else None.
    """

    case_id: str
    gt: Path
    pred: Path | None
    pred_problem: str | None = None


@dataclass(frozen=True)
class Matching:
    """The outcome of pairing a reference with a prediction folder.

    Attributes:
        pairs: One entry per reference case, sorted by case id (missing predictions have ``pred=None``).
        extra: Prediction files whose case has no reference, sorted.
        problems: Case id -> one-line reason, for reference cases that cannot be scored from names alone
            (duplicate ids in the reference). These cases are not in `pairs`; duplicate prediction ids are
            pairs with a `CasePair.pred_problem` (scored like a missing prediction).
        notes: Warnings about the inputs that do not prevent scoring (e.g. case folders without ``-seg``).
    """

    pairs: tuple[CasePair, ...]
    extra: tuple[Path, ...] = ()
    problems: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def missing(self) -> tuple[str, ...]:
        """Case ids with a reference but no prediction file."""
        return tuple(p.case_id for p in self.pairs if p.pred is None and p.pred_problem is None)


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and case_id_of(p.name) is not None
    )


def prediction_files(folder: Path) -> dict[str, list[Path]]:
    """NIfTI files directly in `folder` by case id (`case_id_of`); a list, so that duplicates can be reported.

    ``segkit eval`` and the viewer's ``--pred-dir`` find predictions with this one rule.
    """
    found: dict[str, list[Path]] = {}
    for path in _nifti_files(Path(folder)):
        case_id = case_id_of(path.name)
        assert case_id is not None
        found.setdefault(case_id, []).append(path)
    return found


def reference_files(gt: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Label files of a reference folder, by case id (a list: duplicates are kept to be reported).

    Raises:
        DataError: If `gt` is not a folder or holds no label file at all.
    """
    gt = Path(gt)
    if not gt.is_dir():
        msg = f"{gt}: reference folder not found" if not gt.exists() else f"{gt}: reference is not a folder"
        raise DataError(msg)
    found: dict[str, list[Path]] = {}
    notes: list[str] = []
    for path in _nifti_files(gt):
        case_id = case_id_of(path.name)
        assert case_id is not None
        found.setdefault(case_id, []).append(path)
    for folder in sorted(p for p in gt.iterdir() if p.is_dir() and not p.name.startswith(".")):
        candidates = [folder / f"{folder.name}-{SEG_SUFFIX}{ext}" for ext in NIFTI_SUFFIXES]
        seg = next((c for c in candidates if c.is_file()), None)
        if seg is None:
            notes.append(f"{folder}: case folder without {folder.name}-{SEG_SUFFIX}.nii.gz, not a reference case")
            continue
        found.setdefault(folder.name, []).append(seg)
    if not found:
        msg = f"{gt}: no reference label files (.nii.gz files or <case>/<case>-seg.nii.gz folders)"
        raise DataError(msg, hint="GT must be a folder of label files or a BraTS root of case folders")
    return found, notes


def match_cases(gt: Path, pred: Path) -> Matching:
    """Pair every reference case with its prediction file.

    Args:
        gt: Reference folder (label files and/or BraTS case folders).
        pred: Prediction folder.

    Raises:
        DataError: If either folder does not exist, the reference holds no label file, or no prediction
            file belongs to a reference case (a wrong folder or naming scheme, not a bad prediction).
    """
    references, notes = reference_files(gt)
    pred = Path(pred)
    if not pred.is_dir():
        msg = f"{pred}: prediction folder not found" if not pred.exists() else f"{pred}: predictions are not a folder"
        raise DataError(msg)
    predictions = prediction_files(pred)
    if not any(case_id in references for case_id in predictions):
        n_files = sum(len(paths) for paths in predictions.values())
        msg = (
            f"{pred}: no prediction file matches any of the {len(references)} reference case(s) "
            f"({n_files} prediction file(s) found)"
        )
        raise DataError(msg, hint="predictions are named <case>.nii.gz, or <case> with -seg, _seg, -pred or _pred")
    problems: dict[str, str] = {}
    pairs: list[CasePair] = []
    for case_id in sorted(references):
        refs = references[case_id]
        preds = predictions.get(case_id, [])
        if len(refs) > 1:
            problems[case_id] = f"duplicate case id in the reference: {', '.join(str(p) for p in refs)}"
        elif len(preds) > 1:
            reason = f"duplicate case id in the predictions: {', '.join(p.name for p in preds)}"
            pairs.append(CasePair(case_id, refs[0], None, reason))
        else:
            pairs.append(CasePair(case_id, refs[0], preds[0] if preds else None))
    extra = tuple(sorted(p for case_id, paths in predictions.items() if case_id not in references for p in paths))
    return Matching(tuple(pairs), extra, problems, tuple(notes))
