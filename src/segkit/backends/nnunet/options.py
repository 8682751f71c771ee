"""Options of the nnU-Net backend (``backends.nnunet`` in a run config)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator, model_validator

from segkit.config.flags import INFER, PLAN, TRAIN, CliFlag
from segkit.config.models import ConfigPath, Strict

PLANNER_PRESETS: dict[str, tuple[str, str]] = {
    "default": ("ExperimentPlanner", "nnUNetPlans"),
    "resenc-m": ("nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans"),
    "resenc-l": ("nnUNetPlannerResEncL", "nnUNetResEncUNetLPlans"),
    "resenc-xl": ("nnUNetPlannerResEncXL", "nnUNetResEncUNetXLPlans"),
}
"""segkit preset -> (nnU-Net planner class, plans identifier it writes)."""


class NnUNetOptions(Strict):
    """nnU-Net v2 settings shared by `segkit data plan`, `train` and `infer`."""

    cli_panel: ClassVar[str] = "nnU-Net backend"

    configuration: Annotated[str, CliFlag("--configuration", "-C", commands=(TRAIN, INFER))] = Field(
        "3d_fullres", description="nnU-Net configuration to train/predict (2d, 3d_fullres, ...)."
    )
    planner: Annotated[str, CliFlag(commands=(TRAIN, INFER, PLAN))] = Field(
        "default",
        description="Experiment planner: default, resenc-m, resenc-l, resenc-xl, or an nnU-Net planner class name.",
    )
    plans: Annotated[str | None, CliFlag("--plans", "-p", commands=(TRAIN, INFER))] = Field(
        None, description="Plans identifier (default: the one the planner writes, e.g. nnUNetPlans)."
    )
    trainer: Annotated[str, CliFlag(commands=(TRAIN, INFER))] = Field(
        "nnUNetTrainer", description="nnU-Net trainer class (any nnU-Net trainer variant)."
    )
    epochs: Annotated[int | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=1, description="Override the trainer's number of epochs."
    )
    iterations_per_epoch: Annotated[int | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=1, description="Override training iterations per epoch."
    )
    val_iterations_per_epoch: Annotated[int | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=1, description="Override validation iterations per epoch (default with overrides: iterations / 5)."
    )
    checkpoint_every: Annotated[int | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=1, description="Save checkpoint_latest every N epochs (nnU-Net: 50)."
    )
    mirroring: Annotated[bool, CliFlag(off="--no-mirroring", commands=(TRAIN,))] = Field(
        True, description="Mirroring augmentation and mirrored validation (False: NoMirroring)."
    )
    final_validation: Annotated[bool, CliFlag(off="--no-final-validation", commands=(TRAIN,))] = Field(
        True, description="Run nnU-Net's sliding-window validation after training."
    )
    npz: Annotated[bool, CliFlag(commands=(TRAIN,))] = Field(
        False, description="Save softmax probabilities of the final validation (--npz)."
    )
    continue_training: Annotated[bool, CliFlag("--continue", commands=(TRAIN,))] = Field(
        False, description="Resume from the latest checkpoint of this fold (--continue)."
    )
    overwrite: Annotated[bool, CliFlag(commands=(TRAIN,))] = Field(
        False, description="Train a fold again from scratch, deleting its earlier results."
    )
    pretrained_weights: Annotated[ConfigPath | None, CliFlag(commands=(TRAIN,))] = Field(
        None, description="Initialise from an nnU-Net checkpoint (all but the segmentation heads)."
    )
    num_gpus: Annotated[int, CliFlag(commands=(TRAIN,))] = Field(
        1, ge=1, description="GPUs for nnU-Net's DDP training (CUDA only)."
    )
    data_augmentation_processes: Annotated[int | None, CliFlag("--da-processes", commands=(TRAIN,))] = Field(
        None, ge=0, description="Data-augmentation workers (nnUNet_n_proc_DA); 0 runs augmentation in-process."
    )
    num_processes: Annotated[int, CliFlag("--num-processes", "-j", commands=(TRAIN, INFER))] = Field(
        0, ge=0, description="Processes for fingerprint, preprocessing and export; 0 picks min(cores, 4)."
    )
    checkpoint: Annotated[str, CliFlag(commands=(INFER,))] = Field(
        "checkpoint_final.pth", description="Checkpoint file used for prediction."
    )
    tile_step_size: Annotated[float, CliFlag("--tile-step-size", "--step-size", commands=(INFER,))] = Field(
        0.5, gt=0, le=1, description="Sliding-window step as a fraction of the patch."
    )
    test_time_mirroring: Annotated[bool, CliFlag("--tta", off="--disable-tta", commands=(INFER,))] = Field(
        True, description="Mirror test-time augmentation when predicting."
    )

    @field_validator("trainer")
    @classmethod
    def _trainer_is_a_class_name(cls, value: str) -> str:
        # The name becomes a Python class (and a folder name); refuse anything else early.
        if not value.isidentifier():
            msg = f"{value!r} is not a trainer class name"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _planner_known_or_plans_given(self) -> NnUNetOptions:
        if self.planner not in PLANNER_PRESETS and self.plans is None:
            msg = f"planner {self.planner!r} is not a preset ({', '.join(PLANNER_PRESETS)}); also set plans"
            raise ValueError(msg)
        return self

    @property
    def planner_class(self) -> str:
        """nnU-Net planner class name."""
        return PLANNER_PRESETS[self.planner][0] if self.planner in PLANNER_PRESETS else self.planner

    @property
    def plans_identifier(self) -> str:
        """Plans identifier (file stem of the plans JSON)."""
        if self.plans is not None:
            return self.plans
        return PLANNER_PRESETS[self.planner][1]

    @property
    def has_trainer_overrides(self) -> bool:
        """Whether segkit must derive its own trainer class from `trainer`."""
        return (
            any(
                v is not None
                for v in (self.epochs, self.iterations_per_epoch, self.val_iterations_per_epoch, self.checkpoint_every)
            )
            or not self.mirroring
        )
