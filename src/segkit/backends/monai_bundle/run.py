"""One fold's training run: what it resolved once, its fold folder, its training log, resume and checkpoints.

Nothing is written into ``<output_root>/fold<k>/`` before the first checkpoint: a run refused while
caching (bad labels) leaves no folder, and with ``overwrite`` an earlier run's files are removed only then.
A resumed run carries the resumed run's log entries up to its checkpoint, and keeps its best checkpoint.

torch and monai are imported inside the functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.backends.monai_bundle import checkpoints as ck
from segkit.backends.monai_bundle.distributed import DistInfo
from segkit.backends.monai_bundle.geometry import Geometry
from segkit.backends.monai_bundle.options import NUM_CLASSES, MonaiOptions
from segkit.conventions import LABELS
from segkit.errors import DataError
from segkit.progress import ProgressSink

if TYPE_CHECKING:
    import torch

    from segkit.backends.monai_bundle.bundle import Bundle

CLASS_NAMES = tuple(LABELS[i] for i in range(1, NUM_CLASSES))
"""Foreground classes scored during validation: NETC, SNFH, ET, RC."""


@dataclass
class StageState:
    """What one stage carries from epoch to epoch (restored on resume)."""

    stage: int
    best_metric: float = -math.inf  # the `best_metric` option's score at the best epoch
    best_epoch: int = 0
    best_mean: float | None = None
    best_wt: float | None = None
    start_epoch: int = 0
    improved_here: bool = False  # this run wrote stage<s>_best.pt (not only the run it resumed)


@dataclass
class FoldRun:
    """Everything a fold's training needs, resolved once."""

    fold: int
    opts: MonaiOptions
    device: str
    dist: DistInfo
    progress: ProgressSink
    network_args: dict[str, Any]
    bundle: Bundle
    loaded: tuple[int, int] | None
    fold_dir: Path
    geometry: Geometry
    config_yaml: str = ""
    resume: Path | None = None
    dataset: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    folder_ready: bool = False

    @property
    def ckpt_dir(self) -> Path:
        return self.fold_dir / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self.fold_dir / "metrics" / "training_log.json"

    def prepare_folder(self) -> None:
        """Make the fold folder ready for this run's first file (rank 0, once).

        Called only when the first checkpoint or log is about to be written, so that a run refused while
        caching or failing in its first epoch leaves an earlier run's files as they were. With
        ``overwrite`` the earlier run's checkpoints and log are removed here (`check` refused them
        otherwise); then the run config is written.
        """
        if self.folder_ready or not self.dist.is_main:
            return
        from segkit.io import write_text

        if self.opts.overwrite:
            old = ck.run_files(self.fold_dir)
            for path in old:
                path.unlink()
            if old:
                self.progress.log(f"fold {self.fold}: removed {len(old)} files of an earlier run from {self.fold_dir}")
        self.fold_dir.mkdir(parents=True, exist_ok=True)
        if self.config_yaml:
            write_text(self.fold_dir / "segkit_config.yaml", self.config_yaml)
        self.folder_ready = True


def resumed_log(resume: Path, fold_dir: Path) -> Path | None:
    """The training log of the run a checkpoint came from (``fold<k>/metrics`` beside ``fold<k>/checkpoints``).

    The fold folder's own log counts only when the checkpoint lies inside that folder (the run resumes
    in place); a log of any other run there is about to be replaced (``overwrite``).
    """
    source = resume.parent.parent / "metrics" / "training_log.json"
    if source.is_file():
        return source
    own = fold_dir / "metrics" / "training_log.json"
    return own if ck.is_inside(resume, fold_dir) and own.is_file() else None


def adopt_resumed_best(run: FoldRun, stage: int, state: StageState) -> None:
    """Copy the resumed run's ``stage<s>_best.pt`` into this run's folder when this run wrote none.

    A run resumed into another ``output_root`` writes ``stage<s>_best.pt`` only when one of its own epochs
    beats the restored best; otherwise the best weights of the stage are still the resumed run's, in
    ``<resume>.parent``. Copying them keeps the new fold folder complete: stage 2 starts from them and
    inference finds them.
    """
    if state.improved_here or run.resume is None or not run.dist.is_main:
        return
    import shutil

    from segkit.io import atomic_path

    source = run.resume.parent / ck.best_name(stage)
    dest = run.ckpt_dir / ck.best_name(stage)
    if not source.is_file() or (dest.exists() and dest.resolve() == source.resolve()):
        return
    meta = ck.read_checkpoint(source).meta
    if meta.stage != stage or meta.fold != run.fold:
        return
    run.prepare_folder()
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
    run.progress.log(
        f"fold {run.fold} stage {stage}: no epoch beat the resumed best (epoch {meta.epoch}); copied {source}"
    )


def checkpoint(
    run: FoldRun,
    net: torch.nn.Module,
    stage: int,
    epoch: int,
    state: StageState,
    training_state: dict[str, Any],
) -> ck.Checkpoint:
    """The checkpoint of `net` after `epoch` (completed epochs of `stage`), with this run's metadata.

    Args:
        training_state: ``optimizer``, ``scheduler`` and ``scaler`` state dicts.
    """
    import monai
    import torch

    from segkit import __version__

    meta = ck.CheckpointMeta(
        stage=stage,
        epoch=epoch,
        fold=run.fold,
        dataset=run.dataset,  # inference refuses to stand this model in for another dataset
        best_metric=ck.finite_or_none(state.best_metric),
        best_epoch=state.best_epoch,
        best_metric_name=run.opts.best_metric,
        best_mean_dice=state.best_mean,
        best_wt_dice=state.best_wt,
        network_args=run.network_args,
        channel_order=tuple(run.bundle.channel_order),
        labels={str(k): v for k, v in LABELS.items()},
        spacing=run.geometry.spacing,
        patch_size=run.geometry.patch_size,
        encoder_prefix=tuple(run.opts.encoder_prefix),
        bundle={
            "name": run.bundle.name,
            "version": run.bundle.version,
            "weights_sha256": run.bundle.weights_sha256,
            "tensors_loaded": run.loaded[0] if run.loaded else 0,
            "tensors_total": run.loaded[1] if run.loaded else len(net.state_dict()),
        },
        segkit_version=__version__,
        monai_version=monai.__version__,
        torch_version=str(torch.__version__),
    )
    model = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return ck.Checkpoint(meta, model, **training_state)


def history_until(path: Path | None, stage: int, epoch: int) -> list[dict[str, Any]]:
    """Log entries of a run up to (and including) the resumed stage and epoch."""
    from segkit.io import read_json

    if path is None or not path.is_file():
        return []
    try:
        data = read_json(path)
    except DataError:
        return []
    entries = data.get("epochs", []) if isinstance(data, dict) else []
    return [
        e
        for e in entries
        if isinstance(e, dict)
        and (e.get("stage", 0) < stage or (e.get("stage") == stage and e.get("epoch", 0) <= epoch))
    ]


def write_log(run: FoldRun) -> None:
    """Rewrite ``metrics/training_log.json``: the run's set-up, the best epoch of each stage, every epoch."""
    from segkit import __version__
    from segkit.io import write_json

    best: dict[str, Any] = {}
    for entry in run.history:
        if entry.get("best"):
            best[f"stage{entry['stage']}"] = {
                "epoch": entry["epoch"],
                "mean_dice": entry.get("mean_dice"),
                "wt_dice": entry.get("wt_dice"),
            }
    write_json(
        run.log_path,
        {
            "segkit_version": __version__,
            "fold": run.fold,
            "dataset": run.dataset,
            "network": {"name": "SegResNet", "args": run.network_args},
            "bundle": run.bundle.name,
            "bundle_weights_sha256": run.bundle.weights_sha256,
            "bundle_notes": list(run.bundle.notes),
            "tensors_loaded": list(run.loaded) if run.loaded else None,
            "channel_order": list(run.bundle.channel_order),
            "geometry": run.geometry.to_dict(),
            "classes": list(CLASS_NAMES),
            "best": best,
            "epochs": run.history,
        },
    )
