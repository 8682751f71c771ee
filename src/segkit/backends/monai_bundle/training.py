"""Two-stage fine-tuning of one fold: stage 1 trains decoder and head with the encoder frozen, stage 2 trains
everything.

Per stage: AdamW over the trainable parameters with cosine decay over the stage's epochs, DiceCE on the
5-class softmax (``class_weights``), optional CUDA AMP, gradient accumulation, validation Dice per class
by sliding window on the fold's validation cases, the best checkpoint (``stage<s>_best.pt``) and periodic
ones (``stage<s>_epoch<n>.pt``), and ``metrics/training_log.json`` rewritten after every epoch. Stage 2
starts from stage 1's best weights.

Nothing is written into ``<output_root>/fold<k>/`` before the first checkpoint: a run refused while
caching (bad labels) leaves no folder, and with ``overwrite`` an earlier run's files are removed only then.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the network is wrapped in DistributedDataParallel, every rank
draws its own batches through a DistributedSampler, validation is sharded and its Dice sums all-reduced,
and only rank 0 writes files or reports progress.

torch and monai are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.backends.monai_bundle import checkpoints as ck
from segkit.backends.monai_bundle.options import NUM_CLASSES, MonaiOptions
from segkit.conventions import LABELS, REGIONS
from segkit.errors import DataError
from segkit.progress import NullProgress, ProgressSink

if TYPE_CHECKING:
    import torch

    from segkit.backends.base import TrainRequest, TrainResult
    from segkit.backends.monai_bundle.bundle import Bundle

CLASS_NAMES = tuple(LABELS[i] for i in range(1, NUM_CLASSES))
"""Foreground classes scored during validation: NETC, SNFH, ET, RC."""


def accumulation_plan(n_batches: int, accum: int) -> list[tuple[float, bool]]:
    """Loss scale and whether to step the optimizer, for each batch of an epoch.

    Batches are grouped by `accum`; each loss is divided by the size of its group (so a group's gradient
    is the mean over its batches, including a shorter last group) and the optimizer steps after the last
    batch of every group. Gradients are zeroed only after a step.

    >>> accumulation_plan(5, 2)
    [(0.5, False), (0.5, True), (0.5, False), (0.5, True), (1.0, True)]
    """
    plan = []
    for i in range(n_batches):
        start = (i // accum) * accum
        size = min(accum, n_batches - start)
        plan.append((1.0 / size, (i + 1) % accum == 0 or i + 1 == n_batches))
    return plan


def cosine_factor(epoch: int, epochs: int) -> float:
    """Learning-rate factor of `epoch` (0-based) in a cosine decay to 0 over `epochs` epochs.

    >>> cosine_factor(0, 4), cosine_factor(2, 4), cosine_factor(4, 4)
    (1.0, 0.5, 0.0)
    """
    return (1.0 + math.cos(math.pi * epoch / epochs)) / 2.0 if epochs > 0 else 1.0


def cosine_schedule(optimizer: Any, epochs: int, *, start_epoch: int = 0) -> Any:
    """A scheduler that sets each group's lr to ``initial_lr * cosine_factor(epoch, epochs)`` (closed form).

    Starting at `start_epoch` (a resumed run) the optimizer's groups must hold ``initial_lr``; the lr is
    set for that epoch at once, exactly as an uninterrupted run reaches it (no recursion on the old lr).
    """
    import torch

    def factor(epoch: int) -> float:
        return cosine_factor(epoch, epochs)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=start_epoch - 1)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a ``torchrun`` job (world size 1 without one)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """Whether DistributedDataParallel is used."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the only one that writes files and reports progress."""
        return self.rank == 0


def distributed_info(device: str) -> DistInfo:
    """Join the ``torchrun`` process group described by ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device == "cuda":
        torch.cuda.set_device(local)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
        owns = True
    return DistInfo(world, rank, local, owns)


def _barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


@dataclass
class _StageState:
    """What one stage carries from epoch to epoch (restored on resume)."""

    stage: int
    best_metric: float = -math.inf  # the `best_metric` option's score at the best epoch
    best_epoch: int = 0
    best_mean: float | None = None
    best_wt: float | None = None
    start_epoch: int = 0
    improved_here: bool = False  # this run wrote stage<s>_best.pt (not only the run it resumed)


@dataclass
class _Run:
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
    info = distributed_info(request.device)
    sink = progress if info.is_main else NullProgress()
    fold_dir = Path(opts.output_root) / f"fold{request.fold}"
    try:
        # rank 0 checks that the fold folder can be written before any work; a run that stops before
        # its first checkpoint removes the folders this created
        with output_dirs([fold_dir]) if info.is_main else contextlib.nullcontext():
            if info.is_main:
                bundle = ensure_bundle(opts, progress=sink)
                _barrier(info)
            else:
                _barrier(info)
                bundle = ensure_bundle(opts, progress=sink)
            return _train(request, opts, bundle, sink, info)
    finally:
        if info.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _device_for(request_device: str, info: DistInfo) -> str:
    if request_device == "cuda" and info.enabled:
        return f"cuda:{info.local_rank}"
    return request_device


def _train(
    request: TrainRequest, opts: MonaiOptions, bundle: Bundle, progress: ProgressSink, info: DistInfo
) -> TrainResult:
    import torch

    from segkit.backends.base import TrainResult
    from segkit.backends.monai_bundle import network as nw

    assert isinstance(request.fold, int)
    fold = request.fold
    fold_dir = Path(opts.output_root) / f"fold{fold}"
    device = _device_for(request.device, info)

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

    resume = ck.format_template(opts.resume, fold) if opts.resume is not None else None
    run = _Run(
        fold,
        opts,
        device,
        info,
        progress,
        args,
        bundle,
        loaded,
        fold_dir,
        request.config_yaml,
        resume,
        dataset=request.dataset.name,
    )
    resumed: dict[str, Any] | None = None
    if resume is not None:
        resumed = ck.read_checkpoint(resume)
        nw.load_strict(net, resumed["model"], resume)
        meta = resumed["meta"]
        run.history = _history_until(_resumed_log(resume, fold_dir), int(meta["stage"]), int(meta["epoch"]))
        progress.log(f"fold {fold}: resuming from {resume} (stage {meta['stage']} epoch {meta['epoch']})")
    net.to(device)

    # refused before the first case is cached: `check` could not test this when the bundle was still to download
    encoder = nw.stage1_frozen(net, opts.encoder_prefix) if _enters_stage1(opts, resumed) else []
    train_loader, val_loader, n_train, n_val = _loaders(run, request)
    loss_fn = _loss(opts, device)
    results: dict[int, _StageState] = {}
    ran_stage1 = False
    for stage in (1, 2):
        epochs = opts.stage_epochs(stage)
        resume_meta = resumed["meta"] if resumed is not None else None
        if epochs == 0 or (resume_meta is not None and stage < int(resume_meta["stage"])):
            continue
        if stage == 2 and ran_stage1:
            best1 = run.ckpt_dir / ck.best_name(1)
            _barrier(info)  # rank 0 has written (or copied) stage1_best.pt
            if best1.is_file():
                net.load_state_dict(ck.read_checkpoint(best1)["model"])
                progress.log(f"fold {fold}: stage 2 starts from {best1}")
            else:
                progress.log(f"fold {fold}: stage 2 starts from the last stage-1 weights (no {best1.name})")
        frozen = encoder if stage == 1 else []
        trainable = nw.set_trainable(net, frozen)
        progress.log(
            f"fold {fold} stage {stage}: {n_train} training / {n_val} validation cases, "
            f"{trainable:,} trainable parameters" + (f" (frozen: {', '.join(opts.encoder_prefix)})" if frozen else "")
        )
        state_in = resumed if (resumed is not None and int(resumed["meta"]["stage"]) == stage) else None
        results[stage] = _run_stage(run, net, stage, train_loader, val_loader, loss_fn, state_in)
        if state_in is not None:
            _adopt_resumed_best(run, stage, results[stage])
        ran_stage1 = ran_stage1 or stage == 1
        resumed = None if state_in is not None else resumed
    _barrier(info)
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


def _enters_stage1(opts: MonaiOptions, resumed: Mapping[str, Any] | None) -> bool:
    """Whether the run trains (or at least resumes into) stage 1: a stage-2 checkpoint skips it."""
    return opts.stage1_epochs > 0 and (resumed is None or int(resumed["meta"]["stage"]) == 1)


def _resumed_log(resume: Path, fold_dir: Path) -> Path | None:
    """The training log of the run a checkpoint came from (``fold<k>/metrics`` beside ``fold<k>/checkpoints``).

    The fold folder's own log counts only when the checkpoint lies inside that folder (the run resumes
    in place); a log of any other run there is about to be replaced (``overwrite``).
    """
    source = resume.parent.parent / "metrics" / "training_log.json"
    if source.is_file():
        return source
    own = fold_dir / "metrics" / "training_log.json"
    return own if ck.is_inside(resume, fold_dir) and own.is_file() else None


def _adopt_resumed_best(run: _Run, stage: int, state: _StageState) -> None:
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
    meta = ck.read_checkpoint(source)["meta"]
    if int(meta["stage"]) != stage or int(meta["fold"]) != run.fold:
        return
    run.prepare_folder()
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
    run.progress.log(
        f"fold {run.fold} stage {stage}: no epoch beat the resumed best (epoch {meta['epoch']}); copied {source}"
    )


def _short_args(args: Mapping[str, Any]) -> str:
    keys = ("init_filters", "blocks_down", "blocks_up", "dropout_prob")
    return ", ".join(f"{k}={args[k]}" for k in keys if k in args)


def _loss(opts: MonaiOptions, device: str) -> Any:
    import torch
    from monai.losses import DiceCELoss

    weight = torch.tensor(opts.class_weights, dtype=torch.float32, device=device) if opts.class_weights else None
    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=True, batch=True, weight=weight)


def _loaders(run: _Run, request: TrainRequest) -> tuple[Any, Any, int, int]:
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
        opts.train_spacing, opts.train_patch_size, num_samples=opts.num_samples, crop_ratios=opts.crop_ratios
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
                dm.deterministic_transforms(opts.train_spacing, with_label=True),
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


def _cache_rate(run: _Run, first_image: Path, n_cases: int) -> float:
    """``cache_rate``, or when unset the share of the cases that fits in half the available RAM (logged)."""
    from segkit.backends.monai_bundle import data as dm

    opts = run.opts
    if opts.cache_rate is not None:
        return opts.cache_rate
    case_bytes = dm.cached_case_bytes(first_image, opts.train_spacing, opts.train_patch_size)
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


def _run_stage(
    run: _Run,
    net: torch.nn.Module,
    stage: int,
    train_loader: Any,
    val_loader: Any,
    loss_fn: Any,
    resumed: dict[str, Any] | None,
) -> _StageState:
    import torch

    opts, info = run.opts, run.dist
    epochs = opts.stage_epochs(stage)
    model: torch.nn.Module = net
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # re-wrapped per stage: DDP registers gradient hooks only for parameters that require grad
        ids = [info.local_rank] if run.device.startswith("cuda") else None
        model = DistributedDataParallel(net, device_ids=ids)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.stage_lr(stage), weight_decay=opts.weight_decay)
    amp = opts.amp and run.device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    state = _StageState(stage)
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        # loading restored the old run's learning rate and weight decay; this run's options decide them
        # (the checkpoint contributes AdamW's moments and step counts)
        for group in optimizer.param_groups:
            group["initial_lr"] = opts.stage_lr(stage)
            group["weight_decay"] = opts.weight_decay
        if resumed.get("scaler"):
            scaler.load_state_dict(resumed["scaler"])
        meta = resumed["meta"]
        state.start_epoch = int(meta["epoch"])
        state.best_metric = _metric_in(meta.get("best_metric"))
        state.best_epoch = int(meta.get("best_epoch") or 0)
        state.best_wt = meta.get("best_wt_dice")
        state.best_mean = meta.get("best_mean_dice")
    # The checkpoint's scheduler state is not restored: it holds the old run's epoch count, and a run resumed
    # with another --stage<s>-epochs would follow a stale cosine (lr 0 past the old count). The closed form
    # positioned at the resumed epoch is the schedule an uninterrupted run of this length follows.
    scheduler = cosine_schedule(optimizer, epochs, start_epoch=state.start_epoch)
    for epoch in range(state.start_epoch, epochs):
        started = time.perf_counter()
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch + 1000 * stage)
        loss, steps = _train_epoch(run, model, stage, epoch, train_loader, loss_fn, optimizer, scaler, amp)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        entry: dict[str, Any] = {
            "stage": stage,
            "epoch": epoch + 1,
            "train_loss": loss,
            "lr": lr,
            "optimizer_steps": steps,
        }
        validated = (epoch + 1) % opts.val_interval == 0 or epoch + 1 == epochs
        metric = -math.inf
        if validated:
            dice, wt = _validate(run, net, val_loader, amp, f"fold {run.fold} stage {stage} epoch {epoch + 1}")
            finite = [d for d in dice.values() if d is not None]
            mean = sum(finite) / len(finite) if finite else None
            entry.update({"dice": dice, "mean_dice": mean, "wt_dice": wt})
            metric = _metric_in(mean if opts.best_metric == "mean_dice" else wt)
            improved = metric > state.best_metric or state.best_epoch == 0
            if improved:
                state.best_metric, state.best_epoch = metric, epoch + 1
                state.best_mean, state.best_wt = mean, wt
                state.improved_here = True
            entry["best"] = improved
        entry["seconds"] = round(time.perf_counter() - started, 2)
        if info.is_main:
            run.prepare_folder()
            payload = _payload(run, net, stage, epoch + 1, state, optimizer, scheduler, scaler)
            if validated and entry["best"]:
                ck.save_checkpoint(run.ckpt_dir / ck.best_name(stage), _with_kind(payload, "best"))
            every = opts.save_checkpoint_frequency
            if every and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
                ck.save_checkpoint(run.ckpt_dir / ck.epoch_name(stage, epoch + 1), _with_kind(payload, "epoch"))
            run.history.append(entry)
            _write_log(run)
        run.progress.log(_epoch_line(run.fold, stage, epochs, entry))
    return state


def _metric_in(value: Any) -> float:
    return float(value) if value is not None and math.isfinite(float(value)) else -math.inf


def _train_epoch(
    run: _Run,
    model: torch.nn.Module,
    stage: int,
    epoch: int,
    loader: Any,
    loss_fn: Any,
    optimizer: Any,
    scaler: Any,
    amp: bool,
) -> tuple[float, int]:
    """One pass over the training crops; returns (mean loss, optimizer steps)."""
    import torch

    opts = run.opts
    model.train()
    n = len(loader)
    plan = accumulation_plan(n, opts.stage_accum(stage))
    run.progress.start(f"fold {run.fold} stage {stage} epoch {epoch + 1}/{opts.stage_epochs(stage)}", total=n)
    optimizer.zero_grad(set_to_none=True)
    total, steps = 0.0, 0
    for i, batch in enumerate(loader):
        scale, step = plan[i]
        x = batch["image"].to(run.device, non_blocking=True)
        y = batch["label"].to(run.device, non_blocking=True)
        # without a step, DDP must not all-reduce the gradients of this micro-batch yet
        sync: Any = model.no_sync() if run.dist.enabled and not step else contextlib.nullcontext()  # type: ignore[operator]
        with sync:
            with torch.autocast("cuda", enabled=amp):
                loss = loss_fn(model(x), y)
            scaler.scale(loss * scale).backward()
        if step:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            msg = f"fold {run.fold} stage {stage}: the loss became {value} in epoch {epoch + 1}"
            raise DataError(msg, hint="lower the learning rate, or check the cases with `segkit data check`")
        total += value
        run.progress.advance(loss=value)
    run.progress.finish()
    return (total / n if n else float("nan")), steps


def _validate(
    run: _Run, net: torch.nn.Module, loader: Any, amp: bool, label: str
) -> tuple[dict[str, float | None], float | None]:
    """Dice per foreground class and whole-tumour Dice, averaged over the validation cases.

    A case whose ground truth lacks a class does not count for that class (MONAI's ``ignore_empty``).
    """
    import torch
    from monai.inferers import sliding_window_inference
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    opts = run.opts
    roi = opts.roi_size or opts.train_patch_size
    wt_labels = torch.tensor(REGIONS["WT"], device=run.device)
    sums = torch.zeros(NUM_CLASSES, dtype=torch.float64, device=run.device)  # 4 classes + WT
    counts = torch.zeros(NUM_CLASSES, dtype=torch.float64, device=run.device)
    net.eval()
    run.progress.start(f"{label}: validation", total=len(loader))
    with torch.inference_mode():
        for batch in loader:
            x = batch["image"].to(run.device)
            y = batch["label"].to(run.device).long()
            with torch.autocast("cuda", enabled=amp):
                logits = sliding_window_inference(
                    x, roi, opts.sw_batch_size, net, overlap=opts.sw_overlap, mode=opts.sw_mode
                )
            pred = torch.as_tensor(logits).float().argmax(1, keepdim=True)
            per_class = compute_dice(
                one_hot(pred, NUM_CLASSES), one_hot(torch.as_tensor(y), NUM_CLASSES), include_background=False
            )
            wt = compute_dice(torch.isin(pred, wt_labels).float(), torch.isin(torch.as_tensor(y), wt_labels).float())
            values = torch.cat([per_class, wt], dim=1).double()  # (B, 5): NETC SNFH ET RC WT
            ok = ~torch.isnan(values)
            sums += torch.where(ok, values, torch.zeros_like(values)).sum(0)
            counts += ok.double().sum(0)
            run.progress.advance(wt_dice=float(sums[-1] / counts[-1]) if counts[-1] > 0 else float("nan"))
    run.progress.finish()
    if run.dist.enabled:
        import torch.distributed as dist

        dist.all_reduce(sums)
        dist.all_reduce(counts)
    means = [float(s / c) if c > 0 else None for s, c in zip(sums.tolist(), counts.tolist(), strict=True)]
    return dict(zip(CLASS_NAMES, means[:-1], strict=True)), means[-1]


def _payload(
    run: _Run,
    net: torch.nn.Module,
    stage: int,
    epoch: int,
    state: _StageState,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
) -> dict[str, Any]:
    import monai
    import torch

    from segkit import __version__

    meta = {
        "stage": stage,
        "epoch": epoch,
        "fold": run.fold,
        "dataset": run.dataset,  # inference refuses to stand this model in for another dataset
        "best_metric": state.best_metric if math.isfinite(state.best_metric) else None,
        "best_epoch": state.best_epoch,
        "best_metric_name": run.opts.best_metric,
        "best_mean_dice": state.best_mean,
        "best_wt_dice": state.best_wt,
        "network": {"name": "SegResNet", "args": run.network_args},
        "channel_order": list(run.bundle.channel_order),
        "labels": {str(k): v for k, v in LABELS.items()},
        "spacing": list(run.opts.train_spacing),
        "patch_size": list(run.opts.train_patch_size),
        "encoder_prefix": list(run.opts.encoder_prefix),
        "bundle": {
            "name": run.bundle.name,
            "version": run.bundle.version,
            "weights_sha256": run.bundle.weights_sha256,
            "tensors_loaded": run.loaded[0] if run.loaded else 0,
            "tensors_total": run.loaded[1] if run.loaded else len(net.state_dict()),
        },
        "segkit_version": __version__,
        "monai_version": monai.__version__,
        "torch_version": str(torch.__version__),
    }
    return {
        "meta": meta,
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
    }


def _with_kind(payload: dict[str, Any], kind: str) -> dict[str, Any]:
    return {**payload, "meta": {**payload["meta"], "kind": kind}}


def _history_until(path: Path | None, stage: int, epoch: int) -> list[dict[str, Any]]:
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


def _write_log(run: _Run) -> None:
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
            "classes": list(CLASS_NAMES),
            "best": best,
            "epochs": run.history,
        },
    )


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def _epoch_line(fold: int, stage: int, epochs: int, entry: Mapping[str, Any]) -> str:
    parts = [f"fold {fold} stage {stage} epoch {entry['epoch']}/{epochs}", f"loss {_fmt(entry['train_loss'])}"]
    if "dice" in entry:
        dice = " ".join(f"{name} {_fmt(entry['dice'][name])}" for name in CLASS_NAMES)
        parts += [f"Dice {dice}", f"mean {_fmt(entry['mean_dice'])}", f"WT {_fmt(entry['wt_dice'])}"]
        if entry.get("best"):
            parts.append("best")
    parts.append(f"{entry['seconds']:.1f} s")
    return "  ".join(parts)
