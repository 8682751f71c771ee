"""segkit's MONAI checkpoints: plain tensors plus JSON-serialisable metadata.

A checkpoint is a dict saved with ``torch.save``::

    {"format": "segkit-monai-checkpoint", "format_version": 1,
     "meta": {stage, epoch, fold, dataset, best_metric, best_epoch, network: {name, args}, channel_order,
              labels, spacing, patch_size, segkit_version, bundle, kind},
     "model": state dict, "optimizer": ..., "scheduler": ..., "scaler": ...}

Every value is a tensor, a number, a string, a list, a dict, a bool or None, so the file loads with
``torch.load(weights_only=True)``: opening a checkpoint never runs pickled code. ``dataset`` is absent
from checkpoints of segkit versions before it was recorded; they are taken to fit any dataset.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from segkit.errors import DataError

FORMAT = "segkit-monai-checkpoint"
FORMAT_VERSION = 1

_RUN_CHECKPOINT = re.compile(r"stage[12]_(best|epoch\d+)\.pt")


def checkpoint_dir(output_root: Path, fold: int) -> Path:
    """``<output_root>/fold<k>/checkpoints``."""
    return Path(output_root) / f"fold{fold}" / "checkpoints"


def best_name(stage: int) -> str:
    """``stage<s>_best.pt``."""
    return f"stage{stage}_best.pt"


def epoch_name(stage: int, epoch: int) -> str:
    """``stage<s>_epoch<n>.pt`` (n counts completed epochs of the stage, from 1)."""
    return f"stage{stage}_epoch{epoch}.pt"


def run_files(fold_dir: Path) -> list[Path]:
    """The files a training run writes into ``fold<k>/``: its checkpoints and ``metrics/training_log.json``.

    ``segkit_config.yaml`` is not listed (every run rewrites it); other files are never touched.
    """
    fold_dir = Path(fold_dir)
    folder = fold_dir / "checkpoints"
    found = sorted(p for p in folder.iterdir() if _RUN_CHECKPOINT.fullmatch(p.name)) if folder.is_dir() else []
    log = fold_dir / "metrics" / "training_log.json"
    return [*found, log] if log.is_file() else found


def is_inside(path: Path, folder: Path) -> bool:
    """Whether `path` lies somewhere below `folder` (both resolved)."""
    return Path(folder).resolve() in Path(path).resolve().parents


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write `payload` (see the module docstring, without the format keys) atomically."""
    import torch

    from segkit.io import atomic_path

    with atomic_path(Path(path)) as tmp:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, tmp)
    return Path(path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a segkit checkpoint with ``weights_only=True`` and check its format.

    Raises:
        DataError: Missing file, not loadable as weights only, or not a segkit MONAI checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        msg = f"{path}: checkpoint not found"
        raise DataError(msg)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        msg = f"{path}: cannot load the checkpoint with weights_only=True ({first})"
        raise DataError(msg) from err
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or not isinstance(obj.get("meta"), dict):
        msg = f"{path}: not a segkit MONAI checkpoint (no segkit metadata)"
        raise DataError(msg, hint="initialise from a plain state dict with --load-weights instead")
    if int(obj.get("format_version", 0)) > FORMAT_VERSION:
        msg = f"{path}: written by a newer segkit (checkpoint format {obj['format_version']})"
        raise DataError(msg)
    return obj


def format_template(template: Path | str, fold: int | str) -> Path:
    """Replace ``{fold}`` in a path template (other braces are left alone)."""
    return Path(str(template).replace("{fold}", str(fold)))


def has_fold_placeholder(template: Path | str | None) -> bool:
    """Whether a path template contains ``{fold}``."""
    return template is not None and "{fold}" in str(template)
