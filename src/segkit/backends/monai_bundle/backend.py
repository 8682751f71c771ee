"""The MONAI bundle backend: fine-tune ``brats_mri_segmentation`` (SegResNet) on nnU-Net's folds and predict.

`check` finds every problem it can before any training starts: a missing or unsafe bundle, a split that
names cases the data roots do not hold, a checkpoint of another stage, fold or architecture, AMP without
CUDA, a fold template without ``{fold}``, a fold folder that holds an earlier run (without ``overwrite``).
The work itself is in `training` and `inference`; this module imports neither torch nor monai (the checks
that need them import them inside functions).
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from segkit.backends.base import (
    Capabilities,
    CaseImages,
    DatasetRef,
    Fold,
    PredictRequest,
    PredictResult,
    PrepareRequest,
    PrepareResult,
    TrainRequest,
    TrainResult,
)
from segkit.backends.monai_bundle import checkpoints as ck
from segkit.backends.monai_bundle.options import MonaiOptions
from segkit.data.inputs import split_channel_file
from segkit.errors import ConfigError, DataError, OutputError
from segkit.progress import ProgressSink


class MonaiBundleBackend:
    """MONAI bundle (brats_mri_segmentation SegResNet): two-stage fine-tuning on nnU-Net's folds."""

    name: ClassVar[str] = "monai"
    Options: ClassVar[type[MonaiOptions]] = MonaiOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        prepare=False,
        ensemble=True,
        implicit_ensemble=False,
        multi_gpu=True,
        fold_all="every_fold",
        devices=("cpu", "cuda"),
    )

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when torch and monai are installed."""
        for module in ("torch", "monai"):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed"
        return None

    # ------------------------------------------------------------------ folds

    def fold_indices(self, dataset: DatasetRef, options: Any) -> tuple[int, ...]:
        """Every fold of the splits file (what ``--fold all`` means here); trained folds when it is absent.

        Raises:
            DataError: No splits file and no trained fold.
        """
        from segkit.data.splits import read_splits

        opts = _as_options(options)
        split = Path(opts.split_json or dataset.splits_file)
        if split.is_file():
            return tuple(range(len(read_splits(split))))
        trained = tuple(f for f in self.trained_folds(dataset, opts) if isinstance(f, int))
        if trained:
            return trained
        msg = f"{split}: splits file not found, so 'all' folds are unknown"
        raise DataError(msg, hint="write nnU-Net's folds with `segkit data splits`, or pass --split-json")

    def trained_folds(self, dataset: DatasetRef, options: Any) -> tuple[Fold, ...]:
        """Folds that have a checkpoint to predict with (the default folds of ``segkit infer``)."""
        opts = _as_options(options)
        if opts.checkpoint is not None and not ck.has_fold_placeholder(opts.checkpoint):
            path = Path(opts.checkpoint)
            if not path.is_file():
                return ()
            return (ck.read_checkpoint(path).meta.fold,)
        candidates: set[int] = set(range(5))
        split = Path(opts.split_json or dataset.splits_file)
        if split.is_file():
            from segkit.data.splits import read_splits

            candidates |= set(range(len(read_splits(split))))
        root = Path(opts.output_root)
        if root.is_dir():
            candidates |= {int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(r"fold(\d+)", p.name))}
        return tuple(k for k in sorted(candidates) if _checkpoint_for(opts, k).is_file())

    # ------------------------------------------------------------------ checks

    def check(self, request: PrepareRequest | TrainRequest | PredictRequest, options: Any) -> None:
        """Raise for every problem that can be found before training or predicting."""
        opts = _as_options(options)
        if isinstance(request, PrepareRequest):
            from segkit.backends.monai_bundle.bundle import check_bundle

            check_bundle(opts)
        elif isinstance(request, TrainRequest):
            self._check_train(request, opts)
        else:
            self._check_predict(request, opts)

    def _check_train(self, request: TrainRequest, opts: MonaiOptions) -> None:
        from segkit.backends.monai_bundle import data as dm
        from segkit.backends.monai_bundle.bundle import check_bundle
        from segkit.backends.monai_bundle.geometry import resolve_geometry, run_plans_identifier

        fold = request.fold
        if not isinstance(fold, int) or fold < 0:
            msg = f"fold {fold!r}: the MONAI backend trains numbered folds ('all' means every fold in turn)"
            raise ConfigError(msg)
        _check_amp(opts, request.device)
        if opts.stage1_epochs == 0 and opts.stage2_epochs == 0:
            msg = "nothing to train: --stage1-epochs and --stage2-epochs are both 0"
            raise ConfigError(msg)
        if opts.resume is not None and opts.load_weights is not None:
            msg = "--resume and --load-weights cannot be combined (a resumed run already has its weights)"
            raise ConfigError(msg)
        split = Path(opts.split_json or request.dataset.splits_file)
        train_ids, val_ids = dm.read_fold(split, fold)
        if not train_ids or not val_ids:
            msg = f"fold {fold} of {split} has {len(train_ids)} training and {len(val_ids)} validation cases"
            raise DataError(msg)
        source = f"{split.name} fold {fold}"
        cases = dm.labelled_cases([*train_ids, *val_ids], roots=opts.data_root, dataset=request.dataset, source=source)
        for case in cases:
            dm.check_case_grid(case.case_id, case.images, label=case.label)
        check_bundle(opts)
        # an unreadable plans file is refused here, not after the cases are cached
        resolve_geometry(opts, request.dataset.preprocessed_dir, {}, plans=run_plans_identifier(request.config_yaml))
        self._check_weights(opts, fold, request.dataset.name)
        _check_fold_folder(opts, fold)  # last: a checkpoint of another fold or network is the sharper message

    def _check_weights(self, opts: MonaiOptions, fold: int, dataset: str) -> None:
        """Encoder prefixes exist and leave stage 1 something to train; resume/initial checkpoints are of this
        fold, stage and dataset and fit the network."""
        from segkit.backends.monai_bundle import network as nw

        net = _planned_network(opts)
        if net is not None:
            nw.parameter_groups(net, opts.encoder_prefix)
        resumed_stage: int | None = None
        if opts.resume is not None:
            path = ck.format_template(opts.resume, fold)
            payload = ck.read_checkpoint(path)
            meta = payload.meta
            stage, epoch = meta.stage, meta.epoch
            resumed_stage = stage
            if meta.fold != fold:
                msg = f"{path} was trained on fold {meta.fold}, not fold {fold}"
                raise ConfigError(msg, hint="put {fold} in --resume to resume every fold from its own checkpoint")
            trained_on = meta.dataset  # absent from checkpoints of older segkit versions
            if trained_on is not None and trained_on != dataset:
                msg = f"{path} was trained on {trained_on}, not {dataset}"
                raise ConfigError(
                    msg, hint=f"resume with -d {trained_on}, or initialise from it with --load-weights instead"
                )
            if opts.resume_stage is not None and stage != opts.resume_stage:
                wanted = opts.resume_stage
                msg = f"{path} is a stage-{stage} checkpoint; --resume-stage {wanted} needs a stage-{wanted} one"
                raise ConfigError(msg)
            if opts.stage_epochs(stage) == 0:
                msg = f"{path} is a stage-{stage} checkpoint but --stage{stage}-epochs is 0"
                raise ConfigError(msg)
            if epoch > opts.stage_epochs(stage):
                limit = opts.stage_epochs(stage)
                msg = f"{path} is at stage {stage} epoch {epoch}, beyond --stage{stage}-epochs {limit}"
                raise ConfigError(msg)
            if net is not None:
                nw.check_fit(net, payload.model, path, hint="resume with the network arguments the run started with")
        # as training decides it: a stage-2 checkpoint skips stage 1
        if net is not None and opts.stage1_epochs > 0 and resumed_stage in (None, 1):
            nw.stage1_frozen(net, opts.encoder_prefix)
        if opts.load_weights is not None:
            path = ck.format_template(opts.load_weights, fold)
            state = nw.read_state_dict(path, what="weights")
            if net is not None:
                nw.check_fit(
                    net, state, path, hint="use weights of the same SegResNet arguments (see network_overrides)"
                )

    def _check_predict(self, request: PredictRequest, opts: MonaiOptions) -> None:
        _check_amp(opts, request.device)
        if not request.cases:
            msg = "no cases to predict"
            raise DataError(msg)
        from segkit.backends.monai_bundle import data as dm

        for case in self._select_cases(request.cases, opts):
            dm.check_case_grid(case.case_id, case.images)
        folds = request.folds
        explicit = opts.checkpoint is not None
        templated = ck.has_fold_placeholder(opts.checkpoint)
        if explicit and len(folds) > 1 and not templated:
            msg = f"{len(folds)} folds but --checkpoint {opts.checkpoint} has no '{{fold}}'"
            raise ConfigError(msg, hint="put {fold} in --checkpoint so that each fold loads its own model")
        metas: list[tuple[Path, ck.CheckpointMeta]] = []
        for fold in folds:
            if not isinstance(fold, int):
                msg = f"fold {fold!r}: the MONAI backend predicts with numbered folds"
                raise ConfigError(msg)
            path = _checkpoint_for(opts, fold)
            if not path.is_file():
                if explicit:
                    msg = f"{path}: checkpoint not found (fold {fold})"
                else:
                    root = Path(opts.output_root) / f"fold{fold}" / "checkpoints"
                    msg = f"{root}: no stage2_best.pt or stage1_best.pt (fold {fold} is not trained)"
                raise DataError(msg, hint="train the fold first, or pass --checkpoint")
            payload = ck.read_checkpoint(path)
            meta = payload.meta
            if explicit and not templated and meta.fold != fold:
                msg = f"{path} was trained on fold {meta.fold}, so it cannot stand for fold {fold}"
                raise ConfigError(msg, hint="put {fold} in --checkpoint, or pass the checkpoint's own --fold")
            trained_on = meta.dataset  # absent from checkpoints of older segkit versions
            if trained_on is not None and trained_on != request.dataset.name:
                msg = f"{path} was trained on {trained_on}, not {request.dataset.name}"
                hint = f"pass -d {trained_on}, or the --checkpoint/--output-root of a {request.dataset.name} model"
                raise ConfigError(msg, hint=hint)
            _check_fits(path, payload)
            metas.append((path, meta))
        _check_bundle_channels(opts, metas)

    def _select_cases(self, cases: Sequence[CaseImages], opts: MonaiOptions) -> tuple[CaseImages, ...]:
        """The cases to predict: all of them, or the ``segkit.test_cases`` of ``--dataset-json``.

        With ``--dataset-json``, nnU-Net channel files (``CASE_000i.nii.gz``) are mapped to modalities through
        its ``channel_names``, explicitly, whatever dataset the inputs were read with.

        Raises:
            DataError: A listed test case is not among the inputs, or the channel names are not the four modalities.
        """
        if opts.dataset_json is None:
            return tuple(cases)
        from segkit.data.inputs import channel_modalities
        from segkit.io import read_json

        meta = read_json(Path(opts.dataset_json))
        if not isinstance(meta, dict):
            msg = f"{opts.dataset_json}: expected a JSON object"
            raise DataError(msg)
        modalities = channel_modalities(meta.get("channel_names"))
        wanted = (meta.get("segkit") or {}).get("test_cases")
        by_id = {c.case_id: c for c in cases}
        if wanted is None:
            selected = list(cases)
        else:
            missing = [c for c in wanted if c not in by_id]
            if missing:
                msg = f"{missing[0]}: test case of {opts.dataset_json} not found in the inputs"
                raise DataError(msg, hint="pass the roots that hold every test case to --data-root/--input")
            selected = [by_id[c] for c in wanted]
        return tuple(_remap_channels(c, modalities) for c in selected)

    # ------------------------------------------------------------------ work

    def prepare(self, request: PrepareRequest, options: Any, *, progress: ProgressSink) -> PrepareResult:
        """Make the bundle available locally (downloading it when allowed); nothing to plan."""
        from segkit.backends.monai_bundle.bundle import ensure_bundle

        opts = _as_options(options)
        self.check(request, opts)
        bundle = ensure_bundle(opts, progress=progress)
        for note in bundle.notes:
            progress.log(note)
        details = {
            "bundle": bundle.name,
            "folder": str(bundle.folder) if bundle.folder else None,
            "weights_sha256": bundle.weights_sha256,
            "notes": list(bundle.notes),
        }
        return PrepareResult(plans_file=None, configurations=(), details=details)

    def train(self, request: TrainRequest, options: Any, *, progress: ProgressSink) -> TrainResult:
        """Fine-tune one fold in two stages (see `segkit.backends.monai_bundle.training`)."""
        from segkit.backends.monai_bundle.training import train_fold

        opts = _as_options(options)
        self.check(request, opts)
        return train_fold(request, opts, progress=progress)

    def predict(self, request: PredictRequest, options: Any, *, progress: ProgressSink) -> PredictResult:
        """Predict the cases with one fold's model or the softmax average of several (``--ensemble``).

        The output folder is created only once every model has loaded, and removed again (when still
        empty) if the first case fails.
        """
        from segkit.backends.monai_bundle.inference import load_model, predict_cases
        from segkit.io import output_dirs

        opts = _as_options(options)
        self.check(request, opts)
        cases = self._select_cases(request.cases, opts)
        paths = [_checkpoint_for(opts, int(f)) for f in request.folds]
        progress.start(f"loading {len(paths)} checkpoint{'s' if len(paths) > 1 else ''}")
        try:
            models = [load_model(p, request.device) for p in paths]
        finally:
            progress.finish()
        checked = _check_bundle_channels(opts, [(m.path, m.meta) for m in models])
        out = Path(request.output_dir)
        with output_dirs([out]):
            files, skipped = predict_cases(
                cases,
                models,
                opts,
                output_dir=out,
                device=request.device,
                overwrite=request.overwrite,
                save_probabilities=request.save_probabilities,
                progress=progress,
            )
            # with every output kept (skip-existing), the manifest of the run that wrote them still holds
            if files or not skipped:
                _write_manifest(out, request, opts, paths, files, skipped, checked)
        return PredictResult(output_dir=out, files=tuple(files), skipped=tuple(skipped))


def _as_options(options: Any) -> MonaiOptions:
    if isinstance(options, MonaiOptions):
        return options
    if options is None:
        return MonaiOptions()
    if isinstance(options, Mapping):
        return MonaiOptions.model_validate(dict(options))
    msg = f"expected MONAI options, got {type(options).__name__}"
    raise ConfigError(msg)


def _check_amp(opts: MonaiOptions, device: str) -> None:
    if opts.amp and device != "cuda":
        msg = f"--amp needs CUDA, but the device is {device}"
        raise ConfigError(msg, hint="drop --amp on this machine (mixed precision only pays off on a GPU)")


def _check_fold_folder(opts: MonaiOptions, fold: int) -> None:
    """Refuse to train into a fold folder that holds an earlier run, unless resuming it or overwriting it.

    An earlier run's checkpoints would otherwise be mixed with this run's: with ``--stage2-epochs 0``,
    inference would pick the old ``stage2_best.pt``.

    Raises:
        OutputError: Checkpoints or a training log of an earlier run, without ``overwrite``; or, resuming
            in place, an old ``stage2_best.pt`` that a run without stage 2 would leave behind.
        ConfigError: ``overwrite`` would delete the checkpoint ``--resume`` continues from.
    """
    fold_dir = Path(opts.output_root) / f"fold{fold}"
    old = ck.run_files(fold_dir)
    if not old:
        return
    resume = ck.format_template(opts.resume, fold) if opts.resume is not None else None
    in_place = resume is not None and ck.is_inside(resume, fold_dir)
    if opts.overwrite:
        if in_place:
            msg = f"--overwrite would delete {resume}, the checkpoint --resume continues from"
            raise ConfigError(msg, hint="resume into another --output-root, or drop --overwrite to continue in place")
        return
    if in_place:
        assert resume is not None
        stage2_best = ck.checkpoint_dir(opts.output_root, fold) / ck.best_name(2)
        # (a stage-2 checkpoint with --stage2-epochs 0 is refused more precisely by _check_weights)
        if opts.stage2_epochs == 0 and stage2_best.is_file() and ck.read_checkpoint(resume).meta.stage == 1:
            msg = f"{stage2_best} would outlive this resumed run, which trains no stage 2 (inference would pick it)"
            raise OutputError(msg, hint="resume into another --output-root, or train stage 2 as well")
        return
    names = ", ".join(p.name for p in old[:3]) + (", ..." if len(old) > 3 else "")
    msg = f"{fold_dir} holds an earlier run ({names}); refusing to mix this run into it"
    raise OutputError(
        msg, hint="pass --overwrite to replace it, --resume one of its checkpoints, or choose another --output-root"
    )


def _check_fits(path: Path, payload: ck.Checkpoint) -> None:
    """The checkpoint's weights fit the SegResNet its metadata describes (as `inference.load_model` builds it).

    Raises:
        DataError: The first tensor whose name or shape differs.
    """
    from segkit.backends.monai_bundle import network as nw

    hint = "the checkpoint was altered or written by another tool; use segkit's own"
    net = nw.build_network(payload.meta.network_args)
    nw.check_fit(net, payload.model, path, network="the network its metadata describes", hint=hint)


def _check_bundle_channels(opts: MonaiOptions, checkpoints: Sequence[tuple[Path, ck.CheckpointMeta]]) -> Path | None:
    """Compare a local bundle's ``channel_def`` with the channel order each checkpoint was trained with.

    Inference feeds channels in the checkpoint's order and needs no bundle; this only catches a checkpoint
    that contradicts the bundle it is said to come from. Checked when the bundle was named explicitly
    (``--bundle-name``/``--bundle-dir``) or is the one the checkpoint records; nothing is downloaded.

    Returns:
        The ``metadata.json`` compared against, or None when there was nothing to compare.

    Raises:
        ConfigError: A checkpoint whose channel order differs from the bundle's.
    """
    from segkit.backends.monai_bundle.bundle import local_channel_order

    local = local_channel_order(opts)
    if local is None:
        return None
    metadata, order = local
    explicit = bool({"bundle_name", "bundle_dir"} & opts.model_fields_set)
    compared = False
    for path, meta in checkpoints:
        if not explicit and meta.bundle_name != opts.bundle_name:
            continue
        trained = meta.channel_order
        if trained != order:
            msg = (
                f"{path}: trained on channels {' '.join(trained)}, but the channel_def of bundle "
                f"{opts.bundle_name} ({metadata}) is {' '.join(order)}"
            )
            hint = "pass the --bundle-name/--bundle-dir it was fine-tuned from, or --bundle-name none (none needed)"
            raise ConfigError(msg, hint=hint)
        compared = True
    return metadata if compared else None


def _checkpoint_for(opts: MonaiOptions, fold: int) -> Path:
    """The checkpoint of `fold`: ``--checkpoint`` with ``{fold}`` replaced, else the fold's best of the last stage."""
    if opts.checkpoint is not None:
        return ck.format_template(opts.checkpoint, fold)
    folder = ck.checkpoint_dir(opts.output_root, fold)
    stage2 = folder / ck.best_name(2)
    return stage2 if stage2.is_file() else folder / ck.best_name(1)


def _planned_network(opts: MonaiOptions) -> Any:
    """The network training will build, or None when the bundle still has to be downloaded."""
    from segkit.backends.monai_bundle import network as nw
    from segkit.backends.monai_bundle.bundle import BUNDLE_NETWORK_ARGS, WEIGHTS, bundle_folder, read_bundle

    folder = bundle_folder(opts)
    if folder is None:
        bundle_args: Mapping[str, Any] = BUNDLE_NETWORK_ARGS
    elif (folder / WEIGHTS).is_file():
        bundle_args = read_bundle(opts).network_args
    else:
        return None
    return nw.build_network(nw.network_args(bundle_args, opts.network_overrides))


def _remap_channels(case: CaseImages, modalities: Sequence[str]) -> CaseImages:
    """Map nnU-Net channel files to modalities through `modalities` (BraTS case folders are named already)."""
    paths = list(case.images.values())
    channels: dict[int, Path] = {}
    for path in paths:
        parts = split_channel_file(Path(path).name)
        if parts is None:
            return case
        channels[parts[1]] = Path(path)
    return CaseImages(case.case_id, {modalities[i]: channels[i] for i in sorted(channels) if i < len(modalities)})


def _write_manifest(
    out: Path,
    request: PredictRequest,
    opts: MonaiOptions,
    checkpoints: list[Path],
    files: list[Path],
    skipped: list[str],
    bundle_checked: Path | None,
) -> None:
    from segkit import __version__
    from segkit.io import write_json

    write_json(
        out / "segkit_predict.json",
        {
            "segkit_version": __version__,
            "backend": "monai",
            "dataset": request.dataset.name,
            "folds": list(request.folds),
            "checkpoints": [str(p) for p in checkpoints],
            "bundle_channel_def_checked": str(bundle_checked) if bundle_checked else None,
            "ensemble": "mean of softmax probabilities" if len(checkpoints) > 1 else None,
            "device": request.device,
            "roi_size": list(opts.roi_size) if opts.roi_size else None,
            "sw_batch_size": opts.sw_batch_size,
            "sw_overlap": opts.sw_overlap,
            "sw_mode": opts.sw_mode,
            "cases": [p.name for p in files],
            "skipped_existing": list(skipped),
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
