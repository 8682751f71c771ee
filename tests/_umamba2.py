"""Tiny UMamba2 networks, plans and nnU-Net trainers for the trainer and pretrained-loader tests (CPU)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

NAME = "segkit.backends.umamba2.network.UMambaBot2"
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]
DATASET = "Dataset001_Tiny"

# 3 stages, bottleneck 16 channels at 1/4 resolution; mixer d_inner 32 = 4 heads of 8 (torch kernel).
TINY_ARCH: dict[str, Any] = {
    "n_stages": 3,
    "features_per_stage": [4, 8, 16],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 3,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    "n_blocks_per_stage": [1, 1, 1],
    "n_conv_per_stage_decoder": [1, 1],
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-5, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
    "headdim": 8,
    "d_state": 4,
    "mamba_kernel": "torch",
}
PATCH = [16, 16, 16]
DATASET_JSON: dict[str, Any] = {
    "channel_names": {"0": "t1c", "1": "t2f"},
    "labels": {"background": 0, "a": 1, "b": 2},
    "numTraining": 2,
    "file_ending": ".nii.gz",
}


def tiny_network(*, arch: dict[str, Any] | None = None, channels: int = 2, classes: int = 3, seed: int = 0) -> Any:
    """A tiny UMambaBot2 built by nnU-Net from its plans entry (deep supervision on)."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    torch.manual_seed(seed)
    return get_network_from_plans(
        NAME, copy.deepcopy(arch or TINY_ARCH), REQUIRES_IMPORT, channels, classes, deep_supervision=True
    )


def tiny_plans(*, batch_size: int = 2) -> dict[str, Any]:
    """nnU-Net plans with one 3d_fullres configuration that builds `TINY_ARCH`."""
    return {
        "dataset_name": DATASET,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": PATCH,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
        "configurations": {
            "3d_fullres": {
                "data_identifier": "tiny_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": batch_size,
                "patch_size": PATCH,
                "median_image_size_in_voxels": PATCH,
                "spacing": [1.0, 1.0, 1.0],
                "normalization_schemes": ["ZScoreNormalization", "ZScoreNormalization"],
                "use_mask_for_norm": [False, False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {},
                "resampling_fn_seg_kwargs": {},
                "resampling_fn_probabilities_kwargs": {},
                "batch_dice": False,
                "architecture": {
                    "network_class_name": NAME,
                    "arch_kwargs": copy.deepcopy(TINY_ARCH),
                    "_kw_requires_import": REQUIRES_IMPORT,
                },
            }
        },
    }


def nnunet_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point nnU-Net at empty folders under `tmp_path`, with a preprocessed folder nnU-Net can classify.

    nnU-Net reads its folder variables when used (2.8.1), so setting them here is enough. The one empty
    ``.b2nd`` file lets ``initialize()`` pick its dataset class without a real preprocessed dataset.
    """
    for name in ("raw", "preprocessed", "results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(f"nnUNet_{name}", str(tmp_path / name))
    data = tmp_path / "preprocessed" / DATASET / "tiny_3d_fullres"
    data.mkdir(parents=True)
    (data / "case.b2nd").write_bytes(b"")
    return tmp_path


def tiny_trainer(cls: type, *, batch_size: int = 2, initialize: bool = True, device: str = "cpu") -> Any:
    """An nnU-Net trainer of class `cls` on `tiny_plans`, on the CPU by default (call `nnunet_folders` first)."""
    import torch

    plans = tiny_plans(batch_size=batch_size)
    plans["continue_training"] = False  # what nnU-Net's get_trainer_from_args adds
    torch.manual_seed(0)
    trainer = cls(plans, "3d_fullres", 0, copy.deepcopy(DATASET_JSON), torch.device(device))
    if initialize:
        trainer.initialize()
    return trainer


def fake_batch(batch_size: int = 2, *, seed: int = 0) -> dict[str, Any]:
    """A batch as nnU-Net's data loader gives it: data and one target per deep-supervision output."""
    import torch

    g = torch.Generator().manual_seed(seed)
    data = torch.randn(batch_size, 2, *PATCH, generator=g)
    full = torch.randint(0, 3, (batch_size, 1, *PATCH), generator=g).float()
    half = full[:, :, ::2, ::2, ::2].contiguous()
    return {"data": data, "target": [full, half]}


def save_nnunet_checkpoint(trainer: Any, path: Path) -> Path:
    """Write `trainer`'s checkpoint with nnU-Net's own ``save_checkpoint``, after one epoch's worth of log.

    The log values are of the types nnU-Net's training loop logs (numpy float32 losses, float64 Dice), so
    the file holds what a real checkpoint holds besides tensors.
    """
    import time

    import numpy as np

    losses = [np.array(0.75, dtype=np.float32), np.array(0.5, dtype=np.float32)]
    dice = [np.float64(0.25), np.float64(0.5)]
    log = trainer.logger
    log.log("train_losses", np.mean(losses), 0)
    log.log("val_losses", np.mean(losses), 0)
    log.log("dice_per_class_or_region", dice, 0)
    log.log("mean_fg_dice", np.nanmean(dice), 0)
    log.log("ema_fg_dice", np.nanmean(dice), 0)
    log.log("lrs", trainer.optimizer.param_groups[0]["lr"], 0)
    log.log("epoch_start_timestamps", time.time(), 0)
    log.log("epoch_end_timestamps", time.time(), 0)
    trainer._best_ema = np.nanmean(dice)
    trainer.inference_allowed_mirroring_axes = (0, 1, 2)
    trainer.save_checkpoint(str(path))
    return path
