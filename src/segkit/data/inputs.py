"""Turn ``segkit infer`` inputs into cases with one file per BraTS modality.

An input path may be a BraTS data root (case folders), a single case folder, or an nnU-Net images
folder (``CASE_0000.nii.gz`` ...) whose channels are mapped to modalities through the ``channel_names``
of the ``dataset.json`` beside it (``DatasetNNN_X/imagesTs`` -> ``DatasetNNN_X/dataset.json``), else of
the run's dataset. Backends then put the modalities in their own channel order. The four images of a
case must share one grid; that is checked from the headers before any prediction starts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from segkit.backends.base import CaseImages
from segkit.conventions import MODALITIES, NIFTI_EXT, NNUNET_CHANNEL_ORDER
from segkit.data.cases import Case, discover_cases, scan_case_folder
from segkit.data.layouts import BRATS2024, CASE_FILE_SUFFIXES
from segkit.errors import DataError
from segkit.io import grid_mismatch, read_header, read_json

log = logging.getLogger(__name__)

_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(NIFTI_EXT) + "$")


def split_channel_file(name: str) -> tuple[str, int] | None:
    """nnU-Net channel file name -> (case id, channel): ``CASE_0001.nii.gz`` -> (``CASE``, 1); else None."""
    match = _CHANNEL_FILE.match(name)
    return (match.group("case"), int(match.group("channel"))) if match else None


# Channel names seen in nnU-Net BraTS datasets (segkit's, Dataset226, MSD-style) -> BraTS modality.
_CHANNEL_ALIASES = {
    "t1n": "t1n",
    "t1": "t1n",
    "t1w": "t1n",
    "t1c": "t1c",
    "t1ce": "t1c",
    "t1gd": "t1c",
    "t1-gd": "t1c",
    "t1+c": "t1c",
    "t1 contrast": "t1c",
    "t2w": "t2w",
    "t2": "t2w",
    "t2f": "t2f",
    "flair": "t2f",
    "t2-flair": "t2f",
    "t2 flair": "t2f",
}


def channel_modalities(channel_names: Mapping[str, str] | None) -> list[str]:
    """Modality of each nnU-Net channel, from ``dataset.json`` channel names (segkit's order if None).

    Raises:
        DataError: A channel name that is not a BraTS modality, or not exactly the four modalities.
    """
    if not channel_names:
        return list(NNUNET_CHANNEL_ORDER)
    out = []
    for key in sorted(channel_names, key=int):
        name = str(channel_names[key]).strip().lower()
        if name not in _CHANNEL_ALIASES:
            msg = f"channel {key} is named {channel_names[key]!r}, which is not a BraTS modality"
            raise DataError(msg)
        out.append(_CHANNEL_ALIASES[name])
    if sorted(out) != sorted(MODALITIES):
        msg = f"the channels {out} are not the four BraTS modalities"
        raise DataError(msg)
    return out


def _is_case_folder(path: Path) -> bool:
    return any(
        (path / BRATS2024.file_name(path.name, m, suffix)).exists() for m in MODALITIES for suffix in CASE_FILE_SUFFIXES
    )


def _from_case(case: Case) -> CaseImages:
    problems = case.file_problems()
    if problems:
        path, problem = problems[0]
        msg = f"{case.case_id}: {path}: {problem}"
        raise DataError(msg)
    return CaseImages(case.case_id, dict(case.images))


def _from_nnunet_folder(folder: Path, modalities: Sequence[str]) -> list[CaseImages]:
    grouped: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        parts = split_channel_file(path.name)
        if parts:
            grouped.setdefault(parts[0], {})[parts[1]] = path
    cases = []
    for case_id, channels in grouped.items():
        missing = [i for i in range(len(modalities)) if i not in channels]
        if missing:
            msg = f"{case_id}: {folder / f'{case_id}_{missing[0]:04d}{NIFTI_EXT}'}: missing channel {missing[0]}"
            raise DataError(msg)
        cases.append(CaseImages(case_id, {modalities[i]: channels[i] for i in range(len(modalities))}))
    return cases


def resolve_inputs(
    paths: Sequence[Path],
    *,
    channel_names: Mapping[str, str] | None = None,
    only: Sequence[str] | None = None,
) -> list[CaseImages]:
    """Cases to predict from input paths.

    Args:
        paths: BraTS roots, case folders and/or nnU-Net images folders.
        channel_names: ``dataset.json`` channel names, for nnU-Net images folders.
        only: Keep only these case ids (error if one is not found).

    Raises:
        DataError: A missing path, a case without all four modalities, duplicate ids, nothing found, or
            images of a case on different grids.
    """
    found: list[CaseImages] = []
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            msg = f"{path}: input folder not found"
            raise DataError(msg)
        if _is_case_folder(path):
            found.append(_from_case(scan_case_folder(path)))
        elif any(split_channel_file(p.name) for p in path.iterdir()):
            found.extend(_from_nnunet_folder(path, _folder_modalities(path, channel_names)))
        else:
            found.extend(_from_case(c) for c in discover_cases([path]).cases)
    seen: set[str] = set()
    for case in found:
        if case.case_id in seen:
            msg = f"{case.case_id}: the case appears twice in the inputs"
            raise DataError(msg)
        seen.add(case.case_id)
    if only is not None:
        wanted = list(only)
        missing = [c for c in wanted if c not in seen]
        if missing:
            msg = f"{missing[0]}: case not found in the inputs ({', '.join(str(p) for p in paths)})"
            raise DataError(msg)
        found = [c for c in found if c.case_id in set(wanted)]
    if not found:
        msg = f"no cases found in {', '.join(str(p) for p in paths)}"
        raise DataError(msg)
    for case in found:
        _check_same_grid(case)
    return sorted(found, key=lambda c: c.case_id)


def dataset_json_modalities(path: Path) -> list[str]:
    """Modality of each channel of an nnU-Net ``dataset.json`` (``channel_names``, or MSD's ``modality``).

    Raises:
        DataError: Not a JSON object, or channel names that are not the four BraTS modalities (naming `path`).
    """
    meta = read_json(path)
    if not isinstance(meta, dict):
        msg = f"{path}: expected a JSON object"
        raise DataError(msg)
    try:
        return channel_modalities(meta.get("channel_names") or meta.get("modality"))
    except DataError as err:
        msg = f"{path}: {err}"
        raise DataError(msg) from err


def _folder_modalities(folder: Path, channel_names: Mapping[str, str] | None) -> list[str]:
    """Modality of each channel file in an nnU-Net images folder: its own dataset's names first."""
    own = folder.parent / "dataset.json"
    if own.is_file():
        return dataset_json_modalities(own)
    if channel_names is None:
        log.warning(
            "%s: no dataset.json beside the images folder or in the run's dataset; reading channel files "
            "as 0 t1n, 1 t1c, 2 t2w, 3 t2f (segkit's order)",
            folder,
        )
    return channel_modalities(channel_names)


def _check_same_grid(case: CaseImages) -> None:
    """The four images of a case must lie on one grid (headers only; no voxels are read)."""
    files = [case.images[m] for m in MODALITIES]
    first = read_header(files[0])
    for path in files[1:]:
        problem = grid_mismatch(read_header(path), first)
        if problem is not None:
            msg = f"{case.case_id}: {path}: grid differs from {Path(files[0]).name}'s ({problem})"
            raise DataError(msg)
