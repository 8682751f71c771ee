"""segkit's MONAI checkpoints: plain tensors plus JSON-serialisable metadata, read through one typed model.

A checkpoint is a dict saved with ``torch.save``::

    {"format": "segkit-monai-checkpoint", "format_version": 1,
     "meta": {stage, epoch, fold, dataset, best_metric, best_epoch, best_metric_name, best_mean_dice,
              best_wt_dice, network: {name, args}, channel_order, labels, spacing, patch_size,
              encoder_prefix, bundle, segkit_version, monai_version, torch_version, kind},
     "model": state dict, "optimizer": ..., "scheduler": ..., "scaler": ...}

Every value is a tensor, a number, a string, a list, a dict, a bool or None, so the file loads with
``torch.load(weights_only=True)``: opening a checkpoint never runs pickled code. ``dataset`` is absent
from checkpoints of segkit versions before it was recorded; they are taken to fit any dataset.

`CheckpointMeta` is the only reader of ``meta``: code elsewhere uses its attributes, never string keys.
Keys it does not model are kept (`CheckpointMeta.extra`) and written back unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.errors import DataError

if TYPE_CHECKING:
    import torch

FORMAT = "segkit-monai-checkpoint"
FORMAT_VERSION = 1

_RUN_CHECKPOINT = re.compile(r"stage[12]_(best|epoch\d+)\.pt")


@dataclass(frozen=True)
class CheckpointMeta:
    """The metadata of one checkpoint (``meta``); spacing in mm and patch size in voxels, both X Y Z.

    Attributes:
        stage: Training stage, 1 (encoder frozen) or 2.
        epoch: Completed epochs of the stage (from 1).
        fold: nnU-Net fold the model was trained on.
        dataset: ``DatasetNNN_Name`` trained on; None in checkpoints of older segkit versions.
        kind: ``"best"`` or ``"epoch"``; None when not recorded.
        network_args: Literal SegResNet arguments (inference rebuilds the network from them).
    """

    stage: int
    epoch: int
    fold: int
    dataset: str | None = None
    kind: str | None = None
    best_metric: float | None = None
    best_epoch: int = 0
    best_metric_name: str | None = None
    best_mean_dice: float | None = None
    best_wt_dice: float | None = None
    network_name: str = "SegResNet"
    network_args: Mapping[str, Any] = field(default_factory=dict)
    channel_order: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    spacing: tuple[float, ...] = ()
    patch_size: tuple[int, ...] = ()
    encoder_prefix: tuple[str, ...] = ()
    bundle: Mapping[str, Any] = field(default_factory=dict)
    segkit_version: str | None = None
    monai_version: str | None = None
    torch_version: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def bundle_name(self) -> str | None:
        """The bundle fine-tuned from (None: trained without one, or not recorded)."""
        name = self.bundle.get("name")
        return str(name) if name is not None else None

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any], source: Path | str = "checkpoint") -> CheckpointMeta:
        """Read ``meta`` as today's and earlier segkit versions write it.

        Raises:
            DataError: A missing or malformed stage, epoch or fold, or a value of the wrong type.
        """
        known = {f for f in cls.__dataclass_fields__ if f not in ("network_name", "network_args", "extra")}
        try:
            network = meta.get("network") or {}
            best = meta.get("best_metric")
            return cls(
                stage=int(meta["stage"]),
                epoch=int(meta["epoch"]),
                fold=int(meta["fold"]),
                dataset=meta.get("dataset"),
                kind=meta.get("kind"),
                best_metric=float(best) if best is not None else None,
                best_epoch=int(meta.get("best_epoch") or 0),
                best_metric_name=meta.get("best_metric_name"),
                best_mean_dice=meta.get("best_mean_dice"),
                best_wt_dice=meta.get("best_wt_dice"),
                network_name=str(network.get("name", "SegResNet")),
                network_args=dict(network.get("args") or {}),
                channel_order=tuple(str(c) for c in meta.get("channel_order") or ()),
                labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
                spacing=tuple(float(s) for s in meta.get("spacing") or ()),
                patch_size=tuple(int(p) for p in meta.get("patch_size") or ()),
                encoder_prefix=tuple(str(p) for p in meta.get("encoder_prefix") or ()),
                bundle=dict(meta.get("bundle") or {}),
                segkit_version=meta.get("segkit_version"),
                monai_version=meta.get("monai_version"),
                torch_version=meta.get("torch_version"),
                extra={k: v for k, v in meta.items() if k not in known and k != "network"},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            msg = f"{source}: malformed segkit checkpoint metadata ({type(err).__name__}: {err})"
            raise DataError(msg) from err

    def to_dict(self) -> dict[str, Any]:
        """``meta`` as it is saved (JSON-serialisable; the key set of today's checkpoints)."""
        out: dict[str, Any] = {
            "stage": self.stage,
            "epoch": self.epoch,
            "fold": self.fold,
            "dataset": self.dataset,  # inference refuses to stand this model in for another dataset
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "best_metric_name": self.best_metric_name,
            "best_mean_dice": self.best_mean_dice,
            "best_wt_dice": self.best_wt_dice,
            "network": {"name": self.network_name, "args": dict(self.network_args)},
            "channel_order": list(self.channel_order),
            "labels": dict(self.labels),
            "spacing": list(self.spacing),
            "patch_size": list(self.patch_size),
            "encoder_prefix": list(self.encoder_prefix),
            "bundle": dict(self.bundle),
            "segkit_version": self.segkit_version,
            "monai_version": self.monai_version,
            "torch_version": self.torch_version,
            **self.extra,
        }
        if self.kind is not None:
            out["kind"] = self.kind
        return out


@dataclass(frozen=True)
class Checkpoint:
    """A loaded (or about to be saved) segkit checkpoint: metadata, weights and the training state."""

    meta: CheckpointMeta
    model: Mapping[str, torch.Tensor]
    optimizer: Mapping[str, Any] | None = None
    scheduler: Mapping[str, Any] | None = None
    scaler: Mapping[str, Any] | None = None

    def to_payload(self) -> dict[str, Any]:
        """The dict ``torch.save`` writes (see the module docstring)."""
        payload: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "meta": self.meta.to_dict(),
            "model": dict(self.model),
        }
        for key in ("optimizer", "scheduler", "scaler"):
            value = getattr(self, key)
            if value is not None:
                payload[key] = value
        return payload


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


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> Path:
    """Write `checkpoint` atomically."""
    import torch

    from segkit.io import atomic_path

    with atomic_path(Path(path)) as tmp:
        torch.save(checkpoint.to_payload(), tmp)
    return Path(path)


def load_weights_only(path: Path, *, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with segkit's errors.

    Raises:
        DataError: The file is missing or is not a weights-only pickle (the first line of torch's reason).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        msg = f"{path}: {what} not found"
        raise DataError(msg)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        msg = f"{path}: cannot load {what} with weights_only=True ({first})"
        raise DataError(msg) from err


def read_checkpoint(path: Path) -> Checkpoint:
    """Load a segkit checkpoint with ``weights_only=True`` and check its format.

    Raises:
        DataError: Missing file, not loadable as weights only, not a segkit MONAI checkpoint, written by a
            newer format, or malformed metadata.
    """
    path = Path(path)
    obj = load_weights_only(path, what="checkpoint")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or not isinstance(obj.get("meta"), dict):
        msg = f"{path}: not a segkit MONAI checkpoint (no segkit metadata)"
        raise DataError(msg, hint="initialise from a plain state dict with --load-weights instead")
    if int(obj.get("format_version", 0)) > FORMAT_VERSION:
        msg = f"{path}: written by a newer segkit (checkpoint format {obj['format_version']})"
        raise DataError(msg)
    return Checkpoint(
        meta=CheckpointMeta.from_dict(obj["meta"], path),
        model=obj.get("model") or {},
        optimizer=obj.get("optimizer"),
        scheduler=obj.get("scheduler"),
        scaler=obj.get("scaler"),
    )


def format_template(template: Path | str, fold: int | str) -> Path:
    """Replace ``{fold}`` in a path template (other braces are left alone)."""
    return Path(str(template).replace("{fold}", str(fold)))


def has_fold_placeholder(template: Path | str | None) -> bool:
    """Whether a path template contains ``{fold}``."""
    return template is not None and "{fold}" in str(template)


def finite_or_none(value: float) -> float | None:
    """`value` when finite, else None (JSON has no infinity)."""
    return value if math.isfinite(value) else None
