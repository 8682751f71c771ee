"""The UMamba2 recipe's stages from segkit's side: unlabelled cases, stage checkpoints and stage records.

Torch-free (the backend's checks run here before any nnU-Net process starts). The stages themselves are
nnU-Net trainers (`segkit.backends.umamba2.stages`, and ``pretrain`` for self-supervised pretraining);
`UMamba2Backend.train` chains them for ``--recipe``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from segkit.backends.base import DatasetRef, Fold
from segkit.backends.nnunet import layout
from segkit.backends.umamba2.options import STAGE_TRAINERS, UMamba2Options
from segkit.data.unlabelled import SPLITS_KEY as UNLABELLED_KEY
from segkit.errors import DataError

RECORD = "segkit_stage.json"
"""The record, in each fold folder of a stage's model, of the stage and the weights it started from."""


def unlabelled_ids(splits_file: Path, fold: Fold) -> list[str]:
    """The fold's unlabelled case ids (fold ``all``: those of every fold).

    Raises:
        DataError: No splits file, a fold it does not have, or no unlabelled cases for the fold.
    """
    hint = "add unlabelled cases with `segkit data prepare --unlabelled-sources DIR` and plan again"
    if not splits_file.is_file():
        msg = f"{splits_file}: no splits file, so no unlabelled cases for the semi-supervised stages"
        raise DataError(msg, hint=hint)
    try:
        splits = json.loads(splits_file.read_text())
    except (OSError, ValueError) as err:
        msg = f"{splits_file}: not a readable splits file ({err})"
        raise DataError(msg) from err
    if not isinstance(splits, list) or not all(isinstance(s, dict) for s in splits):
        msg = f"{splits_file}: not a list of folds"
        raise DataError(msg)
    if fold == "all":
        entries = splits
    elif isinstance(fold, int) and 0 <= fold < len(splits):
        entries = [splits[fold]]
    else:
        msg = f"{splits_file}: fold {fold} is not in the splits ({len(splits)} folds)"
        raise DataError(msg)
    ids = sorted({str(i) for entry in entries for i in entry.get(UNLABELLED_KEY) or []})
    if not ids:
        msg = f"{splits_file}: fold {fold} has no unlabelled cases (no {UNLABELLED_KEY!r} ids)"
        raise DataError(msg, hint=hint)
    return ids


def check_unlabelled_preprocessed(dataset: DatasetRef, data_identifier: str | None, ids: list[str]) -> None:
    """Every unlabelled case is preprocessed in the configuration's data folder.

    Raises:
        DataError: Some are not (naming the first).
    """
    if not data_identifier:
        return
    folder = dataset.preprocessed_dir / data_identifier
    missing = [i for i in ids if not (folder / f"{i}.pkl").is_file()]
    if missing:
        msg = f"{folder}: {len(missing)} unlabelled case(s) not preprocessed, e.g. {missing[0]}"
        raise DataError(msg, hint="run `segkit data plan --backend umamba2` again")


def stage_checkpoint(dataset: DatasetRef, opts: UMamba2Options, stage: str, fold: Fold) -> Path | None:
    """The final checkpoint of fold `fold` of the one trained model of `stage` (any schedule), if any.

    Raises:
        DataError: Several trained models of the stage have one.
    """
    trainer = STAGE_TRAINERS[stage]
    base = opts.model_copy(update={"trainer": trainer})
    found = []
    for name in layout.trained_trainers(dataset, base.model_copy(update={"checkpoint": "checkpoint_final.pth"})):
        if layout.options_for_trainer(base, name).trainer != trainer:
            continue
        path = layout.fold_dir(dataset.results_dir / f"{name}__{opts.plans_identifier}__{opts.configuration}", fold)
        if (path / "checkpoint_final.pth").is_file():
            found.append(path / "checkpoint_final.pth")
    if len(found) > 1:
        listed = ", ".join(str(p) for p in found)
        msg = f"{len(found)} trained {stage} models have fold {fold}: {listed}"
        raise DataError(msg, hint="choose one with --pretrained-weights")
    return found[0] if found else None


def write_record(
    fold_dir: Path, *, stage: str, trainer: str, started_from: str | None, recipe: str | None, resumed: bool
) -> None:
    """Write (or, for a resumed run, update) the fold's stage record; a resumed run keeps the first start's weights."""
    from segkit.io import write_json

    path = fold_dir / RECORD
    record: dict[str, Any] = {}
    if path.is_file():
        try:
            record = json.loads(path.read_text())
        except ValueError:
            record = {}
    if not resumed:
        record = {}
    record.update(
        {
            "stage": stage,
            "trainer": trainer,
            "recipe": recipe,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    )
    if resumed:
        record["resumed"] = True
    else:
        record["started_from"] = started_from
    write_json(path, record)
