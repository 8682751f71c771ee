"""Options of the UMamba2 backend (``backends.umamba2`` in a run config).

Everything the nnU-Net backend offers (`NnUNetOptions`), with UMamba2's defaults (a residual-encoder
planner, the ``3d_fullres_umamba2`` configuration, its trainer) and its own settings: how `segkit data
plan` lays out the network, the Mamba2 kernel, and the recipe's gradient accumulation, clipping and
pretrained-weight loading.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from segkit.backends.nnunet.options import NnUNetOptions, TrainerField
from segkit.config.flags import INFER, PLAN, TRAIN, CliFlag
from segkit.config.models import ConfigPath

CONFIGURATION = "3d_fullres_umamba2"
"""The configuration `segkit data plan --backend umamba2` adds to the plans."""

TRAINER = "nnUNetTrainerUMamba2"
"""segkit's UMamba2 trainer (`segkit.backends.umamba2.trainer`)."""

Kernel = Literal["auto", "torch", "mamba-ssm"]


class UMamba2Options(NnUNetOptions):
    """UMamba2 settings for `segkit data plan`, `train` and `infer` (plus every nnU-Net option)."""

    cli_panel: ClassVar[str] = "UMamba2 backend"
    trainer_fields: ClassVar[tuple[TrainerField, ...]] = (
        *NnUNetOptions.trainer_fields,
        TrainerField("a", "accumulation_steps", "accumulation_steps", default=1),
        TrainerField("c", "grad_clip", "grad_clip_norm", default=12.0),
    )

    configuration: Annotated[str, CliFlag("--configuration", "-C", commands=(TRAIN, INFER))] = Field(
        CONFIGURATION, description="nnU-Net configuration to train/predict (the one data plan adds by default)."
    )
    planner: Annotated[str, CliFlag(commands=(TRAIN, INFER, PLAN))] = Field(
        "resenc-m",
        description=(
            "Residual-encoder planner: resenc-m, resenc-l, resenc-xl, resenc-l-torchres (the recipe's "
            "nnUNetPlannerResEncL_torchres), or a planner class name."
        ),
    )
    trainer: Annotated[str, CliFlag(commands=(TRAIN, INFER))] = Field(
        TRAINER, description="nnU-Net trainer class (default: segkit's UMamba2 trainer)."
    )

    pretrained_weights: Annotated[ConfigPath | None, CliFlag(commands=(TRAIN,))] = Field(
        None,
        description=(
            "Initialise from a checkpoint (nnU-Net/UMamba2, or encoder-only self-supervised weights), matched "
            "by name and shape; the segmentation heads only with --keep-heads."
        ),
    )

    # ---- planning: how the 3d_fullres_umamba2 configuration is laid out
    layout: Annotated[Literal["planner", "stsr2025"], CliFlag(commands=(PLAN,))] = Field(
        "planner",
        description="Network stages: the planner's, or the recipe's 7-stage STSR 2025 layout (stsr2025).",
    )
    patch_size: Annotated[tuple[int, int, int] | None, CliFlag(commands=(PLAN,), metavar="X Y Z")] = Field(
        None, description="Patch size of the UMamba2 configuration (nnU-Net axis order; default: the planner's)."
    )
    batch_size: Annotated[int | None, CliFlag(commands=(PLAN,))] = Field(
        None, ge=1, description="Batch size of the UMamba2 configuration (default: the planner's)."
    )
    normalization: Annotated[Literal["zscore", "ct", "none", "rescale01"] | None, CliFlag(commands=(PLAN,))] = Field(
        None, description="Intensity normalisation of every channel (default: the planner's, ZScore for MRI)."
    )
    features_per_stage: list[int] | None = Field(
        None, description="Feature maps per stage (default: the layout's); e.g. a small network for a demo."
    )
    d_state: int = Field(32, ge=1, description="Mamba2 state size.")
    d_conv: int = Field(4, ge=1, description="Mamba2 causal convolution width.")
    expand: int = Field(2, ge=1, description="Mamba2 expansion of the model width.")
    headdim: int = Field(80, ge=1, description="Mamba2 head width; bottleneck features x expand must divide by it.")

    # ---- training and inference
    kernel: Annotated[Kernel, CliFlag("--mamba-kernel", commands=(TRAIN, INFER))] = Field(
        "auto",
        description="Mamba2 kernel: auto (mamba-ssm on CUDA when installed, else torch), torch or mamba-ssm.",
    )
    accumulation_steps: Annotated[int, CliFlag(commands=(TRAIN,))] = Field(
        1, ge=1, description="Gradient accumulation: optimizer step every N micro-batches (and after the last)."
    )
    grad_clip: Annotated[float, CliFlag(commands=(TRAIN,))] = Field(
        12.0, ge=0, description="Gradient-norm clipping (0: none)."
    )
    keep_heads: Annotated[bool, CliFlag(commands=(TRAIN,))] = Field(
        False,
        description=(
            "With --pretrained-weights: also load the segmentation heads (a full UMamba2 checkpoint, "
            "the recipe's stage 2); otherwise heads are re-initialised and partial checkpoints load by name."
        ),
    )

    @model_validator(mode="after")
    def _mixer_fits(self) -> UMamba2Options:
        # The last stage's width is only known from the plans; here only what the options alone decide.
        if self.features_per_stage is not None:
            if any(f < 1 for f in self.features_per_stage):
                msg = f"features_per_stage must be positive, got {self.features_per_stage}"
                raise ValueError(msg)
            d_inner = self.features_per_stage[-1] * self.expand
            if d_inner % self.headdim:
                msg = (
                    f"the Mamba2 width {self.features_per_stage[-1]} x expand {self.expand} = {d_inner} is not "
                    f"divisible by headdim {self.headdim}"
                )
                raise ValueError(msg)
        if self.keep_heads and self.pretrained_weights is None:
            msg = "keep_heads needs pretrained_weights (--keep-heads loads the heads of --pretrained-weights)"
            raise ValueError(msg)
        return self
