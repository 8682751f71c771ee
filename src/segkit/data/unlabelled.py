"""The unlabelled cohort of a dataset: image-only cases for semi-supervised training.

``segkit data prepare --unlabelled-sources DIR...`` exports such cases into ``imagesTr`` like labelled
ones, with an all-zero placeholder segmentation in ``labelsTr`` (nnU-Net's preprocessing and data
loaders need a label file for every case in ``imagesTr``), and lists them in ``dataset.json`` under
`UNLABELLED_KEY`. nnU-Net ignores unknown keys and copies ``dataset.json`` into
``nnUNet_preprocessed/<dataset>/`` when it plans, so trainers find the list there too.

The placeholders must never reach a supervised loss or metric. That is what ``splits_final.json`` is
for: its ``train`` and ``val`` lists hold the labelled cases only (exactly nnU-Net's folds of them), and
`SPLITS_KEY` (``"unlabeled"``, the spelling of the UMamba2 fork's trainers) lists every unlabelled case
in each fold. nnU-Net itself reads only ``train`` and ``val``. This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from segkit.errors import ConfigError, DataError
from segkit.io import atomic_path, read_json

UNLABELLED_KEY = "segkit_unlabelled"
"""``dataset.json`` key: the sorted identifiers of the unlabelled cases in ``imagesTr``."""

SPLITS_KEY = "unlabeled"
"""``splits_final.json`` key of each fold: the unlabelled case identifiers (the fork's spelling)."""


def unlabelled_ids(dataset_json: Mapping[str, Any]) -> list[str]:
    """The unlabelled case identifiers listed in a ``dataset.json`` (sorted; [] when there are none).

    Raises:
        DataError: The key holds something other than a list of strings.
    """
    ids = dataset_json.get(UNLABELLED_KEY, [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        msg = f"dataset.json: {UNLABELLED_KEY!r} is not a list of case identifiers"
        raise DataError(msg)
    return sorted(ids)


def dataset_unlabelled_ids(dataset_dir: Path) -> list[str]:
    """The unlabelled case identifiers of a raw or preprocessed dataset folder (from its ``dataset.json``).

    Raises:
        DataError: No ``dataset.json`` in the folder, or a malformed list.
    """
    path = Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        msg = f"{dataset_dir}: not a prepared nnU-Net dataset (no dataset.json)"
        raise DataError(msg, hint="run `segkit data prepare` first")
    meta = read_json(path)
    if not isinstance(meta, dict):
        msg = f"{path}: expected a JSON object"
        raise DataError(msg)
    try:
        return unlabelled_ids(meta)
    except DataError as err:
        msg = f"{path}: {str(err).removeprefix('dataset.json: ')}"
        raise DataError(msg) from None


def read_unlabelled(splits_path: Path, fold: int) -> list[str]:
    """The unlabelled case identifiers of `fold` in a ``splits_final.json`` ([] when the key is absent).

    Raises:
        DataError: The file is missing or not a splits file, or its list is malformed.
        ConfigError: `fold` is not a fold of the file.
    """
    from segkit.data.splits import read_splits

    splits = read_splits(Path(splits_path))
    if not 0 <= fold < len(splits):
        msg = f"fold {fold} is out of range: {splits_path} has {len(splits)} folds (0-{len(splits) - 1})"
        raise ConfigError(msg)
    return list(splits[fold].get(SPLITS_KEY, []))


def write_placeholder_segmentation(image: Path, dest: Path) -> Path:
    """Write an all-zero uint8 label map on the grid of `image` (same shape and header geometry).

    The image's own header is copied, so its qform and sform (and their codes) carry over unchanged:
    nnU-Net's readers compare image and label geometry, and some prefer one form, some the other.

    Raises:
        DataError: `image` is unreadable or not 3-D.
    """
    import nibabel as nib

    from segkit.io import read_header

    header = read_header(image)
    if len(header.shape) != 3:
        msg = f"{image}: expected a 3-D image, got shape {header.shape}"
        raise DataError(msg)
    source: Any = nib.load(str(image))  # a Nifti1Image: segkit's volumes are NIfTI-1
    out_header = source.header.copy()
    out_header.set_data_dtype(np.uint8)
    out_header.set_slope_inter(1.0, 0.0)
    placeholder = nib.Nifti1Image(np.zeros(header.shape, dtype=np.uint8), source.affine, header=out_header)
    # Nifti1Image recomputes the forms from the affine it is given; restore the source's exactly.
    qform, qcode = source.header.get_qform(coded=True)
    sform, scode = source.header.get_sform(coded=True)
    placeholder.set_qform(qform, code=int(qcode)) if qform is not None else placeholder.set_qform(None)
    placeholder.set_sform(sform, code=int(scode)) if sform is not None else placeholder.set_sform(None)
    with atomic_path(Path(dest)) as tmp:
        nib.save(placeholder, str(tmp))
    return Path(dest)
