"""Options of the MONAI bundle backend (``backends.monai`` in a run config).

One model serves `segkit train` and `segkit infer`; the flags of the seed scripts
``train_monai_finetune.py`` and ``infer_monai_finetune.py`` map onto these fields one to one
(``--stage1-epochs`` -> ``stage1_epochs``). Defaults are written here and nowhere else.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from segkit.config.flags import INFER, TRAIN, CliFlag
from segkit.config.models import ConfigPath, Strict, Triple

NUM_CLASSES = 5
"""Output channels of the fine-tuned head: 0 background, 1 NETC, 2 SNFH, 3 ET, 4 RC."""

DIVISOR = 8
"""SegResNet downsamples three times, so every spatial size it sees must be a multiple of 8."""

DEFAULT_PATCH_SIZE = (128, 128, 128)
"""Training crop in voxels (X Y Z) when neither the options nor nnU-Net plans give one."""
DEFAULT_SPACING = (1.0, 1.0, 1.0)
"""Training spacing in mm (X Y Z) when neither the options nor nnU-Net plans give one."""
DEFAULT_ENCODER_PREFIXES = ("convInit", "down_layers")

NETWORK_ARG_NAMES = frozenset(
    {
        "spatial_dims",
        "init_filters",
        "in_channels",
        "out_channels",
        "dropout_prob",
        "act",
        "norm",
        "norm_name",
        "num_groups",
        "use_conv_final",
        "blocks_down",
        "blocks_up",
        "upsample_mode",
    }
)
"""Arguments of ``monai.networks.nets.SegResNet`` (MONAI 1.6.1), the only network segkit builds."""


def _multiple_of_eight(value: tuple[int, int, int] | None, name: str) -> tuple[int, int, int] | None:
    if value is not None and any(v <= 0 or v % DIVISOR for v in value):
        msg = f"{name} {' '.join(map(str, value))}: every size must be a positive multiple of {DIVISOR} (SegResNet)"
        raise ValueError(msg)
    return value


class MonaiOptions(Strict):
    """Two-stage fine-tuning of the MONAI ``brats_mri_segmentation`` bundle (SegResNet) and its inference."""

    cli_panel: ClassVar[str] = "MONAI backend"

    # ----------------------------------------------------------------- bundle
    bundle_name: Annotated[str | None, CliFlag()] = Field(
        "brats_mri_segmentation",
        description="MONAI bundle to fine-tune; 'none' trains a fresh SegResNet (network_overrides) without one. "
        "Inference needs no bundle (the network is rebuilt from the checkpoint); a local bundle's channel_def is "
        "checked against the checkpoint's channel order.",
    )
    bundle_dir: Annotated[ConfigPath, CliFlag()] = Field(
        Path("bundles"),
        description="Folder holding <bundle_name>/ (configs/, models/model.pt); training downloads a missing "
        "bundle here, inference never does.",
    )
    bundle_source: Literal["monaihosting", "huggingface_hub", "ngc", "github"] = Field(
        "monaihosting", description="Where MONAI downloads a missing bundle from (ignored with bundle_url)."
    )
    bundle_repo: str | None = Field(
        None, description="Repository for huggingface_hub (owner/name) or github (owner/name/tag) downloads."
    )
    bundle_version: str | None = Field(None, description="Bundle version to download (default: the latest).")
    bundle_url: Annotated[str | None, CliFlag(commands=(TRAIN,))] = Field(
        None, description="Download a missing bundle from this zip URL (its top folder must be <bundle_name>/)."
    )
    bundle_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Expected SHA-256 of the bundle_url archive (checked before unpacking).",
    )
    download: bool = Field(
        True, description="Download a missing bundle (False, HF_HUB_OFFLINE=1 or SEGKIT_OFFLINE=1: never go online)."
    )
    trust_bundle: Annotated[bool, CliFlag(commands=(TRAIN,))] = Field(
        False,
        description="Let MONAI evaluate the bundle config's expressions ($, @, %); otherwise only literals are read.",
    )
    network_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Literal SegResNet arguments replacing the bundle's (e.g. init_filters: 8 without a bundle).",
    )
    # ------------------------------------------------------------------- data
    data_root: Annotated[list[ConfigPath] | None, CliFlag(metavar="DIR...", commands=(TRAIN,))] = Field(
        None,
        description="BraTS case roots holding the split's cases (default: the prepared dataset's imagesTr/labelsTr).",
    )
    split_json: Annotated[ConfigPath | None, CliFlag()] = Field(
        None, description="nnU-Net splits_final.json (default: <nnunet.preprocessed>/<dataset>/splits_final.json)."
    )
    dataset_json: Annotated[ConfigPath | None, CliFlag(commands=(INFER,))] = Field(
        None,
        description="dataset.json whose segkit.test_cases select the cases to predict and channel_names map channels.",
    )
    output_root: Annotated[ConfigPath, CliFlag()] = Field(
        Path("outputs/monai_ft"), description="Run folder: fold<k>/checkpoints, fold<k>/metrics, the run config."
    )
    spacing: Annotated[Triple | None, CliFlag(metavar="X Y Z")] = Field(
        None,
        description="Resampling spacing in mm along X Y Z (training default: the 3d_fullres spacing of the "
        "dataset's nnU-Net plans when planned, else 1 1 1; inference: the checkpoint's).",
    )
    patch_size: Annotated[tuple[int, int, int] | None, CliFlag(metavar="X Y Z")] = Field(
        None,
        description="Training crop in voxels, multiples of 8 (default: the 3d_fullres patch size of the dataset's "
        "nnU-Net plans rounded to what SegResNet divides, else 128 128 128; inference: the roi default).",
    )
    cache_rate: Annotated[float | None, CliFlag(commands=(TRAIN,))] = Field(
        None,
        ge=0,
        le=1,
        description="Fraction of cases whose preprocessing is cached in RAM (default: as many as fit in half the "
        "available RAM, about 150 MB per case on the 182x218x182 grid at 1 mm; 1 caches every case).",
    )
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader worker processes (default: 0 on CPU, min(4, cores) on CUDA)."
    )
    num_samples: int = Field(2, ge=1, description="Random crops drawn from each case per iteration.")
    crop_ratios: list[float] | None = Field(
        None, description="Crop-centre frequency of the 5 labels (default 1 1 1 1 1: rare classes as often as others)."
    )
    # --------------------------------------------------------------- training
    stage1_epochs: Annotated[int, CliFlag(commands=(TRAIN,))] = Field(
        20, ge=0, description="Stage 1 epochs: encoder frozen, decoder and head trained."
    )
    stage2_epochs: Annotated[int, CliFlag(commands=(TRAIN,))] = Field(
        30, ge=0, description="Stage 2 epochs: every parameter trained."
    )
    stage1_lr: Annotated[float, CliFlag(commands=(TRAIN,))] = Field(
        1e-3, gt=0, description="Stage 1 learning rate (AdamW, cosine decay over the stage)."
    )
    stage2_lr: Annotated[float, CliFlag(commands=(TRAIN,))] = Field(
        1e-4, gt=0, description="Stage 2 learning rate (AdamW, cosine decay over the stage)."
    )
    weight_decay: float = Field(1e-5, ge=0, description="AdamW weight decay.")
    batch_size: Annotated[int, CliFlag(commands=(TRAIN,))] = Field(
        2, ge=1, description="Cases per batch (each yields num_samples crops)."
    )
    stage1_accum: Annotated[int, CliFlag(commands=(TRAIN,))] = Field(
        1, ge=1, description="Stage 1 gradient accumulation: batches per optimizer step."
    )
    stage2_accum: Annotated[int, CliFlag(commands=(TRAIN,))] = Field(
        1, ge=1, description="Stage 2 gradient accumulation: batches per optimizer step."
    )
    class_weights: Annotated[list[float] | None, CliFlag(metavar="W0 W1 W2 W3 W4", commands=(TRAIN,))] = Field(
        None, description="DiceCE weights of the 5 classes (background NETC SNFH ET RC); default all 1."
    )
    encoder_prefix: Annotated[list[str], CliFlag(metavar="PREFIX...", commands=(TRAIN,))] = Field(
        list(DEFAULT_ENCODER_PREFIXES), description="Parameter-name prefixes frozen in stage 1 (SegResNet encoder)."
    )
    best_metric: Literal["mean_dice", "wt_dice"] = Field(
        "mean_dice",
        description="Validation score that picks stage<s>_best.pt: mean Dice of NETC SNFH ET RC, or whole-tumour Dice.",
    )
    val_interval: int = Field(1, ge=1, description="Validate (sliding window, Dice per class) every N epochs.")
    save_checkpoint_frequency: Annotated[int, CliFlag(commands=(TRAIN,))] = Field(
        1, ge=0, description="Save stage<s>_epoch<n>.pt every N epochs (0: only the best checkpoint)."
    )
    resume: Annotated[ConfigPath | None, CliFlag(commands=(TRAIN,))] = Field(
        None,
        description="Resume from a segkit checkpoint ('{fold}' is replaced by the fold); stage-aware. Into the "
        "checkpoint's own fold folder, or an empty one.",
    )
    overwrite: Annotated[bool, CliFlag(commands=(TRAIN,))] = Field(
        False,
        description="Replace the checkpoints and training log of an earlier run in <output_root>/fold<k>/ "
        "(removed when this run writes its first checkpoint); without it such a fold folder is refused.",
    )
    resume_stage: Annotated[Literal[1, 2] | None, CliFlag(commands=(TRAIN,))] = Field(
        None, description="Stage the resumed checkpoint must belong to (default: the checkpoint's own stage)."
    )
    load_weights: Annotated[ConfigPath | None, CliFlag(commands=(TRAIN,))] = Field(
        None, description="Initialise from a checkpoint or state dict ('{fold}' allowed); every shape must match."
    )
    amp: Annotated[bool, CliFlag(off="--no-amp")] = Field(False, description="Automatic mixed precision (CUDA only).")
    seed: int = Field(0, description="Seed of weights init, crops and augmentation.")
    # -------------------------------------------------------------- inference
    checkpoint: Annotated[ConfigPath | None, CliFlag(commands=(INFER,))] = Field(
        None,
        description="Checkpoint to predict with, '{fold}' replaced by the fold "
        "(default: <output_root>/fold{fold}/checkpoints/stage2_best.pt, else stage1_best.pt).",
    )
    roi_size: Annotated[tuple[int, int, int] | None, CliFlag(metavar="X Y Z", commands=(INFER,))] = Field(
        None, description="Sliding-window size in voxels, multiples of 8 (default: patch_size, else the checkpoint's)."
    )
    sw_batch_size: Annotated[int, CliFlag(commands=(INFER,))] = Field(
        2, ge=1, description="Sliding windows per forward pass."
    )
    sw_overlap: Annotated[float, CliFlag(commands=(INFER,))] = Field(
        0.5, ge=0, lt=1, description="Overlap of neighbouring sliding windows (fraction)."
    )
    sw_mode: Literal["gaussian", "constant"] = Field(
        "gaussian", description="Blending of overlapping windows (gaussian weights the window centres)."
    )

    @field_validator("bundle_name", mode="before")
    @classmethod
    def _none_means_no_bundle(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
            return None
        return value

    @field_validator("patch_size")
    @classmethod
    def _patch_divisible(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        return _multiple_of_eight(value, "patch size")

    @field_validator("roi_size")
    @classmethod
    def _roi_divisible(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        return _multiple_of_eight(value, "roi size")

    @field_validator("spacing")
    @classmethod
    def _positive_spacing(cls, value: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        # a zero spacing divides by zero when the cache size is estimated, and MONAI cannot resample to it
        if value is not None and not all(math.isfinite(v) and v > 0 for v in value):
            msg = f"spacing {' '.join(f'{v:g}' for v in value)}: every value must be a positive number of mm"
            raise ValueError(msg)
        return value

    @field_validator("class_weights")
    @classmethod
    def _five_weights(cls, value: list[float] | None) -> list[float] | None:
        if value is not None:
            if len(value) != NUM_CLASSES:
                msg = (
                    f"expected exactly {NUM_CLASSES} values (background NETC SNFH ET RC), got {len(value)}: "
                    f"{' '.join(f'{v:g}' for v in value)}"
                )
                raise ValueError(msg)
            if any(v < 0 for v in value) or not any(v > 0 for v in value):
                msg = "class weights must be non-negative and not all zero"
                raise ValueError(msg)
        return value

    @field_validator("crop_ratios")
    @classmethod
    def _five_ratios(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) != NUM_CLASSES or any(v < 0 for v in value) or not any(value)):
            msg = f"expected {NUM_CLASSES} non-negative values (background NETC SNFH ET RC), not all zero"
            raise ValueError(msg)
        return value

    @field_validator("encoder_prefix")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        if any(not p.strip() for p in value):
            msg = "an encoder prefix is empty"
            raise ValueError(msg)
        return value

    @field_validator("network_overrides")
    @classmethod
    def _overrides_are_literal_segresnet_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        from segkit.backends.monai_bundle.bundle import check_literal

        for key, item in value.items():
            if key not in NETWORK_ARG_NAMES:
                msg = f"{key!r} is not a SegResNet argument ({', '.join(sorted(NETWORK_ARG_NAMES))})"
                raise ValueError(msg)
            check_literal(item, key)
        if value.get("out_channels", NUM_CLASSES) != NUM_CLASSES:
            msg = f"out_channels is always {NUM_CLASSES} (the BraTS 2024 labels); remove it"
            raise ValueError(msg)
        if value.get("in_channels", 4) != 4:
            msg = "in_channels must be 4 (t1c t1n t2w t2f)"
            raise ValueError(msg)
        if value.get("spatial_dims", 3) != 3:
            msg = "spatial_dims must be 3"
            raise ValueError(msg)
        return value

    # ------------------------------------------------------------ resolved values

    def stage_epochs(self, stage: int) -> int:
        """Epochs of stage 1 or 2."""
        return self.stage1_epochs if stage == 1 else self.stage2_epochs

    def stage_lr(self, stage: int) -> float:
        """Learning rate of stage 1 or 2."""
        return self.stage1_lr if stage == 1 else self.stage2_lr

    def stage_accum(self, stage: int) -> int:
        """Gradient-accumulation steps of stage 1 or 2."""
        return self.stage1_accum if stage == 1 else self.stage2_accum
