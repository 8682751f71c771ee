"""Cross-validation folds identical to nnU-Net's ``splits_final.json``.

nnU-Net v2 (``nnUNetTrainer.do_split`` -> ``generate_crossval_split``) sorts the case identifiers and
applies ``sklearn.model_selection.KFold(n_splits=5, shuffle=True, random_state=12345)``. KFold with
shuffling permutes ``arange(n)`` with ``np.random.RandomState(seed).shuffle``, cuts the permutation into
folds whose sizes differ by at most one (the first ``n % k`` folds are larger) and returns the train
and validation indices in ascending order. This module reproduces that without scikit-learn, and the
tests compare it with nnU-Net's own function.

A dataset with unlabelled cases (see `segkit.data.unlabelled`) gets the folds of its labelled cases
only, each with an ``"unlabeled"`` list of every unlabelled case; nnU-Net reads only ``train``/``val``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from segkit.data.unlabelled import SPLITS_KEY
from segkit.errors import ConfigError, DataError, OutputError
from segkit.io import read_json, write_json

NNUNET_SPLIT_SEED = 12345
NNUNET_N_FOLDS = 5

Split = dict[str, list[str]]


def nnunet_splits(ids: Sequence[str], *, n_folds: int = NNUNET_N_FOLDS, seed: int = NNUNET_SPLIT_SEED) -> list[Split]:
    """The folds nnU-Net would write for these case identifiers.

    Args:
        ids: Case identifiers, in any order (they are sorted as nnU-Net sorts them).
        n_folds: Number of folds.
        seed: Shuffle seed.

    Returns:
        One ``{"train": [...], "val": [...]}`` per fold, ids in ascending order.

    Raises:
        DataError: With fewer cases than folds (KFold cannot split them), or duplicated ids.
    """
    keys = sorted(ids)
    n = len(keys)
    if len(set(keys)) != n:
        msg = "case identifiers are not unique"
        raise DataError(msg)
    if n_folds < 2:
        msg = f"cross-validation needs at least 2 folds, got {n_folds}"
        raise ConfigError(msg)
    if n < n_folds:
        msg = f"{n_folds}-fold cross-validation needs at least {n_folds} training cases, found {n}"
        raise DataError(msg, hint="train on all cases with --fold all, or add cases")
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_folds, n // n_folds, dtype=int)
    sizes[: n % n_folds] += 1
    splits: list[Split] = []
    start = 0
    for size in sizes:
        val_mask = np.zeros(n, dtype=bool)
        val_mask[order[start : start + size]] = True
        start += size
        splits.append(
            {
                "train": [keys[i] for i in np.flatnonzero(~val_mask)],
                "val": [keys[i] for i in np.flatnonzero(val_mask)],
            }
        )
    return splits


def folds_with_unlabelled(
    ids: Sequence[str],
    unlabelled: Sequence[str],
    *,
    n_folds: int = NNUNET_N_FOLDS,
    seed: int = NNUNET_SPLIT_SEED,
) -> list[Split]:
    """nnU-Net's folds of the labelled `ids`, each with ``"unlabeled"``: every id of `unlabelled`.

    Args:
        ids: Case identifiers; those also in `unlabelled` are left out of ``train`` and ``val``.
        unlabelled: The unlabelled case identifiers (none: exactly `nnunet_splits` of `ids`).
        n_folds: Number of folds.
        seed: Shuffle seed.

    Raises:
        DataError: Fewer labelled cases than folds, or duplicated ids.
    """
    if not unlabelled:
        return nnunet_splits(ids, n_folds=n_folds, seed=seed)
    extra = sorted(set(unlabelled))
    skip = set(extra)
    labelled = [i for i in ids if i not in skip]
    if len(labelled) < n_folds:
        msg = (
            f"{n_folds}-fold cross-validation needs at least {n_folds} labelled training cases, "
            f"found {len(labelled)} (and {len(extra)} unlabelled)"
        )
        raise DataError(msg, hint="train on all labelled cases with --fold all, or add labelled cases")
    return [{**split, SPLITS_KEY: list(extra)} for split in nnunet_splits(labelled, n_folds=n_folds, seed=seed)]


@dataclass(frozen=True)
class SplitsResult:
    """Outcome of `write_splits`."""

    path: Path
    splits: list[Split]
    status: Literal["written", "unchanged", "overwritten"]


def read_splits(path: Path) -> list[Split]:
    """Read and validate a ``splits_final.json``.

    Returns:
        One ``{"train": [...], "val": [...]}`` per fold, plus ``"unlabeled": [...]`` where the file has it.

    Raises:
        DataError: If the file is missing or not a list of ``{"train": [...], "val": [...]}`` (an
            ``"unlabeled"`` entry, if any, must be a list of ids too).
    """
    data = read_json(path)

    def id_list(value: object) -> bool:
        return isinstance(value, list) and all(isinstance(i, str) for i in value)

    ok = (
        isinstance(data, list)
        and data
        and all(
            isinstance(s, dict)
            and set(s) >= {"train", "val"}
            and all(id_list(s[k]) for k in ("train", "val"))
            and id_list(s.get(SPLITS_KEY, []))
            for s in data
        )
    )
    if not ok:
        msg = f"{path}: not an nnU-Net splits file (expected a list of {{'train': [...], 'val': [...]}})"
        raise DataError(msg)
    keys = ("train", "val", SPLITS_KEY)
    return [{k: list(s[k]) for k in keys if k in s} for s in data]


def write_splits(
    ids: Sequence[str],
    dest: Path,
    *,
    unlabelled: Sequence[str] = (),
    n_folds: int = NNUNET_N_FOLDS,
    seed: int = NNUNET_SPLIT_SEED,
    overwrite: bool = False,
) -> SplitsResult:
    """Write nnU-Net's folds for `ids` to `dest`, refusing to replace a different file unless asked.

    nnU-Net uses an existing ``splits_final.json`` as is, so a silently replaced file would make
    nnU-Net and MONAI runs disagree about their validation cases. With `unlabelled` ids, the folds are
    those of `folds_with_unlabelled`.

    Raises:
        ConfigError: `dest` is a folder.
        DataError: Too few (labelled) cases for the folds.
        OutputError: If `dest` exists with other folds (e.g. from before the dataset had unlabelled
            cases), or is not a splits file, and `overwrite` is false.
    """
    splits = folds_with_unlabelled(ids, unlabelled, n_folds=n_folds, seed=seed)
    status: Literal["written", "unchanged", "overwritten"] = "written"
    if dest.is_dir():
        msg = f"{dest}: is a folder; the output is the splits file itself"
        raise ConfigError(msg, hint=f"pass the file's path, e.g. -o {dest / 'splits_final.json'}")
    if dest.exists() or dest.is_symlink():
        try:
            existing = read_splits(dest)
        except DataError as err:
            if not overwrite:
                why = str(err).removeprefix(f"{dest}: ")
                msg = f"{dest}: exists but is not a usable splits file ({why})"
                raise OutputError(msg, hint="pass --overwrite to replace it") from None
            existing = None
        if existing == splits:
            return SplitsResult(dest, splits, "unchanged")
        if not overwrite and existing is not None and unlabelled and not any(SPLITS_KEY in s for s in existing):
            refuse_stale_splits(dest, len(set(unlabelled)))
        if not overwrite:
            msg = f"{dest}: a different splits file already exists"
            raise OutputError(
                msg, hint="pass --overwrite to replace it (runs trained on the old folds become incomparable)"
            )
        status = "overwritten"
    write_json(dest, splits)
    return SplitsResult(dest, splits, status)


def refuse_stale_splits(dest: Path, n_unlabelled: int) -> None:
    """Raise for a splits file without ``"unlabeled"`` lists in a dataset that has unlabelled cases.

    Such a file (nnU-Net's own, or segkit's from before ``--unlabelled-sources``) may put placeholder
    cases into ``train``/``val``, where a supervised loss would learn their all-zero labels.

    Raises:
        OutputError: Always.
    """
    msg = f"{dest}: has no {SPLITS_KEY!r} lists, but the dataset has {n_unlabelled} unlabelled case(s)"
    raise OutputError(
        msg, hint="rewrite it with `segkit data splits --overwrite` (runs trained on the old folds become incomparable)"
    )
