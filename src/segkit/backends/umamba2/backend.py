"""The UMamba2 backend: nnU-Net's pipeline with a Mamba2-bottleneck residual U-Net.

Built on the nnU-Net adapter (`NnUNetBackend`): planning is nnU-Net's residual-encoder planner plus a
``3d_fullres_umamba2`` configuration (`segkit.backends.umamba2.plans`), training is nnU-Net's loop with
segkit's `nnUNetTrainerUMamba2` (gradient accumulation, clipping, no compile), prediction is nnU-Net's
predictor. nnU-Net builds the network from the plans by its dotted class name, so nnU-Net's own tools
predict with these models too, given ``nnUNet_extTrainer=<nnUNet_results>/segkit_trainers``.

Inspired by U-Mamba2 (Tan et al. 2025, arXiv 2509.12069); written from its description, no code of the
authors' (non-commercially licensed) fork. This module imports neither torch nor nnunetv2.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar

from segkit.backends.base import Capabilities, PredictRequest, PrepareRequest, TrainRequest, TrainResult
from segkit.backends.nnunet import layout
from segkit.backends.nnunet.backend import CHECKPOINTS, NnUNetBackend
from segkit.backends.nnunet.options import NnUNetOptions
from segkit.backends.umamba2.options import RECIPES, SEMI_STAGES, TRAINER_MODULES, UMamba2Options
from segkit.errors import ConfigError, DataError, MissingDependencyError
from segkit.progress import ProgressSink


def kernel_here() -> str:
    """The Mamba2 kernel ``auto`` uses on this machine, with the reason when it is the torch scan.

    Cheap when mamba-ssm is not installed (no torch import); otherwise imports torch and mamba-ssm.
    """
    if find_spec("mamba_ssm") is None:
        return "torch (mamba-ssm not installed)"
    if find_spec("torch") is None:
        return "torch (torch not installed)"
    import torch

    if not torch.cuda.is_available():
        return "torch (no CUDA device)"
    from segkit.backends.umamba2.mamba2 import _load_fused

    fused, reason = _load_fused()
    return "mamba-ssm" if fused is not None else f"torch (mamba-ssm fails to import: {reason})"


class UMamba2Backend(NnUNetBackend):
    """UMamba2: nnU-Net residual-encoder U-Net with a Mamba2 bottleneck (after U-Mamba2, Tan et al. 2025)."""

    name: ClassVar[str] = "umamba2"
    Options: ClassVar[type[NnUNetOptions]] = UMamba2Options
    worker_module: ClassVar[str] = "segkit.backends.umamba2.worker"
    trainer_modules: ClassVar[Mapping[str, str]] = TRAINER_MODULES
    network_modules: ClassVar[tuple[str, ...]] = ("segkit.backends.umamba2.network",)
    capabilities: ClassVar[Capabilities] = Capabilities(
        prepare=True,
        ensemble=True,
        implicit_ensemble=True,
        multi_gpu=True,
        fold_all="train_on_all",
        devices=("cpu", "cuda"),
    )

    @classmethod
    def environment_note(cls) -> str:
        """What `segkit backends` adds to the description: the Mamba2 kernel used here."""
        return f"Mamba2 kernel here: {kernel_here()}"

    def edit_plans(self, plans: dict[str, Any], options: NnUNetOptions) -> dict[str, Any]:
        """Add (or replace) the ``3d_fullres_umamba2`` configuration."""
        from segkit.backends.umamba2.plans import add_umamba2_configuration

        opts = self._own(options)
        return add_umamba2_configuration(
            plans,
            layout=opts.layout,
            patch_size=list(opts.patch_size) if opts.patch_size else None,
            batch_size=opts.batch_size,
            normalization=opts.normalization,
            features_per_stage=opts.features_per_stage,
            d_state=opts.d_state,
            d_conv=opts.d_conv,
            expand=opts.expand,
            headdim=opts.headdim,
            plans_identifier=opts.plans_identifier,
        )

    def worker_options(self, options: NnUNetOptions, action: str) -> dict[str, Any]:
        """The kernel (both actions) and whether pretrained weights keep their heads (training)."""
        opts = self._own(options)
        extra: dict[str, Any] = {"kernel": opts.kernel}
        if action == "train":
            extra["keep_heads"] = opts.keep_heads
        return extra

    def check_options(self, request: PrepareRequest | TrainRequest | PredictRequest, options: NnUNetOptions) -> None:
        """UMamba2 configuration in the plans, a usable kernel; all before nnU-Net starts."""
        if isinstance(request, PrepareRequest):
            return
        opts = self._own(options)
        if isinstance(request, PredictRequest):
            self._check_umamba2_plans(layout.model_dir(request.dataset, opts) / "plans.json", opts)
        if opts.kernel == "mamba-ssm":
            if request.device != "cuda":
                msg = f"--mamba-kernel mamba-ssm needs --device cuda (device is {request.device})"
                raise ConfigError(msg, hint="use --mamba-kernel auto or torch off CUDA")
            from segkit.backends.umamba2.mamba2 import _MAMBA_HINT, _load_fused

            fused, reason = _load_fused()
            if fused is None:
                msg = f"--mamba-kernel mamba-ssm: mamba-ssm cannot be imported ({reason})"
                raise MissingDependencyError(msg, hint=_MAMBA_HINT)

    def _check_train(self, request: TrainRequest, opts: NnUNetOptions) -> None:
        # Before nnU-Net's checks, so that plans without the configuration say how to add it.
        path = layout.plans_file(request.dataset, opts)
        if path.is_file():
            self._check_umamba2_plans(path, opts)
        own = self._own(opts)
        if own.recipe is not None:
            # a recipe is checked as its first stage still to train (complete stages are skipped), plus
            # the unlabelled cases of its semi-supervised stages
            pending = self._first_pending_stage(request, own)
            if pending is not None:
                super()._check_train(request, pending)
            else:
                layout.read_plans(request.dataset, own)
            for stage in RECIPES[own.recipe]:
                if stage in SEMI_STAGES:
                    self._check_semi_data(request, own.for_stage(stage))
            return
        super()._check_train(request, opts)
        if own.stage in SEMI_STAGES:
            self._check_semi_data(request, own)

    def _first_pending_stage(self, request: TrainRequest, opts: UMamba2Options) -> UMamba2Options | None:
        """The options of the recipe's first stage without a final checkpoint (as `_train_recipe` runs it)."""
        assert opts.recipe is not None  # only called for a recipe
        for stage in RECIPES[opts.recipe]:
            staged = opts.for_stage(stage, pretrained_weights=None, keep_heads=False)
            fold = layout.fold_dir(layout.model_dir(request.dataset, staged), request.fold)
            if (fold / "checkpoint_final.pth").is_file() and not opts.overwrite:
                continue
            resume = opts.continue_training and any((fold / n).is_file() for n in CHECKPOINTS)
            return staged.model_copy(update={"continue_training": resume})
        return None

    def trains_on_unlabelled(self, opts: NnUNetOptions) -> bool:
        """The pretraining and semi-supervised stages keep placeholder labels out of every loss themselves."""
        own = self._own(opts)
        return own.recipe is not None or own.stage in ("pretrain", *SEMI_STAGES)

    def _check_semi_data(self, request: TrainRequest, opts: UMamba2Options) -> None:
        """The semi-supervised stages need the fold's unlabelled cases, preprocessed."""
        from segkit.backends.umamba2.recipe import check_unlabelled_preprocessed, unlabelled_ids

        dataset = request.dataset
        if dataset.splits_file.is_file() or not (dataset.raw_dir / "dataset.json").is_file():
            ids = unlabelled_ids(dataset.splits_file, request.fold)
        else:
            # no splits yet: training writes them with every unlabelled case of dataset.json in each fold
            from segkit.data.unlabelled import dataset_unlabelled_ids

            ids = dataset_unlabelled_ids(dataset.raw_dir)
            if not ids:
                msg = f"{dataset.raw_dir / 'dataset.json'}: the dataset has no unlabelled cases"
                raise DataError(msg, hint="add them with `segkit data prepare --unlabelled-sources DIR` and plan again")
        plans = layout.read_plans(request.dataset, opts)
        check_unlabelled_preprocessed(
            request.dataset, layout.configuration_data_identifier(plans, opts.configuration), ids
        )

    # ------------------------------------------------------------------ stages and recipes

    def train(self, request: TrainRequest, options: Any, *, progress: ProgressSink) -> TrainResult:
        """Train one stage (``--stage``), or every stage of ``--recipe`` in order."""
        opts = self._own(options)
        if opts.recipe is not None:
            return self._train_recipe(request, opts, progress)
        return self._train_stage(request, opts, progress)

    def _train_stage(self, request: TrainRequest, opts: UMamba2Options, progress: ProgressSink) -> TrainResult:
        """One stage; the semi-supervised ones find their starting weights unless given or resuming."""
        from segkit.backends.umamba2.recipe import stage_checkpoint, write_record

        stage = opts.stage or "supervised"
        if stage in SEMI_STAGES and opts.pretrained_weights is None and not opts.continue_training:
            source = "pretrain" if stage == "consistency" else "consistency"
            found = stage_checkpoint(request.dataset, opts, source, request.fold)
            if found is None and stage == "pseudolabel":
                msg = (
                    f"--stage pseudolabel starts from a stage-1 model, and {request.dataset.name} has no "
                    f"trained consistency model of fold {request.fold}"
                )
                raise ConfigError(msg, hint="train it with --stage consistency first, or pass --pretrained-weights")
            if found is not None:
                progress.log(f"{stage}: starting from the {source} model {found}")
                opts = opts.model_copy(update={"pretrained_weights": found, "keep_heads": stage == "pseudolabel"})
        elif stage == "pseudolabel" and opts.pretrained_weights is not None and not opts.keep_heads:
            # stage 2 continues the stage-1 model: its segmentation heads are part of it
            opts = opts.model_copy(update={"keep_heads": True})
        result = super().train(request, opts, progress=progress)
        write_record(
            layout.fold_dir(result.model_dir, request.fold),
            stage=stage,
            trainer=layout.derived_trainer_name(opts),
            started_from=str(Path(opts.pretrained_weights).resolve()) if opts.pretrained_weights else None,
            recipe=None,
            resumed=opts.continue_training,
        )
        return result

    def _train_recipe(self, request: TrainRequest, opts: UMamba2Options, progress: ProgressSink) -> TrainResult:
        """The recipe's stages in order; a complete stage (checkpoint_final.pth) is skipped, a started one resumed."""
        from segkit.backends.umamba2.recipe import write_record

        assert opts.recipe is not None  # only called for a recipe
        stages = RECIPES[opts.recipe]
        # before the first stage starts: a recipe that cannot finish does not begin
        self.check(request, opts)
        previous: Path | None = Path(opts.pretrained_weights) if opts.pretrained_weights else None
        result: TrainResult | None = None
        for i, stage in enumerate(stages):
            staged = opts.for_stage(stage, pretrained_weights=None, keep_heads=False)
            if stage == "pretrain":
                staged = staged.model_copy(update={"final_validation": False})
            model = layout.model_dir(request.dataset, staged)
            fold = layout.fold_dir(model, request.fold)
            final = fold / "checkpoint_final.pth"
            label = f"recipe {opts.recipe} stage {i + 1}/{len(stages)} ({stage})"
            if final.is_file() and not opts.overwrite:
                progress.log(f"{label}: already complete ({final}), skipped")
                result = TrainResult(
                    fold=request.fold,
                    model_dir=model,
                    checkpoint=final,
                    log_file=model / f"segkit_train_fold_{request.fold}.log",
                )
            else:
                resume = opts.continue_training and any((fold / n).is_file() for n in CHECKPOINTS)
                update: dict[str, Any] = {"continue_training": resume}
                if not resume and previous is not None:
                    update.update(pretrained_weights=previous, keep_heads=stage == "pseudolabel")
                progress.log(f"{label}: {'resuming' if resume else 'training'}")
                staged = staged.model_copy(update=update)
                result = self._train_stage(request, staged, progress)
                write_record(
                    fold,
                    stage=stage,
                    trainer=layout.derived_trainer_name(staged),
                    started_from=str(Path(staged.pretrained_weights).resolve()) if staged.pretrained_weights else None,
                    recipe=opts.recipe,
                    resumed=resume,
                )
            previous = final
        assert result is not None  # a recipe has stages
        return result

    def _check_umamba2_plans(self, path: Path, opts: NnUNetOptions) -> None:
        from segkit.backends.umamba2.plans import check_umamba2_configuration
        from segkit.data.nnunet_plans import load_plans

        check_umamba2_configuration(load_plans(path), opts.configuration, str(path))

    def _own(self, options: Any) -> UMamba2Options:
        opts = self.options_of(options)
        assert isinstance(opts, UMamba2Options)  # options_of validates into this backend's Options
        return opts
