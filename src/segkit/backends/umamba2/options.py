"""Options of the UMamba2 backend (``backends.umamba2`` in a run config).

Everything the nnU-Net backend offers (`NnUNetOptions`), with UMamba2's defaults (a residual-encoder
planner, the ``3d_fullres_umamba2`` configuration, its trainer) and its own settings: how `segkit data
plan` lays out the network, the Mamba2 kernel, and the recipe's gradient accumulation, clipping and
pretrained-weight loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from segkit.backends.nnunet.options import NnUNetOptions, TrainerField
from segkit.config.flags import INFER, PLAN, TRAIN, CliFlag
from segkit.config.models import ConfigPath

CONFIGURATION = "3d_fullres_umamba2"
"""The configuration `segkit data plan --backend umamba2` adds to the plans."""

TRAINER = "nnUNetTrainerUMamba2"
"""segkit's UMamba2 trainer (`segkit.backends.umamba2.trainer`)."""

Kernel = Literal["auto", "torch", "mamba-ssm"]

Stage = Literal["supervised", "pretrain", "consistency", "pseudolabel"]
Recipe = Literal["stsr2025"]

STAGE_TRAINERS: dict[str, str] = {
    "supervised": TRAINER,
    "pretrain": "nnUNetTrainerUMamba2Pretrain",
    "consistency": "nnUNetTrainerUMamba2Consistency",
    "pseudolabel": "nnUNetTrainerUMamba2PseudoLabel",
}
"""Stage -> segkit's nnU-Net trainer class of that stage."""

TRAINER_MODULES: dict[str, str] = {
    TRAINER: "segkit.backends.umamba2.trainer",
    STAGE_TRAINERS["pretrain"]: "segkit.backends.umamba2.pretrain",
    STAGE_TRAINERS["consistency"]: "segkit.backends.umamba2.stages",
    STAGE_TRAINERS["pseudolabel"]: "segkit.backends.umamba2.stages",
}
"""Trainer class -> the module defining it."""

RECIPES: dict[str, tuple[str, ...]] = {"stsr2025": ("pretrain", "consistency", "pseudolabel")}
"""Recipe -> its stages, in order (the STSR 2025 submission: DAE pretraining, consistency, pseudo-labels)."""

SEMI_STAGES = ("consistency", "pseudolabel")


@dataclass(frozen=True)
class StageField(TrainerField):
    """A stage trainer's constant: None (the trainer's own default, the recipe's) unless set.

    Attributes:
        kind: The value's type (the default None does not say it).
        stages: The stages whose trainer has the attribute.
    """

    kind: type = float
    stages: tuple[str, ...] = SEMI_STAGES

    def encode(self, value: Any) -> str:
        if self.kind is bool:
            return self.token + ("1" if value else "0")
        return super().encode(value)

    def decode(self, text: str) -> Any:
        if self.kind is bool:
            if text not in ("0", "1"):
                raise ValueError(text)
            return text == "1"
        value = text.replace("p", ".").replace("m", "-")
        return self.kind(float(value)) if self.kind is float else self.kind(value)


_PRETRAIN = ("pretrain",)
_PSEUDO = ("consistency", "pseudolabel")
STAGE_FIELDS: tuple[StageField, ...] = (
    StageField("u", "unlabelled_min_ratio", "unlabelled_min_ratio", None),
    StageField("x", "unlabelled_max_ratio", "unlabelled_max_ratio", None),
    StageField("w", "consistency_weight", "consistency_weight", None),
    StageField("r", "rampup_fraction", "rampup_fraction", None),
    StageField("k", "perturb_skips", "perturb_skips", None, kind=int),
    StageField("d", "feature_dropout", "feature_dropout", None),
    StageField("n", "feature_noise", "feature_noise", None),
    StageField("q", "pseudolabel_probability", "pseudolabel_probability", None, stages=_PSEUDO),
    StageField("t", "pseudolabel_threshold", "pseudolabel_threshold", None, stages=_PSEUDO),
    StageField("l", "pseudolabel_weight", "pseudolabel_weight", None, stages=_PSEUDO),
    StageField("b", "pseudolabel_keep_background", "pseudolabel_keep_background", None, kind=bool, stages=_PSEUDO),
    StageField("g", "mask_ratio", "mask_ratio", None, stages=_PRETRAIN),
    StageField("h", "mask_patch_size", "mask_patch_size", None, kind=int, stages=_PRETRAIN),
    StageField("o", "noise_std", "noise_std", None, stages=_PRETRAIN),
)
"""The stage trainers' constants as options (a set one derives a trainer and names the model folder)."""


class UMamba2Options(NnUNetOptions):
    """UMamba2 settings for `segkit data plan`, `train` and `infer` (plus every nnU-Net option)."""

    cli_panel: ClassVar[str] = "UMamba2 backend"
    trainer_fields: ClassVar[tuple[TrainerField, ...]] = (
        *NnUNetOptions.trainer_fields,
        TrainerField("a", "accumulation_steps", "accumulation_steps", default=1),
        TrainerField("c", "grad_clip", "grad_clip_norm", default=12.0),
        *STAGE_FIELDS,
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

    # ---- the recipe's stages (docs/umamba2.md, "Semi-supervised stages")
    stage: Annotated[Stage | None, CliFlag(commands=(TRAIN, INFER))] = Field(
        None,
        description=(
            "Training stage: supervised (default), pretrain (self-supervised), consistency (stage 1) or "
            "pseudolabel (stage 2); picks the stage's trainer (infer: the stage's trained model)."
        ),
    )
    recipe: Annotated[Recipe | None, CliFlag(commands=(TRAIN, INFER))] = Field(
        None,
        description=(
            "Run a whole recipe: stsr2025 = pretrain -> consistency -> pseudolabel, each resumable and "
            "skipped when complete (infer: its final stage's model)."
        ),
    )
    pretrain_epochs: Annotated[int | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=1, description="Epochs of the pretraining stage (default: --epochs, else the trainer's: 200)."
    )
    consistency_epochs: Annotated[int | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=1, description="Epochs of the consistency stage (default: --epochs, else the recipe's 1000)."
    )
    pseudolabel_epochs: Annotated[int | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=1, description="Epochs of the pseudo-label stage (default: --epochs, else the recipe's 500)."
    )
    unlabelled_min_ratio: Annotated[float | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=0, le=1, description="Unlabelled-step probability at epoch 0 (recipe: 0.1 stage 1, 0.3 stage 2)."
    )
    unlabelled_max_ratio: Annotated[float | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=0, le=1, description="Ceiling of the unlabelled-step probability (recipe: 0.5)."
    )
    consistency_weight: Annotated[float | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=0, description="Consistency-loss weight after the ramp-up (recipe: 50)."
    )
    rampup_fraction: Annotated[float | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=0, le=1, description="Share of iterations of the ramp-up (recipe: 0.2 stage 1, 0.05 stage 2)."
    )
    perturb_skips: Annotated[int | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=0, description="Last encoder skips whose features the student perturbs (recipe: 5)."
    )
    feature_dropout: Annotated[float | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=0, le=1, description="Channel dropout of the feature perturbation (recipe: 0.5)."
    )
    feature_noise: Annotated[float | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=0, description="Half-width of the multiplicative uniform feature noise (recipe: 0.3)."
    )
    pseudolabel_probability: Annotated[float | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=0, le=1, description="Share of unlabelled steps with the pseudo-label loss (recipe: 0.25 stage 2)."
    )
    pseudolabel_threshold: Annotated[float | None, CliFlag(commands=(TRAIN,))] = Field(
        None, gt=0, le=1, description="Confidence a voxel needs to be a pseudo-label (recipe: 0.75)."
    )
    pseudolabel_weight: Annotated[float | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=0, description="Weight of the pseudo-label Dice+CE (recipe: 0.1)."
    )
    pseudolabel_keep_background: Annotated[
        bool | None, CliFlag(off="--pseudolabel-ignore-background", commands=(TRAIN,))
    ] = Field(
        None,
        description=(
            "Confident background is a pseudo-label too (segkit's default); --pseudolabel-ignore-background "
            "ignores it like the fork's ignore_label=0 (see docs/umamba2.md)."
        ),
    )
    mask_ratio: Annotated[float | None, CliFlag(commands=(TRAIN,))] = Field(
        None, gt=0, lt=1, description="Pretraining: share of masked patches, within (0, 1) (recipe: 0.3)."
    )
    mask_patch_size: Annotated[int | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=1, description="Pretraining: edge of the masked cubes in voxels (recipe: 16)."
    )
    noise_std: Annotated[float | None, CliFlag(commands=(TRAIN,))] = Field(
        None, ge=0, description="Pretraining: standard deviation of the added noise (default: the trainer's)."
    )

    @model_validator(mode="before")
    @classmethod
    def _stage_names_its_trainer(cls, data: Any) -> Any:
        # --stage/--recipe choose the trainer (and, for infer, the model folder) unless --trainer is given.
        if not isinstance(data, dict) or "trainer" in data:
            return data
        stage = data.get("stage")
        if stage is None and data.get("recipe") in RECIPES:
            stage = RECIPES[str(data["recipe"])][-1]
        if stage in STAGE_TRAINERS:
            return {**data, "trainer": STAGE_TRAINERS[str(stage)]}
        return data

    @model_validator(mode="after")
    def _stage_settings_fit(self) -> UMamba2Options:
        if self.recipe is not None and self.stage is not None:
            msg = f"--recipe {self.recipe} runs its own stages; drop --stage {self.stage}"
            raise ValueError(msg)
        if self.stage is not None and self.trainer != STAGE_TRAINERS[self.stage]:
            msg = f"--trainer {self.trainer} and --stage {self.stage} ({STAGE_TRAINERS[self.stage]}) disagree"
            raise ValueError(msg)
        stages = RECIPES[self.recipe] if self.recipe else (self.stage or "supervised",)
        for f in STAGE_FIELDS:
            if getattr(self, f.field) is not None and not set(f.stages) & set(stages):
                msg = f"{f.field} applies to the {'/'.join(f.stages)} stage(s), not {'/'.join(stages)}"
                raise ValueError(msg)
        given = [n for n in ("pretrain_epochs", "consistency_epochs", "pseudolabel_epochs") if getattr(self, n)]
        for name in given:
            if name.split("_")[0] not in stages:
                msg = f"{name} applies to the {name.split('_')[0]} stage, not {'/'.join(stages)}"
                raise ValueError(msg)
        return self

    def for_stage(self, stage: str, **update: Any) -> UMamba2Options:
        """These options for one stage of the recipe: its trainer, epochs and constants (the rest unchanged)."""
        values: dict[str, Any] = {"recipe": None, "stage": stage, "trainer": STAGE_TRAINERS[stage]}
        epochs = getattr(self, f"{stage}_epochs", None)
        if epochs is not None:
            values["epochs"] = epochs
        for f in STAGE_FIELDS:
            if stage not in f.stages:
                values[f.field] = None
        for name in ("pretrain_epochs", "consistency_epochs", "pseudolabel_epochs"):
            values[name] = None
        values.update(update)
        return self.model_copy(update=values)

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
