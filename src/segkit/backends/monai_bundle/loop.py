"""The epochs of one stage: AdamW with the cosine schedule, DiceCE with gradient accumulation and optional
CUDA AMP, validation Dice per class by sliding window, and the stage's checkpoints and log after each epoch.

Under ``torchrun`` the network is wrapped in DistributedDataParallel for the stage, validation Dice sums are
all-reduced, and only rank 0 writes. torch and monai are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from segkit.backends.monai_bundle import checkpoints as ck
from segkit.backends.monai_bundle import distributed as dd
from segkit.backends.monai_bundle.options import NUM_CLASSES
from segkit.backends.monai_bundle.run import CLASS_NAMES, FoldRun, StageState, checkpoint, write_log
from segkit.backends.monai_bundle.schedule import accumulation_plan, cosine_schedule
from segkit.conventions import REGIONS
from segkit.errors import DataError

if TYPE_CHECKING:
    import torch


def run_stage(
    run: FoldRun,
    net: torch.nn.Module,
    stage: int,
    train_loader: Any,
    val_loader: Any,
    loss_fn: Any,
    resumed: ck.Checkpoint | None,
) -> StageState:
    """Train `stage` from its first epoch, or from the epoch of `resumed` (a checkpoint of this stage)."""
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
    state = StageState(stage)
    if resumed is not None:
        optimizer.load_state_dict(dict(resumed.optimizer or {}))
        # loading restored the old run's learning rate and weight decay; this run's options decide them
        # (the checkpoint contributes AdamW's moments and step counts)
        for group in optimizer.param_groups:
            group["initial_lr"] = opts.stage_lr(stage)
            group["weight_decay"] = opts.weight_decay
        if resumed.scaler:
            scaler.load_state_dict(dict(resumed.scaler))
        meta = resumed.meta
        state.start_epoch = meta.epoch
        state.best_metric = _metric_in(meta.best_metric)
        state.best_epoch = meta.best_epoch
        state.best_wt = meta.best_wt_dice
        state.best_mean = meta.best_mean_dice
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
            training_state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
            }
            saved = checkpoint(run, net, stage, epoch + 1, state, training_state)
            if validated and entry["best"]:
                best = replace(saved, meta=replace(saved.meta, kind="best"))
                ck.save_checkpoint(run.ckpt_dir / ck.best_name(stage), best)
            every = opts.save_checkpoint_frequency
            if every and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
                periodic = replace(saved, meta=replace(saved.meta, kind="epoch"))
                ck.save_checkpoint(run.ckpt_dir / ck.epoch_name(stage, epoch + 1), periodic)
            run.history.append(entry)
            write_log(run)
        run.progress.log(_epoch_line(run.fold, stage, epochs, entry))
    return state


def _metric_in(value: float | None) -> float:
    return float(value) if value is not None and math.isfinite(float(value)) else -math.inf


def _train_epoch(
    run: FoldRun,
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
    run: FoldRun, net: torch.nn.Module, loader: Any, amp: bool, label: str
) -> tuple[dict[str, float | None], float | None]:
    """Dice per foreground class and whole-tumour Dice, averaged over the validation cases.

    A case whose ground truth lacks a class does not count for that class (MONAI's ``ignore_empty``).
    """
    import torch
    from monai.inferers import sliding_window_inference
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    opts = run.opts
    roi = opts.roi_size or run.geometry.patch_size
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
    dd.all_reduce(run.dist, sums, counts)
    means = [float(s / c) if c > 0 else None for s, c in zip(sums.tolist(), counts.tolist(), strict=True)]
    return dict(zip(CLASS_NAMES, means[:-1], strict=True)), means[-1]


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
