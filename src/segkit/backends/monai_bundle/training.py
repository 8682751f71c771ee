"""Two-stage fine-tuning of one fold: stage 1 trains decoder and head with the encoder frozen, stage 2 trains
everything, starting from stage 1's best weights.

This module sets a fold up (process group, bundle, network, geometry, resume, data loaders) and runs the
stages; the epochs are in `loop`, the fold folder, log and checkpoint metadata in `run`, the schedule in
`schedule`, the ``torchrun`` plumbing in `distributed`, the crop size and spacing in `geometry`.

torch and monai are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.backends.monai_bundle import checkpoints as ck
from segkit.backends.monai_bundle import distributed as dd
from segkit.backends.monai_bundle.geometry import resolve_geometry, run_plans_identifier
from segkit.backends.monai_bundle.loop import run_stage
from segkit.backends.monai_bundle.options import NUM_CLASSES, MonaiOptions
from segkit.backends.monai_bundle.run import FoldRun, StageState, adopt_resumed_best, history_until, resumed_log
from segkit.progress import NullProgress, ProgressSink

if TYPE_CHECKING:
    from segkit.backends.base import TrainRequest, TrainResult
    from segkit.backends.monai_bundle.bundle import Bundle
    from segkit.backends.monai_bundle.distributed import DistInfo


def train_fold(request: TrainRequest, opts: MonaiOptions, *, progress: ProgressSink) -> TrainResult:
    """Train one fold in two stages; see the module docstring.

    Under ``torchrun`` this joins the process group for the duration of the fold; rank 0 downloads a
    missing bundle while the other ranks wait.

    Args:
        request: The fold, device and resolved run config.
        opts: Validated options (already `check`ed).
        progress: Receives a bar per epoch (loss), a bar for validation and a log line per epoch (Dice).

    Raises:
        SegkitError: Bad data found while caching, an unusable bundle, or a framework failure (chained).
    """
    from segkit.backends.monai_bundle.bundle import ensure_bundle
    from segkit.io import output_dirs

    assert isinstance(request.fold, int)
    info = dd.distributed_info(request.device)
    sink = progress if info.is_main else NullProgress()
    fold_dir = Path(opts.output_root) / f"fold{request.fold}"
    try:
        # rank 0 checks that the fold folder can be written before any work; a run that stops before
        # its first checkpoint removes the folders this created
        with output_dirs([fold_dir]) if info.is_main else contextlib.nullcontext():
            if info.is_main:
                bundle = ensure_bundle(opts, progress=sink)
                dd.barrier(info)
            else:
                dd.barrier(info)
                bundle = ensure_bundle(opts, progress=sink)
            return _train(request, opts, bundle, sink, info)
    finally:
        dd.leave_group(info)


def _train(
    request: TrainRequest, opts: MonaiOptions, bundle: Bundle, progress: ProgressSink, info: DistInfo
) -> TrainResult:
    import torch

    from segkit.backends.base import TrainResult
    from segkit.backends.monai_bundle import network as nw

    assert isinstance(request.fold, int)
    fold = request.fold
    fold_dir = Path(opts.output_root) / f"fold{fold}"
    device = dd.device_for(request.device, info)

    torch.manual_seed(opts.seed)
    args = nw.network_args(bundle.network_args, opts.network_overrides)
    net = nw.build_network(args)
    loaded = None
    if bundle.weights is not None:
        loaded = nw.load_bundle_weights(net, bundle.weights)
        progress.log(
            f"bundle {bundle.name}{' ' + bundle.version if bundle.version else ''}: {loaded[0]} of {loaded[1]} "
            f"tensors loaded; head {nw.HEAD} new ({NUM_CLASSES} classes)"
        )
    else:
        progress.log(f"no bundle: SegResNet({_short_args(args)}) initialised randomly")
    for note in bundle.notes:
        progress.log(note)
    if opts.load_weights is not None:
        source = ck.format_template(opts.load_weights, fold)
        nw.load_strict(net, nw.read_state_dict(source, what="weights"), source)
        progress.log(f"fold {fold}: weights loaded from {source}")

    plans = run_plans_identifier(request.config_yaml)
    geometry = resolve_geometry(opts, request.dataset.preprocessed_dir, args, plans=plans)
    progress.log(f"fold {fold}: {geometry.describe()}")
    resume = ck.format_template(opts.resume, fold) if opts.resume is not None else None
    run = FoldRun(
        fold,
        opts,
        device,
        info,
        progress,
        args,
        bundle,
        loaded,
        fold_dir,
        geometry,
        request.config_yaml,
        resume,
        dataset=request.dataset.name,
    )
    resumed: ck.Checkpoint | None = None
    if resume is not None:
        resumed = ck.read_checkpoint(resume)
        nw.load_strict(net, resumed.model, resume)
        meta = resumed.meta
        run.history = history_until(resumed_log(resume, fold_dir), meta.stage, meta.epoch)
        progress.log(f"fold {fold}: resuming from {resume} (stage {meta.stage} epoch {meta.epoch})")
    net.to(device)

    # refused before the first case is cached: `check` could not test this when the bundle was still to download
    encoder = nw.stage1_frozen(net, opts.encoder_prefix) if _enters_stage1(opts, resumed) else []
    train_loader, val_loader, n_train, n_val = _loaders(run, request)
    loss_fn = _loss(opts, device)
    results: dict[int, StageState] = {}
    ran_stage1 = False
    for stage in (1, 2):
        epochs = opts.stage_epochs(stage)
        if epochs == 0 or (resumed is not None and stage < resumed.meta.stage):
            continue
        if stage == 2 and ran_stage1:
            best1 = run.ckpt_dir / ck.best_name(1)
            dd.barrier(info)  # rank 0 has written (or copied) stage1_best.pt
            if best1.is_file():
                net.load_state_dict(dict(ck.read_checkpoint(best1).model))
                progress.log(f"fold {fold}: stage 2 starts from {best1}")
            else:
                progress.log(f"fold {fold}: stage 2 starts from the last stage-1 weights (no {best1.name})")
        frozen = encoder if stage == 1 else []
        trainable = nw.set_trainable(net, frozen)
        progress.log(
            f"fold {fold} stage {stage}: {n_train} training / {n_val} validation cases, "
            f"{trainable:,} trainable parameters" + (f" (frozen: {', '.join(opts.encoder_prefix)})" if frozen else "")
        )
        state_in = resumed if (resumed is not None and resumed.meta.stage == stage) else None
        results[stage] = run_stage(run, net, stage, train_loader, val_loader, loss_fn, state_in)
        if state_in is not None:
            adopt_resumed_best(run, stage, results[stage])
        ran_stage1 = ran_stage1 or stage == 1
        resumed = None if state_in is not None else resumed
    dd.barrier(info)
    last = max(results) if results else None
    metrics: dict[str, float] = {}
    for stage, state in results.items():
        if (best_mean := state.best_mean) is not None:
            metrics[f"stage{stage}_best_dice"] = best_mean
    if last is not None:
        mean = results[last].best_mean
        if mean is not None:
            metrics["validation_dice"] = mean
        wt = results[last].best_wt
        if wt is not None:
            metrics["validation_wt_dice"] = wt
    best = run.ckpt_dir / ck.best_name(last) if last is not None else None
    return TrainResult(
        fold=fold,
        model_dir=Path(opts.output_root),
        checkpoint=best if best is not None and best.is_file() else None,
        log_file=run.log_path if run.log_path.is_file() else None,
        metrics=metrics,
    )


def _enters_stage1(opts: MonaiOptions, resumed: ck.Checkpoint | None) -> bool:
    """Whether the run trains (or at least resumes into) stage 1: a stage-2 checkpoint skips it."""
    return opts.stage1_epochs > 0 and (resumed is None or resumed.meta.stage == 1)


def _short_args(args: Mapping[str, Any]) -> str:
    keys = ("init_filters", "blocks_down", "blocks_up", "dropout_prob")
    return ", ".join(f"{k}={args[k]}" for k in keys if k in args)


def _loss(opts: MonaiOptions, device: str) -> Any:
    import torch
    from monai.losses import DiceCELoss

    weight = torch.tensor(opts.class_weights, dtype=torch.float32, device=device) if opts.class_weights else None
    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=True, batch=True, weight=weight)


def _loaders(run: FoldRun, request: TrainRequest) -> tuple[Any, Any, int, int]:
    """CacheDatasets and loaders of the fold (training crops; whole validation volumes, sharded by rank)."""
    import torch
    from monai.data import CacheDataset, DataLoader

    from segkit.backends.monai_bundle import data as dm

    opts, info = run.opts, run.dist
    split = opts.split_json or request.dataset.splits_file
    train_ids, val_ids = dm.read_fold(split, run.fold)
    source = f"{Path(split).name} fold {run.fold}"
    train_cases = dm.labelled_cases(train_ids, roots=opts.data_root, dataset=request.dataset, source=source)
    val_cases = dm.labelled_cases(val_ids, roots=opts.data_root, dataset=request.dataset, source=source)
    order = run.bundle.channel_order
    train_records = [dm.record(c.images, order, label=c.label, case_id=c.case_id) for c in train_cases]
    val_records = [dm.record(c.images, order, label=c.label, case_id=c.case_id) for c in val_cases]
    train_tf = dm.training_transforms(
        run.geometry.spacing, run.geometry.patch_size, num_samples=opts.num_samples, crop_ratios=opts.crop_ratios
    )
    train_tf.set_random_state(seed=opts.seed + info.rank)
    cpu = not run.device.startswith("cuda")
    workers = opts.num_workers if opts.num_workers is not None else (0 if cpu else min(4, os.cpu_count() or 1))
    # One caching thread: MONAI's LoadImaged shares its reader between CacheDataset's threads, and with
    # several threads a stacked 4-channel image now and then comes back as a 1-channel label (seen with 4).
    cache_threads = 1
    val_shard = val_records[info.rank :: info.world_size]
    rate = _cache_rate(run, train_cases[0].images[order[0]], len(train_records) + len(val_shard))
    cached = int(len(train_records) * rate) + int(len(val_shard) * rate)
    run.progress.start(f"fold {run.fold}: loading and caching {cached} of {len(train_records) + len(val_shard)} cases")
    try:
        with dm.segkit_errors():
            train_ds = CacheDataset(train_records, train_tf, cache_rate=rate, num_workers=cache_threads, progress=False)
            val_ds = CacheDataset(
                val_shard,
                dm.deterministic_transforms(run.geometry.spacing, with_label=True),
                cache_rate=rate,
                num_workers=cache_threads,
                progress=False,
            )
    finally:
        run.progress.finish()
    sampler: Any = None
    if info.enabled:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(
            train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=opts.seed
        )
    generator = torch.Generator().manual_seed(opts.seed)
    train_loader = DataLoader(
        train_ds,
        batch_size=opts.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        pin_memory=not cpu,
        persistent_workers=workers > 0,
    )
    val_loader = DataLoader(val_ds, batch_size=1, shuffle=False, num_workers=workers, pin_memory=not cpu)
    return train_loader, val_loader, len(train_records), len(val_records)


def _cache_rate(run: FoldRun, first_image: Path, n_cases: int) -> float:
    """``cache_rate``, or when unset the share of the cases that fits in half the available RAM (logged)."""
    from segkit.backends.monai_bundle import data as dm

    opts = run.opts
    if opts.cache_rate is not None:
        return opts.cache_rate
    case_bytes = dm.cached_case_bytes(first_image, run.geometry.spacing, run.geometry.patch_size)
    available = dm.available_memory()
    assumed = available is None
    if available is None:
        available = dm.FALLBACK_AVAILABLE_MEMORY
    # every torchrun rank on this machine holds its own cache
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", str(run.dist.world_size)) or 1)
    rate = dm.auto_cache_rate(n_cases, case_bytes, available, processes=processes)
    run.progress.log(
        f"fold {run.fold}: cache_rate {rate:.2f} (~{case_bytes / 1e6:.0f} MB per case, "
        f"{available / 1e9:.1f} GB {'assumed' if assumed else 'available'}"
        f"{f' for {processes} processes' if processes > 1 else ''}; set --cache-rate to choose)"
    )
    return rate
