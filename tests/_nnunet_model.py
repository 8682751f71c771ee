"""A tiny nnU-Net model folder whose checkpoints have nnU-Net 2.8.1's full save format, for the slim tests.

The network is the plans' real ``PlainConvUNet`` (3 stages, 4-16 features) built the way nnU-Net builds
it; each checkpoint is the dict of ``nnUNetTrainer.save_checkpoint`` after one SGD step (momentum
buffers as large as the weights), with a training log holding numpy floats as nnU-Net's logger does.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).parent
TRAINER = "nnUNetTrainer"
CONFIGURATION = "3d_fullres"
MODEL_NAME = f"{TRAINER}__nnUNetPlans__{CONFIGURATION}"
PATCH = (16, 16, 16)

DATASET_JSON: dict[str, Any] = {
    "channel_names": {"0": "t1n", "1": "t1c", "2": "t2w", "3": "t2f"},
    "labels": {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3, "RC": 4},
    "numTraining": 6,
    "file_ending": ".nii.gz",
}


def tiny_plans(dataset_name: str = "Dataset999_Tiny") -> dict[str, Any]:
    """nnU-Net's default plans (tests/viz/plans) cut to one 3-stage 3d_fullres configuration of 16^3."""
    plans = json.loads((ROOT / "viz" / "plans" / "nnUNetPlans.json").read_text())
    config = copy.deepcopy(plans["configurations"][CONFIGURATION])
    config.update(patch_size=list(PATCH), batch_size=1)
    arch = config["architecture"]["arch_kwargs"]
    arch.update(
        n_stages=3,
        features_per_stage=[4, 8, 16],
        kernel_sizes=arch["kernel_sizes"][:3],
        strides=arch["strides"][:3],
        n_conv_per_stage=[1, 1, 1],
        n_conv_per_stage_decoder=[1, 1],
    )
    plans.update(dataset_name=dataset_name, configurations={CONFIGURATION: config})
    return plans


def build_network(plans: dict[str, Any], *, deep_supervision: bool = True) -> Any:
    """The configuration's network, as `nnUNetTrainer.build_network_architecture` builds it."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = plans["configurations"][CONFIGURATION]["architecture"]
    classes = len(DATASET_JSON["labels"])
    return get_network_from_plans(
        arch["network_class_name"],
        arch["arch_kwargs"],
        arch["_kw_requires_import"],
        len(DATASET_JSON["channel_names"]),
        classes,
        allow_init=True,
        deep_supervision=deep_supervision,
    )


def full_checkpoint(plans: dict[str, Any], *, fold: int | str = 0, seed: int = 0) -> dict[str, Any]:
    """The dict `nnUNetTrainer.save_checkpoint` writes, after one training step of a fresh network."""
    import torch

    torch.manual_seed(seed)
    network = build_network(plans)
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    outputs = network(torch.randn(1, 4, *PATCH))
    sum(o.float().square().mean() for o in outputs).backward()
    optimizer.step()
    logging = {
        "mean_fg_dice": [np.float64(0.25)],
        "ema_fg_dice": [np.float64(0.25)],
        "dice_per_class_or_region": [[np.float64(0.1), np.float64(0.4)]],
        "train_losses": [np.float64(-0.1)],
        "val_losses": [np.float32(-0.2)],
        "lrs": [0.01],
        "epoch_start_timestamps": [1.0],
        "epoch_end_timestamps": [2.0],
    }
    return {
        "network_weights": network.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": None,
        "logging": logging,
        "_best_ema": np.float64(0.25),
        "current_epoch": 1,
        "init_args": {
            "plans": plans,
            "configuration": CONFIGURATION,
            "fold": fold,
            "dataset_json": DATASET_JSON,
            "device": torch.device("cpu"),
        },
        "trainer_name": TRAINER,
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }


def write_model(
    results: Path,
    *,
    folds: tuple[int | str, ...] = (0,),
    checkpoints: tuple[str, ...] = ("checkpoint_final.pth", "checkpoint_best.pth"),
) -> Path:
    """A model folder ``<results>/Dataset999_Tiny/nnUNetTrainer__nnUNetPlans__3d_fullres`` with logs and validation.

    Returns:
        The model folder.
    """
    import torch

    plans = tiny_plans()
    model = results / plans["dataset_name"] / MODEL_NAME
    model.mkdir(parents=True)
    (model / "plans.json").write_text(json.dumps(plans, indent=2))
    (model / "dataset.json").write_text(json.dumps(DATASET_JSON, indent=2))
    (model / "dataset_fingerprint.json").write_text(json.dumps({"spacings": [[1.0, 1.0, 1.0]]}))
    for i, fold in enumerate(folds):
        fold_dir = model / f"fold_{fold}"
        (fold_dir / "validation").mkdir(parents=True)
        (fold_dir / "validation" / "summary.json").write_text("{}")
        (fold_dir / "training_log_2026_1_1_00_00_00.txt").write_text("epoch 0\n")
        (fold_dir / "debug.json").write_text("{}")
        (fold_dir / "segkit_config.yaml").write_text("version: 1\n")
        for j, name in enumerate(checkpoints):
            torch.save(full_checkpoint(plans, fold=fold, seed=10 * i + j), fold_dir / name)
    return model
