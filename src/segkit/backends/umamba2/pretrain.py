"""Self-supervised pretraining of UMamba2 (the recipe's step 1): masked and noised volumes restored by the network.

Imported only inside nnU-Net processes (it imports torch and nnunetv2 at module level). The recipe pretrained
with MONAI's DAE code (masked-image modelling with denoising); this trainer does the same inside nnU-Net's
pipeline (its preprocessed data, patch sampler, checkpoints and log), on the whole segmentation network, so
that its weights load into the stage-1 network by name and shape.

What the network sees, per patch of the fold's training images (``train`` and ``unlabeled`` ids of
``splits_final.json``; the segmentation is never read, unlabelled cases only carry a placeholder):

* **masking**: the patch is tiled into cubes of ``mask_patch_size`` voxels (16) and random cubes, chosen per
  sample, are masked until ``mask_ratio`` (0.3) of the voxels are (`cube_mask`, DAE's ``ceil(ratio * n)`` of
  ``n`` cubes when the size divides the patch); their voxels are **set to 0** in every channel,
  as DAE's masked-image modelling does (0 is also the mean of a z-score normalised image, so a masked cube
  carries no intensity information);
* **noise**: additive Gaussian noise of standard deviation ``noise_std`` over the whole patch, masked cubes
  included. The recipe's command does not set DAE's ``--variance``, whose default 0.1 gives
  ``noise_std = sqrt(0.1) = 0.316`` in normalised intensity units.

The target is the clean patch as nnU-Net's data loader gives it: normalised, spatially augmented (rotation,
scaling, mirroring) but without nnU-Net's intensity augmentations, which would otherwise end up in the
target. The loss is the **L1** distance over **all voxels** (the recipe's ``--loss_type=all_img``, DAE's L1):
masked cubes teach inpainting and the rest denoising, so every voxel gives a gradient; L1 rather than MSE
because it is DAE's and does not let the few high-intensity voxels (tumour, vessels) dominate.
``masked_loss_only = True`` takes DAE's ``mask_only`` variant instead (the L1 over masked voxels).

The reconstruction head is a separate 1x1(x1) convolution from the last decoder stage to the input channels,
stored in the network as ``reconstruction_head``; the segmentation heads are built (so that the network is
exactly stage 1's) but unused. Loaded into stage 1 with `segkit.backends.umamba2.pretrained.apply_pretrained`
(without ``--keep-heads``), the encoder, the Mamba layer and the decoder load, the segmentation heads stay
freshly initialised and ``reconstruction_head.*`` is reported as unused.

Schedule (the recipe's DAE command): AdamW (betas 0.9/0.999, weight decay 0.05, none on biases and norm
weights), learning rate rising linearly from ``warmup_lr`` (5e-7) to ``initial_lr`` (5e-5) over
``warmup_epochs`` (4), then a cosine to ``min_lr`` (5e-6) at the last epoch, for 200 epochs; the rate is set
per epoch like nnU-Net's own schedule (DAE sets it per iteration), so resuming restores it exactly. Gradient
accumulation and clipping are `nnUNetTrainerUMamba2`'s (`Accumulator`, `micro_batch_step`).

Logging: nnU-Net's log and ``progress.png`` with the train and validation reconstruction losses per epoch
(validation on the fold's ``val`` images with masks and noise from a fixed seed, so epochs compare); there
is no pseudo-Dice (no segmentation output), and ``checkpoint_best.pth`` is the lowest validation loss. nnU-Net's
final segmentation validation is skipped. Single process only (nnU-Net's DDP would reject the unused heads).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from time import time
from typing import Any

import numpy as np
import torch
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.logging.nnunet_logger import LocalLogger
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch import nn
from torch.optim.lr_scheduler import _LRScheduler

from segkit.backends.umamba2.trainer import Accumulator, micro_batch_step, nnUNetTrainerUMamba2

HEAD = "reconstruction_head"
"""Attribute (and state-dict prefix) of the reconstruction head in the pretraining network."""

# The recipe's pretraining command (seed 003: DAE's main_runner.py) and DAE's defaults it leaves alone.
RECIPE_EPOCHS = 200
RECIPE_INITIAL_LR = 5e-5
RECIPE_MIN_LR = 5e-6
RECIPE_WARMUP_LR = 5e-7
RECIPE_WARMUP_EPOCHS = 4
RECIPE_WEIGHT_DECAY = 0.05  # DAE's default
RECIPE_NOISE_STD = math.sqrt(0.1)  # DAE's default --variance 0.1

_INTENSITY_AUGMENTATIONS = (
    GaussianNoiseTransform,
    GaussianBlurTransform,
    MultiplicativeBrightnessTransform,
    ContrastTransform,
    SimulateLowResolutionTransform,
    GammaTransform,
)


# ---------------------------------------------------------------------------------------------------------
# Validation of the constants (segkit's options validate with these, before any work)


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        msg = f"{name} must be a number, not {value!r}"
        raise ValueError(msg)
    number = float(value)
    if not math.isfinite(number):
        msg = f"{name} must be finite, not {value!r}"
        raise ValueError(msg)
    return number


def _integer(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        msg = f"{name} must be an integer of at least {minimum}, not {value!r}"
        raise ValueError(msg)
    return int(value)


def check_mask_ratio(ratio: Any) -> float:
    """`ratio` as a float strictly between 0 and 1 (the fraction of the patch's cubes that are masked).

    Raises:
        ValueError: Not a number in (0, 1).
    """
    number = _real(ratio, "mask_ratio")
    if not 0.0 < number < 1.0:
        msg = f"mask_ratio must be between 0 and 1 (exclusive), not {ratio!r}"
        raise ValueError(msg)
    return number


def check_mask_patch_size(size: Any) -> int:
    """`size` as an int of at least 1 (the edge of the masked cubes, in voxels).

    Raises:
        ValueError: Not an integer of at least 1.
    """
    return _integer(size, "mask_patch_size", 1)


def check_noise_std(std: Any) -> float:
    """`std` as a float of at least 0 (0: masking only).

    Raises:
        ValueError: Not a finite number of at least 0.
    """
    number = _real(std, "noise_std")
    if number < 0:
        msg = f"noise_std must be at least 0, not {std!r}"
        raise ValueError(msg)
    return number


def check_warmup_epochs(epochs: Any) -> int:
    """`epochs` as an int of at least 0.

    Raises:
        ValueError: Not an integer of at least 0.
    """
    return _integer(epochs, "warmup_epochs", 0)


def check_learning_rates(initial_lr: Any, min_lr: Any, warmup_lr: Any = 0.0) -> tuple[float, float, float]:
    """The schedule's rates: ``initial_lr`` > 0, 0 <= ``min_lr`` <= ``initial_lr``, ``warmup_lr`` >= 0.

    Raises:
        ValueError: A rate that is not a number, negative, or ``min_lr`` above ``initial_lr``.
    """
    initial = _real(initial_lr, "initial_lr")
    minimum = _real(min_lr, "min_lr")
    warmup = _real(warmup_lr, "warmup_lr")
    if initial <= 0:
        msg = f"initial_lr must be above 0, not {initial_lr!r}"
        raise ValueError(msg)
    if not 0 <= minimum <= initial:
        msg = f"min_lr must be between 0 and initial_lr ({initial:g}), not {min_lr!r}"
        raise ValueError(msg)
    if warmup < 0:
        msg = f"warmup_lr must be at least 0, not {warmup_lr!r}"
        raise ValueError(msg)
    return initial, minimum, warmup


# ---------------------------------------------------------------------------------------------------------
# Masking, noise and loss


def cube_mask(
    batch: int,
    spatial: Sequence[int],
    mask_patch_size: int,
    mask_ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random cube masks: True where a voxel is masked, shape (batch, 1, *spatial).

    The patch is tiled by cubes of `mask_patch_size` voxels from its origin (the last cube along an axis is
    cut by the border when the size does not divide it). For each sample independently the cubes are
    shuffled and masked in that order until at least `mask_ratio` of the voxels are masked. When the size
    divides the patch that is ``ceil(mask_ratio * n)`` of the ``n`` cubes, DAE's mask generator; otherwise
    the cut cubes count by their voxels, so the masked fraction still exceeds the ratio by less than one
    cube.

    Args:
        batch: Samples.
        spatial: The patch's spatial shape (2 or 3 axes).
        mask_patch_size: Cube edge in voxels.
        mask_ratio: Fraction of voxels to mask, in (0, 1).
        generator: Random generator (its device is used); None: torch's global one on `device`.
        device: Device of the result (default: the generator's, else the CPU).
    """
    size = check_mask_patch_size(mask_patch_size)
    ratio = check_mask_ratio(mask_ratio)
    shape = [int(s) for s in spatial]
    grid = [math.ceil(s / size) for s in shape]
    where = generator.device if generator is not None else torch.device(device or "cpu")
    # Voxels in each cube (an outer product of the cubes' extents along each axis).
    volume = torch.ones((), dtype=torch.float64, device=where)
    for s, g in zip(shape, grid, strict=True):
        extent = torch.full((g,), float(size), dtype=torch.float64, device=where)
        extent[-1] = s - size * (g - 1)
        volume = volume[..., None] * extent
    volume = volume.reshape(-1)
    order = torch.rand(batch, volume.numel(), generator=generator, device=where).argsort(dim=1)
    before = torch.cumsum(volume[order], dim=1) - volume[order]  # voxels masked before each cube in the order
    chosen = torch.zeros(batch, volume.numel(), dtype=torch.bool, device=where)
    chosen.scatter_(1, order, before < ratio * math.prod(shape))
    mask = chosen.reshape(batch, 1, *grid)
    for axis in range(len(grid)):
        mask = mask.repeat_interleave(size, dim=2 + axis)
    mask = mask[(slice(None), slice(None), *(slice(0, s) for s in shape))]
    return mask.to(device) if device is not None else mask


def corrupt(
    clean: torch.Tensor,
    mask: torch.Tensor,
    noise_std: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`clean` with the voxels of `mask` (broadcast over channels) set to 0, plus N(0, `noise_std`^2) noise.

    The noise covers the whole patch, masked voxels included; `generator` (its device) makes it repeatable.
    """
    corrupted = clean.masked_fill(mask.to(clean.device), 0.0)
    if noise_std > 0:
        where = generator.device if generator is not None else clean.device
        noise = torch.randn(clean.shape, generator=generator, device=where, dtype=clean.dtype)
        corrupted = corrupted + noise_std * noise.to(clean.device)
    return corrupted


def reconstruction_loss(restored: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between `restored` and `clean` (in float32): the mean over all voxels, or over the masked ones.

    Args:
        restored: The network's reconstruction, (batch, channels, *spatial).
        clean: The target, same shape.
        mask: None: every voxel counts (the recipe's ``all_img``). Else (batch, 1, *spatial): only the masked
            voxels count (DAE's ``mask_only``), as a mean over them and the channels.
    """
    error = (restored.float() - clean.float()).abs()
    if mask is None:
        return error.mean()
    weight = mask.to(error.dtype).expand_as(error)
    return (error * weight).sum() / weight.sum().clamp_min(1.0)


# ---------------------------------------------------------------------------------------------------------
# Schedule


def warmup_cosine_lr(
    epoch: int, num_epochs: int, initial_lr: float, min_lr: float, warmup_epochs: int, warmup_lr: float = 0.0
) -> float:
    """The learning rate of `epoch` (0-based) of `num_epochs`: linear warm-up, then a cosine down to `min_lr`.

    Epochs ``0 .. warmup_epochs - 1`` rise linearly from `warmup_lr` (at epoch 0) towards `initial_lr`;
    epoch ``warmup_epochs`` has `initial_lr` and the cosine reaches `min_lr` at the last epoch
    (``num_epochs - 1``); later epochs (training extended past its schedule) stay at `min_lr`.
    """
    warmup = check_warmup_epochs(warmup_epochs)
    initial, minimum, start = check_learning_rates(initial_lr, min_lr, warmup_lr)
    if epoch < warmup:
        return start + (initial - start) * epoch / warmup
    span = num_epochs - 1 - warmup
    if span <= 0:
        return initial if epoch == warmup and span == 0 else minimum
    progress = min(1.0, (epoch - warmup) / span)
    return minimum + 0.5 * (initial - minimum) * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLRScheduler(_LRScheduler):
    """`warmup_cosine_lr` as nnU-Net uses its schedulers: ``step(epoch)`` sets the rate of every group."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        initial_lr: float,
        num_epochs: int,
        *,
        min_lr: float,
        warmup_epochs: int,
        warmup_lr: float,
    ) -> None:
        self.initial_lr = initial_lr
        self.num_epochs = num_epochs
        self.min_lr = min_lr
        self.warmup_epochs = warmup_epochs
        self.warmup_lr = warmup_lr
        self.ctr = 0
        super().__init__(optimizer, -1)

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = warmup_cosine_lr(
            current_step, self.num_epochs, self.initial_lr, self.min_lr, self.warmup_epochs, self.warmup_lr
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


# ---------------------------------------------------------------------------------------------------------
# The reconstruction head


def _bare(network: nn.Module) -> nn.Module:
    from torch._dynamo import OptimizedModule
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(network, DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network


def add_reconstruction_head(network: nn.Module, channels: int) -> nn.Module:
    """Give an nnU-Net U-Net (``decoder.stages``, ``decoder.seg_layers``) a 1x1 head restoring `channels`.

    The head takes the last decoder stage's output, like the last segmentation head, with the same
    convolution type (2D or 3D); it is registered as `HEAD`, so its tensors are ``reconstruction_head.*``.

    Returns:
        The head.
    """
    last: Any = network.decoder.seg_layers[-1]  # type: ignore[index, union-attr]
    head: nn.Module = type(last)(last.in_channels, channels, kernel_size=1, stride=1, padding=0, bias=True)
    network.add_module(HEAD, head)
    return head


def restore(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reconstruction of `x`: the network's forward, its last decoder stage's output through the head."""
    bare = _bare(network)
    features: list[torch.Tensor] = []
    # A hook for this call only: the network's own forward (encoder, Mamba layer, decoder) stays untouched.
    handle = bare.decoder.stages[-1].register_forward_hook(  # type: ignore[index, union-attr]
        lambda _module, _inputs, output: features.append(output)
    )
    try:
        network(x)
    finally:
        handle.remove()
    return getattr(bare, HEAD)(features[-1])


# ---------------------------------------------------------------------------------------------------------
# Splits


def fold_unlabelled(splits_path: Path | str, fold: int) -> list[str]:
    """The unlabelled ids of `fold` in nnU-Net's ``splits_final.json`` (`segkit.data.unlabelled.read_unlabelled`).

    None when the file has no ``unlabeled`` key, and none when it has no such fold (nnU-Net then draws a
    random 80:20 split of the preprocessed cases instead).

    Raises:
        DataError: A malformed splits file.
    """
    from segkit.data.splits import read_splits
    from segkit.data.unlabelled import read_unlabelled

    path = Path(splits_path)
    if not path.is_file() or fold >= len(read_splits(path)):
        return []
    return read_unlabelled(path, fold)


# ---------------------------------------------------------------------------------------------------------
# The trainer


class nnUNetTrainerUMamba2Pretrain(nnUNetTrainerUMamba2):  # noqa: N801 - nnU-Net finds trainers by this naming scheme
    """Masked-volume restoration of the whole UMamba2 network on all training images of the fold (see module).

    Attributes:
        mask_patch_size: Edge of the masked cubes in voxels.
        mask_ratio: Fraction of the patch's cubes masked, in (0, 1).
        noise_std: Standard deviation of the additive Gaussian noise (normalised intensities); 0: none.
        masked_loss_only: L1 over the masked voxels only (DAE's ``mask_only``) instead of all voxels.
        warmup_epochs: Epochs of linear warm-up from `warmup_lr` to ``initial_lr``.
        warmup_lr: Learning rate of epoch 0.
        min_lr: Learning rate of the last epoch (end of the cosine).
        validation_seed: Seed of the validation masks and noise (the same every epoch).
        accumulation_steps, grad_clip_norm: As `nnUNetTrainerUMamba2`.

    nnU-Net's own hyper-parameters are set in the constructor, where nnU-Net sets them (derived trainers
    override them after it): ``initial_lr`` 5e-5, ``weight_decay`` 0.05, ``num_epochs`` 200, no foreground
    oversampling (patches anywhere: there are no labels to look for), no deep supervision.

    Raises:
        ValueError: A constant out of range (at construction, and at the start of training for values set
            on the instance afterwards).
    """

    mask_patch_size: int = 16
    mask_ratio: float = 0.3
    noise_std: float = RECIPE_NOISE_STD
    masked_loss_only: bool = False
    warmup_epochs: int = RECIPE_WARMUP_EPOCHS
    warmup_lr: float = RECIPE_WARMUP_LR
    min_lr: float = RECIPE_MIN_LR
    validation_seed: int = 12345

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's own default
    ) -> None:
        # Before nnU-Net's constructor, which creates the output folder and a log file.
        self._check_constants(schedule=False)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = RECIPE_INITIAL_LR
        self.weight_decay = RECIPE_WEIGHT_DECAY
        self.num_epochs = RECIPE_EPOCHS
        self.oversample_foreground_percent = 0.0
        self.enable_deep_supervision = False
        self._val_generator: torch.Generator | None = None

    def _check_constants(self, *, schedule: bool = True) -> None:
        """Raise ValueError for a constant out of range; `schedule`: also min_lr <= initial_lr (known after init)."""
        check_mask_patch_size(self.mask_patch_size)
        check_mask_ratio(self.mask_ratio)
        check_noise_std(self.noise_std)
        check_warmup_epochs(self.warmup_epochs)
        if schedule:
            check_learning_rates(self.initial_lr, self.min_lr, self.warmup_lr)
        else:  # nnU-Net sets initial_lr in its constructor, and a derived trainer may override it after
            check_learning_rates(max(float(self.min_lr), 1e-12), self.min_lr, self.warmup_lr)

    # --- network, optimizer, data ------------------------------------------------------------------------

    @staticmethod
    def build_network_architecture(
        plans_manager: Any,
        configuration_manager: Any,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        """The plans' network (exactly stage 1's, segmentation heads included) plus `HEAD`."""
        network = nnUNetTrainer.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision
        )
        add_reconstruction_head(network, num_input_channels)
        return network

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, _LRScheduler]:
        # DAE's AdamW, without weight decay on biases and normalisation weights (1-d tensors).
        decay = [p for p in self.network.parameters() if p.requires_grad and p.ndim > 1]
        rest = [p for p in self.network.parameters() if p.requires_grad and p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=self.initial_lr, betas=(0.9, 0.999), eps=1e-8)
        scheduler = WarmupCosineLRScheduler(
            optimizer,
            self.initial_lr,
            self.num_epochs,
            min_lr=self.min_lr,
            warmup_epochs=self.warmup_epochs,
            warmup_lr=self.warmup_lr,
        )
        return optimizer, scheduler

    def do_split(self) -> tuple[list[str], list[str]]:
        """nnU-Net's split of the fold, with the fold's unlabelled cases added to the training ids."""
        train, val = super().do_split()
        if self.fold == "all":  # nnU-Net trains on every preprocessed case: the unlabelled ones are there too
            return train, val
        splits = os.path.join(self.preprocessed_dataset_folder_base, "splits_final.json")
        unlabelled = fold_unlabelled(splits, int(self.fold))
        images = list(dict.fromkeys([*train, *unlabelled]))
        self.print_to_log_file(
            f"self-supervised pretraining on {len(images)} images ({len(train)} labelled, "
            f"{len(images) - len(train)} unlabelled), validation on {len(val)}"
        )
        return images, val

    @staticmethod
    def get_training_transforms(*args: Any, **kwargs: Any) -> Any:
        """nnU-Net's training transforms without its intensity augmentations (they would enter the target)."""
        compose = nnUNetTrainer.get_training_transforms(*args, **kwargs)
        kept = [
            t
            for t in compose.transforms
            if not (isinstance(t, RandomTransform) and isinstance(t.transform, _INTENSITY_AUGMENTATIONS))
        ]
        return ComposeTransforms(kept)

    # --- training ------------------------------------------------------------------------------------------

    def on_train_start(self) -> None:
        self._check_constants()
        if self.is_ddp:
            msg = "self-supervised pretraining runs in one process (nnU-Net's DDP rejects the unused seg heads)"
            raise ValueError(msg)
        super().on_train_start()
        loss = "masked voxels" if self.masked_loss_only else "all voxels"
        self.print_to_log_file(
            f"self-supervised pretraining: cubes of {self.mask_patch_size} voxels, mask ratio {self.mask_ratio:g}, "
            f"noise std {self.noise_std:.3g}; L1 on {loss}; lr {self.warmup_lr:.3g} -> {self.initial_lr:.3g} over "
            f"{self.warmup_epochs} warm-up epochs, cosine to {self.min_lr:.3g} at epoch {self.num_epochs}; "
            "no pseudo-Dice (no segmentation output)"
        )

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        # nnU-Net prints the rate rounded to 5 decimals, which shows the warm-up's 5e-7 as 0.
        self.print_to_log_file(f"learning rate {self.optimizer.param_groups[0]['lr']:.4g}")

    def _autocast(self) -> Any:
        # As nnU-Net: autocast only on CUDA (slow on CPU, unsupported on MPS).
        return torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def reconstruction_step(
        self, clean: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask and noise `clean`, restore it: (loss, restored)."""
        mask = cube_mask(
            clean.shape[0],
            clean.shape[2:],
            self.mask_patch_size,
            self.mask_ratio,
            generator=generator,
            device=clean.device,
        )
        corrupted = corrupt(clean, mask, self.noise_std, generator=generator)
        with self._autocast():
            restored = restore(self.network, corrupted)
        loss = reconstruction_loss(restored, clean, mask if self.masked_loss_only else None)
        return loss, restored

    def train_step(self, batch: dict) -> dict:
        """One micro-batch of images (``batch["target"]`` is never read): restore, accumulate, maybe step."""
        if self._accumulator is None:
            self._accumulator = Accumulator(self.accumulation_steps, int(self.num_iterations_per_epoch))
        clean = batch["data"].to(self.device, non_blocking=True)
        loss, _ = self.reconstruction_step(clean)
        micro_batch_step(
            loss,
            self._accumulator,
            self.optimizer,
            self.network.parameters(),
            grad_scaler=self.grad_scaler,
            clip_norm=self.grad_clip_norm,
        )
        return {"loss": loss.detach().cpu().numpy()}

    # --- validation, log, checkpoints --------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._val_generator = torch.Generator(device=self.device).manual_seed(int(self.validation_seed))

    def validation_step(self, batch: dict) -> dict:
        clean = batch["data"].to(self.device, non_blocking=True)
        loss, _ = self.reconstruction_step(clean, self._val_generator)
        return {"loss": loss.detach().cpu().numpy()}

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        # No Dice: nnU-Net's pseudo-Dice entries stay empty (segkit's progress shows none).
        self.logger.log("val_losses", float(np.mean([o["loss"] for o in val_outputs])), self.current_epoch)

    def on_epoch_end(self) -> None:
        """nnU-Net's end of epoch with reconstruction losses: log, periodic and best (lowest val loss) checkpoints."""
        self.logger.log("epoch_end_timestamps", time(), self.current_epoch)
        train = float(self.logger.get_value("train_losses", step=-1))
        val = float(self.logger.get_value("val_losses", step=-1))
        self.print_to_log_file("train_loss (reconstruction L1)", np.round(train, decimals=4))
        self.print_to_log_file("val_loss (reconstruction L1)", np.round(val, decimals=4))
        seconds = self.logger.get_value("epoch_end_timestamps", step=-1) - self.logger.get_value(
            "epoch_start_timestamps", step=-1
        )
        self.print_to_log_file(f"Epoch time: {np.round(seconds, decimals=2)} s")

        epoch = self.current_epoch
        if (epoch + 1) % self.save_every == 0 and epoch != self.num_epochs - 1:
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_latest.pth"))
        # nnU-Net's checkpoint slot for the best-model criterion (``_best_ema``) holds the lowest val loss.
        best: float | None = getattr(self, "_best_ema", None)
        if best is None or val < best:
            self._best_ema = val
            self.print_to_log_file(f"New best validation reconstruction loss: {np.round(val, decimals=4)}")
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_best.pth"))
        if self.local_rank == 0:
            self._plot_progress()
        self.current_epoch += 1

    def _plot_progress(self) -> None:
        """nnU-Net's progress.png (losses, epoch times, rates); its pseudo-Dice curves are left empty."""
        logged = self.logger.local_logger.my_fantastic_logging
        epochs = len(logged["train_losses"])
        view = LocalLogger()
        view.my_fantastic_logging = {
            **logged,
            "mean_fg_dice": [float("nan")] * epochs,
            "ema_fg_dice": [float("nan")] * epochs,
            "dice_per_class_or_region": [[]] * epochs,
        }
        view.plot_progress_png(self.output_folder)

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """Nothing to validate: the pretraining network has no segmentation output."""
        self.print_to_log_file("self-supervised pretraining: no segmentation validation (no segmentation output)")
