"""``segkit train``: train a backend on one or more folds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from segkit.backends.monai_bundle.options import MonaiOptions
from segkit.backends.nnunet.options import NnUNetOptions
from segkit.cli._backend_flags import parse_folds, resolve_with_backend
from segkit.cli._common import ConfigOpt, JsonOpt, SetOpt, print_json, progress_sink, relpath, stdout
from segkit.config.models import SegkitConfig, TrainConfig
from segkit.config.models import field_description as _d

NNUNET = "nnU-Net backend"
MONAI = "MONAI backend"


def _nn(name: str) -> str:
    return _d(NnUNetOptions, name)


def _mo(name: str) -> str:
    return _d(MonaiOptions, name)


BackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help=_d(TrainConfig, "backend"))]
FoldOpt = Annotated[
    list[str] | None,
    typer.Option("--fold", "-f", help=_d(TrainConfig, "fold"), metavar="FOLD...", show_default=False),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help=_d(TrainConfig, "device"))]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset-id", "-d", help=_d(SegkitConfig, "dataset"), metavar="DatasetNNN_Name")
]
OptionOpt = Annotated[
    list[str] | None,
    typer.Option("--option", metavar="KEY=VALUE", help="Option of the selected backend (repeatable), any backend."),
]
ConfigurationOpt = Annotated[
    str | None, typer.Option("--configuration", "-C", help=_nn("configuration"), rich_help_panel=NNUNET)
]
PlannerOpt = Annotated[str | None, typer.Option("--planner", help=_nn("planner"), rich_help_panel=NNUNET)]
PlansOpt = Annotated[str | None, typer.Option("--plans", "-p", help=_nn("plans"), rich_help_panel=NNUNET)]
TrainerOpt = Annotated[str | None, typer.Option("--trainer", help=_nn("trainer"), rich_help_panel=NNUNET)]
ProcessesOpt = Annotated[
    int | None, typer.Option("--num-processes", "-j", help=_nn("num_processes"), rich_help_panel=NNUNET)
]
OutputRootOpt = Annotated[Path | None, typer.Option(help=_mo("output_root"), rich_help_panel=MONAI)]
SpacingOpt = Annotated[
    tuple[float, float, float] | None, typer.Option(help=_mo("spacing"), metavar="X Y Z", rich_help_panel=MONAI)
]
PatchSizeOpt = Annotated[
    tuple[int, int, int] | None, typer.Option(help=_mo("patch_size"), metavar="X Y Z", rich_help_panel=MONAI)
]
AmpOpt = Annotated[bool | None, typer.Option("--amp/--no-amp", help=_mo("amp"), rich_help_panel=MONAI)]
SplitJsonOpt = Annotated[Path | None, typer.Option(help=_mo("split_json"), rich_help_panel=MONAI)]


def train(
    ctx: typer.Context,
    backend: BackendOpt = None,
    fold: FoldOpt = None,
    device: DeviceOpt = None,
    dataset_id: DatasetOpt = None,
    overwrite: Annotated[
        bool | None,
        typer.Option("--overwrite", help="Train folds that already have results again from scratch (deletes them)."),
    ] = None,
    configuration: ConfigurationOpt = None,
    planner: PlannerOpt = None,
    plans: PlansOpt = None,
    trainer: TrainerOpt = None,
    epochs: Annotated[int | None, typer.Option(help=_nn("epochs"), rich_help_panel=NNUNET)] = None,
    iterations_per_epoch: Annotated[
        int | None, typer.Option(help=_nn("iterations_per_epoch"), rich_help_panel=NNUNET)
    ] = None,
    val_iterations_per_epoch: Annotated[
        int | None, typer.Option(help=_nn("val_iterations_per_epoch"), rich_help_panel=NNUNET)
    ] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help=_nn("checkpoint_every"), rich_help_panel=NNUNET)] = None,
    mirroring: Annotated[
        bool | None, typer.Option("--mirroring/--no-mirroring", help=_nn("mirroring"), rich_help_panel=NNUNET)
    ] = None,
    final_validation: Annotated[
        bool | None,
        typer.Option("--final-validation/--no-final-validation", help=_nn("final_validation"), rich_help_panel=NNUNET),
    ] = None,
    npz: Annotated[bool | None, typer.Option("--npz", help=_nn("npz"), rich_help_panel=NNUNET)] = None,
    continue_training: Annotated[
        bool | None, typer.Option("--continue", help=_nn("continue_training"), rich_help_panel=NNUNET)
    ] = None,
    pretrained_weights: Annotated[
        Path | None, typer.Option(help=_nn("pretrained_weights"), rich_help_panel=NNUNET)
    ] = None,
    num_gpus: Annotated[int | None, typer.Option(help=_nn("num_gpus"), rich_help_panel=NNUNET)] = None,
    da_processes: Annotated[
        int | None, typer.Option(help=_nn("data_augmentation_processes"), rich_help_panel=NNUNET)
    ] = None,
    num_processes: ProcessesOpt = None,
    data_root: Annotated[
        list[Path] | None,
        typer.Option(help=_mo("data_root"), metavar="DIR...", show_default=False, rich_help_panel=MONAI),
    ] = None,
    split_json: SplitJsonOpt = None,
    output_root: OutputRootOpt = None,
    stage1_epochs: Annotated[int | None, typer.Option(help=_mo("stage1_epochs"), rich_help_panel=MONAI)] = None,
    stage2_epochs: Annotated[int | None, typer.Option(help=_mo("stage2_epochs"), rich_help_panel=MONAI)] = None,
    stage1_lr: Annotated[float | None, typer.Option(help=_mo("stage1_lr"), rich_help_panel=MONAI)] = None,
    stage2_lr: Annotated[float | None, typer.Option(help=_mo("stage2_lr"), rich_help_panel=MONAI)] = None,
    batch_size: Annotated[int | None, typer.Option(help=_mo("batch_size"), rich_help_panel=MONAI)] = None,
    stage1_accum: Annotated[int | None, typer.Option(help=_mo("stage1_accum"), rich_help_panel=MONAI)] = None,
    stage2_accum: Annotated[int | None, typer.Option(help=_mo("stage2_accum"), rich_help_panel=MONAI)] = None,
    patch_size: PatchSizeOpt = None,
    spacing: SpacingOpt = None,
    class_weights: Annotated[
        list[float] | None,
        typer.Option(help=_mo("class_weights"), metavar="W0 W1 W2 W3 W4", show_default=False, rich_help_panel=MONAI),
    ] = None,
    encoder_prefix: Annotated[
        list[str] | None,
        typer.Option(help=_mo("encoder_prefix"), metavar="PREFIX...", show_default=False, rich_help_panel=MONAI),
    ] = None,
    resume: Annotated[Path | None, typer.Option(help=_mo("resume"), rich_help_panel=MONAI)] = None,
    resume_stage: Annotated[int | None, typer.Option(help=_mo("resume_stage"), rich_help_panel=MONAI)] = None,
    load_weights: Annotated[Path | None, typer.Option(help=_mo("load_weights"), rich_help_panel=MONAI)] = None,
    amp: AmpOpt = None,
    cache_rate: Annotated[float | None, typer.Option(help=_mo("cache_rate"), rich_help_panel=MONAI)] = None,
    save_checkpoint_frequency: Annotated[
        int | None, typer.Option(help=_mo("save_checkpoint_frequency"), rich_help_panel=MONAI)
    ] = None,
    bundle_name: Annotated[str | None, typer.Option(help=_mo("bundle_name"), rich_help_panel=MONAI)] = None,
    bundle_dir: Annotated[Path | None, typer.Option(help=_mo("bundle_dir"), rich_help_panel=MONAI)] = None,
    bundle_url: Annotated[str | None, typer.Option(help=_mo("bundle_url"), rich_help_panel=MONAI)] = None,
    trust_bundle: Annotated[
        bool | None, typer.Option("--trust-bundle", help=_mo("trust_bundle"), rich_help_panel=MONAI)
    ] = None,
    options: OptionOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a backend on one or more folds (nnU-Net: results go to nnUNet_results; MONAI: to --output-root).

    Examples: segkit train --backend nnunet --fold 0;
    segkit train --config examples/configs/nnunet_3d_fullres.yaml --fold all;
    segkit train --backend monai --fold all --stage1-epochs 20 --stage2-epochs 30 --amp
    """
    from segkit import api

    cfg = resolve_with_backend(
        config,
        sets,
        options,
        "train",
        {
            "train.backend": backend,
            "train.fold": parse_folds(fold),
            "train.device": device,
            "dataset": dataset_id,
        },
        {
            "overwrite": overwrite,
            "configuration": configuration,
            "planner": planner,
            "plans": plans,
            "trainer": trainer,
            "epochs": epochs,
            "iterations_per_epoch": iterations_per_epoch,
            "val_iterations_per_epoch": val_iterations_per_epoch,
            "checkpoint_every": checkpoint_every,
            "mirroring": mirroring,
            "final_validation": final_validation,
            "npz": npz,
            "continue_training": continue_training,
            "pretrained_weights": pretrained_weights,
            "num_gpus": num_gpus,
            "da_processes": da_processes,
            "num_processes": num_processes,
            "data_root": data_root,
            "split_json": split_json,
            "output_root": output_root,
            "stage1_epochs": stage1_epochs,
            "stage2_epochs": stage2_epochs,
            "stage1_lr": stage1_lr,
            "stage2_lr": stage2_lr,
            "batch_size": batch_size,
            "stage1_accum": stage1_accum,
            "stage2_accum": stage2_accum,
            "patch_size": patch_size,
            "spacing": spacing,
            "class_weights": class_weights,
            "encoder_prefix": encoder_prefix,
            "resume": resume,
            "resume_stage": resume_stage,
            "load_weights": load_weights,
            "amp": amp,
            "cache_rate": cache_rate,
            "save_checkpoint_frequency": save_checkpoint_frequency,
            "bundle_name": bundle_name,
            "bundle_dir": bundle_dir,
            "bundle_url": bundle_url,
            "trust_bundle": trust_bundle,
        },
    )
    with progress_sink(ctx) as sink:
        results = api.train(cfg, progress=sink)
    if int(os.environ.get("RANK", "0") or 0) > 0:
        return  # under torchrun only rank 0 reports (every rank ran the same training)
    rows = [
        {
            "fold": r.fold,
            "model_dir": str(r.model_dir),
            "checkpoint": str(r.checkpoint) if r.checkpoint else None,
            "log": str(r.log_file) if r.log_file else None,
            **dict(r.metrics),
        }
        for r in results
    ]
    if json_out:
        print_json(rows)
        return
    console = stdout()
    table = Table(title=f"{cfg.train.backend} on {cfg.dataset}")
    for column in ("fold", "checkpoint", "validation Dice", "log"):
        table.add_column(column)
    for r in results:
        dice = r.metrics.get("validation_dice")
        table.add_row(
            str(r.fold),
            relpath(r.checkpoint) if r.checkpoint else "-",
            f"{dice:.4f}" if dice is not None else "-",
            relpath(r.log_file) if r.log_file else "-",
        )
    console.print(table)
    console.print(f"model: {relpath(results[0].model_dir)}")
    if cfg.train.backend == "nnunet":
        # segkit's schedule overrides name their own trainer class; infer must ask for the same model.
        trainer, plans_name, configuration_name = results[0].model_dir.name.split("__")
        console.print(
            f"predict with: segkit infer --backend nnunet --trainer {trainer} --plans {plans_name} "
            f"--configuration {configuration_name} (or the same run config)"
        )
