"""Mechanisms of the UMamba2 recipe's semi-supervised stages (consistency and pseudo-labels), in torch.

Imported only inside nnU-Net processes and tests (torch, nnunetv2 and batchgeneratorsv2 at module
level). Written from the description of U-Mamba2-SSL (Tan et al. 2025, arXiv 2509.20154) in the
reference ``nnunet_umamba2.md`` 5.2, no code of the authors' (non-commercially licensed) fork:

* `unlabelled_probability`: how likely an iteration is an unlabelled one, ``min(max, epoch/epochs + min)``;
* `rampup_weight`: the consistency weight ``w * exp(-5 (1 - t)^2)`` over the ramp-up iterations, ``w`` after;
* `FeaturePerturbation` / `perturbed_forward`: channel dropout, attention-based feature drop and
  multiplicative uniform noise on the last encoder skips of the student (identity in eval mode);
* `consistency_loss`: MSE between the teacher's and the student's probabilities, deep-supervision weighted;
* `pseudo_label_targets`: confident teacher predictions as nnU-Net targets, the rest (and optionally
  confident background) set to an ignore label;
* `UnlabelledData`: an nnU-Net data loader over the fold's unlabelled cases with the weak (spatial)
  augmentation, and `strong_augmentation` for the student's view. Their placeholder segmentations are
  dropped as soon as a batch is drawn (`UnlabelledData.next_images`), so no loss or metric can see them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's own convention

from segkit.backends.umamba2.recipe import UNLABELLED_KEY  # noqa: F401 - re-exported for the trainers


def unlabelled_probability(epoch: int, num_epochs: int, min_ratio: float = 0.1, max_ratio: float = 0.5) -> float:
    """Probability that an iteration of `epoch` (0-based) uses unlabelled patches: min(max, epoch/epochs + min)."""
    if num_epochs < 1:
        msg = f"num_epochs must be at least 1, not {num_epochs}"
        raise ValueError(msg)
    return float(min(max_ratio, epoch / num_epochs + min_ratio))


def rampup_weight(iteration: int, rampup_iterations: float, weight: float = 50.0) -> float:
    """Consistency weight at `iteration` (0-based over the whole training).

    ``weight * exp(-5 (1 - t)^2)`` with ``t = iteration / rampup_iterations`` during the ramp-up, and
    `weight` from then on (also when there is no ramp-up).
    """
    if rampup_iterations <= 0 or iteration >= rampup_iterations:
        return float(weight)
    t = max(0.0, iteration / rampup_iterations)
    return float(weight * math.exp(-5.0 * (1.0 - t) ** 2))


class FeaturePerturbation(nn.Module):
    """Perturbation of a feature map (B, C, *spatial) of the student; the identity in eval mode.

    In order: channel dropout (``dropout``, whole channels, as ``F.dropout3d``), an attention-based
    feature drop (voxels whose channel-mean activation is at least a fraction ``U(drop_threshold)`` of
    the sample's maximum are zeroed: the most salient regions are hidden) and multiplicative uniform
    noise ``x * (1 + U(-noise, noise))``.

    Args:
        dropout: Channel dropout probability (0: none).
        drop_threshold: Range of the fraction of the maximum attention above which voxels are dropped.
        noise: Half-width of the multiplicative noise (0: none).
    """

    def __init__(
        self, dropout: float = 0.5, drop_threshold: tuple[float, float] = (0.6, 0.9), noise: float = 0.3
    ) -> None:
        super().__init__()
        check_fraction("feature dropout", dropout, closed=True)
        low, high = drop_threshold
        if not 0 < low <= high <= 1:
            msg = f"feature-drop threshold must be a range within (0, 1], got {drop_threshold}"
            raise ValueError(msg)
        if noise < 0:
            msg = f"feature noise must be at least 0, got {noise}"
            raise ValueError(msg)
        self.dropout = float(dropout)
        self.drop_threshold = (float(low), float(high))
        self.noise = float(noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        if self.dropout > 0:
            drop = F.dropout3d if x.ndim == 5 else F.dropout2d
            x = drop(x, p=self.dropout, training=True)
        attention = x.mean(dim=1, keepdim=True)
        peak = attention.flatten(1).amax(dim=1).view(-1, *([1] * (x.ndim - 1)))
        fraction = torch.empty_like(peak).uniform_(*self.drop_threshold)
        x = x * (attention < peak * fraction).to(x.dtype)
        if self.noise > 0:
            x = x * (1 + torch.empty_like(x).uniform_(-self.noise, self.noise))
        return x

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}, drop_threshold={self.drop_threshold}, noise={self.noise}"


def check_fraction(what: str, value: float, *, closed: bool = False) -> float:
    """`value` within (0, 1) (``closed``: [0, 1]); ValueError naming `what` otherwise."""
    ok = 0 <= value <= 1 if closed else 0 < value < 1
    if not ok:
        bounds = "[0, 1]" if closed else "(0, 1)"
        msg = f"{what} must be within {bounds}, got {value}"
        raise ValueError(msg)
    return float(value)


def perturbed_forward(network: nn.Module, x: torch.Tensor, perturbation: nn.Module, n_skips: int) -> Any:
    """The network's forward with `perturbation` applied to its last `n_skips` encoder skips.

    For nnU-Net's U-Nets (an ``encoder`` returning skips and a ``decoder`` taking them); UMambaBot2's
    bottleneck goes through its Mamba layer first, so the perturbed bottleneck is the mixer's output,
    the feature map the decoder sees.
    """
    module: Any = network.module if hasattr(network, "module") else network
    module = getattr(module, "_orig_mod", module)
    skips = list(module.encoder(x))
    mamba = getattr(module, "mamba_layer", None)
    if mamba is not None:
        skips[-1] = mamba(skips[-1])
    for i in range(max(0, len(skips) - n_skips), len(skips)):
        skips[i] = perturbation(skips[i])
    return module.decoder(skips)


def _as_list(outputs: Any) -> list[torch.Tensor]:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def probabilities(logits: torch.Tensor, regions: bool) -> torch.Tensor:
    """Softmax over classes, or per-region sigmoid for region-based training."""
    return torch.sigmoid(logits.float()) if regions else torch.softmax(logits.float(), dim=1)


def consistency_loss(student: Any, teacher: Any, weights: Sequence[float] | None, *, regions: bool = False) -> Any:
    """Deep-supervision-weighted MSE between the student's and the (detached) teacher's probabilities.

    Args:
        student: The student's logits (a tensor, or the list of deep-supervision outputs).
        teacher: The teacher's logits, of the same structure (its gradient is never used).
        weights: Weight per output (nnU-Net's deep-supervision weights); None: equal weights.
        regions: Sigmoid per region instead of a softmax over classes.
    """
    s_list, t_list = _as_list(student), _as_list(teacher)
    w = list(weights) if weights is not None else [1.0 / len(s_list)] * len(s_list)
    total = s_list[0].new_zeros((), dtype=torch.float32)
    for s, t, weight in zip(s_list, t_list, w, strict=False):
        if weight == 0:
            continue
        target = probabilities(t.detach(), regions)
        total = total + float(weight) * F.mse_loss(probabilities(s, regions), target)
    return total


def pseudo_label_targets(
    teacher: Any, *, threshold: float, keep_background: bool, regions: bool, ignore_label: int
) -> list[torch.Tensor]:
    """nnU-Net targets from the teacher's most confident predictions, one per deep-supervision output.

    Labels: (B, 1, ...) class indices, voxels whose top probability is below `threshold` (and, without
    `keep_background`, confidently background voxels) set to `ignore_label`. Regions: (B, R + 1, ...)
    binary regions plus nnU-Net's ignore channel last (1 = ignored), a voxel ignored when any region's
    probability is within ``(1 - threshold, threshold)`` (or, without `keep_background`, when no region is
    predicted). Targets are computed at full resolution and downsampled with nearest neighbours to each
    output, as nnU-Net downsamples its targets.
    """
    outputs = _as_list(teacher)
    with torch.no_grad():
        prob = probabilities(outputs[0].detach(), regions)
        if regions:
            positive = prob >= 0.5
            confident = torch.maximum(prob, 1 - prob).amin(dim=1, keepdim=True) >= threshold
            if not keep_background:
                confident &= positive.any(dim=1, keepdim=True)
            full = torch.cat([positive.float(), (~confident).float()], dim=1)
        else:
            top, label = prob.max(dim=1, keepdim=True)
            confident = top >= threshold
            if not keep_background:
                confident &= label != 0
            full = torch.where(confident, label, torch.full_like(label, ignore_label)).float()
        targets = []
        for out in outputs:
            if tuple(out.shape[2:]) == tuple(full.shape[2:]):
                targets.append(full)
            else:
                targets.append(F.interpolate(full, size=tuple(out.shape[2:]), mode="nearest"))
    return targets


def pseudo_label_loss(
    label_manager: Any, weights: Sequence[float] | None, *, batch_dice: bool
) -> tuple[nn.Module, int]:
    """nnU-Net's Dice+CE (labels) or Dice+BCE (regions) with an ignore label, deep-supervision wrapped.

    Returns:
        The loss and the ignore label `pseudo_label_targets` must use (one past the last class for labels;
        regions carry an ignore channel instead).
    """
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    # The recipe's pseudo-label Dice has no smoothing (smooth 0): an empty class gives no Dice term.
    dice = {"batch_dice": batch_dice, "smooth": 0.0, "ddp": False}
    ignore = int(label_manager.num_segmentation_heads)
    loss: nn.Module
    if label_manager.has_regions:
        loss = DC_and_BCE_loss(
            {}, {**dice, "do_bg": True}, use_ignore_label=True, dice_class=MemoryEfficientSoftDiceLoss
        )
    else:
        loss = DC_and_CE_loss(
            {**dice, "do_bg": False}, {}, weight_ce=1, weight_dice=1, ignore_label=ignore,
            dice_class=MemoryEfficientSoftDiceLoss,
        )  # fmt: skip
    if weights is not None:
        loss = DeepSupervisionWrapper(loss, list(weights))
    return loss, ignore


def read_unlabelled_ids(preprocessed_base: str, fold: int | str) -> list[str]:
    """The unlabelled case ids of `fold`: its ``unlabeled`` list in ``splits_final.json``.

    Fold ``all`` (every labelled case trains; with fewer than five labelled cases there are no splits)
    takes every unlabelled case of the ``dataset.json`` nnU-Net copied into the preprocessed folder.

    Raises:
        ValueError: No splits file (numbered fold), the fold is not in it, or no unlabelled cases.
    """
    from pathlib import Path

    from segkit.backends.umamba2.recipe import unlabelled_ids
    from segkit.data.unlabelled import dataset_unlabelled_ids
    from segkit.errors import DataError

    try:
        if fold == "all":
            ids = dataset_unlabelled_ids(Path(preprocessed_base))
            if not ids:
                msg = f"{preprocessed_base}/dataset.json lists no unlabelled cases"
                raise DataError(msg)
            return ids
        return unlabelled_ids(Path(preprocessed_base) / "splits_final.json", fold)  # type: ignore[arg-type]
    except DataError as err:
        raise ValueError(str(err)) from err


def weak_augmentation(trainer: Any) -> Any:
    """The teacher's view: nnU-Net's spatial augmentation (rotation, scaling, mirroring), no intensity change."""
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform

    rotation, dummy_2d, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    patch = trainer.configuration_manager.patch_size
    transforms: list[Any] = []
    if dummy_2d:
        transforms.append(Convert3DTo2DTransform())
        patch = patch[1:]
    # nnU-Net's own SpatialTransform settings (get_training_transforms), so both views of the recipe
    # are as spatially augmented as the labelled patches.
    transforms.append(
        SpatialTransform(
            patch, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0, p_rotation=0.2,
            rotation=rotation, p_scaling=0.2, scaling=(0.7, 1.4), p_synchronize_scaling_across_axes=1,
            bg_style_seg_sampling=False, border_mode_seg="constant", padding_value_seg=-1,
        )
    )  # fmt: skip
    if dummy_2d:
        transforms.append(Convert2DTo3DTransform())
    if mirror_axes:
        transforms.append(MirrorTransform(allowed_axes=mirror_axes))
    return ComposeTransforms(transforms)


def strong_augmentation(spatial_dims: int = 3) -> Any:
    """The student's extra view: strong intensity augmentation (batchgeneratorsv2, applied per sample).

    Median filter or blur, noise, brightness, contrast, low resolution, gamma, blank rectangles and
    sharpening (the recipe's list), each with a higher probability than in nnU-Net's default pipeline.
    """
    from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
    from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
    from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
    from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
    from batchgeneratorsv2.transforms.noise.blank_rectangle import BlankRectangleTransform
    from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
    from batchgeneratorsv2.transforms.noise.median_filter import MedianFilterTransform
    from batchgeneratorsv2.transforms.noise.sharpen import SharpeningTransform
    from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from batchgeneratorsv2.transforms.utils.random import OneOfTransform, RandomTransform

    rect = tuple((1, 8) for _ in range(spatial_dims))
    return ComposeTransforms(
        [
            RandomTransform(
                OneOfTransform(
                    [
                        MedianFilterTransform((2, 4), p_same_for_each_channel=0, p_per_channel=0.5),
                        GaussianBlurTransform(blur_sigma=(0.3, 1.5), synchronize_channels=False,
                                              synchronize_axes=False, p_per_channel=0.5, benchmark=False),
                    ]
                ),
                apply_probability=0.3,
            ),
            RandomTransform(GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1,
                                                   synchronize_channels=True), apply_probability=0.3),
            RandomTransform(MultiplicativeBrightnessTransform(multiplier_range=BGContrast((0.6, 1.4)),
                                                              synchronize_channels=False, p_per_channel=1),
                            apply_probability=0.5),
            RandomTransform(ContrastTransform(contrast_range=BGContrast((0.6, 1.4)), preserve_range=True,
                                              synchronize_channels=False, p_per_channel=1), apply_probability=0.5),
            RandomTransform(SimulateLowResolutionTransform(scale=(0.4, 1), synchronize_channels=False,
                                                           synchronize_axes=True, ignore_axes=None,
                                                           allowed_channels=None, p_per_channel=0.5),
                            apply_probability=0.4),
            RandomTransform(GammaTransform(gamma=BGContrast((0.6, 2.0)), p_invert_image=0, synchronize_channels=False,
                                           p_per_channel=1, p_retain_stats=1), apply_probability=0.5),
            RandomTransform(BlankRectangleTransform(rectangle_size=rect, rectangle_value=_mean,
                                                    num_rectangles=(1, 5), force_square=False, p_per_channel=0.5),
                            apply_probability=0.4),
            RandomTransform(SharpeningTransform(strength=(0.1, 1.0), p_same_for_each_channel=0, p_per_channel=0.5),
                            apply_probability=0.2),
        ]
    )  # fmt: skip


def _mean(x: torch.Tensor) -> float:
    return float(x.float().mean())


def apply_per_sample(transform: Any, images: torch.Tensor) -> torch.Tensor:
    """`transform` on each sample (C, *spatial) of a batch of images, as nnU-Net's data loader applies it."""
    with torch.no_grad():
        return torch.stack([transform(image=img.clone())["image"] for img in images])


class UnlabelledData:
    """Batches of the fold's unlabelled cases: nnU-Net's data loader with the weak augmentation only.

    The placeholder segmentation nnU-Net needs to load a case is cropped and augmented with the image by
    nnU-Net's loader; `next_images` drops it at once and returns only the images, so it never reaches a
    loss, a pseudo-label or a metric.
    """

    def __init__(self, trainer: Any, identifiers: Sequence[str]) -> None:
        from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
        from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

        dataset_class = trainer.dataset_class or infer_dataset_class(trainer.preprocessed_dataset_folder)
        dataset = dataset_class(trainer.preprocessed_dataset_folder, list(identifiers))
        _, _, initial_patch, _ = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        loader = nnUNetDataLoader(
            dataset, trainer.batch_size, initial_patch, trainer.configuration_manager.patch_size,
            trainer.label_manager,
            # placeholder segmentations have no foreground to oversample
            oversample_foreground_percent=0.0, sampling_probabilities=None, pad_sides=None,
            transforms=weak_augmentation(trainer), probabilistic_oversampling=False,
        )  # fmt: skip
        self.identifiers = list(identifiers)
        self.augmenter = _augmenter(loader, get_allowed_n_proc_DA(), trainer.device.type == "cuda")

    def next_images(self) -> torch.Tensor:
        """The next batch's (weakly augmented) images; the placeholder segmentation is discarded here."""
        batch = next(self.augmenter)
        return batch["data"]

    def close(self) -> None:
        finish = getattr(self.augmenter, "_finish", None)
        if callable(finish):
            finish()


def _augmenter(loader: Any, processes: int, pin_memory: bool) -> Any:
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
    from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

    if processes == 0:
        return SingleThreadedAugmenter(loader, None)
    return NonDetMultiThreadedAugmenter(
        data_loader=loader, transform=None, num_processes=max(1, processes // 2),
        num_cached=max(3, processes // 2), seeds=None, pin_memory=pin_memory, wait_time=0.002,
    )  # fmt: skip
