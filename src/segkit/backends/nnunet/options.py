"""Options of the nnU-Net backend (``backends.nnunet`` in a run config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator, model_validator

from segkit.config.flags import INFER, PLAN, TRAIN, CliFlag
from segkit.config.models import ConfigPath, Strict

PLANNER_PRESETS: dict[str, tuple[str, str]] = {
    "default": ("ExperimentPlanner", "nnUNetPlans"),
    "resenc-m": ("nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans"),
    "resenc-l": ("nnUNetPlannerResEncL", "nnUNetResEncUNetLPlans"),
    "resenc-xl": ("nnUNetPlannerResEncXL", "nnUNetResEncUNetXLPlans"),
    "resenc-l-torchres": ("nnUNetPlannerResEncL_torchres", "nnUNetResEncUNetLPlans_torchres"),
}
"""segkit preset -> (nnU-Net planner class, plans identifier it writes). A planner's class name works too."""

_PRESET_OF_CLASS = {planner: preset for preset, (planner, _) in PLANNER_PRESETS.items()}


@dataclass(frozen=True)
class TrainerField:
    """An option that becomes an attribute of a derived trainer class and a token of its name.

    A derived backend lists these in its options' ``trainer_fields``: a value other than `default` makes
    segkit derive a trainer (``<trainer>_segkit_<token><value>...``) whose `attribute` is set to it, so
    the model folder says how it was trained and `segkit infer` can find it again.
    """

    token: str
    field: str
    attribute: str
    default: Any

    def encode(self, value: Any) -> str:
        """`value` as a class-name-safe token (``a2``, ``c12``, ``c0p5``)."""
        text = f"{value:g}" if isinstance(value, float) else str(value)
        return self.token + text.replace(".", "p").replace("-", "m")

    def decode(self, text: str) -> Any:
        """The value of a token written by `encode` (without the prefix); ValueError if it is not one."""
        value = text.replace("p", ".").replace("m", "-")
        return type(self.default)(float(value)) if isinstance(self.default, float) else type(self.default)(value)


class NnUNetOptions(Strict):
    """nnU-Net v2 settings shared by `segkit data plan`, `train` and `infer`."""

    cli_panel: ClassVar[str] = "nnU-Net backend"
    trainer_fields: ClassVar[tuple[TrainerField, ...]] = ()
    """Options set as attributes of a derived trainer (see `TrainerField`); a derived backend adds its own."""

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
    mirror_axes: Annotated[list[int] | None, CliFlag(commands=(INFER,))] = Field(
        None,
        description=(
            "Test-time mirroring only on these spatial axes (nnU-Net's order, e.g. 1 2); default: the "
            "axes the model was trained to mirror."
        ),
    )

    @field_validator("trainer")
    @classmethod
    def _trainer_is_a_class_name(cls, value: str) -> str:
        # The name becomes a Python class (and a folder name); refuse anything else early.
        if not value.isidentifier():
            msg = f"{value!r} is not a trainer class name"
            raise ValueError(msg)
        return value

    @field_validator("planner")
    @classmethod
    def _planner_class_is_its_preset(cls, value: str) -> str:
        # `--planner nnUNetPlannerResEncL` (nnU-Net's -pl habit) means the preset: its plans name is known.
        return _PRESET_OF_CLASS.get(value, value)

    @field_validator("mirror_axes")
    @classmethod
    def _axes_are_spatial(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if any(a < 0 or a > 2 for a in value) or len(set(value)) != len(value):
            msg = f"mirror axes must be distinct spatial axes among 0, 1, 2, got {value}"
            raise ValueError(msg)
        return sorted(value)

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
            or any(getattr(self, f.field) != f.default for f in self.trainer_fields)
        )
